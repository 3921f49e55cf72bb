//! The peering of `/shared/ovn-notes.md` §1, written by hand with `ovn-nbctl`, carries real
//! packets between two VPCs' pods on a userspace datapath; removing one peer port stops them.
//!
//! These tests prove the recipe and the fixtures without ovn-peerd; they are the template for
//! tests that let ovn-peerd's reconciler write the peering instead. They need root, and skip
//! (passing) without it.

use std::time::{Duration, Instant};

use crate::support::ovn::{
    add_pod_port, create_vpc, echo_microflow, skip_unless_root, Chassis, OvnCentral, Pod,
};

/// Long enough for a first packet that races ARP/ND; a ping that should fail costs 1 s.
const PING_WITHIN: Duration = Duration::from_secs(5);

/// One side of a test topology: a VPC and its pod's addressing.
struct Side {
    vpc: &'static str,
    subnet: &'static str,
    router_ip: &'static str,
    plen: &'static str,
    pod_lsp: &'static str,
    pod_mac: &'static str,
    pod_ip: &'static str,
}

/// Runs the whole scenario for one address family; `peer_nets` are the peer ports' networks
/// and `routes` the (router, prefix, nexthop) static routes, exactly as an operator would type.
fn peering_by_hand(left: Side, right: Side, peer_nets: [&str; 2], routes: [(&str, &str, &str); 2]) {
    let started = Instant::now();
    let central = OvnCentral::start();
    let chassis = Chassis::start(&central);
    let vpc_l = create_vpc(&central, left.vpc, left.subnet, left.router_ip);
    let vpc_r = create_vpc(&central, right.vpc, right.subnet, right.router_ip);
    add_pod_port(&central, &vpc_l, left.pod_lsp, left.pod_mac, left.pod_ip);
    add_pod_port(&central, &vpc_r, right.pod_lsp, right.pod_mac, right.pod_ip);
    let cidr = |s: &Side| format!("{}/{}", s.pod_ip, s.plen);
    let pod_l = Pod::add(
        &chassis,
        "left",
        left.pod_lsp,
        left.pod_mac,
        &cidr(&left),
        left.router_ip,
    );
    let pod_r = Pod::add(
        &chassis,
        "right",
        right.pod_lsp,
        right.pod_mac,
        &cidr(&right),
        right.router_ip,
    );
    central.sync_hv();
    let setup = started.elapsed();

    // Both pod ports are bound to our chassis, and each pod reaches its own router.
    for lsp in [left.pod_lsp, right.pod_lsp] {
        let logical_port = format!("logical_port={lsp}");
        let bound = central.sbctl([
            "--bare",
            "--columns=chassis",
            "find",
            "port_binding",
            &logical_port,
        ]);
        let name = central.sbctl(["get", "chassis", bound.trim(), "name"]);
        assert_eq!(
            name.trim().trim_matches('"'),
            chassis.name(),
            "{lsp} bound elsewhere"
        );
    }
    for (pod, vpc) in [(&pod_l, &vpc_l), (&pod_r, &vpc_r)] {
        assert!(
            pod.ping_within(&vpc.router_ip, PING_WITHIN),
            "pod {} (netns {}) cannot reach its router {} in {}",
            pod.name(),
            pod.netns(),
            vpc.router_ip,
            vpc.subnet
        );
    }
    // `ping6` forces ICMPv6; `ping` lets ping(8) pick by the address.
    let v6 = left.pod_ip.contains(':');
    let answered = |pod: &Pod, ip: &str| if v6 { pod.ping6(ip) } else { pod.ping(ip) };
    assert!(
        !answered(&pod_l, right.pod_ip),
        "VPCs are connected before any peering"
    );
    let flow = echo_microflow(
        left.pod_lsp,
        left.pod_mac,
        &vpc_l.router_mac,
        left.pod_ip,
        right.pod_ip,
    );
    let remote_output = format!("output(\"{}\")", right.pod_lsp);
    let before = central.trace(["--minimal", vpc_l.switch.as_str(), flow.as_str()]);
    assert!(
        !before.contains(&remote_output),
        "trace before peering:\n{before}"
    );

    // The peering, as ovn-notes §1 writes it.
    let (l_port, r_port) = (
        format!("{}-{}", left.vpc, right.vpc),
        format!("{}-{}", right.vpc, left.vpc),
    );
    central.nbctl([
        "lrp-add",
        left.vpc,
        &l_port,
        "0a:00:00:00:aa:01",
        peer_nets[0],
        &format!("peer={r_port}"),
    ]);
    central.nbctl([
        "lrp-add",
        right.vpc,
        &r_port,
        "0a:00:00:00:aa:02",
        peer_nets[1],
        &format!("peer={l_port}"),
    ]);
    for (router, prefix, nexthop) in routes {
        central.nbctl(["lr-route-add", router, prefix, nexthop]);
    }
    central.sync_hv();

    assert!(
        pod_l.ping_within(right.pod_ip, PING_WITHIN),
        "no echo reply across the peering"
    );
    assert!(
        pod_r.ping_within(left.pod_ip, PING_WITHIN),
        "no echo reply across the peering, reverse"
    );
    // Two router hops: each of vpc-1's and vpc-2's routers decrements the TTL.
    assert_eq!(
        pod_l.ping_ttl(right.pod_ip),
        Some(62),
        "TTL/hop limit after two routers"
    );
    let with = central.trace(["--minimal", vpc_l.switch.as_str(), flow.as_str()]);
    assert!(
        with.contains(&remote_output),
        "trace with peering lacks {remote_output}:\n{with}"
    );

    // Remove one side's peer port: the other side's port and routes stay, traffic stops.
    central.nbctl(["lrp-del", &r_port]);
    central.sync_hv();
    assert!(
        !answered(&pod_l, right.pod_ip),
        "ping still answered with one peer port removed"
    );
    let after = central.trace(["--minimal", vpc_l.switch.as_str(), flow.as_str()]);
    assert!(
        !after.contains(&remote_output),
        "trace without a peer port:\n{after}"
    );

    eprintln!(
        "{}: set-up {:.1?}, whole test {:.1?}",
        left.vpc,
        setup,
        started.elapsed()
    );
}

#[test]
fn peering_by_hand_connects_vpcs_ipv4() {
    if !skip_unless_root("datapath::peering_by_hand_connects_vpcs_ipv4") {
        return;
    }
    peering_by_hand(
        Side {
            vpc: "vpc-1",
            subnet: "10.0.1.0/24",
            router_ip: "10.0.1.1",
            plen: "24",
            pod_lsp: "vpc-1-pod",
            pod_mac: "0a:00:00:01:00:10",
            pod_ip: "10.0.1.10",
        },
        Side {
            vpc: "vpc-2",
            subnet: "172.31.1.0/24",
            router_ip: "172.31.1.1",
            plen: "24",
            pod_lsp: "vpc-2-pod",
            pod_mac: "0a:00:00:02:00:10",
            pod_ip: "172.31.1.10",
        },
        ["169.254.0.1/30", "169.254.0.2/30"],
        [
            ("vpc-1", "172.31.0.0/16", "169.254.0.2"),
            ("vpc-2", "10.0.0.0/16", "169.254.0.1"),
        ],
    );
}

#[test]
fn peering_by_hand_connects_vpcs_ipv6() {
    if !skip_unless_root("datapath::peering_by_hand_connects_vpcs_ipv6") {
        return;
    }
    peering_by_hand(
        Side {
            vpc: "vpc6-1",
            subnet: "fd00:1:1::/64",
            router_ip: "fd00:1:1::1",
            plen: "64",
            pod_lsp: "vpc6-1-pod",
            pod_mac: "0a:00:00:61:00:10",
            pod_ip: "fd00:1:1::10",
        },
        Side {
            vpc: "vpc6-2",
            subnet: "fd00:2:1::/64",
            router_ip: "fd00:2:1::1",
            plen: "64",
            pod_lsp: "vpc6-2-pod",
            pod_mac: "0a:00:00:62:00:10",
            pod_ip: "fd00:2:1::10",
        },
        ["fd00:a9fe::1/126", "fd00:a9fe::2/126"],
        [
            ("vpc6-1", "fd00:2::/32", "fd00:a9fe::2"),
            ("vpc6-2", "fd00:1::/32", "fd00:a9fe::1"),
        ],
    );
}
