//! ovn-peerd (the release binary) as a child of the bench, and what every phase asks of it:
//! readiness, clients, `/metrics`, requests, `perf`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::{CreatePeeringRequest, Peering};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::args::Args;
use crate::support::nb;
use crate::support::proc::Owned;
use crate::support::{self};

/// How long any phase may wait for NB or Postgres to reach a count.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(600);

/// ovn-peerd as a child process.
pub struct Peerd {
    pub proc: Owned,
    pub addr: std::net::SocketAddr,
    pub metrics: std::net::SocketAddr,
    pub started: Instant,
}

impl Peerd {
    pub fn spawn(args: &Args, dir: &Path, tag: &str, database_url: &str, nb_remote: &str) -> Peerd {
        Self::spawn_with(args, dir, tag, database_url, nb_remote, &[])
    }

    /// [`Peerd::spawn`] with more command-line flags.
    pub fn spawn_with(
        args: &Args,
        dir: &Path,
        tag: &str,
        database_url: &str,
        nb_remote: &str,
        extra: &[&str],
    ) -> Peerd {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
            .parse()
            .unwrap();
        let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
            .parse()
            .unwrap();
        let log = std::fs::File::create(dir.join(format!("ovn-peerd-{tag}.log"))).expect("log");
        let started = Instant::now();
        let proc = Owned::spawn(
            "ovn-peerd",
            Command::new(&args.peerd_bin)
                .arg(format!("--listen={addr}"))
                .arg(format!("--database-url={database_url}"))
                .arg(format!("--ovn-nb-db={nb_remote}"))
                .arg(format!("--metrics-listen={metrics}"))
                .args(extra)
                .env("RUST_LOG", &args.peerd_log)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        Peerd {
            proc,
            addr,
            metrics,
            started,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Polls health until `""` (Postgres) and `ovnpeerd.v1.OvnNorthbound` (NB cache in sync)
    /// are SERVING; returns the time of each since process start.
    pub async fn wait_ready(&self) -> (Duration, Duration) {
        self.wait_ready_within(Duration::from_secs(120)).await
    }

    /// [`Peerd::wait_ready`] with another limit (the large phase's first sync is long).
    pub async fn wait_ready_within(&self, limit: Duration) -> (Duration, Duration) {
        let deadline = Instant::now() + limit;
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

    pub async fn scrape(&self) -> String {
        support::scrape(self.metrics).await.unwrap_or_default()
    }

    pub async fn clients(&self, c: usize) -> Vec<PeeringServiceClient<Channel>> {
        let mut v = Vec::with_capacity(c);
        for _ in 0..c {
            v.push(PeeringServiceClient::new(self.channel().await));
        }
        v
    }

    /// A new connection to the API.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }
}

pub fn create_request(name: String, a: usize, b: usize) -> CreatePeeringRequest {
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
pub fn sample_pair(n: usize, j: usize) -> (usize, usize) {
    (2 * n + 2 * j + 1, 2 * n + 2 * j + 2)
}

/// `perf record` of a process until [`stop_perf`]: `perf report -i DIR/perf.data`. DWARF call
/// graphs: the release build keeps no frame pointers, so `-g` alone loses the Rust callers
/// (unwound from `.eh_frame`, no debug info needed; ~90 MB for a 10,000 bulk).
pub fn start_perf(dir: &Path, pid: u32) -> Owned {
    let perf = Owned::spawn(
        "perf",
        Command::new("perf")
            .args(["record", "-F", "999", "--call-graph", "dwarf,32768", "-o"])
            .arg(dir.join("perf.data"))
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(300));
    perf
}

pub fn stop_perf(perf: &mut Owned) {
    let _ = Command::new("kill")
        .args(["-INT", &perf.pid().to_string()])
        .status();
    if let Some(mut c) = perf.child.take() {
        let _ = c.wait();
    }
}

/// Mean latency per store operation, from the Prometheus histogram.
pub fn db_query_means(metrics: &str) -> Value {
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
pub async fn wait_all_active(database_url: &str, n: usize, t0: Instant) -> Duration {
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

/// Waits until `ovn_peerd_reconciler_passes_total{result="ok"}` reaches `n`; time since start.
pub async fn wait_passes(peerd: &Peerd, n: f64) -> Duration {
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
