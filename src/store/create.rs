//! The create transaction: CreatePeering's cross-peering rules are judged and
//! the peering is inserted inside one transaction that holds a per-VPC lock on
//! both VPCs, so two creates touching a VPC are judged one after the other
//! (across replicas: the lock is Postgres's). Also the peer-port names
//! (`peering_ports`) and the request fingerprint (`request_hash`). Round trips
//! are counted here: CreatePeering's latency is mostly them. Statements are checked at
//! build time like the rest of the store (`.sqlx/`).

use std::time::{Duration, Instant};

use sqlx::types::Json;
use sqlx::{Postgres, Transaction};

use super::model::{Labels, NewPeering, PeeringRow, StoredRoute};
use super::{PeeringRecord, Store, StoreError};

/// First key of the two-key advisory locks taken per VPC (the writer lock uses
/// the one-key space, so they never meet): "vpc" in ASCII.
const VPC_LOCK_SPACE: i32 = 0x0076_7063;

/// A peering created with a request_id, and the fingerprint of that request
/// (`None` for peerings stored before fingerprints were kept).
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The peering.
    pub record: PeeringRecord,
    /// SHA-256 of the canonical request.
    pub request_hash: Option<Vec<u8>>,
}

/// An open create (or update, see `store::update`) transaction holding the locks of
/// its VPCs. Dropping it rolls back and releases them.
pub struct CreateTx<'s> {
    pub(super) store: &'s Store,
    pub(super) tx: Transaction<'static, Postgres>,
}

/// The advisory lock keys of `vpcs`, in the one ascending order every taker uses (so no two
/// transactions taking several can deadlock), each once.
fn lock_keys(vpcs: &[&str]) -> Vec<i32> {
    let mut keys: Vec<i32> = vpcs.iter().map(|v| vpc_lock_key(v)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// How long before the caller's deadline its wait for VPC locks ends in Postgres, at most:
/// time for Postgres's answer (55P03) to reach the handler before the handler's own timer,
/// set at the deadline, answers a plain DEADLINE_EXCEEDED that cannot name the VPC. A call
/// with a shorter budget gets a quarter of it as its margin ([`lock_wait_margin`]).
pub const LOCK_WAIT_MARGIN: Duration = Duration::from_millis(200);

/// The margin of a call with `left` until its deadline: [`LOCK_WAIT_MARGIN`], or a quarter of
/// `left` if that is shorter (a call with a short budget still waits most of it for a lock).
fn lock_wait_margin(left: Duration) -> Duration {
    LOCK_WAIT_MARGIN.min(left / 4)
}

/// How long a transaction whose caller's `deadline` is this may wait for locks, counted from
/// `now`, in whole milliseconds rounded up, at least 1 (0 would mean no bound), at most
/// Postgres's limit: for its VPC locks, all together, until [`lock_wait_margin`] before the
/// deadline; for each later wait, until the deadline itself (by then the handler answers
/// anyway; a commit that waits a moment for the change log's lock near its deadline is not
/// failed for the margin). The one place a caller's deadline becomes a bound in Postgres
/// (the lock statement of [`Store::peering_create_begin`] counts them from its start).
fn lock_wait_ms(deadline: Instant, now: Instant) -> (i64, i64) {
    let ms = |left: Duration| left.as_micros().div_ceil(1000).clamp(1, i32::MAX as u128) as i64;
    let left = deadline.saturating_duration_since(now);
    (ms(left - lock_wait_margin(left)), ms(left))
}

/// Whether a lock wait that Postgres ended (55P03) ended at the bound [`lock_wait_ms`] set
/// from `deadline` at `start`, not at a shorter `lock_timeout` of the server's or the role's:
/// whether no more than that bound's margin is left now.
fn lock_wait_over(deadline: Option<Instant>, start: Instant) -> bool {
    deadline
        .is_some_and(|d| Instant::now() + lock_wait_margin(d.saturating_duration_since(start)) >= d)
}

/// The lock key of a VPC name: 32-bit FNV-1a, stable across versions and replicas.
fn vpc_lock_key(vpc: &str) -> i32 {
    let hash = vpc.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash as i32
}

/// A `peerings` row with its request fingerprint (what a request_id lookup reads).
pub(super) struct HashedRow {
    pub(super) name: String,
    pub(super) local_vpc: String,
    pub(super) remote_vpc: String,
    pub(super) local_v4: Option<ipnet::IpNet>,
    pub(super) remote_v4: Option<ipnet::IpNet>,
    pub(super) local_v6: Option<ipnet::IpNet>,
    pub(super) remote_v6: Option<ipnet::IpNet>,
    pub(super) local_routes: Json<Vec<StoredRoute>>,
    pub(super) remote_routes: Json<Vec<StoredRoute>>,
    pub(super) state: String,
    pub(super) state_message: String,
    pub(super) generation: i64,
    pub(super) observed_generation: i64,
    pub(super) request_id: Option<String>,
    pub(super) create_time: chrono::DateTime<chrono::Utc>,
    pub(super) update_time: chrono::DateTime<chrono::Utc>,
    pub(super) generation_time: chrono::DateTime<chrono::Utc>,
    pub(super) labels: Json<Labels>,
    pub(super) etag: uuid::Uuid,
    pub(super) request_hash: Option<Vec<u8>>,
}

impl TryFrom<HashedRow> for RequestRecord {
    type Error = StoreError;

    fn try_from(r: HashedRow) -> Result<Self, StoreError> {
        let row = PeeringRow {
            name: r.name,
            local_vpc: r.local_vpc,
            remote_vpc: r.remote_vpc,
            local_v4: r.local_v4,
            remote_v4: r.remote_v4,
            local_v6: r.local_v6,
            remote_v6: r.remote_v6,
            local_routes: r.local_routes,
            remote_routes: r.remote_routes,
            state: r.state,
            state_message: r.state_message,
            generation: r.generation,
            observed_generation: r.observed_generation,
            request_id: r.request_id,
            create_time: r.create_time,
            update_time: r.update_time,
            generation_time: r.generation_time,
            labels: r.labels,
            etag: r.etag,
        };
        Ok(RequestRecord {
            record: row.try_into()?,
            request_hash: r.request_hash,
        })
    }
}

/// The statement of a request_id lookup, for the pool and for a transaction.
macro_rules! by_request_id {
    ($request_id:expr) => {
        sqlx::query_as!(
            HashedRow,
            r#"SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                 local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                 remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                 state, state_message, generation, observed_generation, request_id,
                 create_time, update_time, generation_time,
                 labels AS "labels: Json<Labels>", etag, request_hash
               FROM peerings WHERE request_id = $1"#,
            $request_id
        )
    };
}

/// CreatePeering's view of the other peerings: every peering touching any of
/// the VPCs, the one of that name, and those holding any of the port names.
/// The port names' peerings come as `= ANY(ARRAY(subquery))`, an init plan the
/// planner ORs with the index scans; `IN (subquery)` under an `OR` is a hashed
/// sub-plan filter that scans every peering (133 ms at 100,000; now 0.2 ms).
macro_rules! list_for_create {
    ($vpcs:expr, $name:expr, $ports:expr) => {
        sqlx::query_as!(
            PeeringRow,
            r#"SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                 local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                 remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                 state, state_message, generation, observed_generation, request_id,
                 create_time, update_time, generation_time,
                 labels AS "labels: Json<Labels>", etag
               FROM peerings
               WHERE local_vpc = ANY($1) OR remote_vpc = ANY($1) OR name = $2
                  OR name = ANY(ARRAY(SELECT peering_name FROM peering_ports
                                      WHERE port_name = ANY($3)))
               ORDER BY name"#,
            $vpcs,
            $name,
            $ports
        )
    };
}

impl Store {
    /// Begins a create transaction and takes the per-VPC locks of `vpcs` in
    /// ascending key order (a fixed order: two creates never deadlock, even
    /// when two names share a key). Held until commit or rollback.
    ///
    /// With a `deadline` (the caller's), the waits for these locks end in Postgres a margin
    /// (`lock_wait_margin`: at most [`LOCK_WAIT_MARGIN`]) before it, all of them together
    /// (the bound is set again from the clock before each lock): a lock held elsewhere until
    /// then is [`StoreError::LockBusy`] naming `vpcs`, and the connection goes back to the
    /// pool at once (not when the lock frees). Each later lock wait of the transaction (a row
    /// lock, the change log's lock at COMMIT) is bounded by the time left until the deadline
    /// itself once these locks were held, each on its own (ending as
    /// [`StoreError::LockTimeout`]). A shorter `lock_timeout` of the server's or the role's
    /// is kept. Without a deadline, the waits are as configured on the server (unbounded by
    /// default).
    pub async fn peering_create_begin(
        &self,
        vpcs: &[&str],
        deadline: Option<Instant>,
    ) -> Result<CreateTx<'_>, StoreError> {
        let keys = lock_keys(vpcs);
        // `BEGIN` is a round trip of its own (sqlx waits for its answer), timed apart.
        let mut tx = self
            .timed("peering_create_begin", self.pool.begin())
            .await?;
        let start = Instant::now();
        let bounds = deadline.map(|d| lock_wait_ms(d, start));
        // One round trip: a function scan yields the array's elements in order,
        // and each row's lock is taken before the next row is produced (the
        // aggregate makes every row's call happen; the function returns void).
        //
        // The bound: `lock_timeout` is set (for the transaction) in each lock's key
        // argument, so before that lock is asked for (arguments are evaluated before the
        // call), to what is left of `$3` ms counted from the statement's start. A last row,
        // NULL (the lock function is strict: no lock, not counted), sets it once more, after
        // every lock was taken, to what is left of `$4` ms, for the transaction's later
        // waits: one expression for both. A shorter setting of the session's (the server's,
        // the role's; `least` skips its NULL for 0, no bound) is kept; so is any when there
        // is no deadline (NULL). The session's setting is read once, in `s`: a materialized
        // CTE is computed once, when first read, here in the first row's argument before
        // any `set_config` (read later, `current_setting` would be the bound just set). No
        // other sub-select: one that does not refer to `k` is an init plan, computed once
        // for the statement, and every lock would get the first bound.
        //
        // The same statement turns sequential scans off for the rest of the
        // transaction: every statement of a create is a handful of index lookups,
        // and the generic plan a connection caches for each (after five
        // executions, kept until the table's statistics change) is planned at the
        // table's size then. Planned while `peerings` was small, it scanned the
        // whole table at every create once it had grown (profiled in a bulk of
        // 10,000 creates: 600-750 buffers per read instead of ~40 per create,
        // autovacuum's analyze being a minute away); custom plans every time
        // would cost ~0.3 ms of planning per statement instead.
        let locked = self
            .timed(
                "peering_create_lock",
                sqlx::query!(
                    r#"WITH s AS MATERIALIZED (SELECT NULLIF(1000 * extract(epoch FROM
                                current_setting('lock_timeout')::interval), 0) AS ms)
                       SELECT count(pg_advisory_xact_lock($1,
                                 CASE WHEN set_config('lock_timeout',
                                   CASE WHEN $3::int8 IS NULL THEN current_setting('lock_timeout')
                                        ELSE ceil(least((SELECT ms FROM s), greatest(1,
                                          CASE WHEN k IS NULL THEN $4::int8 ELSE $3 END
                                          - 1000 * extract(epoch FROM
                                                clock_timestamp() - statement_timestamp()))
                                        ))::int8 || 'ms'
                                   END, true) IS NOT NULL
                                 THEN k END)) AS "locked!",
                              set_config('enable_seqscan', 'off', true) AS seqscan
                       FROM unnest(array_append($2::int4[], NULL)) AS k"#,
                    VPC_LOCK_SPACE,
                    &keys,
                    bounds.map(|(vpc_locks, _)| vpc_locks),
                    bounds.map(|(_, later)| later)
                )
                .fetch_one(&mut *tx),
            )
            .await;
        match locked {
            Ok(row) if row.locked == keys.len() as i64 => Ok(CreateTx { store: self, tx }),
            Ok(row) => Err(StoreError::Other(sqlx::Error::Protocol(format!(
                "took {} of the {} VPC locks asked for",
                row.locked,
                keys.len()
            )))),
            Err(StoreError::LockTimeout(source)) if lock_wait_over(deadline, start) => {
                Err(StoreError::LockBusy {
                    vpcs: vpcs.iter().map(|v| v.to_string()).collect(),
                    source,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Begins a create transaction for a batch: [`Self::peering_create_begin`], but a lock
    /// held elsewhere (another replica's batch, UpdatePeering, AcceptPeering) is not waited
    /// for. The locks of `vpcs` are tried in the same ascending key order, in one round
    /// trip; the transaction holds those it got, and the VPCs whose lock is held elsewhere
    /// are returned (every VPC of a busy key, when two names share one).
    pub async fn peering_create_try_begin(
        &self,
        vpcs: &[&str],
    ) -> Result<(CreateTx<'_>, Vec<String>), StoreError> {
        let keys = lock_keys(vpcs);
        let mut tx = self
            .timed("peering_create_begin", self.pool.begin())
            .await?;
        // As in `peering_create_begin` (one row per key, in order; the same plan setting),
        // but a try never waits, so no order of batches can deadlock either.
        let row = self
            .timed(
                "peering_create_try_lock",
                sqlx::query!(
                    r#"SELECT COALESCE(array_agg(k) FILTER
                                (WHERE NOT pg_try_advisory_xact_lock($1, k)),
                              '{}') AS "busy!",
                          set_config('enable_seqscan', 'off', true)
                       FROM unnest($2::int4[]) AS k"#,
                    VPC_LOCK_SPACE,
                    &keys
                )
                .fetch_one(&mut *tx),
            )
            .await?;
        let busy: Vec<i32> = row.busy;
        let busy_vpcs = vpcs
            .iter()
            .filter(|v| busy.contains(&vpc_lock_key(v)))
            .map(|v| v.to_string())
            .collect();
        Ok((CreateTx { store: self, tx }, busy_vpcs))
    }

    /// The peering created with this request_id, with its request fingerprint.
    pub async fn peering_get_by_request_id_hashed(
        &self,
        request_id: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let row = self
            .timed(
                "peering_get_by_request_id_hashed",
                by_request_id!(request_id).fetch_optional(&self.pool),
            )
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    /// CreatePeering's view of the other peerings: every peering touching any
    /// of `vpcs`, the one named `name`, and those holding any of `ports` (port
    /// names are unique across the deployment, not per VPC). One round trip,
    /// one snapshot.
    pub async fn peering_list_for_create(
        &self,
        vpcs: &[&str],
        name: &str,
        ports: &[String],
    ) -> Result<Vec<PeeringRecord>, StoreError> {
        let vpcs: Vec<String> = vpcs.iter().map(|v| v.to_string()).collect();
        let rows = self
            .timed(
                "peering_list_for_create",
                list_for_create!(&vpcs, name, ports).fetch_all(&self.pool),
            )
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }
}

impl Store {
    /// Every peering touching any of `vpcs` and those holding any of `ports` whose rows may
    /// be in NB ([`super::PeeringState::in_northbound`]): the worker's narrow pass after NB
    /// changes of others. CreatePeering's statement, with no name; the states filtered here.
    pub async fn peering_list_touching_or_holding(
        &self,
        vpcs: &[&str],
        ports: &[String],
    ) -> Result<Vec<PeeringRecord>, StoreError> {
        let vpcs: Vec<String> = vpcs.iter().map(|v| v.to_string()).collect();
        let rows = self
            .timed(
                "peering_list_touching_or_holding",
                list_for_create!(&vpcs, "", ports).fetch_all(&self.pool),
            )
            .await?;
        let records: Vec<PeeringRecord> = rows
            .into_iter()
            .map(TryInto::try_into)
            .collect::<Result<_, _>>()?;
        Ok(records
            .into_iter()
            .filter(|r| r.state.in_northbound())
            .collect())
    }
}

impl CreateTx<'_> {
    /// For tests: the `lock_timeout` in force in the transaction, in ms (0: none).
    #[doc(hidden)]
    pub async fn lock_timeout_ms_for_tests(&mut self) -> Result<i64, StoreError> {
        let ms = sqlx::query_scalar!(
            r#"SELECT (1000 * extract(epoch FROM current_setting('lock_timeout')::interval))::int8
                   AS "ms!""#
        )
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(ms)
    }

    /// As [`Store::peering_get_by_request_id_hashed`], inside the transaction.
    pub async fn by_request_id(
        &mut self,
        request_id: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let row = self
            .store
            .timed(
                "peering_get_by_request_id_hashed",
                by_request_id!(request_id).fetch_optional(&mut *self.tx),
            )
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    /// As [`Store::peering_list_for_create`], inside the transaction.
    pub async fn list_for_create(
        &mut self,
        vpcs: &[&str],
        name: &str,
        ports: &[String],
    ) -> Result<Vec<PeeringRecord>, StoreError> {
        let vpcs: Vec<String> = vpcs.iter().map(|v| v.to_string()).collect();
        let rows = self
            .store
            .timed(
                "peering_list_for_create",
                list_for_create!(&vpcs, name, ports).fetch_all(&mut *self.tx),
            )
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Inserts the peering (generation 1, in `new.state`) with its port names
    /// and request fingerprint, and commits. The constraints still have the
    /// last word: [`StoreError::PortTaken`], `LinkOverlap`, `RequestIdTaken`...
    pub async fn insert(
        mut self,
        new: &NewPeering,
        request_hash: Option<&[u8]>,
        ports: &[String],
    ) -> Result<PeeringRecord, StoreError> {
        // The port rows reference the peering inserted by the same statement.
        let row = self
            .store
            .timed(
                "peering_insert",
                sqlx::query_as!(
                    PeeringRow,
                    r#"WITH p AS (
                         INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4,
                           local_v6, remote_v6, local_routes, remote_routes, request_id,
                           request_hash, state, state_message, labels)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13, $14, $15)
                         RETURNING *),
                       ports AS (
                         INSERT INTO peering_ports (port_name, peering_name)
                         SELECT DISTINCT unnest($12::text[]), $1)
                       SELECT name AS "name!", local_vpc AS "local_vpc!",
                         remote_vpc AS "remote_vpc!", local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes!: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes!: Json<Vec<StoredRoute>>",
                         state AS "state!", state_message AS "state_message!",
                         generation AS "generation!",
                         observed_generation AS "observed_generation!", request_id,
                         create_time AS "create_time!", update_time AS "update_time!",
                         generation_time AS "generation_time!",
                         labels AS "labels!: Json<Labels>", etag AS "etag!"
                       FROM p"#,
                    new.name,
                    new.local_vpc,
                    new.remote_vpc,
                    new.local_v4,
                    new.remote_v4,
                    new.local_v6,
                    new.remote_v6,
                    // jsonb parameters: the macro cannot check a serde type, so `as _`.
                    Json(&new.local_routes) as _,
                    Json(&new.remote_routes) as _,
                    new.request_id,
                    request_hash,
                    ports,
                    new.state.as_str(),
                    new.state_message,
                    Json(&new.labels) as _,
                )
                .fetch_one(&mut *self.tx),
            )
            .await?;
        self.store
            .timed("peering_create_commit", self.tx.commit())
            .await?;
        row.try_into()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{lock_wait_margin, lock_wait_ms, lock_wait_over, vpc_lock_key, LOCK_WAIT_MARGIN};

    #[test]
    fn a_deadline_becomes_the_time_left_in_whole_milliseconds_never_zero() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        // The VPC locks: the time left until the margin before the deadline, rounded up;
        // later waits: until the deadline.
        assert_eq!(lock_wait_ms(now + ms(1_000), now), (800, 1_000));
        assert_eq!(lock_wait_ms(now + ms(10_000), now), (9_800, 10_000));
        assert_eq!(
            lock_wait_ms(now + Duration::from_micros(1_200_001), now),
            (1_001, 1_201)
        );
        // Due or past: the shortest wait, not 0 (no bound at all).
        assert_eq!(lock_wait_ms(now, now), (1, 1));
        assert_eq!(lock_wait_ms(now, now + ms(1_000)), (1, 1));
        // Postgres takes at most i32::MAX ms.
        let max = i64::from(i32::MAX);
        assert_eq!(
            lock_wait_ms(now + Duration::from_secs(100 * 24 * 3600), now),
            (max, max)
        );
    }

    #[test]
    fn a_short_budget_keeps_most_of_it_for_the_vpc_locks() {
        let ms = Duration::from_millis;
        assert_eq!(lock_wait_margin(ms(10_000)), LOCK_WAIT_MARGIN);
        assert_eq!(lock_wait_margin(LOCK_WAIT_MARGIN * 4), LOCK_WAIT_MARGIN);
        assert_eq!(lock_wait_margin(ms(220)), ms(55));
        assert_eq!(lock_wait_margin(ms(4)), ms(1));
        assert_eq!(lock_wait_margin(Duration::ZERO), Duration::ZERO);
        // 220 ms left: the VPC locks may wait 165 ms of them (not 20).
        let now = Instant::now();
        assert_eq!(lock_wait_ms(now + ms(220), now), (165, 220));
        assert_eq!(lock_wait_ms(now + ms(8), now), (6, 8));
    }

    #[test]
    fn a_lock_wait_ended_before_the_margin_is_not_the_deadline() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert!(!lock_wait_over(None, now));
        assert!(!lock_wait_over(Some(now + ms(10_000)), now));
        // Started with 10 s (margin 200 ms): over once 200 ms or less are left.
        assert!(lock_wait_over(
            Some(Instant::now() + ms(150)),
            now - ms(9_850)
        ));
        assert!(!lock_wait_over(
            Some(Instant::now() + ms(400)),
            now - ms(9_600)
        ));
        // Started with 200 ms (margin 50 ms): over at 50 ms left, not at 150 ms left.
        assert!(lock_wait_over(Some(Instant::now() + ms(40)), now - ms(160)));
        assert!(!lock_wait_over(
            Some(Instant::now() + ms(150)),
            now - ms(50)
        ));
        assert!(lock_wait_over(Some(Instant::now() - ms(1_000)), now));
    }

    #[tokio::test]
    async fn later_waits_are_bounded_until_the_deadline_not_by_the_vpc_locks_bound() {
        // The VPC locks (free here) get the margin before the deadline; the waits after them
        // (a row lock, the change log's lock at COMMIT) the time until the deadline itself,
        // on a server without a lock_timeout of its own (not the VPC locks' bound: ~800 ms
        // and ~300 ms here, a quarter of a short budget being the margin).
        let db = ovn_peerd_test_support::pg::TestDb::create().await;
        let store = super::Store::connect_lazy(&db.url).expect("store");
        store.migrate().await.expect("migrate");
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut tx = store
            .peering_create_begin(&["vpc-1", "vpc-2"], Some(deadline))
            .await
            .expect("free locks");
        let ms = tx.lock_timeout_ms_for_tests().await.expect("lock_timeout");
        assert!((901..=1_000).contains(&ms), "{ms}");
        drop(tx);
        let deadline = Instant::now() + Duration::from_millis(400);
        let mut tx = store
            .peering_create_begin(&["vpc-1"], Some(deadline))
            .await
            .expect("free locks");
        let ms = tx.lock_timeout_ms_for_tests().await.expect("lock_timeout");
        assert!((310..=400).contains(&ms), "{ms}");
    }

    #[test]
    fn lock_keys_are_stable() {
        // Replicas of different versions must agree on a VPC's key.
        assert_eq!(vpc_lock_key(""), 0x811c_9dc5_u32 as i32);
        assert_eq!(vpc_lock_key("a"), 0xe40c_292c_u32 as i32);
        assert_ne!(vpc_lock_key("vpc-1"), vpc_lock_key("vpc-2"));
    }
}
