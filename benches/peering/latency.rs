//! Phase (3), one peering at a time on the bulk phase's server: RPC latency, RPC answered →
//! rows seen by the monitor, request sent → rows seen. A pause (`--gap-ms`) before each sample
//! lets it start with an idle worker. Before each create, after a pause of its own, one gRPC
//! health check on the same connection: the transport's floor (no admission, no Postgres), in
//! the same conditions (each follows an idle gap, so the check never warms the create's path).

use std::time::{Duration, Instant};

use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::args::Args;
use crate::bulk::PeerdResults;
use crate::peerd::{create_request, sample_pair};
use crate::support::monitor::Monitor;
use crate::support::proc::CpuSplit;
use crate::support::Summary;

pub async fn run(
    args: &Args,
    channel: &Channel,
    monitor: &Monitor,
    cpu: &impl Fn(Instant) -> CpuSplit,
    t0: Instant,
    out: &mut PeerdResults,
) {
    // (3) low load: one at a time
    println!("[peerd] low load: {} peerings one at a time", args.samples);
    let mut client = PeeringServiceClient::new(channel.clone());
    let mut health = HealthClient::new(channel.clone());
    let (mut rpc, mut conv, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
    let mut floor = Vec::new();
    let cpu1 = cpu(t0);
    for j in 0..args.samples {
        tokio::time::sleep(args.gap).await;
        let t = Instant::now();
        health
            .check(HealthCheckRequest::default())
            .await
            .expect("health check (low load)");
        floor.push(t.elapsed());
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
    out.low_load_health = Summary::of(&floor);
    out.low_load_convergence = Summary::of(&conv);
    out.low_load_end_to_end = Summary::of(&e2e);
}
