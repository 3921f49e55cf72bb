//! Phase (10), `--large N` (issue 14, item 6; not in `--quick`, not by default): N disjoint
//! peerings (VPC 2k-1 with 2k) on 2N routers, seeded through the bench's raw client in transactions of 5,000 (`nb::seed_vpcs`). N - [`SAMPLES`]
//! peerings are inserted by SQL (all on the same link, 169.254.0.1/30: links are unique per
//! VPC), converged by the worker to the raw monitor; then [`SAMPLES`] more through
//! CreatePeering one at a time (request → the monitor saw the 4 rows); then ovn-peerd
//! restarts: time to SERVING (Postgres, NB in sync), to the first full pass, its duration
//! (`ovn_peerd_reconciler_pass_seconds`), NB transactions sent (target none), RSS steady and
//! after the restart, the store's query times, and the CPU of every process.

use std::path::Path;
use std::time::{Duration, Instant};

use ovn_peerd_test_support::pg::PgCluster;
use serde_json::Value;

use crate::args::Args;
use crate::peerd::{create_request, db_query_means, wait_passes, Peerd};
use crate::restart::SETTLE;
use crate::support::monitor::Monitor;
use crate::support::nb::{self, NbServer};
use crate::support::proc::{cpu_seconds, cpu_tree_seconds, file_len, footprint, Footprint};
use crate::support::{self, Summary};

/// Peerings created through the API, one at a time, after the N - SAMPLES stored ones.
pub const SAMPLES: usize = 50;
/// Every wait of this phase (it runs once, on a shared machine).
const TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Default, serde::Serialize)]
pub struct LargeResults {
    pub peerings: usize,
    pub routers: usize,
    pub seed_s: f64,
    pub first_ready_nb_s: f64,
    pub sql_insert_s: f64,
    pub sql_converged_s: f64,
    pub sql_converged_per_s: f64,
    pub sql_all_active_s: f64,
    pub api_create_to_nb: Summary,
    pub footprint_converged: Footprint,
    pub footprint_steady: Footprint,
    pub passes_before_restart: f64,
    pub pass_mean_before_restart_s: f64,
    pub restart_ready_postgres_s: f64,
    pub restart_ready_nb_s: f64,
    pub restart_first_pass_done_s: f64,
    pub restart_first_pass_s: f64,
    pub restart_nb_transactions: f64,
    pub restart_nb_file_growth_bytes: u64,
    pub restart_nb_rows_changed: usize,
    pub footprint_after_restart: Footprint,
    /// [`SETTLE`] after the first pass after the restart.
    pub footprint_restart_settled: Footprint,
    /// What the heap holds (`ovn_peerd_heap_bytes{state="in_use"}`) at the steady and the
    /// settled footprints: live bytes, against the resident ones.
    pub heap_in_use_steady_mb: f64,
    pub heap_in_use_restart_settled_mb: f64,
    pub db_query_mean_ms_before_restart: Value,
    pub db_query_mean_ms_after_restart: Value,
    /// CPU seconds over the whole phase.
    pub cpu_ovsdb_server_s: f64,
    pub cpu_postgres_s: f64,
    pub cpu_monitor_s: f64,
}

pub async fn run(args: &Args, root: &Path, pg: &PgCluster, n: usize) -> LargeResults {
    assert!(n > SAMPLES, "--large must exceed {SAMPLES}");
    let dir = root.join("large");
    let mut out = LargeResults {
        peerings: n,
        routers: 2 * n,
        ..Default::default()
    };
    let nbs = NbServer::start_in(&dir);
    let nb_pid = nbs.pid().expect("NB runs");
    let monitor = Monitor::start(&nbs.remote()).await;
    let t = Instant::now();
    nb::seed_vpcs(&monitor.client, 2 * n).await;
    out.seed_s = t.elapsed().as_secs_f64();
    println!("[large] {} routers seeded in {:.1} s", 2 * n, out.seed_s);

    let db = pg.create_database("bench_large").await;
    let peerd = Peerd::spawn(args, &dir, "large-1", &db, &nbs.remote());
    out.first_ready_nb_s = ready(&peerd).await.1.as_secs_f64();
    wait_passes(&peerd, 1.0).await;
    println!(
        "[large] ovn-peerd in sync with the seed after {:.1} s",
        out.first_ready_nb_s
    );

    let stored = n - SAMPLES;
    println!("[large] {stored} disjoint peerings inserted by SQL, converged by the worker");
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db).await.expect("pg");
    let t0 = Instant::now();
    sqlx::query(
        "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4) \
         SELECT 'p-' || k, 'vpc-' || (2 * k + 1), 'vpc-' || (2 * k + 2), \
                '169.254.0.1/30', '169.254.0.2/30' \
         FROM generate_series(0, $1 - 1) AS k",
    )
    .bind(stored as i64)
    .execute(&mut conn)
    .await
    .expect("insert peerings");
    out.sql_insert_s = t0.elapsed().as_secs_f64();
    println!("[large] SQL insert took {:.1} s", out.sql_insert_s);
    let seen = monitor.wait_counts(2 * stored, 2 * stored, TIMEOUT).await;
    out.sql_converged_s = (seen - t0).as_secs_f64();
    out.sql_converged_per_s = stored as f64 / out.sql_converged_s;
    out.sql_all_active_s = all_active(&mut conn, stored, t0).await.as_secs_f64();
    out.footprint_converged = footprint(peerd.pid());
    println!(
        "[large] NB converged {:.1} s after the insert began ({:.0}/s), all ACTIVE at {:.1} s; RSS {:.0} MB",
        out.sql_converged_s, out.sql_converged_per_s, out.sql_all_active_s, out.footprint_converged.rss_mb
    );

    println!("[large] {SAMPLES} more through CreatePeering, one at a time");
    let mut client = peerd.clients(1).await.remove(0);
    let mut samples = Vec::with_capacity(SAMPLES);
    for j in 0..SAMPLES {
        let k = stored + j;
        let name = format!("p-{k}");
        tokio::time::sleep(args.gap).await;
        let t = Instant::now();
        client
            .create_peering(create_request(name.clone(), 2 * k + 1, 2 * k + 2))
            .await
            .expect("CreatePeering");
        let seen = monitor.wait_peering(&name, 4, TIMEOUT).await;
        samples.push(seen.saturating_duration_since(t));
    }
    out.api_create_to_nb = Summary::of(&samples);
    monitor.wait_counts(2 * n, 2 * n, TIMEOUT).await;
    // Idle a moment (confirming passes, the heap trims after them), then the steady footprint
    // and the pass times so far.
    tokio::time::sleep(SETTLE).await;
    out.footprint_steady = footprint(peerd.pid());
    let metrics = peerd.scrape().await;
    std::fs::write(dir.join("metrics-large-1.txt"), &metrics).ok();
    out.heap_in_use_steady_mb = heap_in_use_mb(&metrics);
    out.passes_before_restart =
        support::metric_sum(&metrics, "ovn_peerd_reconciler_pass_seconds_count");
    out.pass_mean_before_restart_s =
        support::metric_sum(&metrics, "ovn_peerd_reconciler_pass_seconds_sum")
            / out.passes_before_restart.max(1.0);
    out.db_query_mean_ms_before_restart = db_query_means(&metrics);

    println!("[large] restart");
    let mut peerd = peerd;
    assert!(
        peerd.proc.terminate(Duration::from_secs(60)),
        "ovn-peerd did not stop on SIGTERM"
    );
    let db_len = file_len(&nbs.db_file());
    let counts_before = monitor.counts();
    let peerd = Peerd::spawn(args, &dir, "large-2", &db, &nbs.remote());
    let (ready_pg, ready_nb) = ready(&peerd).await;
    out.restart_ready_postgres_s = ready_pg.as_secs_f64();
    out.restart_ready_nb_s = ready_nb.as_secs_f64();
    out.restart_first_pass_done_s = wait_passes(&peerd, 1.0).await.as_secs_f64();
    out.footprint_after_restart = footprint(peerd.pid());
    // Anything the first passes write shows up within a moment; the steady footprint after.
    tokio::time::sleep(SETTLE).await;
    out.footprint_restart_settled = footprint(peerd.pid());
    let metrics = peerd.scrape().await;
    std::fs::write(dir.join("metrics-large-2.txt"), &metrics).ok();
    out.heap_in_use_restart_settled_mb = heap_in_use_mb(&metrics);
    let passes = support::metric_sum(&metrics, "ovn_peerd_reconciler_pass_seconds_count");
    // The first pass alone when only one ran; else the mean of those so far.
    out.restart_first_pass_s =
        support::metric_sum(&metrics, "ovn_peerd_reconciler_pass_seconds_sum") / passes.max(1.0);
    out.restart_nb_transactions =
        support::metric_sum(&metrics, "ovn_peerd_ovsdb_transaction_seconds_count");
    out.restart_nb_file_growth_bytes = file_len(&nbs.db_file()).saturating_sub(db_len);
    let after = monitor.counts();
    out.restart_nb_rows_changed =
        (after.peer_ports + after.routes).abs_diff(counts_before.peer_ports + counts_before.routes);
    out.db_query_mean_ms_after_restart = db_query_means(&metrics);
    out.cpu_ovsdb_server_s = cpu_seconds(nb_pid);
    out.cpu_postgres_s = cpu_tree_seconds(pg.pid());
    out.cpu_monitor_s = monitor.cpu_s();
    let mut peerd = peerd;
    peerd.proc.terminate(Duration::from_secs(60));
    println!("[large] {out:#?}");
    out
}

fn heap_in_use_mb(metrics: &str) -> f64 {
    support::metric_sum_with(metrics, "ovn_peerd_heap_bytes", "state=\"in_use\"") / 1e6
}

/// [`Peerd::wait_ready`] without its 120 s limit: at 200,000 routers the first sync may take
/// longer on a loaded machine.
async fn ready(peerd: &Peerd) -> (Duration, Duration) {
    peerd.wait_ready_within(TIMEOUT).await
}

/// Time from `t0` until Postgres holds `n` ACTIVE peerings.
async fn all_active(conn: &mut sqlx::PgConnection, n: usize, t0: Instant) -> Duration {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let active: i64 =
            sqlx::query_scalar("SELECT count(*) FROM peerings WHERE state = 'active'")
                .fetch_one(&mut *conn)
                .await
                .expect("count");
        if active as usize >= n {
            return t0.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "only {active} of {n} peerings ACTIVE"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
