-- The change log WatchPeerings reads: one row per change of a `peerings` row (insert, any
-- update, the worker's status writes included, delete), written in the transaction that
-- made the change, in commit order.
--
-- Commit order = `seq` order, by a transaction-level advisory lock (two-key space
-- ("log", 0); the per-VPC locks of CreatePeering use ("vpc", k), the writer lock the
-- one-key space) taken just before `seq` is allocated and held until commit. Without it a
-- transaction could allocate seq 10, another seq 11 and commit first, and a watcher that
-- read 11 would never see 10. The triggers are DEFERRABLE INITIALLY DEFERRED constraint
-- triggers, so they run at COMMIT, after every statement of the transaction: the lock is
-- held only from there to the end of the commit (writers of peerings are serialised for
-- that short moment only), and a transaction holding it waits on nothing else, so the
-- lock can take part in no deadlock. (The other design, reading only below
-- pg_snapshot_xmin, needs no lock but makes every reader wait for the oldest running
-- transaction anywhere in the cluster.) Hence, in every snapshot, the visible rows of this
-- table are a prefix of the log: a watcher at position N has seen every change <= N.
CREATE TABLE peering_changes (
    seq         bigserial   PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('added', 'modified', 'deleted')),
    -- Every column of the row after the change (for 'deleted': as it was), as to_jsonb
    -- writes it; read back with jsonb_populate_record(NULL::peerings, peering), so that a
    -- column added to peerings later is carried without touching the triggers.
    peering     jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX peering_changes_recorded_at ON peering_changes (recorded_at);

-- Retention: old rows are pruned (src/store/changes.rs, `peering_changes_prune`), always a
-- prefix of the log; `pruned_through` is the highest seq pruned. A resume token at or
-- above it is served; one below it is OUT_OF_RANGE ("re-watch without a token").
CREATE TABLE peering_changes_horizon (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through bigint  NOT NULL DEFAULT 0
);
INSERT INTO peering_changes_horizon DEFAULT VALUES;

CREATE FUNCTION peerings_record_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7106407, 0);  -- "log": see above
    IF TG_OP = 'INSERT' THEN
        INSERT INTO peering_changes (kind, peering) VALUES ('added', to_jsonb(NEW));
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO peering_changes (kind, peering) VALUES ('modified', to_jsonb(NEW));
    ELSE
        INSERT INTO peering_changes (kind, peering) VALUES ('deleted', to_jsonb(OLD));
    END IF;
    -- Wakes each replica's one change reader; identical payloads fold into one per transaction.
    PERFORM pg_notify('ovn_peerd_changes', '');
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER peerings_record_insert_delete AFTER INSERT OR DELETE ON peerings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION peerings_record_change();
CREATE CONSTRAINT TRIGGER peerings_record_update AFTER UPDATE ON peerings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION peerings_record_change();
