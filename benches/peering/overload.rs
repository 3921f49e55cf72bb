//! Phase (9), overload: [`CLIENTS`] calls sent at once over [`CHANNELS`] HTTP/2 connections
//! (a barrier releases them together): accepted calls' latency, refusals (RESOURCE_EXHAUSTED)
//! and their latency, other errors, and the CPU each process spent on the burst (the bench's
//! own client included: on 2 cores it competes with the server it measures).
//!
//! `--overload-only` runs this phase alone on a fresh server, `--overload-rounds` times, each
//! round: first the floor, the same burst of gRPC health checks (no admission, no Postgres:
//! what 1,000 HTTP/2 calls cost the client, the kernel and tonic), then the CreatePeering
//! burst; the server's own view of the accepted calls (mean, from its RPC histogram) tells
//! the time in ovn-peerd from the time before it (the client, the sockets, h2):
//! `cargo bench --bench peering -- --overload-only [--peerd-flag=--max-in-flight=32] [--perf]`
//! (`--perf`: `perf record --call-graph dwarf` of ovn-peerd over every round (≈ 33 MB of
//! perf.data per busy CPU-second); `--overload-pad-kib 256`: large
//! messages, to see what reading refused calls would cost in memory).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd_test_support::pg::PgCluster;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::args::Args;
use crate::peerd::{create_request, start_perf, stop_perf, Peerd};
use crate::support::monitor::Monitor;
use crate::support::nb::{self, NbServer};
use crate::support::proc::{footprint, CpuSplit, Footprint};
use crate::support::{self, Summary};

/// Concurrent calls in a burst.
pub const CLIENTS: usize = 1000;
/// Connections they share (HTTP/2 streams, 10 per connection).
pub const CHANNELS: usize = 100;

/// One burst of [`CLIENTS`] calls.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Burst {
    pub accepted: Summary,
    pub refused: usize,
    pub refused_latency: Summary,
    pub other_errors: usize,
    pub seconds: f64,
    /// CPU seconds of each process during the burst (`bench` is the client).
    pub cpu: CpuSplit,
    /// The server's mean duration of the accepted calls (its RPC histogram): the time
    /// spent inside ovn-peerd, from the request's headers to its answer.
    pub server_accepted_mean_ms: f64,
    /// Every accepted and refused call's latency (for figures over several bursts).
    #[serde(skip)]
    pub samples: (Vec<Duration>, Vec<Duration>),
}

/// `--overload-only`: per round, the floor and the CreatePeering burst.
#[derive(Debug, Default, serde::Serialize)]
pub struct OverloadOnly {
    pub rounds: Vec<Round>,
    /// Over every round: the floor's calls, the accepted and the refused creates.
    pub all_floor: Summary,
    pub all_accepted: Summary,
    pub all_refused: Summary,
    pub footprint_after: Footprint,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Round {
    /// gRPC health checks: no admission, no Postgres.
    pub floor: Burst,
    pub create: Burst,
}

/// The pids whose CPU a burst reports.
#[derive(Debug, Clone, Copy)]
pub struct Pids {
    pub peerd: u32,
    pub postgres: u32,
    pub nb: u32,
}

impl Pids {
    fn cpu(&self, t0: Instant) -> CpuSplit {
        CpuSplit::now(self.peerd, self.postgres, self.nb, t0)
    }
}

/// Connections to `peerd`, one per channel.
pub async fn channels(peerd: &Peerd, n: usize) -> Vec<Channel> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let ch = Channel::from_shared(peerd.url())
            .unwrap()
            .connect()
            .await
            .expect("connect");
        v.push(ch);
    }
    v
}

/// Sends [`CLIENTS`] CreatePeering at once (peerings `{tag}-k` between VPCs after `base`).
pub async fn creates(
    peerd: &Peerd,
    channels: &[Channel],
    pids: Pids,
    base: usize,
    tag: &str,
    pad_kib: usize,
) -> Burst {
    let before = peerd.scrape().await;
    let pad = "x".repeat(pad_kib << 10);
    let mut burst = fire(channels, pids, |ch, k| {
        let mut client = PeeringServiceClient::new(ch);
        let name = format!("{tag}-{k}{pad}");
        let req = create_request(name, base + 2 * k + 1, base + 2 * k + 2);
        async move { client.create_peering(req).await.map(|_| ()) }
    })
    .await;
    let after = peerd.scrape().await;
    let ok = |m: &str, what: &str| support::metric_sum_with(m, what, "CreatePeering\",code=\"Ok\"");
    let (sum, count) = (
        "ovn_peerd_grpc_request_duration_seconds_sum",
        "ovn_peerd_grpc_request_duration_seconds_count",
    );
    let n = ok(&after, count) - ok(&before, count);
    if n > 0.0 {
        burst.server_accepted_mean_ms = 1e3 * (ok(&after, sum) - ok(&before, sum)) / n;
    }
    burst
}

/// The floor: [`CLIENTS`] gRPC health checks at once.
pub async fn health_checks(channels: &[Channel], pids: Pids) -> Burst {
    fire(channels, pids, |ch, _| {
        let mut client = HealthClient::new(ch);
        async move {
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|_| ())
        }
    })
    .await
}

async fn fire<F, Fut>(channels: &[Channel], pids: Pids, call: F) -> Burst
where
    F: Fn(Channel, usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::with_capacity(CLIENTS);
    let t0 = Instant::now();
    let cpu0 = pids.cpu(t0);
    for k in 0..CLIENTS {
        let fut = call(channels[k % channels.len()].clone(), k);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let t = Instant::now();
            let r = fut.await;
            (r.map_err(|s| s.code()), t.elapsed())
        }));
    }
    let (mut ok, mut refused, mut other) = (Vec::new(), Vec::new(), 0usize);
    for t in tasks {
        match t.await.unwrap() {
            (Ok(()), d) => ok.push(d),
            (Err(tonic::Code::ResourceExhausted), d) => refused.push(d),
            (Err(code), _) => {
                if other < 5 {
                    eprintln!("overload: {code:?}");
                }
                other += 1;
            }
        }
    }
    let cpu = pids.cpu(t0).minus(cpu0);
    Burst {
        accepted: Summary::of(&ok),
        refused: refused.len(),
        refused_latency: Summary::of(&refused),
        other_errors: other,
        seconds: t0.elapsed().as_secs_f64(),
        cpu,
        server_accepted_mean_ms: 0.0,
        samples: (ok, refused),
    }
}

pub fn print(what: &str, b: &Burst) {
    println!(
        "[peerd] {what}: {} accepted (p50 {:.1} / p99 {:.1} ms; server mean {:.1} ms), {} refused \
         (p50 {:.1} / p99 {:.1} ms), {} other errors, in {:.3} s; CPU s: bench {:.2}, ovn-peerd \
         {:.2}, postgres {:.2}, NB {:.2}",
        b.accepted.n,
        b.accepted.p50_ms,
        b.accepted.p99_ms,
        b.server_accepted_mean_ms,
        b.refused,
        b.refused_latency.p50_ms,
        b.refused_latency.p99_ms,
        b.other_errors,
        b.seconds,
        b.cpu.bench,
        b.cpu.ovn_peerd,
        b.cpu.postgres,
        b.cpu.ovsdb_server,
    );
}

/// `--overload-only`: a fresh NB and ovn-peerd, then `args.overload_rounds` rounds.
pub async fn run_only(args: &Args, root: &Path, pg: &PgCluster) -> OverloadOnly {
    let dir = root.join("overload");
    let nbs = NbServer::start_in(&dir);
    let monitor = Monitor::start(&nbs.remote()).await;
    let rounds = args.overload_rounds;
    nb::seed_vpcs(&monitor.client, 2 * CLIENTS * rounds).await;
    let db = pg.create_database("bench_overload").await;
    let extra: Vec<&str> = args.peerd_flags.iter().map(String::as_str).collect();
    let peerd = Peerd::spawn_with(args, &dir, "overload", &db, &nbs.remote(), &extra);
    peerd.wait_ready().await;
    let pids = Pids {
        peerd: peerd.pid(),
        postgres: pg.pid(),
        nb: nbs.pid().expect("NB runs"),
    };
    let channels = channels(&peerd, CHANNELS).await;
    let perf = args.perf.then(|| start_perf(&dir, peerd.pid()));
    let mut out = OverloadOnly::default();
    for r in 0..rounds {
        let floor = health_checks(&channels, pids).await;
        print(&format!("round {r}: floor (health checks)"), &floor);
        let tag = format!("o{r}");
        let base = 2 * CLIENTS * r;
        let create = creates(&peerd, &channels, pids, base, &tag, args.overload_pad_kib).await;
        print(&format!("round {r}: CreatePeering"), &create);
        out.rounds.push(Round { floor, create });
    }
    if let Some(mut perf) = perf {
        stop_perf(&mut perf);
    }
    let all = |f: &dyn Fn(&Round) -> &Vec<Duration>| {
        Summary::of(&out.rounds.iter().flat_map(f).copied().collect::<Vec<_>>())
    };
    out.all_floor = all(&|r| &r.floor.samples.0);
    out.all_accepted = all(&|r| &r.create.samples.0);
    out.all_refused = all(&|r| &r.create.samples.1);
    println!(
        "[peerd] overload, {rounds} rounds: floor p50 {:.1} / p99 {:.1} ms; accepted {} \
         (p50 {:.1} / p99 {:.1} / max {:.1} ms); refused {} (p50 {:.1} / p99 {:.1} / max {:.1} ms)",
        out.all_floor.p50_ms,
        out.all_floor.p99_ms,
        out.all_accepted.n,
        out.all_accepted.p50_ms,
        out.all_accepted.p99_ms,
        out.all_accepted.max_ms,
        out.all_refused.n,
        out.all_refused.p50_ms,
        out.all_refused.p99_ms,
        out.all_refused.max_ms,
    );
    out.footprint_after = footprint(peerd.pid());
    println!(
        "[peerd] overload: RSS after {:.1} MB (high-water {:.1})",
        out.footprint_after.rss_mb, out.footprint_after.hwm_rss_mb
    );
    std::fs::write(dir.join("metrics-overload.txt"), peerd.scrape().await).ok();
    let mut peerd = peerd;
    peerd.proc.terminate(Duration::from_secs(10));
    out
}
