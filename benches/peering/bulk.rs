//! Phases (1), (3) and (6), on one ovn-peerd over one NB: (1) bulk: N peerings (VPC 2k-1 with
//! 2k) through CreatePeering by C concurrent clients, first request → the monitor saw all rows;
//! then [`crate::latency`] and [`crate::list_routes`] on the same server. With `--watchers`,
//! WatchPeerings streams are open and read through (1) and (3).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovn_peerd_test_support::pg::PgCluster;
use serde_json::Value;

use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::WatchPeeringsRequest;
use tonic::transport::Channel;

use crate::args::Args;
use crate::peerd::{
    create_request, db_query_means, start_perf, stop_perf, wait_all_active, Peerd, CONVERGE_TIMEOUT,
};
use crate::support::monitor::Monitor;
use crate::support::nb::{self, NbServer};
use crate::support::proc::{footprint, CpuSplit, Footprint};
use crate::support::{self, Summary};

#[derive(Debug, Default, serde::Serialize)]
pub struct PeerdResults {
    pub bulk_converged_s: f64,
    pub bulk_converged_per_s: f64,
    pub bulk_all_active_s: f64,
    pub api_requests_per_s: f64,
    pub api_create: Summary,
    pub api_errors: usize,
    pub low_load_rpc: Summary,
    /// A gRPC health check before each low-load create: the transport's floor.
    pub low_load_health: Summary,
    pub low_load_convergence: Summary,
    pub low_load_end_to_end: Summary,
    pub list_routes_page: Summary,
    pub list_routes_full: Summary,
    pub list_routes_count: usize,
    pub footprint_after_bulk: Footprint,
    /// CPU seconds per process during the bulk phase (first request → all ACTIVE).
    pub cpu_bulk: CpuSplit,
    /// CPU seconds per process during the one-at-a-time phase.
    pub cpu_low_load: CpuSplit,
    pub db_query_mean_ms: Value,
    pub reconciler_passes: f64,
    pub reconciler_pass_mean_ms: f64,
    /// Phases (8) churn and (9) overload.
    pub load: crate::load::LoadResults,
    /// `--watchers`: streams open through (1) and (3), and the events they read in all.
    pub watchers: usize,
    pub watcher_events: usize,
}

pub async fn run(args: &Args, root: &Path, pg: &PgCluster) -> PeerdResults {
    let dir = root.join("peerd");
    let nbs = NbServer::start_in(&dir);
    let monitor = Monitor::start(&nbs.remote()).await;
    let load_base = 2 * args.n + 2 * args.samples;
    nb::seed_vpcs(&monitor.client, load_base + crate::load::vpcs_needed()).await;
    let db = pg.create_database("bench_peerd").await;
    let peerd = Peerd::spawn(args, &dir, "bulk", &db, &nbs.remote());
    peerd.wait_ready().await;
    let clients = peerd.clients(args.c).await;
    let mut out = PeerdResults::default();
    let events = Arc::new(AtomicUsize::new(0));
    let watchers = open_watchers(&clients[0], args.watchers, &events).await;

    // (1) bulk
    println!("[peerd] bulk: {} peerings, {} clients", args.n, args.c);
    let next = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(args.n)));
    let errors = Arc::new(AtomicUsize::new(0));
    let perf = args.perf.then(|| start_perf(&dir, peerd.pid()));
    let t0 = Instant::now();
    let nb_pid = nbs.pid().expect("NB runs");
    let cpu = |since| CpuSplit::now(peerd.pid(), pg.pid(), nb_pid, since);
    let cpu0 = cpu(t0);
    let mut tasks = Vec::new();
    for mut client in clients.clone() {
        let (next, lat, errors, n) = (next.clone(), lat.clone(), errors.clone(), args.n);
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return;
                }
                let t = Instant::now();
                let r = client
                    .create_peering(create_request(format!("p-{k}"), 2 * k + 1, 2 * k + 2))
                    .await;
                let d = t.elapsed();
                match r {
                    Ok(_) => lat.lock().unwrap().push(d),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("CreatePeering p-{k}: {e}");
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let api_done = t0.elapsed();
    let seen = monitor
        .wait_counts(2 * args.n, 2 * args.n, CONVERGE_TIMEOUT)
        .await;
    let converged = seen - t0;
    out.api_errors = errors.load(Ordering::Relaxed);
    out.api_create = Summary::of(&lat.lock().unwrap());
    out.api_requests_per_s = args.n as f64 / api_done.as_secs_f64();
    out.bulk_converged_s = converged.as_secs_f64();
    out.bulk_converged_per_s = args.n as f64 / converged.as_secs_f64();
    out.bulk_all_active_s = wait_all_active(&db, args.n, t0).await.as_secs_f64();
    out.cpu_bulk = cpu(t0).minus(cpu0);
    if let Some(mut perf) = perf {
        stop_perf(&mut perf);
    }
    out.footprint_after_bulk = footprint(peerd.pid());
    println!(
        "[peerd] bulk: API done in {:.3} s, NB converged in {:.3} s ({:.0}/s), all ACTIVE in Postgres at {:.3} s",
        api_done.as_secs_f64(),
        converged.as_secs_f64(),
        out.bulk_converged_per_s,
        out.bulk_all_active_s
    );

    let channel = peerd.channel().await;
    crate::latency::run(args, &channel, &monitor, &cpu, t0, &mut out).await;
    out.watchers = watchers.len();
    for w in watchers {
        w.abort();
    }
    out.watcher_events = events.load(Ordering::Relaxed);
    if !args.create_only {
        crate::list_routes::run(&clients[0], &monitor, &mut out).await;
        let pids = crate::overload::Pids {
            peerd: peerd.pid(),
            postgres: pg.pid(),
            nb: nb_pid,
        };
        crate::load::run(&peerd, pids, &monitor, load_base, &mut out.load).await;
    }

    let metrics = peerd.scrape().await;
    std::fs::write(dir.join("metrics-bulk.txt"), &metrics).ok();
    out.db_query_mean_ms = db_query_means(&metrics);
    out.reconciler_passes = support::metric_sum(&metrics, "ovn_peerd_reconciler_passes_total");
    let pass_n = support::metric_sum(&metrics, "ovn_peerd_reconciler_pass_seconds_count");
    out.reconciler_pass_mean_ms = 1e3
        * support::metric_sum(&metrics, "ovn_peerd_reconciler_pass_seconds_sum")
        / pass_n.max(1.0);
    let mut peerd = peerd;
    peerd.proc.terminate(Duration::from_secs(10));
    out
}

/// `--watchers`: that many WatchPeerings streams over every VPC, each read by its own task
/// (aborted after phase (3)), counting the events they read into `events`.
async fn open_watchers(
    client: &PeeringServiceClient<Channel>,
    n: usize,
    events: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = client
            .clone()
            .watch_peerings(WatchPeeringsRequest::default())
            .await
            .expect("WatchPeerings")
            .into_inner();
        let events = events.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(_)) = stream.message().await {
                events.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tasks
}
