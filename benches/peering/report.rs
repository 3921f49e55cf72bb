//! The table the bench prints (README's Performance section quotes it) and the machine's load.

use crate::args::Args;
use crate::baselines::BaselineResults;
use crate::bulk::PeerdResults;
use crate::hub::HubResults;
use crate::large::LargeResults;
use crate::restart::ScaleResults;
use crate::support::proc::Footprint;
use crate::support::Summary;

pub fn machine_load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn print(
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
        "  raw monitor CPU s over the baseline",
        "".into(),
        "",
        [proc_b, daemon_b, txn_b].map(|b| format!("{:.2}", b.monitor_cpu_s)),
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
        "low load: gRPC health p50 / p99 ms (floor)",
        format!(
            "{:.2}/{:.2}",
            p.low_load_health.p50_ms, p.low_load_health.p99_ms
        ),
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
    let l = &p.load;
    row(
        "churn: create -> NB p50/p99 ms",
        format!(
            "{:.1}/{:.1}",
            l.churn_create_to_nb.p50_ms, l.churn_create_to_nb.p99_ms
        ),
        "p99 <= 25",
        none(),
    );
    row(
        "churn: foreign changes/s, passes full/narrow",
        format!(
            "{:.0}, {:.0}/{:.0}",
            l.churn_changes as f64 / l.churn_seconds.max(1e-9),
            l.churn_full_passes,
            l.churn_narrow_passes
        ),
        "0 full",
        none(),
    );
    row(
        "overload 1000: accepted n, p50/p99 ms",
        format!(
            "{}, {:.0}/{:.0}",
            l.overload_accepted.n, l.overload_accepted.p50_ms, l.overload_accepted.p99_ms
        ),
        "p99 <= 100",
        none(),
    );
    row(
        "overload 1000: refused n (p99 ms), other errors",
        format!(
            "{} ({:.0}), {}",
            l.overload_refused, l.overload_refused_latency.p99_ms, l.overload_other_errors
        ),
        "0 other",
        none(),
    );
    row(
        "overload 1000: RSS after MB",
        format!("{:.1}", l.overload_footprint.rss_mb),
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
            &format!("[{m}] RSS converged / idle MB (heap at the last trim)"),
            format!(
                "{:.1}/{:.1} ({:.1})",
                s.footprint_converged.rss_mb, s.footprint_idle.rss_mb, s.heap_in_use_idle_mb
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
        row(
            &format!("[{m}] restart: RSS MB settled (heap at the last trim)"),
            format!(
                "{:.1} ({:.1})",
                s.footprint_restart_settled.rss_mb, s.heap_in_use_restart_settled_mb
            ),
            "<= 100",
            none(),
        );
    }
    println!("{}", "-".repeat(104));
    println!(
        "vs proc = ovn-nbctl process per peering ({} peerings), vs daemon = one ovn-nbctl daemon, vs 1-txn = all rows in one OVSDB transaction sent raw (the floor);",
        proc_b.peerings
    );
    println!(
        "ratios > 1 mean ovn-peerd is better (throughput ours/theirs, latency theirs/ours). Load average before {load_before}, after {load_after}."
    );
}

/// Phase (7): the hub's figures against issue 14's targets (stated at 10,000 spokes).
pub fn print_hub(h: &HubResults) {
    println!("\nhub with {} spokes", h.spokes);
    println!(
        "  initial convergence (SQL insert -> NB)   {:>9.3} s",
        h.initial_converged_s
    );
    println!(
        "  full pass (converged)                    {:>9.3} s   target <= 1 s",
        h.full_pass_s
    );
    let s = &h.spoke_create_to_nb;
    println!(
        "  one more spoke, create -> NB             p50 {:.1} ms  max {:.1} ms (n={})   target <= 50 ms",
        s.p50_ms, s.max_ms, s.n
    );
    let c = &h.spoke_create_rpc;
    println!(
        "  one more spoke, CreatePeering RPC        p50 {:.1} ms  max {:.1} ms (n={})",
        c.p50_ms, c.max_ms, c.n
    );
    let l = &h.list_routes_first_page;
    println!(
        "  ListRoutes of the hub, first page ({})  p50 {:.1} ms  max {:.1} ms (n={})   target <= 20 ms",
        h.list_routes_first_page_routes, l.p50_ms, l.max_ms, l.n
    );
}

/// Phase (10): N disjoint peerings, converged and restarted (issue 14, items 4 and 6).
pub fn print_large(l: &LargeResults) {
    let f = |x: &Footprint| format!("{:.0} MB (CPU {:.1} s)", x.rss_mb, x.cpu_s);
    println!(
        "\n{} disjoint peerings on {} routers",
        l.peerings, l.routers
    );
    for (name, v, target) in [
        (
            "seed (raw transactions of 5,000 routers)",
            format!("{:.1} s", l.seed_s),
            "",
        ),
        (
            "first start: NB in sync",
            format!("{:.1} s", l.first_ready_nb_s),
            "",
        ),
        ("SQL insert", format!("{:.1} s", l.sql_insert_s), ""),
        (
            "SQL insert -> all rows seen in NB",
            format!(
                "{:.1} s ({:.0}/s)",
                l.sql_converged_s, l.sql_converged_per_s
            ),
            "",
        ),
        (
            "SQL insert -> all ACTIVE",
            format!("{:.1} s", l.sql_all_active_s),
            "",
        ),
        (
            "one more via CreatePeering -> NB p50/max",
            format!(
                "{:.1} / {:.1} ms",
                l.api_create_to_nb.p50_ms, l.api_create_to_nb.max_ms
            ),
            "",
        ),
        ("RSS converged", f(&l.footprint_converged), "<= 600 MB"),
        ("RSS steady", f(&l.footprint_steady), "<= 600 MB"),
        (
            "passes before restart, mean",
            format!(
                "{:.0}, {:.2} s",
                l.passes_before_restart, l.pass_mean_before_restart_s
            ),
            "",
        ),
        (
            "restart: ready (Postgres)",
            format!("{:.2} s", l.restart_ready_postgres_s),
            "",
        ),
        (
            "restart: ready (NB in sync)",
            format!("{:.1} s", l.restart_ready_nb_s),
            "",
        ),
        (
            "restart: first pass done",
            format!("{:.1} s", l.restart_first_pass_done_s),
            "",
        ),
        (
            "restart: full pass",
            format!("{:.2} s", l.restart_first_pass_s),
            "<= 2 s",
        ),
        (
            "restart: NB transactions / file growth / rows",
            format!(
                "{:.0} / {} B / {}",
                l.restart_nb_transactions,
                l.restart_nb_file_growth_bytes,
                l.restart_nb_rows_changed
            ),
            "0",
        ),
        (
            "RSS after restart",
            f(&l.footprint_after_restart),
            "<= 600 MB",
        ),
        (
            "RSS after restart, settled",
            f(&l.footprint_restart_settled),
            "<= 600 MB",
        ),
        (
            "heap in use at the last trim: steady / after restart, settled",
            format!(
                "{:.0} / {:.0} MB",
                l.heap_in_use_steady_mb, l.heap_in_use_restart_settled_mb
            ),
            "",
        ),
        (
            "RSS high-water: first run / after restart",
            format!(
                "{:.0} / {:.0} MB",
                l.footprint_steady.hwm_rss_mb, l.footprint_restart_settled.hwm_rss_mb
            ),
            "",
        ),
        (
            "CPU s: ovsdb-server / Postgres / monitor",
            format!(
                "{:.1} / {:.1} / {:.2}",
                l.cpu_ovsdb_server_s, l.cpu_postgres_s, l.cpu_monitor_s
            ),
            "",
        ),
    ] {
        println!("  {name:<46} {v:>24}   {target}");
    }
    println!(
        "  store query means before restart: {}",
        l.db_query_mean_ms_before_restart
    );
    println!(
        "  store query means after restart:  {}",
        l.db_query_mean_ms_after_restart
    );
}
