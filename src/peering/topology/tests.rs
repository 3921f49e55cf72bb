//! Unit tests of every topology precondition, on hand-built routers.

use super::*;
use crate::peering::links::allocate_link;

fn n(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn port(name: &str, nets: &[&str]) -> PortView {
    PortView {
        name: name.into(),
        networks: nets.iter().map(|s| s.to_string()).collect(),
        peer: None,
        is_gateway: false,
        peering: None,
        instance: None,
    }
}

fn router(id: &str, name: &str, ports: Vec<PortView>) -> RouterView {
    RouterView {
        id: id.into(),
        name: name.into(),
        ports,
        routes: vec![],
    }
}

/// vpc-1: two subnets and a gateway port; vpc-2: one subnet; vpc-3: one subnet.
fn topo() -> Vec<RouterView> {
    let gw = PortView {
        is_gateway: true,
        ..port("vpc-1-ext", &["172.18.0.2/16"])
    };
    vec![
        router(
            "r1",
            "vpc-1",
            vec![
                port("vpc-1-sw1", &["10.0.0.1/24"]),
                port("vpc-1-sw2", &["10.0.1.1/24"]),
                gw,
            ],
        ),
        router("r2", "vpc-2", vec![port("vpc-2-sw1", &["172.31.0.1/16"])]),
        router("r3", "vpc-3", vec![port("vpc-3-sw1", &["192.168.0.1/24"])]),
    ]
}

fn spec(name: &str, local: &str, remote: &str, link: (&str, &str)) -> PeeringSpec {
    PeeringSpec {
        name: name.into(),
        local_vpc: local.into(),
        remote_vpc: remote.into(),
        local_connect: link.0.parse().unwrap(),
        remote_connect: link.1.parse().unwrap(),
        local_routes: vec![],
        remote_routes: vec![],
    }
}

fn seed() -> PeeringSpec {
    spec("p1", "vpc-1", "vpc-2", ("169.254.0.1/30", "169.254.0.2/30"))
}

fn check(
    spec: &PeeringSpec,
    topo: &[RouterView],
    others: &[PeeringSpec],
) -> Result<TopologyFacts, Refusal> {
    check_topology(spec, topo, others, &["ovn-cluster".to_string()])
}

/// The fields of a FAILED_PRECONDITION refusal.
fn refused(spec: &PeeringSpec, topo: &[RouterView], others: &[PeeringSpec]) -> Vec<String> {
    let r = check(spec, topo, others).expect_err("should be refused");
    assert_eq!(r.kind, RefusalKind::FailedPrecondition);
    r.violations.into_iter().map(|v| v.field).collect()
}

#[test]
fn accepts_seed_with_automatic_routes() {
    let facts = check(&seed(), &topo(), &[]).unwrap();
    assert_eq!(
        (
            facts.local_router_id.as_str(),
            facts.remote_router_id.as_str()
        ),
        ("r1", "r2")
    );
    assert_eq!(facts.local_routes, vec![RouteSpec::dst(n("172.31.0.0/16"))]);
    // The gateway port's network is not a subnet.
    assert_eq!(
        facts.remote_routes,
        vec![
            RouteSpec::dst(n("10.0.0.0/24")),
            RouteSpec::dst(n("10.0.1.0/24"))
        ]
    );
}

#[test]
fn subnets_leave_out_peer_and_gateway_ports() {
    let r = router(
        "r",
        "v",
        vec![
            port("a", &["10.0.1.1/24", "fd10::1/64"]),
            port("b", &["10.0.0.1/24", "not-a-network"]),
            port("c", &["10.0.0.2/24"]),
            PortView {
                peer: Some("x-v".into()),
                ..port("v-x", &["169.254.0.1/30"])
            },
            PortView {
                is_gateway: true,
                ..port("gw", &["172.18.0.2/16"])
            },
        ],
    );
    assert_eq!(
        vpc_subnets(&r),
        vec![n("10.0.0.0/24"), n("10.0.1.0/24"), n("fd10::/64")]
    );
}

#[test]
fn automatic_routes_only_in_link_families() {
    let link: ConnectAddrs = "169.254.0.1/30".parse().unwrap();
    let subnets = [n("10.0.0.0/24"), n("fd10::/64")];
    assert_eq!(
        effective_routes(&[], &subnets, &link),
        vec![RouteSpec::dst(n("10.0.0.0/24"))]
    );
    let explicit = [RouteSpec {
        prefix: n("10.9.0.0/16"),
        policy: RoutePolicy::SrcIp,
    }];
    assert_eq!(
        effective_routes(&explicit, &subnets, &link),
        explicit.to_vec()
    );
}

#[test]
fn missing_router() {
    let mut s = seed();
    s.local_vpc = "nope".into();
    assert_eq!(refused(&s, &topo(), &[]), vec!["peering.local_vpc"]);
}

#[test]
fn ambiguous_router() {
    let mut t = topo();
    t.push(router("r2b", "vpc-2", vec![]));
    assert_eq!(refused(&seed(), &t, &[]), vec!["peering.remote_vpc"]);
}

#[test]
fn protected_vpc() {
    let mut t = topo();
    t.push(router(
        "rc",
        "ovn-cluster",
        vec![port("ovn-cluster-join", &["100.64.0.1/16"])],
    ));
    let mut s = seed();
    s.local_vpc = "ovn-cluster".into();
    assert_eq!(refused(&s, &t, &[]), vec!["peering.local_vpc"]);
    assert!(check_topology(&s, &t, &[], &[]).is_ok());
}

#[test]
fn vpc_subnets_overlap() {
    let mut t = topo();
    t[1].ports.push(port("vpc-2-sw2", &["10.0.0.1/16"]));
    // One violation per overlapping pair: 10.0.0.0/16 covers both of vpc-1's subnets.
    assert_eq!(
        refused(&seed(), &t, &[]),
        vec!["peering.remote_vpc", "peering.remote_vpc"]
    );
}

#[test]
fn link_overlaps_a_subnet_of_either_vpc() {
    let s = spec("p1", "vpc-1", "vpc-2", ("10.0.0.5/30", "10.0.0.6/30"));
    assert_eq!(refused(&s, &topo(), &[]), vec!["peering.local_connect_ip"]);
    let s = spec("p1", "vpc-1", "vpc-2", ("172.31.9.1/30", "172.31.9.2/30"));
    assert_eq!(refused(&s, &topo(), &[]), vec!["peering.remote_connect_ip"]);
}

#[test]
fn link_overlaps_a_gateway_or_foreign_peer_port() {
    let s = spec("p1", "vpc-1", "vpc-2", ("172.18.9.1/30", "172.18.9.2/30"));
    assert_eq!(refused(&s, &topo(), &[]), vec!["peering.local_connect_ip"]);
    let mut t = topo();
    t[1].ports.push(PortView {
        peer: Some("kube-ovn-x".into()),
        ..port("vpc-2-x", &["169.254.0.2/24"])
    });
    assert_eq!(refused(&seed(), &t, &[]), vec!["peering.remote_connect_ip"]);
}

#[test]
fn own_port_is_not_an_overlap() {
    // At runtime NB already holds this peering's ports.
    let mut t = topo();
    t[0].ports.push(PortView {
        peer: Some("vpc-2-vpc-1".into()),
        peering: Some("p1".into()),
        ..port("vpc-1-vpc-2", &["169.254.0.1/30"])
    });
    t[1].ports.push(PortView {
        peer: Some("vpc-1-vpc-2".into()),
        peering: Some("p1".into()),
        ..port("vpc-2-vpc-1", &["169.254.0.2/30"])
    });
    assert!(check(&seed(), &t, &[seed()]).is_ok());
}

#[test]
fn port_name_held_in_nb_by_anyone_else() {
    // Kube-OVN's subnet port of vpc-1 named like our port towards vpc-2.
    let mut t = topo();
    t[0].ports.push(port("vpc-1-vpc-2", &["10.9.0.1/24"]));
    let r = check(&seed(), &t, &[]).expect_err("foreign port");
    let v = r
        .violations
        .iter()
        .find(|v| v.field == "peering.local_vpc")
        .expect("names peering.local_vpc");
    assert!(v.description.contains("\"vpc-1-vpc-2\""), "{v:?}");
    assert!(v.description.contains("router \"vpc-1\""), "{v:?}");
    assert!(v.description.contains("not owned by ovn-peerd"), "{v:?}");

    // Another peering's (stale) port on the remote side.
    let mut t = topo();
    t[1].ports.push(PortView {
        peering: Some("old".into()),
        ..port("vpc-2-vpc-1", &["169.254.7.2/30"])
    });
    let r = check(&seed(), &t, &[]).expect_err("another peering's port");
    assert!(r
        .violations
        .iter()
        .any(|v| v.field == "peering.remote_vpc" && v.description.contains("peering \"old\"")));
}

#[test]
fn port_names_held_by_a_peering_of_other_vpcs() {
    // a-b + c and a + b-c both want a-b-c: the store hands the holder in among the others.
    let holder = spec("p1", "a-b", "c", ("169.254.0.1/30", "169.254.0.2/30"));
    let mine = spec("p2", "a", "b-c", ("169.254.0.5/30", "169.254.0.6/30"));
    let t = vec![
        router("r1", "a-b", vec![]),
        router("r2", "c", vec![]),
        router("r3", "a", vec![]),
        router("r4", "b-c", vec![]),
    ];
    let r = check(&mine, &t, &[holder]).expect_err("port name taken");
    assert_eq!(r.violations.len(), 1, "{r:?}");
    assert_eq!(r.violations[0].field, "peering.local_vpc");
    assert!(
        r.violations[0].description.contains("peering \"p1\""),
        "{r:?}"
    );
    assert_eq!(
        port_names(&mine.local_vpc, &mine.remote_vpc),
        ["a-b-c".to_string(), "b-c-a".to_string()]
    );
}

fn installed(id: &str, prefix: &str, peering: Option<&str>) -> RouteView {
    RouteView {
        id: id.into(),
        ip_prefix: prefix.into(),
        nexthop: "10.0.0.99".into(),
        peering: peering.map(str::to_string),
        ..RouteView::default()
    }
}

#[test]
fn route_forming_an_ecmp_group_is_refused() {
    // vpc-1 would route 172.31.0.0/16 (vpc-2's subnet) to vpc-2; a foreign route
    // written with host bits has the same normalised prefix.
    let mut t = topo();
    t[0].routes.push(installed("u-1", "172.31.9.9/16", None));
    let r = check(&seed(), &t, &[]).expect_err("ECMP with a foreign route");
    let v = &r.violations[0];
    assert_eq!(v.field, "peering.local_routes");
    for part in ["ECMP", "172.31.9.9/16", "10.0.0.99", "u-1", "\"vpc-1\""] {
        assert!(v.description.contains(part), "{part}: {v:?}");
    }
    // Another peering's row counts too, even when that peering is not among the others.
    let mut t = topo();
    t[1].routes
        .push(installed("u-2", "10.0.0.0/24", Some("gone")));
    let r = check(&seed(), &t, &[]).expect_err("ECMP with another peering's row");
    assert_eq!(r.violations[0].field, "peering.remote_routes");
    assert!(r.violations[0].description.contains("peering \"gone\""));
    // Another deployment's row is named with its deployment.
    let mut t = topo();
    t[1].routes.push(RouteView {
        instance: Some("dep-b".into()),
        ..installed("u-3", "10.0.0.0/24", Some("p9"))
    });
    let r = check(&seed(), &t, &[]).expect_err("ECMP with another deployment's row");
    let d = &r.violations[0].description;
    assert!(
        d.contains("peering \"p9\" of ovn-peerd deployment dep-b"),
        "{d}"
    );
}

#[test]
fn routes_that_form_no_ecmp_group() {
    let mut t = topo();
    // The peering's own rows.
    t[0].routes
        .push(installed("u-1", "172.31.0.0/16", Some("p1")));
    // Another route table, another policy, another prefix, a host route elsewhere.
    t[0].routes.push(RouteView {
        route_table: "rtb-1".into(),
        ..installed("u-2", "172.31.0.0/16", None)
    });
    t[0].routes.push(RouteView {
        policy: Some("src-ip".into()),
        ..installed("u-3", "172.31.0.0/16", None)
    });
    t[0].routes.push(installed("u-4", "172.31.0.0/17", None));
    t[0].routes.push(installed("u-5", "172.31.0.1", None));
    assert!(check(&seed(), &t, &[]).is_ok());
}

#[test]
fn route_view_keys() {
    let k = |p: &str, pol: Option<&str>| {
        RouteView {
            ip_prefix: p.into(),
            policy: pol.map(str::to_string),
            ..RouteView::default()
        }
        .key()
    };
    assert_eq!(
        k("10.1.2.3/16", None),
        Some((RoutePolicy::DstIp, n("10.1.0.0/16")))
    );
    assert_eq!(
        k("10.1.2.3", Some("dst-ip")),
        Some((RoutePolicy::DstIp, n("10.1.2.3/32")))
    );
    assert_eq!(
        k("fd00::1", Some("src-ip")),
        Some((RoutePolicy::SrcIp, n("fd00::1/128")))
    );
    assert_eq!(k("nonsense", None), None);
    assert_eq!(k("10.0.0.0/8", Some("weird")), None);
}

#[test]
fn link_overlaps_another_link_of_the_vpc() {
    let other = spec("p2", "vpc-3", "vpc-1", ("169.254.0.1/29", "169.254.0.2/29"));
    assert_eq!(
        refused(&seed(), &topo(), std::slice::from_ref(&other)),
        vec!["peering.local_connect_ip"]
    );
    // A link of a peering between two other VPCs may overlap (the pool is per VPC pair).
    let unrelated = spec("p3", "vpc-3", "vpc-4", ("169.254.0.1/30", "169.254.0.2/30"));
    assert!(check(&seed(), &topo(), &[unrelated]).is_ok());
}

#[test]
fn routes_towards_new_peer_overlap_another_peer() {
    let mut t = topo();
    t[2].ports.push(port("vpc-3-sw2", &["172.31.5.1/24"]));
    let other = spec("p2", "vpc-1", "vpc-3", ("169.254.0.5/30", "169.254.0.6/30"));
    // vpc-1 would route 172.31.0.0/16 to vpc-2 and 172.31.5.0/24 to vpc-3.
    assert_eq!(
        refused(&seed(), &t, std::slice::from_ref(&other)),
        vec!["peering.local_routes"]
    );
    // Explicit routes that avoid the other peer's are fine; one that does not is named.
    let mut s = seed();
    s.local_routes = vec![
        RouteSpec::dst(n("172.31.16.0/20")),
        RouteSpec::dst(n("172.31.4.0/22")),
    ];
    assert_eq!(
        refused(&s, &t, std::slice::from_ref(&other)),
        vec!["peering.local_routes[1].cidr"]
    );
    s.local_routes.pop();
    assert!(check(&s, &t, &[other]).is_ok());
}

#[test]
fn src_ip_routes_compare_only_with_src_ip_routes() {
    let mut s = seed();
    // A src-ip route naturally covers the VPC's own subnets.
    s.local_routes = vec![RouteSpec {
        prefix: n("10.0.0.0/16"),
        policy: RoutePolicy::SrcIp,
    }];
    assert!(check(&s, &topo(), &[]).is_ok());
    let mut other = spec("p2", "vpc-1", "vpc-3", ("169.254.0.5/30", "169.254.0.6/30"));
    other.local_routes = vec![RouteSpec {
        prefix: n("10.0.1.0/24"),
        policy: RoutePolicy::SrcIp,
    }];
    assert_eq!(
        refused(&s, &topo(), &[other]),
        vec!["peering.local_routes[0].cidr"]
    );
}

#[test]
fn explicit_route_overlaps_own_subnet() {
    let mut s = seed();
    s.remote_routes = vec![
        RouteSpec::dst(n("10.0.0.0/16")),
        RouteSpec::dst(n("172.31.128.0/17")),
    ];
    assert_eq!(
        refused(&s, &topo(), &[]),
        vec!["peering.remote_routes[1].cidr"]
    );
}

#[test]
fn explicit_route_overlaps_a_gateway_network_or_other_link() {
    let mut s = seed();
    s.local_routes = vec![RouteSpec::dst(n("172.16.0.0/12"))];
    let other = spec("p2", "vpc-3", "vpc-1", ("172.20.0.1/30", "172.20.0.2/30"));
    let r = check(&s, &topo(), &[other]).unwrap_err();
    let fields: Vec<&str> = r.violations.iter().map(|v| v.field.as_str()).collect();
    // Overlaps vpc-2's own subnet? No: routes in vpc-1. Gateway 172.18/16 and p2's link.
    assert_eq!(
        fields,
        vec![
            "peering.local_routes[0].cidr",
            "peering.local_routes[0].cidr"
        ]
    );
    assert!(r.violations[0].description.contains("vpc-1-ext"), "{r}");
    assert!(r.violations[1].description.contains("p2"), "{r}");
}

#[test]
fn vpc_pair_already_peered() {
    let mut other = seed();
    other.name = "p0".into();
    other.local_routes = vec![RouteSpec::dst(n("172.31.1.0/24"))];
    other.remote_routes = vec![RouteSpec::dst(n("10.0.0.0/24"))];
    let mut s = seed();
    s.local_routes = vec![RouteSpec::dst(n("172.31.2.0/24"))];
    s.remote_routes = vec![RouteSpec::dst(n("10.0.1.0/24"))];
    s.local_connect = "169.254.1.1/30".parse().unwrap();
    s.remote_connect = "169.254.1.2/30".parse().unwrap();
    assert_eq!(refused(&s, &topo(), &[other]), vec!["peering.remote_vpc"]);
}

#[test]
fn port_name_collision_between_pairs() {
    let t = vec![
        router("a", "a", vec![]),
        router("b", "b", vec![]),
        router("ab", "a-b", vec![]),
        router("bc", "b-c", vec![]),
        router("c", "c", vec![]),
    ];
    let other = spec("p2", "a", "b-c", ("169.254.0.5/30", "169.254.0.6/30"));
    let s = spec("p1", "a-b", "c", ("169.254.0.1/30", "169.254.0.2/30"));
    // "a-b" + "c" and "a" + "b-c" both name a port "a-b-c".
    assert_eq!(refused(&s, &t, &[other]), vec!["peering.local_vpc"]);
}

#[test]
fn subnet_added_later_fails_the_peering_at_runtime() {
    let mut t = topo();
    assert!(check(&seed(), &t, &[seed()]).is_ok());
    t[1].ports.push(port("vpc-2-sw9", &["10.0.1.1/25"]));
    let r = check(&seed(), &t, &[seed()]).unwrap_err();
    assert_eq!(r.violations[0].field, "peering.remote_vpc");
    assert!(r.to_string().contains("10.0.1.0/25"), "{r}");
}

#[test]
fn allocation_avoids_subnets_links_and_routes_of_its_vpcs_only() {
    // `far` shares no VPC with p1: its link is free for p1 (links are unique per VPC).
    let mut t = topo();
    t[0].ports.push(port("vpc-1-ll", &["169.254.0.1/30"]));
    let other = spec("p2", "vpc-3", "vpc-1", ("169.254.0.5/30", "169.254.0.6/30"));
    let far = spec(
        "p3",
        "vpc-8",
        "vpc-9",
        ("169.254.0.9/30", "169.254.0.10/30"),
    );
    let validated = ValidatedPeering {
        name: "p1".into(),
        local_vpc: "vpc-1".into(),
        remote_vpc: "vpc-2".into(),
        link: None,
        local_routes: vec![RouteSpec::dst(n("169.254.0.12/30"))],
        remote_routes: vec![],
    };
    let used = allocation_exclusions(&validated, &t, &[other.clone(), far.clone()]);
    let (l, r) = allocate_link(n("169.254.0.0/16"), 30, &used).unwrap();
    assert_eq!((l, r), (n("169.254.0.9/30"), n("169.254.0.10/30")));
    let mut s = validated.with_link(ConnectAddrs::default(), ConnectAddrs::default());
    s.local_connect.set(l);
    s.remote_connect.set(r);
    s.local_routes = vec![RouteSpec::dst(n("172.31.0.0/16"))];
    assert!(check(&s, &t, &[other, far]).is_ok());
}

/// The conflicting route is described by its own row, found by its UUID, wherever it sits in
/// the router: after routes with the same prefix in another table or policy, and after
/// another route with the same key that is the peering's own.
#[test]
fn ecmp_route_not_first_is_described_by_its_row() {
    let mut t = topo();
    t[0].routes.push(RouteView {
        route_table: "rtb-1".into(),
        nexthop: "10.0.0.91".into(),
        ..installed("u-table", "172.31.0.0/16", None)
    });
    t[0].routes.push(RouteView {
        policy: Some("src-ip".into()),
        nexthop: "10.0.0.92".into(),
        ..installed("u-policy", "172.31.0.0/16", None)
    });
    t[0].routes.push(RouteView {
        nexthop: "10.0.0.93".into(),
        ..installed("u-own", "172.31.0.0/16", Some("p1"))
    });
    t[0].routes.push(installed("u-other", "10.9.0.0/16", None));
    t[0].routes.push(RouteView {
        nexthop: "10.0.0.94".into(),
        ..installed("u-hit", "172.31.0.0/16", None)
    });
    let r = check(&seed(), &t, &[]).expect_err("ECMP with the fifth route");
    assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
    let d = &r.violations[0].description;
    for part in ["ECMP", "u-hit", "10.0.0.94", "\"vpc-1\""] {
        assert!(d.contains(part), "{part}: {d}");
    }
    for other in [
        "u-table",
        "u-policy",
        "u-own",
        "u-other",
        "10.0.0.91",
        "10.0.0.92",
    ] {
        assert!(!d.contains(other), "{other}: {d}");
    }
    for other in ["10.0.0.93", "10.0.0.99"] {
        assert!(!d.contains(other), "{other}: {d}");
    }
}
