-- CreatePeering's group commit (src/api/create_batch.rs) in two round trips instead of five
-- (BEGIN, locks, read, insert, COMMIT; issue 14, target 3).
--
-- The per-VPC locks are the same advisory locks (space "vpc", one key per VPC) that
-- `CreateTx` takes at transaction level for the one-at-a-time create, UpdatePeering and
-- AcceptPeering; here they are taken at SESSION level by a pooled connection, so that they
-- outlive the first statement without a transaction around it:
--
-- 1. `peering_batch_lock_read` takes them (ascending keys, as `CreateTx`: no deadlock), then
--    reads what the batch is judged against. A VOLATILE plpgsql function: in READ COMMITTED
--    its RETURN QUERY takes a fresh snapshot, after the locks are granted, so it sees every
--    create that held them before (a plain statement's snapshot would predate the wait).
--    `enable_seqscan = off` while it runs, as `CreateTx`'s lock statement sets it: its
--    cached plan stays an index plan whatever the table's size when it was made.
-- 2. The batch is judged in Rust (the NB replica), still under the locks.
-- 3. `peerings_insert_unlocking` takes the same keys at TRANSACTION level (granted at once:
--    this session holds them), releases the session's, then inserts; it runs as one
--    statement outside any transaction block, so its commit ends that statement: the
--    transaction's locks are released after the commit is visible, so whoever takes them
--    next reads these rows. The deferred change-log trigger runs at that commit, as before.
--
-- A batch that stores nothing (every create refused) gives the session's locks back with
-- `pg_advisory_unlock` (src/store/create_batch.rs). An unlock is not undone by a failing
-- transaction, so a constraint violation of the insert leaves no lock behind; the store
-- closes the connection anyway whenever the locks' release is not certain (an error, a
-- caller gone between the statements): a session's locks end with it.
CREATE FUNCTION peering_batch_lock_read(
    a_space int4, a_keys int4[], a_names text[], a_ports text[], a_request_ids text[], a_vpcs text[],
    a_per_vpc bigint, a_budget bigint)
RETURNS SETOF peerings LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off AS $$
BEGIN
    PERFORM pg_advisory_lock(a_space, k) FROM unnest(a_keys) AS k;
    -- The statement of `CreateTx::list_for_batch` before (bounded per VPC and side; the
    -- caller tells a hub, or too many rows, from what comes back).
    RETURN QUERY
    WITH q AS (
        SELECT p.name FROM peerings p WHERE p.name = ANY(a_names)
        UNION SELECT pt.peering_name FROM peering_ports pt WHERE pt.port_name = ANY(a_ports)
        UNION SELECT p.name FROM peerings p WHERE p.request_id = ANY(a_request_ids)
        UNION SELECT t.name FROM unnest(a_vpcs) AS v(vpc),
              LATERAL (SELECT p.name FROM peerings p WHERE p.local_vpc = v.vpc LIMIT a_per_vpc) AS t
        UNION SELECT t.name FROM unnest(a_vpcs) AS v(vpc),
              LATERAL (SELECT p.name FROM peerings p WHERE p.remote_vpc = v.vpc LIMIT a_per_vpc) AS t)
    SELECT p.* FROM peerings p WHERE p.name = ANY(ARRAY(SELECT q.name FROM q LIMIT a_budget))
    ORDER BY p.name;
END $$;

CREATE FUNCTION peerings_insert_unlocking(
    a_space int4, a_keys int4[],
    a_names text[], a_local_vpcs text[], a_remote_vpcs text[], a_local_v4s inet[], a_remote_v4s inet[],
    a_local_v6s inet[], a_remote_v6s inet[], a_local_routes jsonb[], a_remote_routes jsonb[],
    a_request_ids text[], a_request_hashes bytea[], a_states text[], a_state_messages text[],
    a_labels jsonb[], a_port_names text[], a_port_peerings text[])
RETURNS SETOF peerings LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(a_space, k) FROM unnest(a_keys) AS k;
    PERFORM pg_advisory_unlock(a_space, k) FROM unnest(a_keys) AS k;
    RETURN QUERY
    WITH p AS (
        INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6,
          remote_v6, local_routes, remote_routes, request_id, request_hash, state,
          state_message, labels)
        SELECT * FROM unnest(a_names, a_local_vpcs, a_remote_vpcs, a_local_v4s, a_remote_v4s, a_local_v6s,
          a_remote_v6s, a_local_routes, a_remote_routes, a_request_ids, a_request_hashes, a_states,
          a_state_messages, a_labels)
        RETURNING *),
    ports AS (
        INSERT INTO peering_ports (port_name, peering_name)
        SELECT * FROM unnest(a_port_names, a_port_peerings))
    SELECT * FROM p;
END $$;
