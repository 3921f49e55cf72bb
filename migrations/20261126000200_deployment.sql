-- This deployment's identity and its writer epoch: exactly one row, made here.
--
-- `id` tells this deployment's NB rows and fence apart from another
-- deployment's on the same NB (another database: staging beside prod, a
-- replica started with the wrong DATABASE_URL). It is made once, at the first
-- migration of a database, and never changes.
--
-- `writer_epoch` is bumped by each replica that takes the writer lock, in the
-- lock's own session; the holder asserts it on every NB transaction (see
-- `src/reconciler/fence.rs`), so a writer that lost the lock cannot land one.
CREATE TABLE deployment (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id           uuid    NOT NULL DEFAULT gen_random_uuid(),
    writer_epoch bigint  NOT NULL DEFAULT 0 CHECK (writer_epoch >= 0)
);

INSERT INTO deployment DEFAULT VALUES;
