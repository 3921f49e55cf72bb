//! Phase (8), with `--busy N` (`--busy-only`: nothing else): API latency while full passes at N
//! peerings run and NB updates arrive (issue 11: a replica that never makes anyone wait).
//! N peerings inserted by SQL and converged; calls measured once idle; then ovn-peerd restarted
//! with a 1 s resync, so full passes follow one another, while another NB client writes a
//! foreign router every 20 ms (updates that reach the replica during the passes) and one
//! client calls GetPeering and ListRoutes in turn for `WINDOW`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovn_peerd::ovsdb::{Condition, Datum, Operation, Row};
use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::{GetPeeringRequest, ListRoutesRequest};
use ovn_peerd_test_support::pg::PgCluster;
use tonic::transport::Channel;

use crate::args::Args;
use crate::peerd::{wait_all_active, wait_passes, Peerd, CONVERGE_TIMEOUT};
use crate::support::monitor::Monitor;
use crate::support::nb::{self, NbServer};
use crate::support::{self, Summary};

const WINDOW: Duration = Duration::from_secs(20);

#[derive(Debug, Default, serde::Serialize)]
pub struct BusyResults {
    pub peerings: usize,
    pub idle_get_peering: Summary,
    pub idle_list_routes: Summary,
    pub busy_get_peering: Summary,
    pub busy_list_routes: Summary,
    pub busy_window_s: f64,
    pub busy_full_passes: f64,
    pub busy_nb_writes: usize,
    pub busy_nb_reconnects: f64,
}

/// GetPeering and ListRoutes in turn until `stop` (or `count` pairs).
async fn calls(
    client: &mut PeeringServiceClient<Channel>,
    n: usize,
    count: Option<usize>,
    stop: &AtomicBool,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut get, mut list) = (Vec::new(), Vec::new());
    let mut k = 0;
    while !stop.load(Ordering::SeqCst) && count.is_none_or(|c| k < c) {
        let t = Instant::now();
        client
            .get_peering(GetPeeringRequest {
                name: format!("p-{}", k % n),
            })
            .await
            .expect("GetPeering");
        get.push(t.elapsed());
        let t = Instant::now();
        client
            .list_routes(ListRoutesRequest {
                vpc: nb::vpc(2 * (k % n) + 1),
                ..Default::default()
            })
            .await
            .expect("ListRoutes");
        list.push(t.elapsed());
        k += 1;
    }
    (get, list)
}

pub async fn run(args: &Args, root: &Path, pg: &PgCluster, n: usize) -> BusyResults {
    let dir = root.join("busy");
    let nbs = NbServer::start_in(&dir);
    let monitor = Monitor::start(&nbs.remote()).await;
    nb::seed_vpcs(&monitor.client, 2 * n).await;
    let db = pg.create_database("bench_busy").await;
    let peerd = Peerd::spawn(args, &dir, "busy-1", &db, &nbs.remote());
    peerd.wait_ready().await;
    let mut out = BusyResults {
        peerings: n,
        ..Default::default()
    };
    println!("[busy] {n} peerings inserted by SQL, converged by the worker");
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
    .bind(n as i64)
    .execute(&mut conn)
    .await
    .expect("insert peerings");
    monitor.wait_counts(2 * n, 2 * n, CONVERGE_TIMEOUT).await;
    wait_all_active(&db, n, t0).await;

    println!("[busy] idle: 200 GetPeering + 200 ListRoutes");
    let never = AtomicBool::new(false);
    let mut client = peerd.clients(1).await.remove(0);
    let (get, list) = calls(&mut client, n, Some(200), &never).await;
    out.idle_get_peering = Summary::of(&get);
    out.idle_list_routes = Summary::of(&list);

    println!("[busy] restart with a 1 s resync; calls for {WINDOW:?} during passes and NB writes");
    let mut peerd = peerd;
    assert!(peerd.proc.terminate(Duration::from_secs(30)));
    let peerd = Peerd::spawn_with(
        args,
        &dir,
        "busy-2",
        &db,
        &nbs.remote(),
        &["--resync-interval=1s"],
    );
    peerd.wait_ready().await;
    wait_passes(&peerd, 1.0).await;
    let before = peerd.scrape().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, nb) = (stop.clone(), monitor.client.clone());
        tokio::spawn(async move {
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                let mut row = Row::new();
                row.insert("name".into(), Datum::from(format!("noise-{k}").as_str()));
                let ops = if k % 2 == 0 {
                    vec![Operation::Insert {
                        table: "Logical_Router".into(),
                        row,
                        uuid_name: None,
                        uuid: None,
                    }]
                } else {
                    vec![Operation::Delete {
                        table: "Logical_Router".into(),
                        conditions: vec![Condition::eq(
                            "name",
                            Datum::from(format!("noise-{}", k - 1).as_str()),
                        )],
                    }]
                };
                nb.transact(ops).await.expect("NB write");
                k += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            k
        })
    };
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(WINDOW).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let t = Instant::now();
    let mut client = peerd.clients(1).await.remove(0);
    let (get, list) = calls(&mut client, n, None, &stop).await;
    out.busy_window_s = t.elapsed().as_secs_f64();
    timer.await.unwrap();
    out.busy_nb_writes = writer.await.unwrap();
    out.busy_get_peering = Summary::of(&get);
    out.busy_list_routes = Summary::of(&list);
    let after = peerd.scrape().await;
    let passes =
        |m: &str| support::metric_sum_with(m, "ovn_peerd_reconciler_passes_total", "result=\"ok\"");
    out.busy_full_passes = passes(&after) - passes(&before);
    out.busy_nb_reconnects = support::metric_sum(&after, "ovn_peerd_ovsdb_reconnects_total")
        - support::metric_sum(&before, "ovn_peerd_ovsdb_reconnects_total");
    let mut peerd = peerd;
    peerd.proc.terminate(Duration::from_secs(30));
    println!("[busy] {out:#?}");
    out
}
