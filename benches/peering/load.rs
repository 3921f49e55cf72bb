//! Phases (8) and (9) of issue 14, on the bulk phase's server after the others:
//! (8) foreign churn: [`CHURN_RATE`] NB changes a second made by someone else (router options
//! and foreign routes on routers without peerings) while peerings are created one at a time:
//! request sent → the monitor saw its rows, and how many worker passes of each scope ran;
//! (9) overload: [`OVERLOAD_CLIENTS`] CreatePeering calls at once (`overload.rs`): accepted
//! calls' latency, refused (RESOURCE_EXHAUSTED) and other errors, and ovn-peerd's RSS after.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::overload::{self, Pids};
use crate::peerd::{create_request, Peerd};
use crate::support::monitor::Monitor;
use crate::support::proc::{footprint, Footprint};
use crate::support::{self, nb, Summary};
use ovn_peerd::ovsdb::{Condition, Datum, Operation, Row};

/// Peerings created one at a time during the churn.
pub const CHURN_CREATES: usize = 200;
/// Foreign NB changes per second during the churn.
pub const CHURN_RATE: u64 = 100;
/// Routers (without peerings) the churn changes.
pub const CHURN_ROUTERS: usize = 20;
/// Concurrent calls in the overload phase.
pub const OVERLOAD_CLIENTS: usize = overload::CLIENTS;

/// VPCs these phases need after the first `base`.
pub fn vpcs_needed() -> usize {
    2 * CHURN_CREATES + 2 * OVERLOAD_CLIENTS + CHURN_ROUTERS
}

#[derive(Debug, Default, serde::Serialize)]
pub struct LoadResults {
    /// Request sent → rows seen, one create at a time under churn.
    pub churn_create_to_nb: Summary,
    /// Foreign NB changes made during the churn phase.
    pub churn_changes: usize,
    pub churn_seconds: f64,
    /// Worker passes during the churn phase, by scope.
    pub churn_full_passes: f64,
    pub churn_narrow_passes: f64,
    /// Overload: accepted calls' latency.
    pub overload_accepted: Summary,
    pub overload_refused: usize,
    pub overload_refused_latency: Summary,
    pub overload_other_errors: usize,
    pub overload_seconds: f64,
    pub overload_footprint: Footprint,
}

fn passes(metrics: &str, scope: &str) -> f64 {
    support::metric_sum_with(
        metrics,
        "ovn_peerd_reconciler_passes_total",
        &format!("scope=\"{scope}\""),
    )
}

pub async fn run(peerd: &Peerd, pids: Pids, monitor: &Monitor, base: usize, out: &mut LoadResults) {
    churn(peerd, monitor, base, out).await;
    overload(peerd, pids, base + 2 * CHURN_CREATES, out).await;
}

async fn churn(peerd: &Peerd, monitor: &Monitor, base: usize, out: &mut LoadResults) {
    println!(
        "[peerd] churn: {CHURN_CREATES} creates one at a time, {CHURN_RATE} foreign NB changes/s"
    );
    let first_router = base + 2 * CHURN_CREATES + 2 * OVERLOAD_CLIENTS + 1;
    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicUsize::new(0));
    let churner = {
        let (stop, changes) = (stop.clone(), changes.clone());
        let nb = monitor.client.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / CHURN_RATE));
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let router = first_router + k % CHURN_ROUTERS;
                if k % 10 == 9 {
                    nb::add_foreign_routes(&nb, router, 1).await;
                } else {
                    let mut row = Row::new();
                    row.insert(
                        "options".into(),
                        Datum::map([("churn", k.to_string().as_str())]),
                    );
                    nb.transact(vec![Operation::Update {
                        table: "Logical_Router".into(),
                        conditions: vec![Condition::uuid(nb::router_uuid(router))],
                        row,
                    }])
                    .await
                    .expect("churn update");
                }
                changes.fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
        })
    };
    let before = peerd.scrape().await;
    let mut client = peerd.clients(1).await.remove(0);
    let t0 = Instant::now();
    let mut e2e = Vec::with_capacity(CHURN_CREATES);
    for j in 0..CHURN_CREATES {
        let name = format!("churn-{j}");
        let t = Instant::now();
        client
            .create_peering(create_request(
                name.clone(),
                base + 2 * j + 1,
                base + 2 * j + 2,
            ))
            .await
            .expect("CreatePeering (churn)");
        let seen = monitor
            .wait_peering(&name, 4, Duration::from_secs(30))
            .await;
        e2e.push(seen.saturating_duration_since(t));
    }
    stop.store(true, Ordering::Relaxed);
    churner.await.unwrap();
    out.churn_seconds = t0.elapsed().as_secs_f64();
    out.churn_changes = changes.load(Ordering::Relaxed);
    out.churn_create_to_nb = Summary::of(&e2e);
    let after = peerd.scrape().await;
    out.churn_full_passes = passes(&after, "full") - passes(&before, "full");
    out.churn_narrow_passes = passes(&after, "narrow") - passes(&before, "narrow");
    println!(
        "[peerd] churn: {} foreign changes in {:.1} s; create → NB p50 {:.1} / p99 {:.1} ms; \
         passes: {} full, {} narrow",
        out.churn_changes,
        out.churn_seconds,
        out.churn_create_to_nb.p50_ms,
        out.churn_create_to_nb.p99_ms,
        out.churn_full_passes,
        out.churn_narrow_passes
    );
}

async fn overload(peerd: &Peerd, pids: Pids, base: usize, out: &mut LoadResults) {
    println!("[peerd] overload: {OVERLOAD_CLIENTS} CreatePeering calls at once");
    let channels = overload::channels(peerd, overload::CHANNELS).await;
    let b = overload::creates(peerd, &channels, pids, base, "load", 0).await;
    overload::print("overload", &b);
    out.overload_seconds = b.seconds;
    out.overload_accepted = b.accepted;
    out.overload_refused = b.refused;
    out.overload_refused_latency = b.refused_latency;
    out.overload_other_errors = b.other_errors;
    out.overload_footprint = footprint(peerd.pid());
}
