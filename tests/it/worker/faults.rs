//! Faults: ovn-peerd, the NB server or Postgres killed mid-work; two replicas on one database.
//! After each: converged, no duplicate rows, no peering lost.

use std::collections::BTreeSet;
use std::time::Duration;

use ovn_peerd::store::PeeringState;
use sqlx::PgPool;

use super::{count_in_state, eventually, insert_sql, pool, record, store, wait_state};
use crate::support::nb::NbServer;
use crate::support::nbrows::NbRows;
use crate::support::peerd::{Options, TestPeerd};
use crate::support::peerd_process::PeerdProcess;
use crate::support::pg::{free_port, PgCluster, TestDb};
use crate::support::vpc::{add_subnet, create_vpc, next_mac};

/// A hub VPC (10.0.0.0/16) and `n` spokes (10.100.0.0/24, 10.100.1.0/24, ...), made with one
/// `ovn-nbctl` call.
fn hub_and_spokes(nb: &NbServer, n: usize) {
    let mut args: Vec<String> = vec!["lr-add".into(), "hub".into()];
    let mut add = |cmd: Vec<String>| {
        args.push("--".into());
        args.extend(cmd);
    };
    add(vec![
        "lrp-add".into(),
        "hub".into(),
        "hub-s0".into(),
        next_mac(),
        "10.0.0.1/16".into(),
    ]);
    for i in 0..n {
        let vpc = spoke(i);
        add(vec!["lr-add".into(), vpc.clone()]);
        add(vec![
            "lrp-add".into(),
            vpc.clone(),
            format!("{vpc}-s0"),
            next_mac(),
            format!("10.{}.{}.1/24", 100 + i / 256, i % 256),
        ]);
    }
    nb.nbctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

fn spoke(i: usize) -> String {
    format!("spoke-{i}")
}

/// Link `i`'s two addresses: 169.254.x.y/30.
fn link(i: usize) -> (String, String) {
    let base = i * 4;
    let (a, b) = (base / 256, base % 256);
    (
        format!("169.254.{a}.{}/30", b + 1),
        format!("169.254.{a}.{}/30", b + 2),
    )
}

async fn insert_spoke_peering(pool: &PgPool, i: usize) {
    let (l, r) = link(i);
    insert_sql(pool, &format!("p{i}"), "hub", &spoke(i), &l, &r).await;
}

/// NB holds exactly the rows of peerings p0..p{n}: one port per side, one route per side, no
/// duplicates; every stored peering active at its generation.
async fn assert_hub_converged(nb: &NbServer, pool: &PgPool, n: usize) {
    let rows = NbRows::read(nb);
    assert_eq!(rows.duplicate_routes(), vec![], "duplicate routes");
    let names = rows.owned_port_names();
    assert_eq!(names.len(), 2 * n, "ports of ours");
    for i in 0..n {
        assert!(names.contains(&format!("hub-{}", spoke(i))), "port of p{i}");
        assert!(names.contains(&format!("{}-hub", spoke(i))), "port of p{i}");
    }
    assert_eq!(rows.owned_ports_of("hub").len(), n);
    assert_eq!(rows.owned_routes_of("hub").len(), n);
    assert_eq!(
        rows.owned_count(),
        4 * n,
        "no row of ours beyond ports and routes"
    );
    let not_active: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT name, state, generation, observed_generation FROM peerings \
         WHERE state <> 'active' OR observed_generation <> generation",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(not_active, vec![]);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM peerings")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(stored, n as i64, "no peering lost");
}

/// Peerings that own at least one row in NB (by their `ovn-peerd:peering` marker).
fn peerings_in_nb(rows: &NbRows) -> BTreeSet<String> {
    rows.ports
        .values()
        .map(|p| &p.external_ids)
        .chain(rows.routes.values().map(|r| &r.external_ids))
        .filter(|ids| ids.get("ovn-peerd:owner").map(String::as_str) == Some("ovn-peerd"))
        .filter_map(|ids| ids.get("ovn-peerd:peering").cloned())
        .collect()
}

/// Peerings Postgres calls ACTIVE.
async fn active_names(pool: &PgPool) -> BTreeSet<String> {
    sqlx::query_scalar("SELECT name FROM peerings WHERE state = 'active'")
        .fetch_all(pool)
        .await
        .expect("active peerings")
        .into_iter()
        .collect()
}

async fn wait_all_active(pool: &PgPool, n: usize, timeout: Duration) {
    eventually(&format!("{n} peerings active"), timeout, || async {
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM peerings WHERE state = 'active' \
             AND observed_generation = generation",
        )
        .fetch_one(pool)
        .await
        .ok()?;
        (active == n as i64).then_some(())
    })
    .await;
}

#[tokio::test]
async fn kill9_of_ovn_peerd_mid_batch_then_restart_converges_without_duplicates() {
    const N: usize = 300;
    let db = TestDb::create().await;
    let nb = NbServer::start();
    hub_and_spokes(&nb, N);
    let mut first = PeerdProcess::start(&db.url, &nb.remote());
    let pool = pool(&db.url).await;
    // Aim at the window between an NB commit and the status write that follows it, and
    // hold it open: the worker is stopped while the desired state arrives (one transaction)
    // and while the test takes an EXCLUSIVE lock on `peerings` (reads pass, writes wait);
    // resumed, it reads, writes NB, and blocks on its status write. NB (read first) then
    // holds rows of peerings that Postgres (read after) does not call ACTIVE.
    first.signal(libc::SIGSTOP);
    let mut tx = pool.begin().await.unwrap();
    for i in 0..N {
        let (l, r) = link(i);
        sqlx::query(
            "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4) \
             VALUES ($1, 'hub', $2, $3::inet, $4::inet)",
        )
        .bind(format!("p{i}"))
        .bind(spoke(i))
        .bind(l)
        .bind(r)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let mut statuses_held = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE peerings IN EXCLUSIVE MODE")
        .execute(&mut *statuses_held)
        .await
        .unwrap();
    first.signal(libc::SIGCONT);
    eventually(
        "NB holding rows of peerings not ACTIVE in Postgres",
        Duration::from_secs(60),
        || {
            let (pool, nb) = (pool.clone(), &nb);
            async move {
                let in_nb = peerings_in_nb(&NbRows::read(nb));
                let active = active_names(&pool).await;
                in_nb.difference(&active).next().map(|_| ())
            }
        },
    )
    .await;
    first.kill9();
    statuses_held.rollback().await.unwrap();
    // Proof the kill landed in the window: with the process dead, nothing writes any more.
    let rows_at_kill = NbRows::read(&nb);
    let active_at_kill = active_names(&pool).await;
    let ahead: BTreeSet<String> = peerings_in_nb(&rows_at_kill)
        .difference(&active_at_kill)
        .cloned()
        .collect();
    assert!(
        !ahead.is_empty(),
        "killed outside the window: every peering with rows in NB is ACTIVE"
    );
    assert!(active_at_kill.len() < N);
    assert_eq!(rows_at_kill.duplicate_routes(), vec![]);
    eprintln!(
        "killed with {} of {N} active, {} peerings with rows in NB but not ACTIVE",
        active_at_kill.len(),
        ahead.len()
    );

    let _second = PeerdProcess::start(&db.url, &nb.remote());
    wait_all_active(&pool, N, Duration::from_secs(120)).await;
    assert_hub_converged(&nb, &pool, N).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_nb_server_while_creating_converges_without_duplicates() {
    const N: usize = 60;
    const BEFORE: usize = N / 2;
    let mut t = TestPeerd::start_with(Options {
        worker: true,
        ..Options::default()
    })
    .await;
    hub_and_spokes(&t.nb, N);
    let pool = pool(&t.db.url).await;
    // The first half arrives while NB is up; the NB server dies while the worker converges it.
    let inserter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..BEFORE {
                insert_spoke_peering(&pool, i).await;
            }
        })
    };
    eventually("some peerings active", Duration::from_secs(30), || {
        let pool = pool.clone();
        async move { (count_in_state(&pool, PeeringState::Active).await > 0).then_some(()) }
    })
    .await;
    t.nb.kill9();
    // The second half is stored while NB is down: accepted, and left PENDING (not FAILED,
    // not ACTIVE) while the worker's passes fail and back off.
    for i in BEFORE..N {
        insert_spoke_peering(&pool, i).await;
    }
    let during: Vec<(String, String)> =
        sqlx::query_as("SELECT name, state FROM peerings WHERE name = ANY($1) ORDER BY name")
            .bind((BEFORE..N).map(|i| format!("p{i}")).collect::<Vec<_>>())
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(during.len(), N - BEFORE, "stored while NB is down");
    assert!(
        during.iter().all(|(_, state)| state == "pending"),
        "{during:?}"
    );
    t.nb.restart();
    inserter.await.unwrap();
    wait_all_active(&pool, N, Duration::from_secs(60)).await;
    assert_hub_converged(&t.nb, &pool, N).await;
    // And nothing left to do.
    let outcome = t.converge().await;
    assert_eq!((outcome.rows_written, outcome.transactions), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_recovers_from_a_postgres_restart() {
    let mut cluster = PgCluster::start();
    wait_accepting(&cluster.admin_url()).await;
    let db = TestDb::create_in(&cluster.admin_url()).await;
    let nb = NbServer::start();
    create_vpc(&nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&nb, "vpc-2", &["10.2.0.1/24"]);
    create_vpc(&nb, "vpc-3", &["10.3.0.1/24"]);
    // A process of its own: it keeps running (and is observed through /metrics) while the
    // test blocks on stopping and starting Postgres.
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let _peerd =
        PeerdProcess::start_with_args(&db.url, &nb.remote(), &["--metrics-listen", &metrics_addr]);
    let s = store(&db.url);
    insert_sql(
        &pool(&db.url).await,
        "p12",
        "vpc-1",
        "vpc-2",
        "169.254.0.1/30",
        "169.254.0.2/30",
    )
    .await;
    wait_state(&s, "p12", PeeringState::Active, Duration::from_secs(10)).await;
    assert_eq!(writer_locks(&pool(&db.url).await).await, 1);
    gauge_becomes(metrics_port, "ovn_peerd_writer_lock_held", 1.0).await;

    cluster.kill();
    // While Postgres is down the service notices it (health probe, lost writer lock) and
    // keeps running: only a live process can report this.
    gauge_becomes(metrics_port, "ovn_peerd_postgres_up", 0.0).await;
    gauge_becomes(metrics_port, "ovn_peerd_writer_lock_held", 0.0).await;
    // NB changes while Postgres is down: passes fail (no desired state) and back off.
    add_subnet(&nb, "vpc-2", "vpc-2-s1", "10.22.0.1/24");
    cluster.restart();
    wait_accepting(&cluster.admin_url()).await;

    // A change made right after the restart: the worker's listener and lock have reconnected.
    let after = pool(&db.url).await;
    insert_sql(
        &after,
        "p13",
        "vpc-1",
        "vpc-3",
        "169.254.0.5/30",
        "169.254.0.6/30",
    )
    .await;
    wait_state(&s, "p13", PeeringState::Active, Duration::from_secs(30)).await;
    eventually(
        "the route to the subnet added while Postgres was down",
        Duration::from_secs(10),
        || async {
            NbRows::read(&nb)
                .owned_routes_of("vpc-1")
                .iter()
                .any(|r| r.0 == "10.22.0.0/24")
                .then_some(())
        },
    )
    .await;
    eventually(
        "the writer lock held again",
        Duration::from_secs(10),
        || async { (writer_locks(&after).await == 1).then_some(()) },
    )
    .await;
    gauge_becomes(metrics_port, "ovn_peerd_postgres_up", 1.0).await;
    // The outage failed no peering: p12 stayed ACTIVE at its generation.
    let p12 = record(&s, "p12").await;
    assert_eq!(
        (p12.state, p12.observed_generation),
        (PeeringState::Active, p12.generation)
    );
    // Event-driven again (not only the retry after failures): a later change converges.
    insert_sql(
        &after,
        "p23",
        "vpc-2",
        "vpc-3",
        "169.254.0.9/30",
        "169.254.0.10/30",
    )
    .await;
    wait_state(&s, "p23", PeeringState::Active, Duration::from_secs(10)).await;
    assert_eq!(
        count_in_state(&after, PeeringState::Failed).await,
        0,
        "no peering failed"
    );
}

/// Polls `/metrics` on `port` until the unlabelled gauge `name` has `value`.
async fn gauge_becomes(port: u16, name: &str, value: f64) {
    eventually(
        &format!("{name} = {value} on /metrics"),
        Duration::from_secs(20),
        || async move { (scrape_gauge(port, name) == Some(value)).then_some(()) },
    )
    .await;
}

/// One unlabelled sample from `/metrics` (HTTP/1.0: a plain body).
fn scrape_gauge(port: u16, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    raw.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until Postgres accepts connections (its port opens before it is out of recovery).
async fn wait_accepting(url: &str) {
    use sqlx::Connection;
    eventually(
        "postgres accepting connections",
        Duration::from_secs(30),
        || async { sqlx::PgConnection::connect(url).await.ok().map(|_| ()) },
    )
    .await;
}

/// Holders of ovn-peerd's writer lock (advisory key 0x6f766e7065657264) in this database.
async fn writer_locks(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND classid = x'6f766e70'::int::oid AND objid = x'65657264'::int::oid AND objsubid = 1",
    )
    .fetch_one(pool)
    .await
    .expect("pg_locks")
}

#[tokio::test]
async fn two_replicas_one_writer_and_failover_when_it_dies() {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    hub_and_spokes(&nb, 3);
    let pool = pool(&db.url).await;
    let mut a = PeerdProcess::start(&db.url, &nb.remote());
    let mut b = PeerdProcess::start(&db.url, &nb.remote());
    eventually(
        "one replica holds the writer lock",
        Duration::from_secs(15),
        || async {
            (writer_locks(&pool).await == 1 && (a.holds_writer_lock() || b.holds_writer_lock()))
                .then_some(())
        },
    )
    .await;
    insert_spoke_peering(&pool, 0).await;
    wait_state(
        &store(&db.url),
        "p0",
        PeeringState::Active,
        Duration::from_secs(10),
    )
    .await;
    // Exactly one took the lock, and only it ran passes.
    assert!(a.holds_writer_lock() != b.holds_writer_lock());
    let (holder, standby) = if a.holds_writer_lock() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    // The holder logs its pass after writing the status that made p0 ACTIVE: wait for the line.
    eventually("the holder logs its pass", Duration::from_secs(10), || {
        let logged = holder.log().contains("reconciled");
        async move { logged.then_some(()) }
    })
    .await;
    assert!(!standby.log().contains("reconciled"), "{}", standby.log());
    assert!(standby.log().contains("standing by"));

    holder.kill9();
    insert_spoke_peering(&pool, 1).await;
    wait_state(
        &store(&db.url),
        "p1",
        PeeringState::Active,
        Duration::from_secs(15),
    )
    .await;
    assert!(standby.holds_writer_lock());
    assert!(standby.is_running());
    assert_eq!(writer_locks(&pool).await, 1);
    insert_spoke_peering(&pool, 2).await;
    wait_all_active(&pool, 3, Duration::from_secs(10)).await;
    assert_hub_converged(&nb, &pool, 3).await;
}
