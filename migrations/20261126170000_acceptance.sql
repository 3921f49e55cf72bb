-- Cross-tenant requests (issue 12): a peering between VPCs of two tenants waits in
-- 'pending_acceptance' until the remote VPC's tenant accepts it ('pending', then on as any
-- other), rejects it ('rejected') or lets it run past the acceptance TTL ('expired').
--
-- None of the three is ever written to NB (the worker does not read them). A request
-- reserves what a peering holds (its name, its VPC pair, its port names, its link); a
-- rejected or expired one keeps only its name: it must not stop a new request for the same
-- pair, so the pair index and the link exclusions leave those two states out, and their
-- port names are removed when they reach them (see `src/store/acceptance.rs`).
ALTER TABLE peerings DROP CONSTRAINT peerings_state_check;
ALTER TABLE peerings ADD CONSTRAINT peerings_state_check CHECK (state IN
    ('pending', 'active', 'failed', 'deleting', 'pending_acceptance', 'rejected', 'expired'));

DROP INDEX peerings_vpc_pair;
CREATE UNIQUE INDEX peerings_vpc_pair ON peerings (vpc_low, vpc_high)
    WHERE state NOT IN ('rejected', 'expired');

ALTER TABLE peerings
    DROP CONSTRAINT peerings_link_v4_excl,
    ADD CONSTRAINT peerings_link_v4_excl EXCLUDE USING gist (link_v4 inet_ops WITH &&)
        WHERE (state NOT IN ('rejected', 'expired')),
    DROP CONSTRAINT peerings_link_v6_excl,
    ADD CONSTRAINT peerings_link_v6_excl EXCLUDE USING gist (link_v6 inet_ops WITH &&)
        WHERE (NOT (link_v6 <<= 'fe80::/10'::cidr) AND state NOT IN ('rejected', 'expired'));

-- The expiry sweep and its next deadline read only the open requests.
CREATE INDEX peerings_awaiting_acceptance ON peerings (create_time)
    WHERE state = 'pending_acceptance';
