-- Links are unique per router (VPC), not across the deployment.
--
-- A link's addresses live on the two peer ports of one peering, and OVN resolves a router
-- port's addresses per router: the same 169.254.0.0/30 on vpc-1<->vpc-2 and on vpc-3<->vpc-4
-- never meet (no route ovn-peerd installs points at a link, every route names its output
-- port). Two ports of one router with overlapping links would be ambiguous, so within a VPC
-- links stay exclusive. One row per (VPC, link) of every peering, written by a trigger on
-- `peerings` whatever writes the peering, and an exclusion constraint per family: two
-- peerings may hold overlapping links exactly when they share no VPC. This replaces the
-- deployment-wide exclusions (and the fe80::/10 exception of 20261126160000, which is now
-- simply the general rule), so 100,000 disjoint peerings fit in the default
-- 169.254.0.0/16 pool of 16,384 /30s. As before (20261126170000), a rejected or expired
-- cross-tenant request holds no link: its rows go when it reaches either state.
--
-- `=` on text in a GiST index needs btree_gist (a contrib module shipped with Postgres,
-- trusted since Postgres 13: the database owner may create it).
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE peering_links (
    vpc          text NOT NULL,
    link         cidr NOT NULL,
    peering_name text NOT NULL REFERENCES peerings (name) ON DELETE CASCADE,
    CONSTRAINT peering_links_v4_excl EXCLUDE USING gist (vpc WITH =, link inet_ops WITH &&)
        WHERE (family(link) = 4),
    CONSTRAINT peering_links_v6_excl EXCLUDE USING gist (vpc WITH =, link inet_ops WITH &&)
        WHERE (family(link) = 6)
);
CREATE INDEX peering_links_peering ON peering_links (peering_name);

-- The rows of a peering follow its VPCs and addresses (no API changes them today; the
-- trigger keeps the table true for any writer).
CREATE FUNCTION peering_links_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM peering_links WHERE peering_name = OLD.name;
    END IF;
    IF NEW.state IN ('rejected', 'expired') THEN
        RETURN NULL;
    END IF;
    INSERT INTO peering_links (vpc, link, peering_name)
    SELECT v.vpc, l.link, NEW.name
    FROM (VALUES (NEW.local_vpc), (NEW.remote_vpc)) AS v(vpc),
         (VALUES (network(NEW.local_v4)), (network(NEW.local_v6))) AS l(link)
    WHERE l.link IS NOT NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER peering_links_insert AFTER INSERT ON peerings
    FOR EACH ROW EXECUTE FUNCTION peering_links_sync();
-- Not on every status write: only when what the rows hold changes.
CREATE TRIGGER peering_links_update AFTER UPDATE ON peerings FOR EACH ROW
    WHEN ((OLD.local_vpc, OLD.remote_vpc, OLD.local_v4, OLD.local_v6)
            IS DISTINCT FROM (NEW.local_vpc, NEW.remote_vpc, NEW.local_v4, NEW.local_v6)
          OR (OLD.state IN ('rejected', 'expired')) IS DISTINCT FROM
             (NEW.state IN ('rejected', 'expired')))
    EXECUTE FUNCTION peering_links_sync();

-- Existing peerings keep their links: they were exclusive across the database, except
-- fe80:: links, of which two in one VPC could only have been stored by hand; of those the
-- older keeps the row (the topology rules report the other FAILED, as before).
INSERT INTO peering_links (vpc, link, peering_name)
SELECT v.vpc, l.link, p.name
FROM peerings p,
     LATERAL (VALUES (p.local_vpc), (p.remote_vpc)) AS v(vpc),
     LATERAL (VALUES (network(p.local_v4)), (network(p.local_v6))) AS l(link)
WHERE l.link IS NOT NULL AND p.state NOT IN ('rejected', 'expired')
ORDER BY p.create_time, p.name
ON CONFLICT DO NOTHING;

ALTER TABLE peerings
    DROP CONSTRAINT peerings_link_v4_excl,
    DROP CONSTRAINT peerings_link_v6_excl;
