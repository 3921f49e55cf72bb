-- IPv6 link-local links (fe80::/10) may be reused by peerings that share no VPC.
--
-- A link-local address means something only on its own link: the two peer ports of one
-- peering. Every OVN router port already holds an fe80::/64 address, and every route
-- ovn-peerd installs names its output port, so the same fe80:: link on two unrelated
-- router pairs never meets. Operators pick fe80::a:1/64 + fe80::a:2/64 for every
-- interconnect precisely because such addresses route nowhere else; a global exclusion
-- would allow that once per database. Within one VPC links still must not overlap (two
-- ports of one router with one address would be ambiguous): the topology rules check it
-- against every peering of that VPC, in the API and again in the worker. Every other link,
-- IPv4 169.254.0.0/16 included (the allocation pool), stays globally exclusive here.
ALTER TABLE peerings
    DROP CONSTRAINT peerings_link_v6_excl,
    ADD CONSTRAINT peerings_link_v6_excl EXCLUDE USING gist (link_v6 inet_ops WITH &&)
        WHERE (NOT (link_v6 <<= 'fe80::/10'::cidr));
