//! A caller's deadline ends its wait at a VPC lock in Postgres too (README "Overload and
//! deadlines"): the test holds a VPC's lock with ovn-peerd's own `Store::peering_create_begin`
//! (the store's key function, as another replica or a slow UpdatePeering would), and calls
//! that need it with a short client deadline get DEADLINE_EXCEEDED; then, while the lock is
//! still held, no session of ovn-peerd's pool is left waiting for it (its connection is back
//! in the pool), which without the bound lasts until the lock frees. The answer names the
//! VPCs (Postgres ends the wait a margin, `LOCK_WAIT_MARGIN` or a quarter of the budget if
//! shorter, before the handler's own timer, which could not name them). Nothing is stored by
//! such a call: its retry with the same request_id goes through once the lock is free. The
//! bound is the call's, not each wait's; a tighter `lock_timeout` of the database's is kept
//! and is not told as a deadline.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::{
    AcceptPeeringRequest, CreatePeeringRequest, GetPeeringRequest, Peering, UpdatePeeringRequest,
};
use ovn_peerd::store::{Store, StoreError};
use prost_types::FieldMask;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::peerd::TestPeerd;
use crate::support::pg::lock_waiters;
use crate::support::vpc::create_vpc;
use ovn_peerd_test_support::wait_until_async;

/// A client deadline far shorter than the test's patience, long enough to reach the lock
/// (queue, spawn, maybe a new pool connection) on a busy machine: its answer names the VPCs
/// only if the lock statement starts before the margin (`LOCK_WAIT_MARGIN`, 200 ms here) and
/// Postgres's 55P03 reaches the handler within it.
const SHORT: Duration = Duration::from_secs(1);
/// How long the waiters may take to leave once their deadline passed: without the bound they
/// stay while the lock is held, i.e. for ever here.
const PROMPT: Duration = Duration::from_secs(10);

/// Waits until no session waits for a lock (the test's own lock still held).
async fn no_lock_waiters(pool: &sqlx::PgPool) {
    wait_until_async(
        "no session of ovn-peerd waits for the held lock",
        PROMPT,
        || async { lock_waiters(pool).await == 0 },
    )
    .await
    .expect("the timed-out calls' lock waits ended in Postgres");
}

/// The answer of a call whose wait at a VPC lock Postgres ended before its deadline:
/// DEADLINE_EXCEEDED naming the call's `vpcs` (message and ErrorInfo metadata `vpc`), which
/// the handler's own timer, answering at the deadline, does not.
fn assert_names_vpcs(status: &tonic::Status, vpcs: &[&str]) {
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "DEADLINE_EXCEEDED");
    assert_eq!(
        info.metadata.get("vpc").map(String::as_str),
        Some(vpcs.join(",").as_str()),
        "the wait ended in Postgres, not at the handler's timer: {status:?}"
    );
    for vpc in vpcs {
        assert!(status.message().contains(&format!("{vpc:?}")), "{status:?}");
    }
}

async fn stored(pool: &sqlx::PgPool) -> Vec<(String, HashMap<String, String>)> {
    let rows: Vec<(String, sqlx::types::Json<HashMap<String, String>>)> =
        sqlx::query_as("SELECT name, labels FROM peerings ORDER BY name")
            .fetch_all(pool)
            .await
            .expect("peerings");
    rows.into_iter().map(|(n, l)| (n, l.0)).collect()
}

fn create(request_id: &str) -> CreatePeeringRequest {
    CreatePeeringRequest {
        peering: Some(Peering {
            name: "p1".into(),
            local_vpc: "vpc-1".into(),
            remote_vpc: "vpc-2".into(),
            ..Default::default()
        }),
        request_id: request_id.into(),
        ..Default::default()
    }
}

fn relabel(request_id: &str, value: &str) -> UpdatePeeringRequest {
    UpdatePeeringRequest {
        peering: Some(Peering {
            name: "p1".into(),
            labels: HashMap::from([("team".into(), value.into())]),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["labels".into()],
        }),
        request_id: request_id.into(),
        ..Default::default()
    }
}

fn with_deadline<M>(message: M) -> tonic::Request<M> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(SHORT);
    req
}

/// vpc-1 and vpc-2 in NB; with `peered`, peering p1 of them stored.
async fn start(peered: bool) -> (TestPeerd, PeeringServiceClient<Channel>, sqlx::PgPool) {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    let mut c = t.client().await;
    if peered {
        c.create_peering(create("")).await.expect("p1");
    }
    let pool = sqlx::PgPool::connect(&t.db.url).await.expect("connect");
    (t, c, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_past_its_deadline_at_a_held_vpc_lock_stops_waiting_in_postgres() {
    let (t, mut c, pool) = start(false).await;
    let locker = Store::connect_lazy(&t.db.url).expect("store");
    let held = locker
        .peering_create_begin(&["vpc-1"], None)
        .await
        .expect("lock vpc-1");

    let status = c
        .create_peering(with_deadline(create("r1")))
        .await
        .expect_err("vpc-1 is locked past the deadline");
    assert_names_vpcs(&status, &["vpc-1", "vpc-2"]);
    no_lock_waiters(&pool).await;
    assert!(stored(&pool).await.is_empty());

    drop(held);
    let p = c
        .create_peering(create("r1"))
        .await
        .expect("the retry, the lock free")
        .into_inner();
    assert_eq!(p.name, "p1");
    assert_eq!(stored(&pool).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_past_its_deadline_at_a_held_vpc_lock_stops_waiting_in_postgres() {
    let (t, mut c, pool) = start(true).await;
    let locker = Store::connect_lazy(&t.db.url).expect("store");
    let held = locker
        .peering_create_begin(&["vpc-2"], None)
        .await
        .expect("lock vpc-2");

    let status = c
        .update_peering(with_deadline(relabel("u1", "a")))
        .await
        .expect_err("vpc-2 is locked past the deadline");
    assert_names_vpcs(&status, &["vpc-1", "vpc-2"]);
    no_lock_waiters(&pool).await;
    assert!(stored(&pool).await[0].1.is_empty(), "no label stored");

    drop(held);
    let p = c
        .update_peering(relabel("u1", "a"))
        .await
        .expect("the retry, the lock free")
        .into_inner();
    assert_eq!(p.labels["team"], "a");
    assert_eq!(stored(&pool).await[0].1["team"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_past_their_deadline_at_a_held_lock_leave_the_pool_usable() {
    // More calls than the pool's 16 connections, each waiting at the lock until its
    // deadline: without the bound in Postgres, every connection stays at the lock after
    // its call ended, and a read waits for one (then UNAVAILABLE).
    let (t, c, _pool) = start(true).await;
    let locker = Store::connect_lazy(&t.db.url).expect("store");
    let held = locker
        .peering_create_begin(&["vpc-1"], None)
        .await
        .expect("lock vpc-1");

    let calls: Vec<_> = (0..20)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move {
                c.update_peering(with_deadline(relabel(&format!("u{i}"), "b")))
                    .await
            })
        })
        .collect();
    for call in calls {
        let status = call.await.expect("task").expect_err("past its deadline");
        // Twenty answers at once on a loaded machine: one may reach its client after the
        // client's own timer (CANCELLED there); the code itself is the tests' above.
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
    }
    let mut c = c.clone();
    let p = c
        .get_peering(GetPeeringRequest { name: "p1".into() })
        .await
        .expect("a read while the lock is still held")
        .into_inner();
    assert!(p.labels.is_empty(), "{p:?}");
    drop(held);
}

#[tokio::test]
async fn the_store_names_the_vpcs_of_a_lock_wait_ended_by_the_deadline() {
    let db = crate::support::pg::TestDb::create().await;
    let store = Store::connect_lazy(&db.url).expect("store");
    store.migrate().await.expect("migrate");
    let locker = Store::connect_lazy(&db.url).expect("store");
    let _held = locker
        .peering_create_begin(&["vpc-2"], None)
        .await
        .expect("lock vpc-2");
    let deadline = std::time::Instant::now() + Duration::from_millis(100);
    let call = tokio::spawn(async move {
        store
            .peering_create_begin(&["vpc-1", "vpc-2"], Some(deadline))
            .await
            .err()
    });
    wait_until_async("the lock wait ended", PROMPT, || async {
        call.is_finished()
    })
    .await
    .expect("ended in Postgres while the lock is still held");
    match call.await.expect("task") {
        Some(StoreError::LockBusy { vpcs, source }) => {
            assert_eq!(vpcs, ["vpc-1", "vpc-2"]);
            // Postgres's own error is kept for the logs.
            let code = source.as_database_error().and_then(|e| e.code());
            assert_eq!(code.as_deref(), Some("55P03"), "{source:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// The backend holding the advisory lock a session of this database waits for.
async fn holder_of_awaited_lock(pool: &sqlx::PgPool) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT h.pid FROM pg_locks w JOIN pg_locks h \
           ON h.locktype = 'advisory' AND h.granted AND h.database = w.database \
          AND h.classid = w.classid AND h.objid = w.objid AND h.objsubid = w.objsubid \
         WHERE w.locktype = 'advisory' AND NOT w.granted \
           AND w.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_optional(pool)
    .await
    .expect("pg_locks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_deadline_bounds_all_the_lock_waits_of_a_call_together() {
    // vpc-1 and vpc-2 are locked by two sessions. The create waits for the first of its
    // locks a good part of its budget, gets it, then waits for the second: that wait has
    // only what is left, so Postgres ends it before the deadline (the answer names the
    // VPCs). Were each wait bounded by the whole budget, the second would outlast the
    // deadline, and the handler's timer would answer without naming them.
    const BUDGET: Duration = Duration::from_secs(3);
    let (t, mut c, pool) = start(false).await;
    let (one, two) = (
        Store::connect_lazy(&t.db.url).expect("store"),
        Store::connect_lazy(&t.db.url).expect("store"),
    );
    let _first = one
        .peering_create_begin(&["vpc-1"], None)
        .await
        .expect("lock vpc-1");
    let _second = two
        .peering_create_begin(&["vpc-2"], None)
        .await
        .expect("lock vpc-2");

    let sent = Instant::now();
    let call = tokio::spawn(async move {
        let mut req = tonic::Request::new(create("r1"));
        req.set_timeout(BUDGET);
        c.create_peering(req).await
    });
    // A third of the budget spent at the first lock: a clock condition, on purpose (what is
    // tested is how the rest of the budget is spent).
    let holder = wait_until_async(
        "the create has waited at its first lock for a third of its budget",
        PROMPT,
        || async {
            let h = holder_of_awaited_lock(&pool).await;
            h.filter(|_| sent.elapsed() >= BUDGET / 3)
        },
    )
    .await
    .expect("the create waits at a lock");
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .fetch_one(&pool)
        .await
        .expect("end the first holder");
    assert!(ended);
    let status = call
        .await
        .expect("task")
        .expect_err("vpc-2 is locked past the deadline");
    assert_names_vpcs(&status, &["vpc-1", "vpc-2"]);
    assert!(stored(&pool).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tighter_lock_timeout_of_the_database_is_kept_and_not_told_as_the_deadline() {
    let db = crate::support::pg::TestDb::create().await;
    Store::connect_lazy(&db.url)
        .expect("store")
        .migrate()
        .await
        .expect("migrate");
    let locker = Store::connect_lazy(&db.url).expect("store");
    let _held = locker
        .peering_create_begin(&["vpc-1"], None)
        .await
        .expect("lock vpc-1");
    // The operator's setting, for the sessions opened from now on (the store's are lazy).
    let admin = sqlx::PgPool::connect(&db.url).await.expect("connect");
    sqlx::query(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET lock_timeout = ''200ms''', \
         current_database()); END $$",
    )
    .execute(&admin)
    .await
    .expect("lock_timeout");
    let store = Store::connect_lazy(&db.url).expect("store");
    // A deadline far beyond the test's patience: only the database's setting ends the wait.
    let deadline = Instant::now() + Duration::from_secs(600);
    let call = tokio::spawn(async move {
        store
            .peering_create_begin(&["vpc-1"], Some(deadline))
            .await
            .err()
    });
    wait_until_async(
        "the wait ended at the database's lock_timeout",
        PROMPT,
        || async { call.is_finished() },
    )
    .await
    .expect("ended by the database's lock_timeout, the deadline far off");
    match call.await.expect("task") {
        Some(StoreError::LockTimeout(_)) => {}
        other => panic!("contention, not the deadline: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_accept_past_its_deadline_at_a_held_vpc_lock_stops_waiting_in_postgres() {
    use crate::authz::{create, Setup, TEAM_A, TEAM_B};
    let s = Setup::start().await;
    let mut a = s.client(TEAM_A).await;
    let mut b = s.client(TEAM_B).await;
    a.create_peering(create("a-b", "team-a-1", "team-b-1"))
        .await
        .expect("a request towards team-b");
    let pool = sqlx::PgPool::connect(&s.t.db.url).await.expect("connect");
    let locker = Store::connect_lazy(&s.t.db.url).expect("store");
    let held = locker
        .peering_create_begin(&["team-b-1"], None)
        .await
        .expect("lock team-b-1");
    let accept = || AcceptPeeringRequest {
        name: "a-b".into(),
        ..Default::default()
    };

    let status = b
        .accept_peering(with_deadline(accept()))
        .await
        .expect_err("team-b-1 is locked past the deadline");
    assert_names_vpcs(&status, &["team-a-1", "team-b-1"]);
    no_lock_waiters(&pool).await;
    let state: String = sqlx::query_scalar("SELECT state FROM peerings WHERE name = 'a-b'")
        .fetch_one(&pool)
        .await
        .expect("state");
    assert_eq!(state, "pending_acceptance", "nothing changed");

    drop(held);
    b.accept_peering(accept())
        .await
        .expect("accepted, the lock free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_past_its_deadline_at_a_held_row_lock_stops_waiting_in_postgres_too() {
    // The VPC locks are free; p1's row is locked elsewhere (a later wait of the update's
    // transaction, its `FOR UPDATE`): that wait ends in Postgres by the deadline too.
    let (t, mut c, pool) = start(true).await;
    t.converge().await; // the worker's status write is done: it does not wait for the row
    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM peerings WHERE name = 'p1' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("lock p1's row");

    let status = c
        .update_peering(with_deadline(relabel("u1", "a")))
        .await
        .expect_err("p1's row is locked past the deadline");
    // Postgres (bounded until the deadline itself: the store's test
    // `later_waits_are_bounded_until_the_deadline_not_by_the_vpc_locks_bound` shows the bound)
    // or the handler's timer first: either way the call was stopped.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{status:?}"
    );
    no_lock_waiters(&pool).await;
    holder.rollback().await.expect("rollback");
    let p = c
        .update_peering(relabel("u1", "a"))
        .await
        .expect("the retry, the row free")
        .into_inner();
    assert_eq!(p.labels["team"], "a");
}
