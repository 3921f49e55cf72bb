//! Make-before-break, proven with real packets (issue 13): a pod pings another VPC's pod
//! every 10 ms while UpdatePeering changes the peering's routes back and forth between sets
//! that both cover the pinged subnet (10.2.0.0/16 <-> {10.2.0.0/17, 10.2.128.0/17}); not
//! one echo may go unanswered. The worker writes each change in one NB transaction (new
//! routes with the removal of the old ones), so ovn-northd and ovn-controller never see a
//! moment without a route to 10.2.0.0/24. Written as delete-then-insert in two transactions,
//! the pings sent between the two are lost.
//!
//! Needs root (network namespaces, a userspace `ovs-vswitchd`); skips (passing) without it.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovn_peerd::proto::v1::peering::State;
use ovn_peerd::proto::v1::{
    CreatePeeringRequest, GetPeeringRequest, Peering, PeeringRoute, RoutePolicy,
    UpdatePeeringRequest,
};
use ovn_peerd_test_support::process::Owned;
use prost_types::FieldMask;

use crate::support::ovn::{
    add_pod_port, create_vpc, skip_unless_root, wait_until, Chassis, OvnCentral, Pod,
};
use crate::support::peerd::{Options, TestPeerd};

/// Slack for the worker, northd and ovn-controller under a loaded CI machine.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// Route changes made while the ping runs (each one converged and installed on the chassis).
const FLIPS: usize = 20;
/// Echoes answered after the last change before the ping is stopped.
const AFTER_LAST: u64 = 20;

fn routes(cidrs: &[&str]) -> Vec<PeeringRoute> {
    cidrs
        .iter()
        .map(|c| PeeringRoute {
            cidr: c.to_string(),
            policy: RoutePolicy::DstIp as i32,
        })
        .collect()
}

/// `ping -i 0.01` in a pod's network namespace, its answered `icmp_seq`s collected as they
/// come (line-buffered through `stdbuf`).
struct Pinger {
    process: Owned,
    answered: Arc<Mutex<BTreeSet<u64>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Pinger {
    fn start(pod: &Pod, ip: &str) -> Pinger {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", pod.netns(), "stdbuf", "-oL", "ping", "-n"])
            .args(["-i", "0.01", "-W", "1", ip])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut process = Owned::spawn("ping", &mut cmd);
        let stdout = process
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .expect("ping's stdout");
        let answered = Arc::new(Mutex::new(BTreeSet::new()));
        let seen = answered.clone();
        let reader = std::thread::spawn(move || {
            // "64 bytes from 10.2.0.10: icmp_seq=17 ttl=62 time=0.41 ms"
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("(DUP!)") {
                    continue;
                }
                let seq = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("icmp_seq="))
                    .and_then(|s| s.parse::<u64>().ok());
                if let Some(seq) = seq {
                    seen.lock().unwrap().insert(seq);
                }
            }
        });
        Pinger {
            process,
            answered,
            reader: Some(reader),
        }
    }

    fn last_answered(&self) -> u64 {
        self.answered.lock().unwrap().last().copied().unwrap_or(0)
    }

    /// Stops the ping (SIGINT, as a user would) and returns every echo up to the last answered
    /// one that went unanswered, and how many that range holds. Echoes after the last answer
    /// were still in flight when the ping stopped.
    fn stop(mut self) -> (Vec<u64>, u64) {
        // SAFETY: kill(2) on the pid of our own child, not reaped yet.
        unsafe { libc::kill(self.process.pid() as libc::pid_t, libc::SIGINT) };
        wait_until("ping to exit", Duration::from_secs(10), || {
            self.process.exited().is_some()
        })
        .expect("ping exits on SIGINT");
        if let Some(r) = self.reader.take() {
            r.join().expect("reader thread");
        }
        let answered = self.answered.lock().unwrap();
        let last = answered.last().copied().unwrap_or(0);
        let lost = (1..=last).filter(|s| !answered.contains(s)).collect();
        (lost, last)
    }
}

#[test]
fn route_changes_under_a_10ms_ping_lose_nothing() {
    if !skip_unless_root("make_before_break::route_changes_under_a_10ms_ping_lose_nothing") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let central = OvnCentral::start();
    let chassis = Chassis::start(&central);
    let vpc_1 = create_vpc(&central, "vpc-1", "10.1.0.0/24", "10.1.0.1");
    let vpc_2 = create_vpc(&central, "vpc-2", "10.2.0.0/24", "10.2.0.1");
    add_pod_port(
        &central,
        &vpc_1,
        "vpc-1-pod",
        "0a:00:00:01:00:10",
        "10.1.0.10",
    );
    add_pod_port(
        &central,
        &vpc_2,
        "vpc-2-pod",
        "0a:00:00:02:00:10",
        "10.2.0.10",
    );
    let pod_1 = Pod::add(
        &chassis,
        "left",
        "vpc-1-pod",
        "0a:00:00:01:00:10",
        "10.1.0.10/24",
        "10.1.0.1",
    );
    let _pod_2 = Pod::add(
        &chassis,
        "right",
        "vpc-2-pod",
        "0a:00:00:02:00:10",
        "10.2.0.10/24",
        "10.2.0.1",
    );
    let peerd = rt.block_on(TestPeerd::start_against(
        &central.nb_remote(),
        Options {
            worker: true,
            ..Options::default()
        },
    ));
    let mut api = rt.block_on(peerd.client());
    let wide = ["10.2.0.0/16"];
    let halves = ["10.2.0.0/17", "10.2.128.0/17"];
    rt.block_on(api.create_peering(CreatePeeringRequest {
        peering: Some(Peering {
            name: "p1".into(),
            local_vpc: "vpc-1".into(),
            remote_vpc: "vpc-2".into(),
            local_connect_ip: "169.254.0.1/30".into(),
            remote_connect_ip: "169.254.0.2/30".into(),
            local_routes: routes(&wide),
            remote_routes: routes(&["10.1.0.0/16"]),
            ..Default::default()
        }),
        ..Default::default()
    }))
    .expect("CreatePeering");
    let mut reader = api.clone();
    let mut active_at = |generation: i64| -> Peering {
        wait_until(
            &format!("p1 ACTIVE at generation {generation}"),
            CONVERGE_WITHIN,
            || {
                let p = rt
                    .block_on(reader.get_peering(GetPeeringRequest { name: "p1".into() }))
                    .expect("GetPeering")
                    .into_inner();
                assert_ne!(p.state, State::Failed as i32, "{p:?}");
                (p.state == State::Active as i32 && p.observed_generation == generation)
                    .then_some(p)
            },
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut current = active_at(1);
    central.sync_hv();
    assert!(
        pod_1.ping_within("10.2.0.10", Duration::from_secs(5)),
        "no echo across the peering before the test starts"
    );

    let pinger = Pinger::start(&pod_1, "10.2.0.10");
    wait_until("the ping to be answered", CONVERGE_WITHIN, || {
        pinger.last_answered() >= 20
    })
    .expect("ping runs");
    let our_routes = || -> BTreeSet<String> {
        central
            .nbctl([
                "--bare",
                "--columns=ip_prefix",
                "find",
                "Logical_Router_Static_Route",
                "nexthop=169.254.0.2",
            ])
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    // Measured, never asserted: UpdatePeering sent -> ACTIVE, and -> flows on the chassis.
    let (mut to_active, mut to_chassis) = (Vec::new(), Vec::new());
    for flip in 0..FLIPS {
        let next: &[&str] = if flip % 2 == 0 { &halves } else { &wide };
        let sent = std::time::Instant::now();
        let updated = rt
            .block_on(api.update_peering(UpdatePeeringRequest {
                peering: Some(Peering {
                    local_routes: routes(next),
                    ..current.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["local_routes".into()],
                }),
                ..Default::default()
            }))
            .expect("UpdatePeering")
            .into_inner();
        current = active_at(updated.generation);
        to_active.push(sent.elapsed());
        central.sync_hv();
        to_chassis.push(sent.elapsed());
        let want: BTreeSet<String> = next.iter().map(|s| s.to_string()).collect();
        assert_eq!(our_routes(), want, "after change {flip}");
    }
    let last_change = pinger.last_answered();
    wait_until("echoes after the last change", CONVERGE_WITHIN, || {
        pinger.last_answered() >= last_change + AFTER_LAST
    })
    .expect("the ping goes on after the changes");
    let (lost, sent) = pinger.stop();
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    eprintln!(
        "make_before_break: {FLIPS} route changes, {sent} echoes, {} lost; \
         UpdatePeering -> ACTIVE p50 {:.1?}, -> installed on the chassis p50 {:.1?}",
        lost.len(),
        median(&mut to_active),
        median(&mut to_chassis)
    );
    assert!(
        lost.is_empty(),
        "{} of {sent} echoes lost while the routes changed (icmp_seq {lost:?})",
        lost.len()
    );
    drop(peerd);
    rt.shutdown_timeout(Duration::from_secs(5));
}
