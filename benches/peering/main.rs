//! End-to-end peering benchmark (issue 6): ovn-peerd (the release binary, as a child process)
//! against its baselines, each on a fresh NB `ovsdb-server`, all to the same end point: an
//! independent NB monitor (a raw socket and `serde_json`, `support/raw.rs`: none of
//! ovn-peerd's OVSDB code) has seen every port and route.
//!
//! ```sh
//! cargo bench --bench peering                      # N=1000, C=32, 10k restart step
//! cargo bench --bench peering -- --quick           # smoke run: N=100, no 10k step
//! cargo bench --bench peering -- --n 2000 --c 16 --scale 20000 --samples 300
//! cargo bench --bench peering -- --help            # every flag (args.rs)
//! ```
//! Flags have env fallbacks: `PEERING_BENCH_N`, `_C`, `_SAMPLES`, `_SCALE`, `_QUICK=1`, ...
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
//! first full pass, NB transactions sent, RSS and CPU; (6) ListRoutes over 1,000 routes;
//! (8) 100 foreign NB changes/s while creating one at a time: create → NB, passes by scope;
//! (9) 1,000 CreatePeering calls at once: accepted latency, refused count (`--overload-only`:
//! only this, in rounds, each after its floor: 1,000 health checks at once);
//! (10) with `--large N` (`--large-only`: nothing else; never in `--quick`), N disjoint
//! peerings on 2N routers converged and restarted: `-- --large-only --large 100000`;
//! (7) with `--hub-spokes N` (`--hub-only`: nothing else), a hub VPC with N spokes: a full
//! pass, one more spoke's create → NB, ListRoutes of the hub's first page:
//!
//! ```sh
//! cargo bench --bench peering -- --hub-only --hub-spokes 1000
//! cargo bench --bench peering -- --hub-only --hub-spokes 10000   # issue 14's target size
//! ```
//! `--scale-only` runs only (4)+(5); `--peerd-bin PATH` runs another build of ovn-peerd (main's,
//! copied aside) for a before/after in the same conditions:
//! `cargo bench --bench peering -- --scale-only --scale 10000 --peerd-bin /tmp/ovn-peerd-main`.
//! (8) with `--busy N` (`--busy-only`: nothing else), GetPeering/ListRoutes latency idle and
//! while full passes at N peerings run and NB updates arrive:
//! `cargo bench --bench peering -- --busy-only --busy 10000`.
//!
//! | module | phase |
//! |---|---|
//! | `args.rs` | the command line |
//! | `peerd.rs` | ovn-peerd as a child process; readiness, clients, `/metrics` |
//! | `bulk.rs` | (1), and the server phases (3) and (6) run on |
//! | `latency.rs` | (3) one peering at a time |
//! | `list_routes.rs` | (6) ListRoutes |
//! | `load.rs` | (8) foreign NB churn while creating, then (9) |
//! | `overload.rs` | (9) overload: 1,000 calls at once, and its floor (`--overload-only`) |
//! | `baselines.rs` | (2) nbctl process, nbctl daemon, one transaction |
//! | `restart.rs` | (4) + (5) restart at `--scale` |
//! | `hub.rs` | (7) a hub with `--hub-spokes` spokes |
//! | `large.rs` | (10) `--large` disjoint peerings, converged and restarted |
//! | `busy.rs` | (8) calls during full passes at `--busy` peerings |
//! | `report.rs` | the printed table |
//! | `support/` | the raw OVSDB client, the NB monitor, VPC seed, `/proc` readings, statistics |

mod args;
mod baselines;
mod bulk;
mod busy;
mod hub;
mod large;
mod latency;
mod list_routes;
mod load;
mod overload;
mod peerd;
mod report;
mod restart;
mod support;

use ovn_peerd_test_support::pg::PgCluster;
use serde_json::json;

use args::Args;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let load_before = report::machine_load();
    let tmp = tempfile::Builder::new()
        .prefix("peering-bench-")
        .tempdir()
        .expect("temp dir");
    // With --keep the directory is kept from the start: also when a phase panics.
    let (root, tmp) = if args.keep {
        (tmp.keep(), None)
    } else {
        (tmp.path().to_path_buf(), Some(tmp))
    };
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
    if let Some(n) = args.busy.filter(|_| args.busy_only) {
        let busy = busy::run(&args, &root, &pg, n).await;
        write_json(&args, &json!({"args": {"busy": n}, "busy": busy}));
        return;
    }
    if let Some(n) = args.large.filter(|_| args.large_only) {
        let large = large::run(&args, &root, &pg, n).await;
        report::print_large(&large);
        write_json(&args, &json!({"args": {"large": n}, "large": large}));
        kept(&args, &root);
        return;
    }
    if args.overload_only {
        let overload = overload::run_only(&args, &root, &pg).await;
        write_json(
            &args,
            &json!({"args": {"overload_only": true}, "overload": overload}),
        );
        kept(&args, &root);
        return;
    }
    if let Some(m) = args.scale.filter(|_| args.scale_only) {
        let scale = restart::run(&args, &root, &pg, m).await;
        write_json(&args, &json!({"args": {"scale": m}, "scale": scale}));
        kept(&args, &root);
        return;
    }
    let hub = match args.hub_spokes {
        Some(n) => Some(hub::run(&args, &root, &pg, n).await),
        None => None,
    };
    if let Some(h) = &hub {
        report::print_hub(h);
    }
    if args.hub_only {
        write_json(
            &args,
            &json!({"args": {"hub_spokes": args.hub_spokes}, "hub": hub}),
        );
        kept(&args, &root);
        return;
    }

    let peerd = bulk::run(&args, &root, &pg).await;
    let (proc_b, daemon_b, txn_b) = if args.skip_baselines {
        Default::default()
    } else if args.create_only {
        let floor = baselines::run(&args, &root, "one-transaction", args.n, args.samples).await;
        (Default::default(), Default::default(), floor)
    } else {
        (
            baselines::run(
                &args,
                &root,
                "nbctl-process",
                args.nbctl_process_n,
                args.samples.min(50),
            )
            .await,
            baselines::run(&args, &root, "nbctl-daemon", args.n, args.samples).await,
            baselines::run(&args, &root, "one-transaction", args.n, args.samples).await,
        )
    };
    let scale = match args.scale {
        Some(m) => Some(restart::run(&args, &root, &pg, m).await),
        None => None,
    };
    let busy = match args.busy {
        Some(n) => Some(busy::run(&args, &root, &pg, n).await),
        None => None,
    };
    let large = match args.large {
        Some(n) => Some(large::run(&args, &root, &pg, n).await),
        None => None,
    };
    if let Some(l) = &large {
        report::print_large(l);
    }
    let load_after = report::machine_load();

    report::print(
        &args,
        &peerd,
        &[&proc_b, &daemon_b, &txn_b],
        scale.as_ref(),
        &load_before,
        &load_after,
    );
    let doc = json!({
        "args": {"n": args.n, "c": args.c, "samples": args.samples, "scale": args.scale,
                 "nbctl_process_n": args.nbctl_process_n, "gap_ms": args.gap.as_millis() as u64,
                 "watchers": args.watchers},
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                    "loadavg_before": load_before, "loadavg_after": load_after},
        "ovn_peerd": peerd,
        "baselines": [proc_b, daemon_b, txn_b],
        "scale": scale,
        "hub": hub,
        "busy": busy,
        "large": large,
    });
    write_json(&args, &doc);
    kept(&args, &root);
    drop(pg);
    drop(tmp);
}

/// With --keep the directory was kept from the start: say where.
fn kept(args: &Args, root: &std::path::Path) {
    if args.keep {
        println!("kept {} (logs, metrics)", root.display());
    }
}

fn write_json(args: &Args, doc: &serde_json::Value) {
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(doc).unwrap()).expect("write json");
    println!("\nwrote {}", args.json.display());
}
