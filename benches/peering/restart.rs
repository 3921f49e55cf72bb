//! Phases (4) and (5): `--scale` peerings inserted by SQL and converged by the worker, then a
//! restart at that scale: time to SERVING (Postgres, NB in sync), to the first full pass, NB
//! transactions sent (the target is none), a new peering created right after, RSS and CPU; and
//! the floor of the NB sync: `ovsdb-server` sending the same dump to a raw socket client.

use std::path::Path;
use std::time::{Duration, Instant};

use ovn_peerd_test_support::pg::PgCluster;

use crate::args::Args;
use crate::peerd::{create_request, wait_all_active, wait_passes, Peerd, CONVERGE_TIMEOUT};
use crate::support::monitor::Monitor;
use crate::support::nb::{self, NbServer};
use crate::support::proc::{footprint, Footprint};
use crate::support::{self};

#[derive(Debug, Default, serde::Serialize)]
pub struct ScaleResults {
    pub peerings: usize,
    pub sql_insert_s: f64,
    pub initial_converged_s: f64,
    pub initial_converged_per_s: f64,
    pub initial_all_active_s: f64,
    pub footprint_converged: Footprint,
    /// Steady: [`SETTLE`] after converging, its last heap trim done.
    pub footprint_idle: Footprint,
    /// What the heap holds then (`ovn_peerd_heap_bytes{state="in_use"}` after the last trim;
    /// 0 from a build without it): the live part of the RSS.
    pub heap_in_use_idle_mb: f64,
    pub restart_ready_postgres_s: f64,
    pub restart_ready_nb_s: f64,
    /// `ovsdb-server` sending the same initial dump (the same tables and columns, one
    /// `monitor_cond`) to a raw socket client that only finds the reply's end: the floor of
    /// `restart_ready_nb_s`, measured in the same run.
    pub raw_dump_s: f64,
    pub raw_dump_bytes: usize,
    pub restart_first_pass_s: f64,
    /// A peering created through the API as soon as the restarted process serves with NB in
    /// sync: process start → its rows seen by the independent monitor.
    pub restart_new_peering_in_nb_s: f64,
    /// NB transactions committed after the restart, besides the new peering's (the writer
    /// fence is one: it rewrites no peering row).
    pub restart_nb_transactions: f64,
    pub restart_nb_file_growth_bytes: u64,
    pub restart_nb_rows_changed: usize,
    pub footprint_after_restart_pass: Footprint,
    /// Steady after the restart: [`SETTLE`] after the first pass.
    pub footprint_restart_settled: Footprint,
    pub heap_in_use_restart_settled_mb: f64,
    pub restart_first_pass_cpu_s: f64,
}

/// How long the process is left alone before its steady footprint is read: past the worker's
/// heap trim gap ([`ovn_peerd::heap::TRIM_GAP`]), so a trim deferred by an earlier one has run.
pub const SETTLE: Duration = Duration::from_secs(12);

/// MB of live heap the process reported after its last trim.
async fn heap_in_use_mb(peerd: &Peerd) -> f64 {
    let metrics = peerd.scrape().await;
    support::metric_sum_with(&metrics, "ovn_peerd_heap_bytes", "state=\"in_use\"") / 1e6
}

pub async fn run(args: &Args, root: &Path, pg: &PgCluster, m: usize) -> ScaleResults {
    let dir = root.join("scale");
    let nbs = NbServer::start_in(&dir);
    let monitor = Monitor::start(&nbs.remote()).await;
    // Two more VPCs than the peerings use: the peering created right after the restart.
    nb::seed_vpcs(&monitor.client, 2 * m + 2).await;
    let db = pg.create_database("bench_scale").await;
    let peerd = Peerd::spawn(args, &dir, "scale-1", &db, &nbs.remote());
    peerd.wait_ready().await;
    wait_passes(&peerd, 1.0).await;
    let mut out = ScaleResults {
        peerings: m,
        ..Default::default()
    };

    println!("[scale] {m} peerings inserted by SQL, converged by the worker");
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db).await.expect("pg");
    let t0 = Instant::now();
    sqlx::query(
        "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4) \
         SELECT 'p-' || k, 'vpc-' || (2 * k + 1), 'vpc-' || (2 * k + 2), \
                set_masklen('169.254.0.0'::inet + (4 * k + 1), 30), \
                set_masklen('169.254.0.0'::inet + (4 * k + 2), 30) \
         FROM generate_series(0, $1 - 1) AS k",
    )
    .bind(m as i64)
    .execute(&mut conn)
    .await
    .expect("insert peerings");
    out.sql_insert_s = t0.elapsed().as_secs_f64();
    let seen = monitor.wait_counts(2 * m, 2 * m, CONVERGE_TIMEOUT).await;
    out.initial_converged_s = (seen - t0).as_secs_f64();
    out.initial_converged_per_s = m as f64 / out.initial_converged_s;
    out.initial_all_active_s = wait_all_active(&db, m, t0).await.as_secs_f64();
    out.footprint_converged = footprint(peerd.pid());
    println!(
        "[scale] NB converged in {:.3} s, all ACTIVE at {:.3} s; RSS {:.1} MB",
        out.initial_converged_s, out.initial_all_active_s, out.footprint_converged.rss_mb
    );
    // Let the confirming passes and the heap trims after them finish: the steady footprint.
    tokio::time::sleep(SETTLE).await;
    out.footprint_idle = footprint(peerd.pid());
    out.heap_in_use_idle_mb = heap_in_use_mb(&peerd).await;

    let save = args.keep.then(|| dir.join("raw-dump.json"));
    let (raw, bytes) = raw_dump(&nbs.sock(), save.as_deref()).await;
    out.raw_dump_s = raw.as_secs_f64();
    out.raw_dump_bytes = bytes;
    println!(
        "[scale] raw initial dump: {:.3} s, {:.1} MB; RSS idle {:.1} MB (heap in use {:.1} MB)",
        out.raw_dump_s,
        bytes as f64 / 1e6,
        out.footprint_idle.rss_mb,
        out.heap_in_use_idle_mb
    );

    println!("[scale] restart");
    let mut peerd = peerd;
    assert!(
        peerd.proc.terminate(Duration::from_secs(30)),
        "ovn-peerd did not stop on SIGTERM"
    );
    let db_len = support::proc::file_len(&nbs.db_file());
    let updates_before = monitor.counts();
    let peerd = Peerd::spawn(args, &dir, "scale-2", &db, &nbs.remote());
    let (ready_pg, ready_nb) = peerd.wait_ready().await;
    // CreatePeering needs the NB replica in sync: sent as soon as it is.
    let mut client = peerd.clients(1).await.remove(0);
    client
        .create_peering(create_request("p-new".into(), 2 * m + 1, 2 * m + 2))
        .await
        .expect("create after the restart");
    out.restart_ready_postgres_s = ready_pg.as_secs_f64();
    out.restart_ready_nb_s = ready_nb.as_secs_f64();
    out.restart_first_pass_s = wait_passes(&peerd, 1.0).await.as_secs_f64();
    // Two ports and two routes.
    let seen = monitor.wait_peering("p-new", 4, CONVERGE_TIMEOUT).await;
    out.restart_new_peering_in_nb_s = (seen - peerd.started).as_secs_f64();
    out.restart_first_pass_cpu_s = support::proc::cpu_seconds(peerd.pid());
    out.footprint_after_restart_pass = footprint(peerd.pid());
    // Anything the first passes write shows up within a moment; the steady footprint after.
    tokio::time::sleep(SETTLE).await;
    out.footprint_restart_settled = footprint(peerd.pid());
    let metrics = peerd.scrape().await;
    out.heap_in_use_restart_settled_mb =
        support::metric_sum_with(&metrics, "ovn_peerd_heap_bytes", "state=\"in_use\"") / 1e6;
    std::fs::write(dir.join("metrics-restart.txt"), &metrics).ok();
    out.restart_nb_transactions = support::metric_sum_with(
        &metrics,
        "ovn_peerd_ovsdb_transaction_seconds_count",
        "outcome=\"ok\"",
    ) - 1.0;
    out.restart_nb_file_growth_bytes =
        support::proc::file_len(&nbs.db_file()).saturating_sub(db_len);
    let after = monitor.counts();
    out.restart_nb_rows_changed = (after.peer_ports + after.routes)
        .abs_diff(updates_before.peer_ports + updates_before.routes + 4);
    println!(
        "[scale] restart: NB in sync {:.3} s ({:.2}x the raw dump), first pass {:.3} s, \
         new peering in NB {:.3} s, other NB transactions {}, RSS {:.1} MB, \
         settled {:.1} MB (heap in use {:.1} MB)",
        out.restart_ready_nb_s,
        out.restart_ready_nb_s / out.raw_dump_s,
        out.restart_first_pass_s,
        out.restart_new_peering_in_nb_s,
        out.restart_nb_transactions,
        out.footprint_after_restart_pass.rss_mb,
        out.footprint_restart_settled.rss_mb,
        out.heap_in_use_restart_settled_mb
    );
    let mut peerd = peerd;
    peerd.proc.terminate(Duration::from_secs(30));
    out
}

/// Connects to `sock`, asks for the monitor ovn-peerd asks for (`monitor_cond`, its tables
/// and columns) and reads until the reply is complete, without parsing it (the frame splitter
/// only finds its end): what `ovsdb-server` itself takes to send the dump. Returns the time
/// from connecting to the reply's last byte, and its size. The reply goes to `save` if given
/// (for `examples/replica_footprint.rs`).
async fn raw_dump(sock: &Path, save: Option<&Path>) -> (Duration, usize) {
    use ovn_peerd::ovsdb::jsonrpc::FrameDecoder;
    use ovn_peerd::ovsdb::Table;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let t0 = Instant::now();
    let mut s = tokio::net::UnixStream::connect(sock)
        .await
        .expect("NB socket");
    let requests: serde_json::Map<String, serde_json::Value> = Table::ALL
        .iter()
        .map(|t| {
            let cols: Vec<&str> = t.columns().iter().map(|c| c.name).collect();
            (
                t.name().to_owned(),
                serde_json::json!([{ "columns": cols }]),
            )
        })
        .collect();
    let req = serde_json::json!({"method": "monitor_cond", "id": 1,
        "params": ["OVN_Northbound", "raw", requests]});
    s.write_all(&serde_json::to_vec(&req).unwrap())
        .await
        .expect("send");
    let mut dec = FrameDecoder::new(1 << 31);
    loop {
        if let Some(frame) = dec.next_frame().expect("frame") {
            // An `echo` from the server cannot come first: the dump is its first answer.
            let took = t0.elapsed();
            if let Some(path) = save {
                std::fs::write(path, &frame).expect("save the raw dump");
            }
            return (took, frame.len());
        }
        let n = s.read_buf(dec.buffer()).await.expect("read");
        assert!(n > 0, "NB closed the raw dump connection");
    }
}
