-- Desired state of ovn-peerd: one row per peering.
--
-- The database enforces what must never break, whatever the number of
-- ovn-peerd replicas: unique names, one peering per unordered VPC pair, no two
-- links whose connect subnets overlap, and a generation that never goes back.

CREATE TABLE peerings (
    name                text        PRIMARY KEY,
    local_vpc           text        NOT NULL,
    remote_vpc          text        NOT NULL,
    -- The unordered pair, for the one-peering-per-pair rule.
    vpc_low             text        GENERATED ALWAYS AS (least(local_vpc, remote_vpc)) STORED,
    vpc_high            text        GENERATED ALWAYS AS (greatest(local_vpc, remote_vpc)) STORED,
    -- Interconnect addresses with their prefix length (inet keeps it).
    local_v4            inet,
    remote_v4           inet,
    local_v6            inet,
    remote_v6           inet,
    link_v4             cidr        GENERATED ALWAYS AS (network(local_v4)) STORED,
    link_v6             cidr        GENERATED ALWAYS AS (network(local_v6)) STORED,
    -- Explicit routes as [{"cidr": "...", "policy": "dst-ip"|"src-ip"}]; [] = automatic.
    local_routes        jsonb       NOT NULL DEFAULT '[]',
    remote_routes       jsonb       NOT NULL DEFAULT '[]',
    state               text        NOT NULL DEFAULT 'pending'
                                    CHECK (state IN ('pending', 'active', 'failed', 'deleting')),
    state_message       text        NOT NULL DEFAULT '',
    generation          bigint      NOT NULL DEFAULT 1 CHECK (generation >= 1),
    observed_generation bigint      NOT NULL DEFAULT 0 CHECK (observed_generation >= 0),
    request_id          text        UNIQUE,
    create_time         timestamptz NOT NULL DEFAULT now(),
    update_time         timestamptz NOT NULL DEFAULT now(),
    -- When the current generation was committed: the start of convergence delay.
    generation_time     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (local_vpc <> remote_vpc),
    CHECK ((local_v4 IS NULL) = (remote_v4 IS NULL)),
    CHECK ((local_v6 IS NULL) = (remote_v6 IS NULL)),
    CHECK (local_v4 IS NOT NULL OR local_v6 IS NOT NULL),
    CHECK (family(local_v4) = 4 AND family(remote_v4) = 4 OR local_v4 IS NULL),
    CHECK (family(local_v6) = 6 AND family(remote_v6) = 6 OR local_v6 IS NULL)
);

CREATE UNIQUE INDEX peerings_vpc_pair ON peerings (vpc_low, vpc_high);
CREATE INDEX peerings_local_vpc ON peerings (local_vpc);
CREATE INDEX peerings_remote_vpc ON peerings (remote_vpc);

ALTER TABLE peerings
    ADD CONSTRAINT peerings_link_v4_excl EXCLUDE USING gist (link_v4 inet_ops WITH &&),
    ADD CONSTRAINT peerings_link_v6_excl EXCLUDE USING gist (link_v6 inet_ops WITH &&);

-- The generation never goes back.
CREATE FUNCTION peerings_generation_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.generation < OLD.generation THEN
        RAISE EXCEPTION 'generation of peering % would go back from % to %',
            OLD.name, OLD.generation, NEW.generation;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER peerings_generation_guard BEFORE UPDATE ON peerings
    FOR EACH ROW EXECUTE FUNCTION peerings_generation_guard();

-- Wake the worker on every change of desired state (not on its own status writes).
-- An empty payload lets Postgres fold the notifications of one transaction into one.
CREATE FUNCTION peerings_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ovn_peerd_desired', '');
    RETURN NULL;
END $$;

CREATE TRIGGER peerings_notify_insert_delete AFTER INSERT OR DELETE ON peerings
    FOR EACH ROW EXECUTE FUNCTION peerings_notify();
CREATE TRIGGER peerings_notify_update AFTER UPDATE ON peerings
    FOR EACH ROW WHEN (NEW.generation IS DISTINCT FROM OLD.generation)
    EXECUTE FUNCTION peerings_notify();
