//! The writer lock's liveness and the NB fence (issue 10, "a writer that knows it lost"), and
//! the deployment's identity in Postgres.
//!
//! Replicas are `Reconciler`s of their own (own Postgres pool, own NB client, own lock session)
//! in this process, on a multi-threaded runtime where one runs in the background. A lock session
//! is cut with `pg_terminate_backend` from another connection; NB is read with `ovn-nbctl`.

use std::time::Duration;

use ovn_peerd::reconciler::fence::{self, Fence};
use ovn_peerd::reconciler::{self, PassError, Reconciler, LOCK_APPLICATION_NAME};
use ovn_peerd::store::{PeeringState, Store};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{create, eventually, explicit, pool, record, store, two_vpcs, wait_state};
use crate::support::nb::NbServer;
use crate::support::nbrows::NbRows;
use crate::support::peerd::Options;
use crate::support::pg::TestDb;
use crate::support::vpc::create_vpc;

/// The epoch NB holds under this deployment's fence key, read with `ovn-nbctl`.
fn nb_epoch(nb: &NbServer, deployment_id: Uuid) -> Option<i64> {
    let key = fence::epoch_key(deployment_id);
    let out = nb.nbctl(&[
        "--if-exists",
        "get",
        "NB_Global",
        ".",
        &format!("external_ids:\"{key}\""),
    ]);
    let v = out.trim().trim_matches('"');
    (!v.is_empty()).then(|| v.parse().expect("a numeric epoch"))
}

async fn pg_epoch(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT writer_epoch FROM deployment")
        .fetch_one(pool)
        .await
        .expect("writer_epoch")
}

/// The backend holding the writer lock in this database, found by its session's name.
async fn lock_holder(pool: &PgPool) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(LOCK_APPLICATION_NAME)
    .fetch_optional(pool)
    .await
    .expect("pg_locks")
}

/// Cuts a lock session from another connection, as a partition or an operator would.
async fn cut(pool: &PgPool, pid: i32) {
    let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(pool)
        .await
        .expect("pg_terminate_backend");
    assert!(done, "backend {pid} terminated");
}

async fn wait_epoch(r: &Reconciler, want: Option<i64>, what: &str) {
    eventually(what, Duration::from_secs(20), || async {
        (r.writer_epoch() == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_lock_session_stops_the_holder_and_another_replica_takes_over() {
    let t = two_vpcs(Options::default()).await;
    create_vpc(&t.nb, "vpc-3", &["10.3.0.1/24"]);
    let pool = pool(&t.db.url).await;
    let s = store(&t.db.url);
    let (a, b) = (t.reconciler().await, t.reconciler().await);
    let id = a.deployment_id();
    let shutdown = CancellationToken::new();
    let run_a = tokio::spawn(reconciler::run_with_writer_lock(
        a.clone(),
        shutdown.clone(),
    ));
    wait_epoch(&a, Some(1), "replica A holds the lock at epoch 1").await;
    let run_b = tokio::spawn(reconciler::run_with_writer_lock(
        b.clone(),
        shutdown.clone(),
    ));
    assert_eq!(nb_epoch(&t.nb, id), Some(1));
    create(
        &t,
        explicit("p12", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    wait_state(&s, "p12", PeeringState::Active, Duration::from_secs(10)).await;

    let a_session = lock_holder(&pool).await.expect("A's lock session");
    cut(&pool, a_session).await;
    // Nothing wakes A's worker here (no desired change, no NB change): only its heartbeat can
    // tell it that it lost.
    wait_epoch(&a, None, "replica A stopped its worker").await;
    wait_epoch(&b, Some(2), "replica B took over at epoch 2").await;
    assert_eq!(nb_epoch(&t.nb, id), Some(2));
    assert_eq!(pg_epoch(&pool).await, 2);
    let b_session = lock_holder(&pool).await.expect("B's lock session");
    assert_ne!(b_session, a_session);

    // B writes (behind its own fence); A stays a standby.
    create(
        &t,
        explicit("p13", "vpc-1", "vpc-3", "169.254.0.5/30", "169.254.0.6/30"),
    )
    .await;
    wait_state(&s, "p13", PeeringState::Active, Duration::from_secs(10)).await;
    assert_eq!(NbRows::read(&t.nb).owned_ports_of("vpc-3").len(), 1);
    assert_eq!(a.writer_epoch(), None);
    assert_eq!(record(&s, "p12").await.state, PeeringState::Active);

    shutdown.cancel();
    run_a.await.unwrap();
    run_b.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_holder_cannot_land_an_nb_write_after_another_took_over() {
    let t = two_vpcs(Options::default()).await;
    create_vpc(&t.nb, "vpc-3", &["10.3.0.1/24"]);
    let pool = pool(&t.db.url).await;
    let s = store(&t.db.url);
    let (a, b) = (t.reconciler().await, t.reconciler().await);
    let id = a.deployment_id();
    let shutdown = CancellationToken::new();

    // A takes the lock (epoch 1) and writes p12 behind its fence.
    let lock_a = a.take_writer_lock(&shutdown).await.expect("lock for A");
    assert_eq!((a.writer_epoch(), nb_epoch(&t.nb, id)), (Some(1), Some(1)));
    create(
        &t,
        explicit("p12", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    let outcome = a.run_until_idle(5).await.expect("A converges p12");
    assert_eq!(outcome.active, 1);

    // A's lock session is cut, but A is not told (no heartbeat runs here): it still believes
    // it holds the lock, as a partitioned holder does until its heartbeat fires. B takes over.
    cut(&pool, lock_holder(&pool).await.expect("A's lock session")).await;
    let lock_b = b.take_writer_lock(&shutdown).await.expect("lock for B");
    assert_eq!((b.writer_epoch(), nb_epoch(&t.nb, id)), (Some(2), Some(2)));
    assert_eq!(a.writer_epoch(), Some(1), "A does not know yet");

    // A desired change; the stale holder's pass tries to write it and is refused by NB.
    create(
        &t,
        explicit("p13", "vpc-1", "vpc-3", "169.254.0.5/30", "169.254.0.6/30"),
    )
    .await;
    let before = NbRows::read(&t.nb);
    let err = a.run_once().await.expect_err("A's pass must not land");
    assert!(matches!(err, PassError::Fenced), "{err:?}");
    let after = NbRows::read(&t.nb);
    assert_eq!(
        format!("{:?}", after),
        format!("{:?}", before),
        "NB unchanged"
    );
    assert!(after.owned_ports_of("vpc-3").is_empty());
    // The fence is not the peerings' failure.
    let p13 = record(&s, "p13").await;
    assert_eq!(
        (p13.state, p13.state_message.as_str()),
        (PeeringState::Pending, "")
    );
    let p12 = record(&s, "p12").await;
    assert_eq!(
        (p12.state, p12.state_message.as_str()),
        (PeeringState::Active, "")
    );

    // Nor can the stale holder put its older epoch back into NB.
    let nb = ovn_peerd::ovsdb::Client::start(
        ovn_peerd::ovsdb::ClientConfig::new(&t.config.ovn_nb_db, ovn_peerd::startup::NB_DATABASE)
            .unwrap(),
    )
    .unwrap();
    let stale = fence::install(&nb, &Fence::new(id, 1)).await;
    assert_eq!(stale.unwrap(), fence::Installed::Superseded { theirs: 2 });
    assert_eq!(nb_epoch(&t.nb, id), Some(2));

    // The new holder converges it.
    b.run_until_idle(5).await.expect("B converges p13");
    wait_state(&s, "p13", PeeringState::Active, Duration::from_secs(5)).await;
    assert_eq!(NbRows::read(&t.nb).owned_ports_of("vpc-3").len(), 1);

    drop(lock_a);
    lock_b.release().await;
    nb.shutdown();

    // Postgres restored from a backup taken while A held the lock: its epoch is behind NB's,
    // and its next one (2) is B's. The next holder takes one past NB's instead: never shared.
    sqlx::query("UPDATE deployment SET writer_epoch = 1")
        .execute(&pool)
        .await
        .unwrap();
    let c = t.reconciler().await;
    let lock_c = c.take_writer_lock(&shutdown).await.expect("lock for C");
    assert_eq!((c.writer_epoch(), nb_epoch(&t.nb, id)), (Some(3), Some(3)));
    assert_eq!(pg_epoch(&pool).await, 3);
    lock_c.release().await;
}

#[tokio::test]
async fn the_deployment_id_survives_a_restart_and_differs_between_databases() {
    let db = TestDb::create().await;
    let first = Store::connect_lazy(&db.url).unwrap();
    first.migrate().await.expect("migrate");
    let id = first.deployment_get().await.expect("deployment").id;
    assert!(!id.is_nil());

    // A restart: a new process, a new pool, migrations run again.
    let again = Store::connect_lazy(&db.url).unwrap();
    again.migrate().await.expect("migrate again");
    assert_eq!(again.deployment_get().await.unwrap().id, id);

    let other_db = TestDb::create().await;
    let other = Store::connect_lazy(&other_db.url).unwrap();
    other.migrate().await.expect("migrate");
    assert_ne!(other.deployment_get().await.unwrap().id, id);

    // One row, always: a second one is refused.
    let extra = sqlx::query("INSERT INTO deployment (singleton) VALUES (true)")
        .execute(&pool(&db.url).await)
        .await;
    assert!(extra.is_err());
}
