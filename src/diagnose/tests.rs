//! The checks on a healthy snapshot (all OK) and on each fault, one at a time.

use std::collections::BTreeMap;

use super::*;
use crate::peering::desired::{DesiredPort, DesiredRoute};

fn route(uuid: &str, prefix: &str, nexthop: &str, port: &str, of: Option<&str>) -> RouteRow {
    RouteRow {
        uuid: uuid.into(),
        ip_prefix: prefix.into(),
        nexthop: nexthop.into(),
        policy: Some("dst-ip".into()),
        output_port: Some(port.into()),
        route_table: String::new(),
        peering: of.map(Into::into),
    }
}

fn wanted_route(router: &str, prefix: &str, nexthop: &str, port: &str) -> DesiredRoute {
    DesiredRoute {
        router: router.into(),
        router_id: format!("r-{router}"),
        ip_prefix: prefix.into(),
        nexthop: nexthop.into(),
        policy: RoutePolicy::DstIp,
        output_port: port.into(),
        route_table: String::new(),
        external_ids: BTreeMap::new(),
    }
}

fn port(name: &str, router: &str, net: &str, peer: &str) -> PortRow {
    PortRow {
        uuid: format!("p-{name}"),
        name: name.into(),
        networks: vec![net.into()],
        peer: Some(peer.into()),
        enabled: None,
        router_uuid: Some(format!("r-{router}")),
        router_name: Some(router.into()),
        peering: Some("demo".into()),
    }
}

/// vpc-1 (10.1.0.0/24) peered with vpc-2 (10.2.0.0/24) over 169.254.0.0/30, converged.
fn healthy() -> Snapshot {
    let side = |vpc: &str, other: &str, me: &str, peer: &str, prefix: &str| SideSnapshot {
        vpc: vpc.into(),
        router: Ok(RouterRow {
            uuid: format!("r-{vpc}"),
            name: vpc.into(),
            options: BTreeMap::new(),
            routes: vec![route(
                &format!("rt-{vpc}"),
                prefix,
                peer.split('/').next().unwrap(),
                &format!("{vpc}-{other}"),
                Some("demo"),
            )],
            policies: Vec::new(),
        }),
        port: Some(port(
            &format!("{vpc}-{other}"),
            vpc,
            me,
            &format!("{other}-{vpc}"),
        )),
    };
    let wport = |vpc: &str, other: &str, net: &str| DesiredPort {
        router: vpc.into(),
        router_id: format!("r-{vpc}"),
        name: format!("{vpc}-{other}"),
        mac: String::new(),
        networks: vec![net.into()],
        peer: format!("{other}-{vpc}"),
        external_ids: BTreeMap::new(),
    };
    Snapshot {
        peering: PeeringFacts {
            name: "demo".into(),
            state: PeeringState::Active,
            state_message: String::new(),
            generation: 1,
            observed_generation: 1,
        },
        wanted: DesiredPeering {
            name: "demo".into(),
            generation: 1,
            ports: vec![
                wport("vpc-1", "vpc-2", "169.254.0.1/30"),
                wport("vpc-2", "vpc-1", "169.254.0.2/30"),
            ],
            routes: vec![
                wanted_route("vpc-1", "10.2.0.0/24", "169.254.0.2", "vpc-1-vpc-2"),
                wanted_route("vpc-2", "10.1.0.0/24", "169.254.0.1", "vpc-2-vpc-1"),
            ],
        },
        refusal: None,
        sides: [
            side(
                "vpc-1",
                "vpc-2",
                "169.254.0.1/30",
                "169.254.0.2/30",
                "10.2.0.0/24",
            ),
            side(
                "vpc-2",
                "vpc-1",
                "169.254.0.2/30",
                "169.254.0.1/30",
                "10.1.0.0/24",
            ),
        ],
        nb_global: Some(NbCfg {
            uuid: "g".into(),
            ..Default::default()
        }),
    }
}

fn router(s: &mut Snapshot, i: usize) -> &mut RouterRow {
    s.sides[i].router.as_mut().unwrap()
}

/// The findings that are not OK, as (check, severity, rows).
fn faults(s: &Snapshot) -> Vec<(&'static str, Severity, Vec<String>)> {
    diagnose(s)
        .into_iter()
        .filter(|f| f.severity != Severity::Ok)
        .map(|f| (f.check, f.severity, f.nb_rows))
        .collect()
}

#[track_caller]
fn assert_only(s: &Snapshot, check: &str, severity: Severity, row: &str) {
    let f = faults(s);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!((f[0].0, f[0].1), (check, severity), "{f:#?}");
    assert!(f[0].2.iter().any(|r| r.contains(row)), "{row} in {f:#?}");
}

#[test]
fn a_healthy_peering_is_all_ok_with_every_check_per_side() {
    let s = healthy();
    let all = diagnose(&s);
    assert!(faults(&s).is_empty(), "{all:#?}");
    let per_side = [
        "router_exists",
        "peer_port_exists",
        "peer_port_peer",
        "peer_port_enabled",
        "peer_port_networks",
        "routes_installed",
        "ecmp_conflict",
        "more_specific_route",
        "src_ip_route",
        "router_policy",
        "router_options",
    ];
    for c in per_side {
        assert_eq!(all.iter().filter(|f| f.check == c).count(), 2, "{c}");
    }
    assert_eq!(all.len(), 3 + 2 * per_side.len());
}

#[test]
fn port_faults() {
    let mut s = healthy();
    s.sides[0].port = None;
    assert_only(
        &s,
        "peer_port_exists",
        Severity::Error,
        "Logical_Router r-vpc-1",
    );

    let mut s = healthy();
    s.sides[1].port.as_mut().unwrap().enabled = Some(false);
    assert_only(&s, "peer_port_enabled", Severity::Error, "p-vpc-2-vpc-1");

    let mut s = healthy();
    s.sides[0].port.as_mut().unwrap().networks = vec!["169.254.9.1/30".into()];
    assert_only(&s, "peer_port_networks", Severity::Error, "p-vpc-1-vpc-2");

    let mut s = healthy();
    s.sides[0].port.as_mut().unwrap().peer = Some("elsewhere".into());
    assert_only(&s, "peer_port_peer", Severity::Error, "p-vpc-1-vpc-2");

    let mut s = healthy();
    s.sides[0].port.as_mut().unwrap().router_uuid = Some("r-other".into());
    assert_only(&s, "peer_port_exists", Severity::Error, "p-vpc-1-vpc-2");
}

#[test]
fn route_faults() {
    let mut s = healthy();
    router(&mut s, 0).routes.clear();
    assert_only(&s, "routes_installed", Severity::Error, "r-vpc-1");

    let mut s = healthy();
    router(&mut s, 0).routes[0].output_port = None;
    assert_only(&s, "routes_installed", Severity::Error, "rt-vpc-1");

    let mut s = healthy();
    let ecmp = route("x", "10.2.0.0/24", "192.0.2.1", "p", None);
    router(&mut s, 0).routes.push(ecmp);
    assert_only(
        &s,
        "ecmp_conflict",
        Severity::Error,
        "Logical_Router_Static_Route x",
    );

    let mut s = healthy();
    let narrow = route("x", "10.2.0.128/25", "192.0.2.1", "p", None);
    router(&mut s, 0).routes.push(narrow);
    assert_only(
        &s,
        "more_specific_route",
        Severity::Error,
        "x (10.2.0.128/25",
    );

    // A broader foreign route is fine: ours wins the longest-prefix match.
    let mut s = healthy();
    router(&mut s, 0)
        .routes
        .push(route("x", "10.0.0.0/8", "192.0.2.1", "p", None));
    assert!(faults(&s).is_empty());
}

#[test]
fn src_ip_routes_capture_only_when_they_outrank_ours_and_match_our_sources() {
    let src = |prefix: &str| RouteRow {
        policy: Some("src-ip".into()),
        ..route("s", prefix, "192.0.2.1", "p", None)
    };
    let mut s = healthy();
    router(&mut s, 1).routes.push(src("10.2.0.0/25"));
    assert_only(
        &s,
        "src_ip_route",
        Severity::Error,
        "s (10.2.0.0/25 via 192.0.2.1, src-ip)",
    );
    // As long as ours (a /24) ranks first on a tie.
    let mut s = healthy();
    router(&mut s, 1).routes.push(src("10.2.0.0/24"));
    assert!(faults(&s).is_empty());
    // Sources of another VPC.
    let mut s = healthy();
    router(&mut s, 1).routes.push(src("10.1.0.0/25"));
    assert!(faults(&s).is_empty());
}

#[test]
fn policies_that_reroute_or_drop_the_traffic_are_errors_unread_ones_warnings() {
    let policy = |m: &str, action: &str| PolicyRow {
        uuid: "pol".into(),
        priority: 100,
        r#match: m.into(),
        action: action.into(),
    };
    let mut s = healthy();
    router(&mut s, 0)
        .policies
        .push(policy("ip4.dst == 10.2.0.0/16", "reroute"));
    assert_only(
        &s,
        "router_policy",
        Severity::Error,
        "Logical_Router_Policy pol",
    );

    let mut s = healthy();
    router(&mut s, 1)
        .policies
        .push(policy(r#"inport == "vpc-2-vpc-1""#, "drop"));
    assert_only(&s, "router_policy", Severity::Error, "pol");

    let mut s = healthy();
    router(&mut s, 0)
        .policies
        .push(policy("ip4.dst == $as", "drop"));
    assert_only(&s, "router_policy", Severity::Warning, "pol");

    let mut s = healthy();
    let p = &mut router(&mut s, 0).policies;
    p.push(policy("ip4.dst == 10.2.0.0/16", "allow"));
    p.push(policy("ip4.dst == 10.9.0.0/16", "reroute"));
    p.push(policy("ip6", "drop"));
    assert!(faults(&s).is_empty());
}

#[test]
fn options_state_rules_and_northd() {
    let mut s = healthy();
    router(&mut s, 1)
        .options
        .insert(router::ALWAYS_LEARN.into(), "false".into());
    assert_only(&s, "router_options", Severity::Error, "r-vpc-2");

    let mut s = healthy();
    s.nb_global.as_mut().unwrap().nb_cfg = 3;
    assert_only(&s, "northd_sync", Severity::Warning, "NB_Global g");
    s.nb_global = None;
    assert_eq!(faults(&s)[0].0, "northd_sync");

    for (state, severity) in [
        (PeeringState::Pending, Severity::Warning),
        (PeeringState::Deleting, Severity::Warning),
        (PeeringState::Failed, Severity::Error),
    ] {
        let mut s = healthy();
        s.peering.state = state;
        let f = faults(&s);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].0, f[0].1), ("peering_state", severity));
    }

    for (state, severity) in [
        (PeeringState::PendingAcceptance, Severity::Warning),
        (PeeringState::Rejected, Severity::Error),
        (PeeringState::Expired, Severity::Error),
    ] {
        let mut s = healthy();
        s.peering.state = state;
        let f = diagnose_outside_nb(&s.peering);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].check, f[0].severity), ("peering_state", severity));
    }

    let mut s = healthy();
    s.refusal = Some("an ECMP group".into());
    assert_eq!(faults(&s)[0].0, "desired_rows");

    let mut s = healthy();
    s.sides[1].router = Err("no OVN logical router is named \"vpc-2\"".into());
    let f = faults(&s);
    assert_eq!(f.len(), 1, "the side's other checks are skipped: {f:?}");
    assert_eq!(f[0].0, "router_exists");
}

#[test]
fn dual_stack_policies_are_judged_per_family() {
    let mut s = healthy();
    let (w1, w2) = (
        wanted_route("vpc-1", "fd02::/64", "fd00::2", "vpc-1-vpc-2"),
        wanted_route("vpc-2", "fd01::/64", "fd00::1", "vpc-2-vpc-1"),
    );
    s.wanted.routes.extend([w1, w2]);
    let r1 = route("rt6-1", "fd02::/64", "fd00::2", "vpc-1-vpc-2", Some("demo"));
    let r2 = route("rt6-2", "fd01::/64", "fd00::1", "vpc-2-vpc-1", Some("demo"));
    router(&mut s, 0).routes.push(r1);
    router(&mut s, 1).routes.push(r2);
    assert!(faults(&s).is_empty(), "{:#?}", faults(&s));
    let policy = |m: &str| PolicyRow {
        uuid: "pol".into(),
        priority: 10,
        r#match: m.into(),
        action: "drop".into(),
    };
    let mut ok = s.clone();
    let p = &mut router(&mut ok, 0).policies;
    p.push(policy("ip6.src == fd09::/64"));
    p.push(policy("ip6.dst == fd02::/64 && ip6.src == fd09::/64"));
    assert!(faults(&ok).is_empty(), "{:#?}", faults(&ok));
    router(&mut s, 0)
        .policies
        .push(policy("ip6.src == fd01::/64"));
    assert_only(&s, "router_policy", Severity::Error, "pol");
}
