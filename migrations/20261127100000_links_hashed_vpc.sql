-- The per-VPC link exclusions of 20261126205000, same rule, a cheaper index.
--
-- Profiled at 10,000 peerings (issue 14): the GiST of `(vpc WITH =, link WITH &&)` was the
-- most expensive part of a create, 150-210 µs per link row (a peering writes two, four with
-- IPv6), about a third of Postgres's time in a bulk of creates. btree_gist keeps text keys
-- as (lower, upper) strings in every inner entry: each insert and each exclusion search
-- compares and copies them level by level, and disjoint peerings all hold the pool's first
-- link, so the link column never narrows a search and the text does all the work.
--
-- Led by a 64-bit hash of the VPC (`hashtextextended`, an int8: cheap to compare, to union
-- and to split), the index finds a VPC's entries by the integer; `vpc WITH =` is still part
-- of the constraint, so two VPCs whose hashes collide are still told apart (a collision
-- only makes their entries neighbours). Same constraint names (the store maps them to
-- LinkOverlap), same meaning: two links of one VPC never overlap, whatever their prefix
-- lengths. 30-35 µs per link row on the same data.
--
-- Readers that look links up by VPC say the hash too (it is what the index is searched
-- by): `peerings_conflicting` below and `CreateTx::links_in`.
ALTER TABLE peering_links
    DROP CONSTRAINT peering_links_v4_excl,
    DROP CONSTRAINT peering_links_v6_excl;
ALTER TABLE peering_links
    ADD CONSTRAINT peering_links_v4_excl EXCLUDE USING gist (
        (hashtextextended(vpc, 0)) WITH =, vpc WITH =, link inet_ops WITH &&)
        WHERE (family(link) = 4),
    ADD CONSTRAINT peering_links_v6_excl EXCLUDE USING gist (
        (hashtextextended(vpc, 0)) WITH =, vpc WITH =, link inet_ops WITH &&)
        WHERE (family(link) = 6);

-- As in 20261127010000, the link arms searching by the hash as well (one index scan per
-- VPC and network, `OFFSET 0` as before).
CREATE OR REPLACE FUNCTION peerings_conflicting(
    names text[], ports text[], lo text[], hi text[], nets cidr[], vpcs text[])
RETURNS TABLE (name text) LANGUAGE sql STABLE AS $$
    SELECT p.name FROM peerings p WHERE p.name = ANY(names)
    UNION SELECT pt.peering_name FROM peering_ports pt WHERE pt.port_name = ANY(ports)
    UNION SELECT pp.name FROM peerings pp
          JOIN unnest(lo, hi) AS vp(a, b)
            ON pp.vpc_low = least(vp.a, vp.b)
           AND pp.vpc_high = greatest(vp.a, vp.b)
          WHERE pp.state NOT IN ('rejected', 'expired')
    UNION SELECT l.peering_name FROM unnest(vpcs) AS v(vpc), unnest(nets) AS n(net),
          LATERAL (SELECT peering_name FROM peering_links
                   WHERE family(link) = 4
                     AND hashtextextended(vpc, 0) = hashtextextended(v.vpc, 0)
                     AND vpc = v.vpc AND link && n.net OFFSET 0) AS l
    UNION SELECT l.peering_name FROM unnest(vpcs) AS v(vpc), unnest(nets) AS n(net),
          LATERAL (SELECT peering_name FROM peering_links
                   WHERE family(link) = 6
                     AND hashtextextended(vpc, 0) = hashtextextended(v.vpc, 0)
                     AND vpc = v.vpc AND link && n.net OFFSET 0) AS l
    UNION SELECT p.name FROM peerings p
          WHERE p.local_vpc = ANY(vpcs)
            AND (p.local_routes <> '[]'::jsonb OR p.remote_routes <> '[]'::jsonb
                 OR p.state NOT IN ('pending', 'active', 'pending_acceptance',
                                    'rejected', 'expired'))
    UNION SELECT p.name FROM peerings p
          WHERE p.remote_vpc = ANY(vpcs)
            AND (p.local_routes <> '[]'::jsonb OR p.remote_routes <> '[]'::jsonb
                 OR p.state NOT IN ('pending', 'active', 'pending_acceptance',
                                    'rejected', 'expired'))
$$;
