//! The resolved router against a scan of its rows: random routers whose peer and gateway
//! ports carry the port names of (some) indexed peerings, and whose routes share prefixes
//! across route tables, policies and owners.

use proptest::prelude::*;

use super::*;
use crate::peering::overlaps;
use crate::peering::topology::{PortView, RouteView, RouterView};

/// Nested and disjoint prefixes, v4 and v6.
const NETS: [&str; 7] = [
    "10.0.0.0/16",
    "10.0.1.0/24",
    "10.0.1.0/24",
    "10.0.1.128/25",
    "10.9.0.0/16",
    "169.254.0.0/30",
    "fd00::/64",
];
/// Port names: some claimed by the indexed peerings, some not.
const PORTS: [&str; 5] = ["a-b", "b-a", "a-c", "gw", "lan"];
const OWNERS: [Option<&str>; 3] = [None, Some("p1"), Some("p2")];

fn arb_port() -> impl Strategy<Value = PortView> {
    (
        0..PORTS.len(),
        prop::collection::vec(0..NETS.len(), 0..3),
        0..3u8,
        0..OWNERS.len(),
    )
        .prop_map(|(name, nets, kind, owner)| PortView {
            name: PORTS[name].into(),
            networks: nets.into_iter().map(|i| NETS[i].to_string()).collect(),
            peer: (kind == 1).then(|| "elsewhere".to_string()),
            is_gateway: kind == 2,
            peering: OWNERS[owner].map(str::to_string),
            instance: None,
        })
}

fn arb_route() -> impl Strategy<Value = (usize, u8, bool, usize)> {
    (0..NETS.len(), 0..3u8, any::<bool>(), 0..OWNERS.len())
}

fn route((net, policy, other_table, owner): (usize, u8, bool, usize), i: usize) -> RouteView {
    RouteView {
        id: format!("u-{i}"),
        ip_prefix: NETS[net].to_string(),
        nexthop: format!("10.0.0.{i}"),
        policy: match policy {
            0 => None,
            1 => Some("dst-ip".into()),
            _ => Some("src-ip".into()),
        },
        route_table: if other_table {
            "rtb-1".into()
        } else {
            String::new()
        },
        peering: OWNERS[owner].map(str::to_string),
        instance: None,
    }
}

/// As [`ResolvedRouter::port_nets`] answers, by a scan of the router's ports in order.
fn port_nets_scan(
    r: &RouterView,
    claimed: &[String],
    q: &IpNet,
    own: &str,
    reclaimed: &[String],
) -> Vec<(IpNet, String)> {
    let mut out = Vec::new();
    for p in &r.ports {
        let p = PortRef::from(p);
        if !(p.is_peer() || p.is_gateway) || p.name == own {
            continue;
        }
        let ours = claimed.iter().any(|c| c == p.name);
        if ours && !reclaimed.iter().any(|c| c == p.name) {
            continue;
        }
        out.extend(
            p.nets()
                .filter(|n| overlaps(n, q))
                .map(|n| (n, p.name.to_string())),
        );
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// port_nets, ecmp and describe_route answer as a scan of the router's rows.
    #[test]
    fn prop_resolved_router_equals_a_scan(
        ports in prop::collection::vec(arb_port(), 0..6),
        routes in prop::collection::vec(arb_route(), 0..8),
        claimed in prop::collection::vec(0..PORTS.len(), 0..3),
        reclaimed in prop::collection::vec(0..PORTS.len(), 0..2),
    ) {
        let routes: Vec<RouteView> =
            routes.into_iter().enumerate().map(|(i, r)| route(r, i)).collect();
        let r = RouterView { id: "r1".into(), name: "vpc-a".into(), ports, routes };
        let topo = vec![r.clone()];
        let claimed: Vec<String> = claimed.into_iter().map(|i| PORTS[i].to_string()).collect();
        let reclaimed: Vec<String> = reclaimed.into_iter().map(|i| PORTS[i].to_string()).collect();
        let is_claimed = |p: &str| claimed.iter().any(|c| c == p);
        let is_reclaimed = |p: &str| reclaimed.iter().any(|c| c == p);
        // Read whole and kept, or asked per question (the topology's default walks stand for
        // a replica's index, whose lookups are held equal to them in `ovsdb::row_index`).
        for asked in [false, true] {
        let resolved =
            ResolvedRouter::new(&topo, "vpc-a", is_claimed, |_| asked).expect("one router");
        prop_assert_eq!(&resolved.subnets, &topo.subnets_named("vpc-a"));
        for q in NETS.iter().map(|n| n.parse::<IpNet>().unwrap().trunc()) {
            for own in PORTS.iter().copied().chain(["none"]) {
                let got: Vec<(IpNet, String)> =
                    resolved.port_nets(&topo, &q, own, &is_reclaimed, &is_claimed);
                prop_assert_eq!(got, port_nets_scan(&r, &claimed, &q, own, &reclaimed),
                    "q {} own {}", q, own);
            }
            for policy in [RoutePolicy::DstIp, RoutePolicy::SrcIp] {
                for me in ["p1", "p2", "p3"] {
                    let got = resolved.ecmp(&topo, (policy, q), me);
                    let want: Vec<usize> = r.routes.iter().enumerate()
                        .filter(|(_, x)| x.route_table.is_empty())
                        .filter(|(_, x)| x.key() == Some((policy, q)))
                        .filter(|(_, x)| x.peering.as_deref() != Some(me))
                        .map(|(i, _)| i)
                        .collect();
                    let orders: Vec<usize> = got.iter().map(|(o, _)| *o).collect();
                    prop_assert_eq!(&orders, &want, "{:?} {} me {}", policy, q, me);
                    for (order, id) in got {
                        prop_assert_eq!(
                            resolved.describe_route(&topo, &id),
                            r.routes[order].describe("vpc-a")
                        );
                    }
                }
            }
        }
        }
    }
}
