//! The bench's command line (clap), each flag with a `PEERING_BENCH_*` env fallback, resolved
//! into the [`Args`] the phases read.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::Parser;

/// End-to-end peering benchmark: ovn-peerd against its baselines (see the module doc of
/// `benches/peering/main.rs`).
#[derive(Debug, Parser)]
#[command(name = "peering")]
struct Cli {
    /// Smoke run: N=100 (unless --n is given), at most 50 samples, no restart at scale.
    #[arg(long, env = "PEERING_BENCH_QUICK", value_parser = BoolishValueParser::new())]
    quick: bool,
    /// Peerings created in the bulk phase [default: 1000, 100 with --quick].
    #[arg(long, env = "PEERING_BENCH_N")]
    n: Option<usize>,
    /// Concurrent clients in the bulk phase (and concurrent writers of the nbctl baselines).
    #[arg(long, env = "PEERING_BENCH_C", default_value_t = 32)]
    c: usize,
    /// Peerings created one at a time (low-load latency samples).
    #[arg(long, env = "PEERING_BENCH_SAMPLES", default_value_t = 200)]
    samples: usize,
    /// Peerings for the restart phase (inserted by SQL, converged by the worker).
    #[arg(long, env = "PEERING_BENCH_SCALE", default_value_t = 10_000)]
    scale: usize,
    /// Skip the restart phase.
    #[arg(long)]
    no_scale: bool,
    /// Run only the restart phase (at --scale).
    #[arg(long, conflicts_with = "no_scale")]
    scale_only: bool,
    /// Hub phase: one VPC peered with this many spokes (e.g. 1000; 10000 is issue 14's target).
    #[arg(long, env = "PEERING_BENCH_HUB_SPOKES")]
    hub_spokes: Option<usize>,
    /// Run only the hub phase (needs --hub-spokes).
    #[arg(long, requires = "hub_spokes")]
    hub_only: bool,
    /// Busy phase: API latency during full passes at this many peerings (e.g. 10000).
    #[arg(long, env = "PEERING_BENCH_BUSY")]
    busy: Option<usize>,
    /// Run only the busy phase (needs --busy).
    #[arg(long, requires = "busy")]
    busy_only: bool,
    /// Large phase: this many disjoint peerings (2x routers), converged and restarted
    /// (e.g. 100000, issue 14's target size; never in --quick).
    #[arg(long, env = "PEERING_BENCH_LARGE")]
    large: Option<usize>,
    /// Run only the large phase (needs --large).
    #[arg(long, requires = "large")]
    large_only: bool,
    /// Run only the overload phase (9), on a fresh server: per round the floor (1,000 health
    /// checks at once), then 1,000 CreatePeering at once.
    #[arg(long)]
    overload_only: bool,
    /// Rounds of `--overload-only`.
    #[arg(long, default_value_t = 3)]
    overload_rounds: usize,
    /// `--overload-only`: pad each CreatePeering's name with this many KiB (what an
    /// unread refusal saves the server's memory; admitted ones are INVALID_ARGUMENT).
    #[arg(long, default_value_t = 0)]
    overload_pad_kib: usize,
    /// One more flag for the ovn-peerd child of `--overload-only` (repeatable), e.g.
    /// `--peerd-flag=--max-in-flight=32`.
    #[arg(long, allow_hyphen_values = true)]
    peerd_flag: Vec<String>,
    /// Peerings for the process-per-peering baseline (it is slow; its rate is per peering).
    #[arg(long, env = "PEERING_BENCH_NBCTL_PROCESS_N", default_value_t = 200)]
    nbctl_process_n: usize,
    /// Pause between low-load samples, so each starts with an idle worker.
    #[arg(long, env = "PEERING_BENCH_GAP_MS", default_value_t = 20)]
    gap_ms: u64,
    /// Keep the temp dir (every log, metrics) instead of deleting it.
    #[arg(long)]
    keep: bool,
    /// Skip the three baselines.
    #[arg(long)]
    skip_baselines: bool,
    /// WatchPeerings streams (every VPC) kept open and read through phases (1) and (3), as a
    /// controller would: the change reader then reads every change the creates commit.
    #[arg(long, env = "PEERING_BENCH_WATCHERS", default_value_t = 0)]
    watchers: usize,
    /// Only what CreatePeering's figures need: bulk (1), one at a time (3) and the
    /// one-transaction floor; no ListRoutes, churn, overload, nbctl baselines or restart.
    #[arg(long)]
    create_only: bool,
    /// `perf record --call-graph dwarf` ovn-peerd during the bulk phase (into the temp dir;
    /// implies --keep). 32 KB of stack a sample at 999 Hz: ≈ 33 MB of perf.data per busy
    /// CPU-second.
    #[arg(long, env = "PEERING_BENCH_PERF", value_parser = BoolishValueParser::new())]
    perf: bool,
    /// Where the JSON results go [default: target/bench/peering.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// `RUST_LOG` of the ovn-peerd child (its log is in the temp dir).
    #[arg(long, env = "PEERING_BENCH_RUST_LOG", default_value = "info")]
    peerd_log: String,
    /// The ovn-peerd binary to measure [default: the one this bench was built with]: e.g. a
    /// copy of an earlier build, for before/after figures in one run.
    #[arg(long, env = "PEERING_BENCH_PEERD_BIN")]
    peerd_bin: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What the phases run with, once `--quick` and the defaults are applied.
#[derive(Debug, Clone)]
pub struct Args {
    pub n: usize,
    pub c: usize,
    pub samples: usize,
    pub scale: Option<usize>,
    pub scale_only: bool,
    pub hub_spokes: Option<usize>,
    pub hub_only: bool,
    pub busy: Option<usize>,
    pub busy_only: bool,
    pub large: Option<usize>,
    pub large_only: bool,
    pub overload_only: bool,
    pub overload_rounds: usize,
    pub overload_pad_kib: usize,
    pub peerd_flags: Vec<String>,
    pub nbctl_process_n: usize,
    pub gap: Duration,
    pub keep: bool,
    pub skip_baselines: bool,
    pub watchers: usize,
    pub create_only: bool,
    pub perf: bool,
    pub json: PathBuf,
    pub peerd_log: String,
    pub peerd_bin: PathBuf,
}

impl Args {
    pub fn parse() -> Args {
        Self::resolve(Cli::parse())
    }

    fn resolve(cli: Cli) -> Args {
        let mut a = Args {
            n: cli.n.unwrap_or(if cli.quick { 100 } else { 1000 }),
            c: cli.c,
            samples: cli.samples,
            scale: (!cli.no_scale).then_some(cli.scale),
            scale_only: cli.scale_only,
            hub_spokes: cli.hub_spokes,
            hub_only: cli.hub_only,
            busy: cli.busy,
            busy_only: cli.busy_only,
            large: cli.large,
            large_only: cli.large_only,
            overload_only: cli.overload_only,
            overload_rounds: cli.overload_rounds.max(1),
            overload_pad_kib: cli.overload_pad_kib,
            peerd_flags: cli.peerd_flag,
            nbctl_process_n: cli.nbctl_process_n,
            gap: Duration::from_millis(cli.gap_ms),
            keep: cli.keep || cli.perf,
            skip_baselines: cli.skip_baselines,
            watchers: cli.watchers,
            create_only: cli.create_only,
            perf: cli.perf,
            json: cli.json.unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/peering.json")
            }),
            peerd_log: cli.peerd_log,
            peerd_bin: cli
                .peerd_bin
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ovn-peerd"))),
        };
        if cli.quick {
            a.samples = a.samples.min(50);
            a.nbctl_process_n = a.nbctl_process_n.min(50);
            a.scale = None;
            a.large = None;
        }
        if cli.create_only {
            a.scale = None;
        }
        a.nbctl_process_n = a.nbctl_process_n.min(a.n);
        a
    }
}
