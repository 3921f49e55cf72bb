-- A VPC's peerings in name order, read a page at a time (ListRoutes of a hub: the first page
-- of a VPC with 10,000 peerings reads its first peerings by name through these, not all
-- 10,000 sorted). They serve the lookups by VPC alone as well, so they replace those indexes.
CREATE INDEX peerings_local_vpc_name ON peerings (local_vpc, name);
CREATE INDEX peerings_remote_vpc_name ON peerings (remote_vpc, name);
DROP INDEX peerings_local_vpc;
DROP INDEX peerings_remote_vpc;
