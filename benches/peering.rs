//! End-to-end peering benchmark (issue 6): ovn-peerd (the release binary, as a child process)
//! against its baselines, each on a fresh NB `ovsdb-server`, all to the same end point: an
//! independent NB monitor (our OVSDB client on its own connection, not ovn-peerd's cache)
//! has seen every port and route.
//!
//! ```sh
//! cargo bench --bench peering                      # N=1000, C=32, 10k restart step
//! cargo bench --bench peering -- --quick           # smoke run: N=100, no 10k step
//! cargo bench --bench peering -- --n 2000 --c 16 --scale 20000 --samples 300
//! ```
//! Flags have env fallbacks: `PEERING_BENCH_N`, `_C`, `_SAMPLES`, `_SCALE`, `_QUICK=1`.
//! Needs `ovsdb-server`, `ovsdb-tool`, `ovn-nbctl` (ovn-central) and Postgres
//! (`scripts/install-deps`). Starts and stops its own Postgres cluster, NB servers, nbctl
//! daemon and ovn-peerd in a temp dir (`--keep` keeps it, with every log). Writes
//! `target/bench/peering.json`.
//!
//! Phases: (1) bulk: N peerings (VPC 2k-1 with 2k) through CreatePeering by C concurrent
//! clients, first request → monitor saw all rows; (2) baselines on identical fresh NBs:
//! an `ovn-nbctl` process per peering, one `ovn-nbctl` daemon, one OVSDB transaction;
//! (3) one peering at a time: RPC latency and RPC answered → rows seen; (4)+(5) restart at
//! `--scale` peerings (inserted by SQL, converged by the worker): time to SERVING, to the
//! first full pass, NB transactions sent, RSS and CPU; (6) ListRoutes over 1,000 routes.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::{CreatePeeringRequest, ListRoutesRequest, Peering};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use support::monitor::Monitor;
use support::nb::{self, NbServer};
use support::pg::PgCluster;
use support::proc::{footprint, CpuSplit, Footprint, Owned};
use support::Summary;

const PEERD: &str = env!("CARGO_BIN_EXE_ovn-peerd");
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
struct Args {
    n: usize,
    c: usize,
    samples: usize,
    scale: Option<usize>,
    /// Peerings for the process-per-peering baseline (it is slow; its rate is per peering).
    nbctl_process_n: usize,
    /// Pause between low-load samples, so each starts with an idle worker.
    gap: Duration,
    keep: bool,
    skip_baselines: bool,
    /// `perf record -g` ovn-peerd during the bulk phase (into the temp dir; implies --keep).
    perf: bool,
    json: PathBuf,
}

impl Args {
    fn parse() -> Args {
        let env = |k: &str| std::env::var(format!("PEERING_BENCH_{k}")).ok();
        let num = |k: &str, d: usize| env(k).and_then(|v| v.parse().ok()).unwrap_or(d);
        let mut quick = env("QUICK").is_some_and(|v| v == "1");
        let mut a = Args {
            n: num("N", 1000),
            c: num("C", 32),
            samples: num("SAMPLES", 200),
            scale: Some(num("SCALE", 10_000)),
            nbctl_process_n: num("NBCTL_PROCESS_N", 200),
            gap: Duration::from_millis(num("GAP_MS", 20) as u64),
            keep: false,
            skip_baselines: false,
            perf: env("PERF").is_some_and(|v| v == "1"),
            json: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/peering.json"),
        };
        let mut n_given = env("N").is_some();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut val = |name: &str| -> usize {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{name} needs a number"))
            };
            match arg.as_str() {
                "--bench" => {} // passed by `cargo bench`
                "--quick" => quick = true,
                "--keep" => a.keep = true,
                "--skip-baselines" => a.skip_baselines = true,
                "--perf" => a.perf = true,
                "--n" => {
                    a.n = val("--n");
                    n_given = true;
                }
                "--c" => a.c = val("--c"),
                "--samples" => a.samples = val("--samples"),
                "--scale" => a.scale = Some(val("--scale")),
                "--no-scale" => a.scale = None,
                "--nbctl-process-n" => a.nbctl_process_n = val("--nbctl-process-n"),
                "--gap-ms" => a.gap = Duration::from_millis(val("--gap-ms") as u64),
                "--json" => a.json = PathBuf::from(it.next().expect("--json needs a path")),
                "-h" | "--help" => {
                    println!(
                        "{}",
                        include_str!("peering.rs")
                            .lines()
                            .take(16)
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                    std::process::exit(0);
                }
                other => panic!("unknown argument {other:?} (see --help)"),
            }
        }
        if quick {
            if !n_given {
                a.n = 100;
            }
            a.samples = a.samples.min(50);
            a.nbctl_process_n = a.nbctl_process_n.min(50);
            a.scale = None;
        }
        a.nbctl_process_n = a.nbctl_process_n.min(a.n);
        a.keep |= a.perf;
        a
    }
}

/// ovn-peerd as a child process.
struct Peerd {
    proc: Owned,
    addr: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
    started: Instant,
}

impl Peerd {
    fn spawn(dir: &Path, tag: &str, database_url: &str, nb_remote: &str) -> Peerd {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
            .parse()
            .unwrap();
        let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
            .parse()
            .unwrap();
        let log = std::fs::File::create(dir.join(format!("ovn-peerd-{tag}.log"))).expect("log");
        let started = Instant::now();
        let child = Command::new(PEERD)
            .arg(format!("--listen={addr}"))
            .arg(format!("--database-url={database_url}"))
            .arg(format!("--ovn-nb-db={nb_remote}"))
            .arg(format!("--metrics-listen={metrics}"))
            .env(
                "RUST_LOG",
                std::env::var("PEERING_BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ovn-peerd");
        Peerd {
            proc: Owned::new("ovn-peerd", child),
            addr,
            metrics,
            started,
        }
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Polls health until `""` (Postgres) and `ovnpeerd.v1.OvnNorthbound` (NB cache in sync)
    /// are SERVING; returns the time of each since process start.
    async fn wait_ready(&self) -> (Duration, Duration) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let channel = loop {
            if let Ok(ch) = Channel::from_shared(self.url()).unwrap().connect().await {
                break ch;
            }
            assert!(Instant::now() < deadline, "ovn-peerd never listened");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let mut health = HealthClient::new(channel);
        let mut times = [None, None];
        while times.iter().any(Option::is_none) {
            for (i, service) in ["", "ovnpeerd.v1.OvnNorthbound"].iter().enumerate() {
                if times[i].is_some() {
                    continue;
                }
                let r = health
                    .check(HealthCheckRequest {
                        service: service.to_string(),
                    })
                    .await;
                if r.is_ok_and(|r| r.get_ref().status == ServingStatus::Serving as i32) {
                    times[i] = Some(self.started.elapsed());
                }
            }
            assert!(Instant::now() < deadline, "ovn-peerd never became SERVING");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (times[0].unwrap(), times[1].unwrap())
    }

    async fn scrape(&self) -> String {
        support::scrape(self.metrics).await.unwrap_or_default()
    }

    async fn clients(&self, c: usize) -> Vec<PeeringServiceClient<Channel>> {
        let mut v = Vec::with_capacity(c);
        for _ in 0..c {
            let ch = Channel::from_shared(self.url())
                .unwrap()
                .connect()
                .await
                .expect("connect");
            v.push(PeeringServiceClient::new(ch));
        }
        v
    }
}

fn create_request(name: String, a: usize, b: usize) -> CreatePeeringRequest {
    CreatePeeringRequest {
        peering: Some(Peering {
            name,
            local_vpc: nb::vpc(a),
            remote_vpc: nb::vpc(b),
            ..Default::default()
        }),
        request_id: String::new(),
        validate_only: false,
    }
}

/// The low-load VPC pair `j` (after the 2N bulk VPCs).
fn sample_pair(n: usize, j: usize) -> (usize, usize) {
    (2 * n + 2 * j + 1, 2 * n + 2 * j + 2)
}

// ------------------------------------------------------------------ phase 1, 3, 6: ovn-peerd

#[derive(Debug, Default, serde::Serialize)]
struct PeerdResults {
    bulk_converged_s: f64,
    bulk_converged_per_s: f64,
    bulk_all_active_s: f64,
    api_requests_per_s: f64,
    api_create: Summary,
    api_errors: usize,
    low_load_rpc: Summary,
    low_load_convergence: Summary,
    low_load_end_to_end: Summary,
    list_routes_page: Summary,
    list_routes_full: Summary,
    list_routes_count: usize,
    footprint_after_bulk: Footprint,
    /// CPU seconds per process during the bulk phase (first request → all ACTIVE).
    cpu_bulk: CpuSplit,
    /// CPU seconds per process during the one-at-a-time phase.
    cpu_low_load: CpuSplit,
    db_query_mean_ms: Value,
    reconciler_passes: f64,
    reconciler_pass_mean_ms: f64,
}

async fn run_peerd(args: &Args, root: &Path, pg: &PgCluster) -> PeerdResults {
    let dir = root.join("peerd");
    let nbs = NbServer::start(&dir);
    let monitor = Monitor::start(&nbs.remote()).await;
    nb::seed_vpcs(&monitor.client, 2 * args.n + 2 * args.samples).await;
    let db = pg.create_database("bench_peerd").await;
    let peerd = Peerd::spawn(&dir, "bulk", &db, &nbs.remote());
    peerd.wait_ready().await;
    let clients = peerd.clients(args.c).await;
    let mut out = PeerdResults::default();

    // (1) bulk
    println!("[peerd] bulk: {} peerings, {} clients", args.n, args.c);
    let next = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(args.n)));
    let errors = Arc::new(AtomicUsize::new(0));
    let perf = args.perf.then(|| start_perf(&dir, peerd.pid()));
    let t0 = Instant::now();
    let cpu = |since| CpuSplit::now(peerd.pid(), pg.pid(), nbs.pid(), since);
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

    // (3) low load: one at a time
    println!("[peerd] low load: {} peerings one at a time", args.samples);
    let mut client = clients[0].clone();
    let (mut rpc, mut conv, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
    let cpu1 = cpu(t0);
    for j in 0..args.samples {
        tokio::time::sleep(args.gap).await;
        let (a, b) = sample_pair(args.n, j);
        let name = format!("s-{j}");
        let t = Instant::now();
        client
            .create_peering(create_request(name.clone(), a, b))
            .await
            .expect("CreatePeering (low load)");
        let answered = Instant::now();
        let seen = monitor
            .wait_peering(&name, 4, Duration::from_secs(30))
            .await;
        rpc.push(answered - t);
        conv.push(seen.saturating_duration_since(answered));
        e2e.push(seen.saturating_duration_since(t));
    }
    out.cpu_low_load = cpu(t0).minus(cpu1);
    out.low_load_rpc = Summary::of(&rpc);
    out.low_load_convergence = Summary::of(&conv);
    out.low_load_end_to_end = Summary::of(&e2e);

    // (6) ListRoutes over 1,000 foreign routes + ours, pages of 100
    println!("[peerd] ListRoutes: 1000 foreign routes on vpc-1");
    let before = monitor.counts().routes;
    nb::add_foreign_routes(&monitor.client, 1, 1000).await;
    monitor
        .wait_counts(0, before + 1000, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // ovn-peerd's cache + a worker pass
    let (mut pages, mut fulls) = (Vec::new(), Vec::new());
    let mut count = 0;
    while pages.len() < 220 {
        let t_full = Instant::now();
        let (mut token, mut listed) = (String::new(), 0);
        loop {
            let t = Instant::now();
            let r = client
                .list_routes(ListRoutesRequest {
                    vpc: nb::vpc(1),
                    page_size: 100,
                    page_token: token.clone(),
                })
                .await
                .expect("ListRoutes")
                .into_inner();
            pages.push(t.elapsed());
            listed += r.routes.len();
            if r.next_page_token.is_empty() {
                break;
            }
            token = r.next_page_token;
        }
        fulls.push(t_full.elapsed());
        count = listed;
    }
    out.list_routes_page = Summary::of(&pages);
    out.list_routes_full = Summary::of(&fulls);
    out.list_routes_count = count;

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

/// `perf record` of a process until [`stop_perf`]: `perf report -i DIR/perf.data`.
fn start_perf(dir: &Path, pid: u32) -> Owned {
    let child = Command::new("perf")
        .args(["record", "-F", "499", "-g", "-o"])
        .arg(dir.join("perf.data"))
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("perf");
    std::thread::sleep(Duration::from_millis(300));
    Owned::new("perf", child)
}

fn stop_perf(perf: &mut Owned) {
    let _ = Command::new("kill")
        .args(["-INT", &perf.pid().to_string()])
        .status();
    if let Some(mut c) = perf.child.take() {
        let _ = c.wait();
    }
}

/// Mean latency per store operation, from the Prometheus histogram.
fn db_query_means(metrics: &str) -> Value {
    let mut ops = serde_json::Map::new();
    for l in metrics.lines() {
        let Some(rest) = l.strip_prefix("ovn_peerd_db_query_duration_seconds_count{") else {
            continue;
        };
        let Some(op) = rest
            .split("operation=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        else {
            continue;
        };
        let count: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let sum = support::metric_sum_with(
            metrics,
            "ovn_peerd_db_query_duration_seconds_sum",
            &format!("operation=\"{op}\""),
        );
        if count > 0.0 {
            let e = ops
                .entry(op.to_string())
                .or_insert(json!({"count": 0.0, "sum_s": 0.0}));
            e["count"] = json!(e["count"].as_f64().unwrap() + count);
            e["sum_s"] = json!(sum);
        }
    }
    for v in ops.values_mut() {
        let mean = v["sum_s"].as_f64().unwrap() / v["count"].as_f64().unwrap() * 1e3;
        v["mean_ms"] = json!((mean * 1000.0).round() / 1000.0);
    }
    Value::Object(ops)
}

/// Time from `t0` until Postgres holds `n` ACTIVE peerings.
async fn wait_all_active(database_url: &str, n: usize, t0: Instant) -> Duration {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(database_url).await.expect("pg");
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let active: i64 =
            sqlx::query_scalar("SELECT count(*) FROM peerings WHERE state = 'active'")
                .fetch_one(&mut conn)
                .await
                .expect("count");
        if active as usize >= n {
            return t0.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "only {active} of {n} peerings ACTIVE"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ------------------------------------------------------------------ phase 2: baselines

#[derive(Debug, Default, serde::Serialize)]
struct BaselineResults {
    name: &'static str,
    peerings: usize,
    converged_s: f64,
    converged_per_s: f64,
    /// One peering at a time: write issued → monitor saw its four rows.
    low_load_end_to_end: Summary,
}

enum Writer {
    /// A process per peering (`--db=`), or through the daemon (`OVN_NB_DAEMON`).
    Nbctl {
        db: Option<String>,
        daemon: Option<String>,
    },
    Txn(ovn_peerd::ovsdb::Client),
}

impl Writer {
    async fn write(&self, ps: &[nb::Peering]) {
        match self {
            Writer::Nbctl { db, daemon } => {
                for p in ps {
                    let mut cmd = tokio::process::Command::new("ovn-nbctl");
                    if let Some(db) = db {
                        cmd.arg(format!("--db={db}"));
                    }
                    if let Some(d) = daemon {
                        cmd.env("OVN_NB_DAEMON", d);
                    }
                    let out = cmd.args(p.nbctl_args()).output().await.expect("ovn-nbctl");
                    assert!(
                        out.status.success(),
                        "ovn-nbctl failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            Writer::Txn(client) => {
                let mut ops = Vec::with_capacity(ps.len() * 6);
                for p in ps {
                    p.ops(&mut ops);
                }
                client.transact(ops).await.expect("one transaction");
            }
        }
    }
}

async fn run_baseline(
    args: &Args,
    root: &Path,
    name: &'static str,
    peerings: usize,
    samples: usize,
) -> BaselineResults {
    let dir = root.join(name);
    let nbs = NbServer::start(&dir);
    let monitor = Monitor::start(&nbs.remote()).await;
    nb::seed_vpcs(&monitor.client, 2 * args.n + 2 * args.samples).await;
    let mut _daemon: Option<Owned> = None;
    let writer = match name {
        "nbctl-process" => Writer::Nbctl {
            db: Some(nbs.remote()),
            daemon: None,
        },
        "nbctl-daemon" => {
            let (guard, socket) = start_nbctl_daemon(&dir, &nbs.remote());
            _daemon = Some(guard);
            Writer::Nbctl {
                db: None,
                daemon: Some(socket),
            }
        }
        _ => Writer::Txn(nb::client(&nbs.remote()).await),
    };
    let writer = Arc::new(writer);
    println!("[{name}] bulk: {peerings} peerings");
    let all: Vec<nb::Peering> = (0..peerings)
        .map(|k| nb::Peering {
            a: 2 * k + 1,
            b: 2 * k + 2,
            link: k,
        })
        .collect();
    let t0 = Instant::now();
    if let Writer::Txn(_) = &*writer {
        writer.write(&all).await;
    } else {
        // C concurrent writers, like the C gRPC clients.
        let all = Arc::new(all);
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..args.c {
            let (all, next, writer) = (all.clone(), next.clone(), writer.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= all.len() {
                        return;
                    }
                    writer.write(std::slice::from_ref(&all[k])).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let seen = monitor
        .wait_counts(2 * peerings, 2 * peerings, CONVERGE_TIMEOUT)
        .await;
    let converged = seen - t0;
    println!(
        "[{name}] bulk converged in {:.3} s ({:.0}/s)",
        converged.as_secs_f64(),
        peerings as f64 / converged.as_secs_f64()
    );

    let mut e2e = Vec::new();
    for j in 0..samples {
        tokio::time::sleep(args.gap).await;
        let (a, b) = sample_pair(args.n, j);
        let p = nb::Peering {
            a,
            b,
            link: args.n + j,
        };
        let c = monitor.counts();
        let t = Instant::now();
        writer.write(std::slice::from_ref(&p)).await;
        let seen = monitor
            .wait_counts(c.peer_ports + 2, c.routes + 2, Duration::from_secs(30))
            .await;
        e2e.push(seen - t);
    }
    BaselineResults {
        name,
        peerings,
        converged_s: converged.as_secs_f64(),
        converged_per_s: peerings as f64 / converged.as_secs_f64(),
        low_load_end_to_end: Summary::of(&e2e),
    }
}

/// `ovn-nbctl --detach`: prints its control socket; we kill it by the pid in its pidfile.
fn start_nbctl_daemon(dir: &Path, remote: &str) -> (Owned, String) {
    let pidfile = dir.join("nbctl.pid");
    let out = Command::new("ovn-nbctl")
        .arg(format!("--db={remote}"))
        .arg("--detach")
        .arg("--no-chdir")
        .arg(format!("--pidfile={}", pidfile.display()))
        .arg(format!("--log-file={}", dir.join("nbctl.log").display()))
        .arg(format!("--unixctl={}", dir.join("nbctl.ctl").display()))
        .output()
        .expect("ovn-nbctl --detach");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let socket = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("nbctl pidfile")
        .trim()
        .parse()
        .expect("pid");
    // A detached daemon is not our child: hold it through a `kill` on drop.
    (Owned::new("ovn-nbctl daemon", pid_guard(pid)), socket)
}

/// A child process whose drop kills `pid` (`tail --pid` would wait; `sleep` is killed with it).
fn pid_guard(pid: u32) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap 'kill {pid}; exit 0' TERM; while kill -0 {pid} 2>/dev/null; do sleep 1; done"
        ))
        .spawn()
        .expect("sh")
}

// ------------------------------------------------------------------ phase 4, 5: restart at scale

#[derive(Debug, Default, serde::Serialize)]
struct ScaleResults {
    peerings: usize,
    sql_insert_s: f64,
    initial_converged_s: f64,
    initial_converged_per_s: f64,
    initial_all_active_s: f64,
    footprint_converged: Footprint,
    footprint_idle: Footprint,
    restart_ready_postgres_s: f64,
    restart_ready_nb_s: f64,
    restart_first_pass_s: f64,
    restart_nb_transactions: f64,
    restart_nb_file_growth_bytes: u64,
    restart_nb_rows_changed: usize,
    footprint_after_restart_pass: Footprint,
    restart_first_pass_cpu_s: f64,
}

async fn run_scale(root: &Path, pg: &PgCluster, m: usize) -> ScaleResults {
    let dir = root.join("scale");
    let nbs = NbServer::start(&dir);
    let monitor = Monitor::start(&nbs.remote()).await;
    nb::seed_vpcs(&monitor.client, 2 * m).await;
    let db = pg.create_database("bench_scale").await;
    let peerd = Peerd::spawn(&dir, "scale-1", &db, &nbs.remote());
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
    // Let the confirming passes finish, then read the idle footprint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    out.footprint_idle = footprint(peerd.pid());

    println!("[scale] restart");
    let mut peerd = peerd;
    assert!(
        peerd.proc.terminate(Duration::from_secs(30)),
        "ovn-peerd did not stop on SIGTERM"
    );
    let db_len = support::proc::file_len(&nbs.db_file());
    let updates_before = monitor.counts();
    let peerd = Peerd::spawn(&dir, "scale-2", &db, &nbs.remote());
    let (ready_pg, ready_nb) = peerd.wait_ready().await;
    out.restart_ready_postgres_s = ready_pg.as_secs_f64();
    out.restart_ready_nb_s = ready_nb.as_secs_f64();
    out.restart_first_pass_s = wait_passes(&peerd, 1.0).await.as_secs_f64();
    out.restart_first_pass_cpu_s = support::proc::cpu_seconds(peerd.pid());
    out.footprint_after_restart_pass = footprint(peerd.pid());
    // Anything the first passes write shows up within a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = peerd.scrape().await;
    std::fs::write(dir.join("metrics-restart.txt"), &metrics).ok();
    out.restart_nb_transactions =
        support::metric_sum(&metrics, "ovn_peerd_ovsdb_transaction_seconds_count");
    out.restart_nb_file_growth_bytes =
        support::proc::file_len(&nbs.db_file()).saturating_sub(db_len);
    let after = monitor.counts();
    out.restart_nb_rows_changed = (after.peer_ports + after.routes)
        .abs_diff(updates_before.peer_ports + updates_before.routes);
    let mut peerd = peerd;
    peerd.proc.terminate(Duration::from_secs(30));
    out
}

/// Waits until `ovn_peerd_reconciler_passes_total{result="ok"}` reaches `n`; time since start.
async fn wait_passes(peerd: &Peerd, n: f64) -> Duration {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        if let Some(m) = support::scrape(peerd.metrics).await {
            if support::metric_sum_with(&m, "ovn_peerd_reconciler_passes_total", "result=\"ok\"")
                >= n
            {
                return peerd.started.elapsed();
            }
        }
        assert!(Instant::now() < deadline, "no reconciler pass");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ------------------------------------------------------------------ report

fn machine_load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let load_before = machine_load();
    let tmp = tempfile::Builder::new()
        .prefix("peering-bench-")
        .tempdir()
        .expect("temp dir");
    let root = tmp.path().to_path_buf();
    println!(
        "peering bench: N={} C={} samples={} scale={:?} nbctl-process N={} ({} CPUs, load {load_before}); dir {}",
        args.n,
        args.c,
        args.samples,
        args.scale,
        args.nbctl_process_n,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        root.display()
    );
    let pg = PgCluster::start();

    let peerd = run_peerd(&args, &root, &pg).await;
    let (proc_b, daemon_b, txn_b) = if args.skip_baselines {
        Default::default()
    } else {
        (
            run_baseline(
                &args,
                &root,
                "nbctl-process",
                args.nbctl_process_n,
                args.samples.min(50),
            )
            .await,
            run_baseline(&args, &root, "nbctl-daemon", args.n, args.samples).await,
            run_baseline(&args, &root, "one-transaction", args.n, args.samples).await,
        )
    };
    let scale = match args.scale {
        Some(m) => Some(run_scale(&root, &pg, m).await),
        None => None,
    };
    let load_after = machine_load();

    report(
        &args,
        &peerd,
        &[&proc_b, &daemon_b, &txn_b],
        scale.as_ref(),
        &load_before,
        &load_after,
    );
    let doc = json!({
        "args": {"n": args.n, "c": args.c, "samples": args.samples, "scale": args.scale,
                 "nbctl_process_n": args.nbctl_process_n, "gap_ms": args.gap.as_millis() as u64},
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                    "loadavg_before": load_before, "loadavg_after": load_after},
        "ovn_peerd": peerd,
        "baselines": [proc_b, daemon_b, txn_b],
        "scale": scale,
    });
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&doc).unwrap()).expect("write json");
    println!("\nwrote {}", args.json.display());
    if args.keep {
        let kept = tmp.keep();
        println!("kept {} (logs, metrics)", kept.display());
    }
    drop(pg);
}

fn report(
    args: &Args,
    p: &PeerdResults,
    baselines: &[&BaselineResults; 3],
    scale: Option<&ScaleResults>,
    load_before: &str,
    load_after: &str,
) {
    let [proc_b, daemon_b, txn_b] = baselines;
    let ratio = |ours: f64, theirs: f64, higher_is_better: bool| {
        if ours <= 0.0 || theirs <= 0.0 {
            return "-".to_string();
        }
        let r = if higher_is_better {
            ours / theirs
        } else {
            theirs / ours
        };
        format!("{r:.2}x")
    };
    println!(
        "\n{:<46} {:>12} {:>14} {:>9} {:>9} {:>9}",
        "figure", "ovn-peerd", "target", "vs proc", "vs daemon", "vs 1-txn"
    );
    println!("{}", "-".repeat(104));
    let row = |name: &str, v: String, target: &str, r: [String; 3]| {
        println!(
            "{name:<46} {v:>12} {target:>14} {:>9} {:>9} {:>9}",
            r[0], r[1], r[2]
        )
    };
    let none = || ["".to_string(), "".to_string(), "".to_string()];
    row(
        &format!("bulk converged, peerings/s (N={})", args.n),
        format!("{:.0}", p.bulk_converged_per_s),
        ">= 3000",
        [
            ratio(p.bulk_converged_per_s, proc_b.converged_per_s, true),
            ratio(p.bulk_converged_per_s, daemon_b.converged_per_s, true),
            ratio(p.bulk_converged_per_s, txn_b.converged_per_s, true),
        ],
    );
    row(
        "  baseline peerings/s",
        "".into(),
        "",
        [
            format!("{:.0}", proc_b.converged_per_s),
            format!("{:.0}", daemon_b.converged_per_s),
            format!("{:.0}", txn_b.converged_per_s),
        ],
    );
    row(
        "bulk: all ACTIVE in Postgres, s",
        format!("{:.3}", p.bulk_all_active_s),
        "",
        none(),
    );
    row(
        &format!("CreatePeering requests/s (C={})", args.c),
        format!("{:.0}", p.api_requests_per_s),
        "",
        none(),
    );
    row(
        "CreatePeering p50 ms",
        format!("{:.2}", p.api_create.p50_ms),
        "",
        none(),
    );
    row(
        "CreatePeering p99 ms",
        format!("{:.2}", p.api_create.p99_ms),
        "<= 10",
        none(),
    );
    row(
        "CreatePeering errors",
        format!("{}", p.api_errors),
        "0",
        none(),
    );
    let lat = |s: &Summary, f: fn(&Summary) -> f64| {
        [proc_b, daemon_b, txn_b].map(|b| ratio(f(s), f(&b.low_load_end_to_end), false))
    };
    row(
        "low load: RPC p50 / p99 ms",
        format!("{:.2}/{:.2}", p.low_load_rpc.p50_ms, p.low_load_rpc.p99_ms),
        "",
        none(),
    );
    row(
        "low load: convergence p50 ms",
        format!("{:.2}", p.low_load_convergence.p50_ms),
        "<= 5",
        none(),
    );
    row(
        "low load: convergence p99 / max ms",
        format!(
            "{:.2}/{:.1}",
            p.low_load_convergence.p99_ms, p.low_load_convergence.max_ms
        ),
        "<= 25 (p99)",
        none(),
    );
    row(
        "low load: request -> seen p50 ms",
        format!("{:.2}", p.low_load_end_to_end.p50_ms),
        "",
        lat(&p.low_load_end_to_end, |s| s.p50_ms),
    );
    row(
        "low load: request -> seen p99 ms",
        format!("{:.2}", p.low_load_end_to_end.p99_ms),
        "",
        lat(&p.low_load_end_to_end, |s| s.p99_ms),
    );
    row(
        "  baseline write -> seen p50 ms",
        "".into(),
        "",
        [proc_b, daemon_b, txn_b].map(|b| format!("{:.2}", b.low_load_end_to_end.p50_ms)),
    );
    row(
        &format!(
            "ListRoutes page (100 of {}) p50/p99 ms",
            p.list_routes_count
        ),
        format!(
            "{:.2}/{:.2}",
            p.list_routes_page.p50_ms, p.list_routes_page.p99_ms
        ),
        "",
        none(),
    );
    row(
        "ListRoutes all pages p50 ms",
        format!("{:.2}", p.list_routes_full.p50_ms),
        "",
        none(),
    );
    row(
        &format!("RSS / CPU after bulk (N={}) MB / s", args.n),
        format!(
            "{:.1}/{:.2}",
            p.footprint_after_bulk.rss_mb, p.footprint_after_bulk.cpu_s
        ),
        "",
        none(),
    );
    for (label, c) in [("bulk", &p.cpu_bulk), ("low load", &p.cpu_low_load)] {
        row(
            &format!("CPU s {label}: peerd/pg/ovsdb/bench of wall"),
            format!(
                "{:.1}/{:.1}/{:.1}/{:.1} of {:.1}",
                c.ovn_peerd, c.postgres, c.ovsdb_server, c.bench, c.wall
            ),
            "",
            none(),
        );
    }
    row(
        "worker passes / mean pass ms",
        format!(
            "{:.0}/{:.2}",
            p.reconciler_passes, p.reconciler_pass_mean_ms
        ),
        "",
        none(),
    );
    if let Some(s) = scale {
        let m = s.peerings;
        row(
            &format!("[{m}] SQL insert -> NB converged s"),
            format!("{:.3}", s.initial_converged_s),
            "",
            none(),
        );
        row(
            &format!("[{m}] SQL insert -> all ACTIVE s"),
            format!("{:.3}", s.initial_all_active_s),
            "",
            none(),
        );
        row(
            &format!("[{m}] RSS converged / idle MB"),
            format!(
                "{:.1}/{:.1}",
                s.footprint_converged.rss_mb, s.footprint_idle.rss_mb
            ),
            "<= 100",
            none(),
        );
        row(
            &format!("[{m}] CPU s to converge (whole process)"),
            format!("{:.2}", s.footprint_converged.cpu_s),
            "",
            none(),
        );
        row(
            &format!("[{m}] restart: ready (Postgres) s"),
            format!("{:.3}", s.restart_ready_postgres_s),
            "",
            none(),
        );
        row(
            &format!("[{m}] restart: ready (NB in sync) s"),
            format!("{:.3}", s.restart_ready_nb_s),
            "<= 2",
            none(),
        );
        row(
            &format!("[{m}] restart: first full pass s"),
            format!("{:.3}", s.restart_first_pass_s),
            "<= 2",
            none(),
        );
        row(
            &format!("[{m}] restart: NB transactions"),
            format!("{:.0}", s.restart_nb_transactions),
            "0",
            none(),
        );
        row(
            &format!("[{m}] restart: NB file growth bytes"),
            format!("{}", s.restart_nb_file_growth_bytes),
            "0",
            none(),
        );
        row(
            &format!("[{m}] restart: RSS MB / CPU s at first pass"),
            format!(
                "{:.1}/{:.2}",
                s.footprint_after_restart_pass.rss_mb, s.restart_first_pass_cpu_s
            ),
            "<= 100",
            none(),
        );
    }
    println!("{}", "-".repeat(104));
    println!(
        "vs proc = ovn-nbctl process per peering ({} peerings), vs daemon = one ovn-nbctl daemon, vs 1-txn = all rows in one OVSDB transaction;",
        proc_b.peerings
    );
    println!(
        "ratios > 1 mean ovn-peerd is better (throughput ours/theirs, latency theirs/ours). Load average before {load_before}, after {load_after}."
    );
}
