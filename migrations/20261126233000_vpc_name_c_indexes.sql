-- ListRoutes pages a VPC's peerings by name in byte order (`COLLATE "C"`), the order Rust
-- sorts and compares page tokens in: in the database's collation (en_US ignores '-' at the
-- first level) a page boundary read in one order and resumed in the other skipped peerings.
-- The indexes carry the same collation so the keyset stays an index range scan.
CREATE INDEX peerings_local_vpc_name_c ON peerings (local_vpc, name COLLATE "C");
CREATE INDEX peerings_remote_vpc_name_c ON peerings (remote_vpc, name COLLATE "C");
DROP INDEX peerings_local_vpc_name;
DROP INDEX peerings_remote_vpc_name;
