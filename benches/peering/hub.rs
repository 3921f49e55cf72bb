//! Phase (7), `--hub-spokes N`: one hub VPC peered with N spokes (issue 14, item 6). The N
//! peerings are inserted by SQL and converged by the worker; then ovn-peerd restarts and its
//! first pass, a full pass over a converged hub (nothing to write), is timed from the metric
//! `ovn_peerd_reconciler_pass_seconds`; then spokes are added one at a time through
//! CreatePeering, each timed from the request to the independent NB monitor seeing its four
//! rows (and the CreatePeering call alone, request → reply); then ListRoutes of the hub, first
//! page of 100.
//!
//! VPC 1 is the hub, VPCs 2..=N+1 the stored spokes, N+2.. the ones added one at a time.

use std::path::Path;
use std::time::{Duration, Instant};

use ovn_peerd::proto::v1::ListRoutesRequest;
use ovn_peerd_test_support::pg::PgCluster;

use crate::args::Args;
use crate::peerd::{create_request, wait_all_active, wait_passes, Peerd, CONVERGE_TIMEOUT};
use crate::support::monitor::Monitor;
use crate::support::nb::{self, NbServer};
use crate::support::{self, Summary};

/// Spokes added one at a time after the N stored ones.
const ADDED: usize = 20;
/// ListRoutes first-page samples.
const PAGES: usize = 50;

#[derive(Debug, Default, serde::Serialize)]
pub struct HubResults {
    pub spokes: usize,
    pub initial_converged_s: f64,
    pub full_pass_s: f64,
    pub spoke_create_to_nb: Summary,
    /// The CreatePeering call alone (request sent → reply).
    pub spoke_create_rpc: Summary,
    pub list_routes_first_page: Summary,
    pub list_routes_first_page_routes: usize,
}

pub async fn run(args: &Args, root: &Path, pg: &PgCluster, n: usize) -> HubResults {
    let dir = root.join("hub");
    let nbs = NbServer::start_in(&dir);
    let monitor = Monitor::start(&nbs.remote()).await;
    nb::seed_vpcs(&monitor.client, 1 + n + ADDED).await;
    let db = pg.create_database("bench_hub").await;
    let peerd = Peerd::spawn(args, &dir, "hub-1", &db, &nbs.remote());
    peerd.wait_ready().await;
    wait_passes(&peerd, 1.0).await;
    let mut out = HubResults {
        spokes: n,
        ..Default::default()
    };

    println!("[hub] vpc-1 with {n} spokes inserted by SQL, converged by the worker");
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db).await.expect("pg");
    let t0 = Instant::now();
    sqlx::query(
        "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4) \
         SELECT 'hub-' || k, 'vpc-1', 'vpc-' || (k + 2), \
                set_masklen('169.254.0.0'::inet + (4 * k + 1), 30), \
                set_masklen('169.254.0.0'::inet + (4 * k + 2), 30) \
         FROM generate_series(0, $1 - 1) AS k",
    )
    .bind(n as i64)
    .execute(&mut conn)
    .await
    .expect("insert peerings");
    let seen = monitor.wait_counts(2 * n, 2 * n, CONVERGE_TIMEOUT).await;
    out.initial_converged_s = (seen - t0).as_secs_f64();
    wait_all_active(&db, n, t0).await;
    println!("[hub] NB converged in {:.3} s", out.initial_converged_s);

    println!("[hub] restart: first (full) pass over the converged hub");
    let mut peerd = peerd;
    assert!(
        peerd.proc.terminate(Duration::from_secs(30)),
        "ovn-peerd did not stop on SIGTERM"
    );
    let peerd = Peerd::spawn(args, &dir, "hub-2", &db, &nbs.remote());
    peerd.wait_ready().await;
    wait_passes(&peerd, 1.0).await;
    let metrics = peerd.scrape().await;
    let passes = support::metric_sum(&metrics, "ovn_peerd_reconciler_pass_seconds_count");
    // Only the first pass when the count is 1; else the mean of those run so far.
    out.full_pass_s =
        support::metric_sum(&metrics, "ovn_peerd_reconciler_pass_seconds_sum") / passes.max(1.0);
    println!("[hub] full pass {:.3} s", out.full_pass_s);

    println!("[hub] {ADDED} more spokes, one at a time");
    let mut client = peerd.clients(1).await.remove(0);
    let mut samples = Vec::with_capacity(ADDED);
    let mut rpcs = Vec::with_capacity(ADDED);
    for j in 0..ADDED {
        let spoke = n + 2 + j;
        let name = format!("hub-extra-{j}");
        tokio::time::sleep(args.gap).await;
        let t = Instant::now();
        client
            .create_peering(create_request(name.clone(), 1, spoke))
            .await
            .expect("CreatePeering");
        rpcs.push(t.elapsed());
        let seen = monitor.wait_peering(&name, 4, CONVERGE_TIMEOUT).await;
        samples.push(seen.saturating_duration_since(t));
    }
    out.spoke_create_to_nb = Summary::of(&samples);
    out.spoke_create_rpc = Summary::of(&rpcs);

    println!("[hub] ListRoutes of the hub, first page of 100");
    let mut pages = Vec::with_capacity(PAGES);
    for _ in 0..PAGES {
        let t = Instant::now();
        let r = client
            .list_routes(ListRoutesRequest {
                vpc: nb::vpc(1),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .expect("ListRoutes")
            .into_inner();
        pages.push(t.elapsed());
        out.list_routes_first_page_routes = r.routes.len();
    }
    out.list_routes_first_page = Summary::of(&pages);
    let mut peerd = peerd;
    peerd.proc.terminate(Duration::from_secs(30));
    out
}
