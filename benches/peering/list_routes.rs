//! Phase (6): ListRoutes on a router holding 1,000 foreign routes besides ovn-peerd's, in pages
//! of 100: latency of one page and of a full listing.

use std::time::{Duration, Instant};

use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::ListRoutesRequest;
use tonic::transport::Channel;

use crate::bulk::PeerdResults;
use crate::support::monitor::Monitor;
use crate::support::nb;
use crate::support::Summary;

pub async fn run(
    client: &PeeringServiceClient<Channel>,
    monitor: &Monitor,
    out: &mut PeerdResults,
) {
    let mut client = client.clone();
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
}
