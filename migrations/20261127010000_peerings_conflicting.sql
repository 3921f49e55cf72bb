-- The conflict probe's question in one place (`peering::topology::ConflictQuery`, asked by
-- CreatePeering at a hub, `store::create_batch`, and by the worker's narrow pass,
-- `store::conflicts`): the names of the stored peerings that can take part in the rules for
-- the probed peerings. Each arm is an index: names, port names, pairs (peerings_vpc_pair),
-- links per VPC (the GiST of peering_links with both its columns as the index condition, one
-- scan per (VPC, network): `OFFSET 0` keeps the planner from flattening it into a join that
-- scans by the link alone, as `vpc = ANY(vpcs)`, which a GiST cannot take, did; disjoint
-- peerings all hold the pool's first link, so that filtered 20,000 rows at 10,000), the few read whole (peerings_probe_extra_*).
-- A SQL function of one query, STABLE and not STRICT: the planner inlines it into the calling
-- statement, so each arm is planned with the caller's parameters as before.
CREATE FUNCTION peerings_conflicting(
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
                   WHERE family(link) = 4 AND vpc = v.vpc AND link && n.net OFFSET 0) AS l
    UNION SELECT l.peering_name FROM unnest(vpcs) AS v(vpc), unnest(nets) AS n(net),
          LATERAL (SELECT peering_name FROM peering_links
                   WHERE family(link) = 6 AND vpc = v.vpc AND link && n.net OFFSET 0) AS l
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
