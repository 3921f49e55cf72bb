//! The Northbound rows one peering should produce: a router port on each side, each naming
//! the other as its `peer`, and static routes in each router via the other side's address.
//!
//! Everything here is derived, never stored: the same spec, generation and topology always
//! give the same rows (the MAC included), so the worker can re-derive at every pass and diff.
//! The rows must not carry `options:always_learn_from_arp_request=false` (kube-ovn #6882:
//! cross-VPC traffic is mis-forwarded without ARP learning), so we set no router options.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::topology::{check_topology, check_topology_in, Others, Topology, TopologyFacts};
use super::{
    port_name, Family, PeeringSpec, RoutePolicy, Side, GENERATION_KEY, INSTANCE_KEY, OWNER_KEY,
    OWNER_VALUE, PEERING_KEY, SIDE_KEY,
};

/// A `Logical_Router_Port` we want.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPort {
    /// The VPC (router name) holding the port.
    pub router: String,
    /// The UUID of that router.
    pub router_id: String,
    /// `<this_vpc>-<other_vpc>`.
    pub name: String,
    /// Stable locally administered unicast MAC, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// This side's connect addresses, IPv4 first (`169.254.0.1/30`).
    pub networks: Vec<String>,
    /// The other side's port name.
    pub peer: String,
    /// Ownership markers.
    pub external_ids: BTreeMap<String, String>,
}

/// A `Logical_Router_Static_Route` we want.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRoute {
    /// The VPC (router name) holding the route.
    pub router: String,
    /// The UUID of that router.
    pub router_id: String,
    /// The prefix, host bits clear, as `ipnet` prints it.
    pub ip_prefix: String,
    /// The other side's connect address of the prefix's family, without prefix length.
    pub nexthop: String,
    /// What the route matches on (always written explicitly).
    pub policy: RoutePolicy,
    /// This side's peer port: the port the route leaves by. Always set: every OVN router port
    /// has its own fe80::/64 address, so without it a link-local nexthop is ambiguous and OVN
    /// picks the first port whose networks contain it (kube-ovn #4447, ACTIVE but no traffic).
    pub output_port: String,
    /// Always `""` (the main table).
    pub route_table: String,
    /// Ownership markers.
    pub external_ids: BTreeMap<String, String>,
}

/// Every NB row of one peering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeering {
    /// The peering name.
    pub name: String,
    /// The generation the rows are derived from.
    pub generation: i64,
    /// Local side's port, then remote side's.
    pub ports: Vec<DesiredPort>,
    /// Local side's routes, then remote side's.
    pub routes: Vec<DesiredRoute>,
}

impl DesiredPeering {
    /// Marks every row with the id of the deployment that writes it ([`INSTANCE_KEY`]): the
    /// mark that tells its rows from another deployment's on the same NB.
    pub fn stamp_instance(&mut self, instance: &str) {
        let ids = self
            .ports
            .iter_mut()
            .map(|p| &mut p.external_ids)
            .chain(self.routes.iter_mut().map(|r| &mut r.external_ids));
        for ids in ids {
            ids.insert(INSTANCE_KEY.to_string(), instance.to_string());
        }
    }
}

/// The rows of `spec` at `generation`, or why they cannot be derived now (a router missing or
/// ambiguous, an overlap that appeared...): the message for STATE_FAILED.
pub fn desired_rows(
    spec: &PeeringSpec,
    generation: i64,
    topo: &(impl Topology + ?Sized),
    others: &[PeeringSpec],
    protected: &[String],
) -> Result<DesiredPeering, String> {
    let facts = check_topology(spec, topo, others, protected).map_err(|r| r.to_string())?;
    Ok(desired_from_facts(spec, generation, &facts))
}

/// [`desired_rows`] against indexed peerings ([`super::topology::PeerIndex`], built once for
/// many peerings).
pub fn desired_rows_in(
    spec: &PeeringSpec,
    generation: i64,
    topo: &(impl Topology + ?Sized),
    others: Others<'_>,
    protected: &[String],
) -> Result<DesiredPeering, String> {
    let facts = check_topology_in(spec, topo, others, protected).map_err(|r| r.to_string())?;
    Ok(desired_from_facts(spec, generation, &facts))
}

/// The rows of `spec` given the facts [`check_topology`] accepted.
pub fn desired_from_facts(
    spec: &PeeringSpec,
    generation: i64,
    facts: &TopologyFacts,
) -> DesiredPeering {
    let mut ports = Vec::new();
    let mut routes = Vec::new();
    for side in Side::BOTH {
        let this = spec.vpc(side);
        let other = spec.vpc(side.other());
        let ids = markers(&spec.name, generation, side);
        let port = port_name(this, other);
        let via = spec.connect(side.other());
        for r in facts.routes(side) {
            // Validation guarantees a nexthop for explicit routes, and automatic routes only
            // cover the link's families; skip defensively rather than write a bad row.
            let Some(nexthop) = via.host(Family::of(&r.prefix)) else {
                continue;
            };
            routes.push(DesiredRoute {
                router: this.to_string(),
                router_id: facts.router_id(side).to_string(),
                ip_prefix: r.prefix.trunc().to_string(),
                nexthop: nexthop.to_string(),
                policy: r.policy,
                output_port: port.clone(),
                route_table: String::new(),
                external_ids: ids.clone(),
            });
        }
        // The port last: it takes the side's markers and port name without a copy.
        ports.push(DesiredPort {
            router: this.to_string(),
            router_id: facts.router_id(side).to_string(),
            mac: port_mac(&spec.name, side),
            networks: spec
                .connect(side)
                .addrs()
                .iter()
                .map(|a| a.to_string())
                .collect(),
            peer: port_name(other, this),
            name: port,
            external_ids: ids,
        });
    }
    DesiredPeering {
        name: spec.name.clone(),
        generation,
        ports,
        routes,
    }
}

/// The ownership markers of a row of `peering`'s `side`.
pub fn markers(peering: &str, generation: i64, side: Side) -> BTreeMap<String, String> {
    BTreeMap::from([
        (OWNER_KEY.to_string(), OWNER_VALUE.to_string()),
        (PEERING_KEY.to_string(), peering.to_string()),
        (GENERATION_KEY.to_string(), generation.to_string()),
        (SIDE_KEY.to_string(), side.as_str().to_string()),
    ])
}

/// A MAC for `peering`'s `side` port: the first six bytes of a SHA-256 of both, made
/// locally administered (0x02 set) and unicast (0x01 clear). Stable across restarts, so
/// re-deriving never churns the port.
pub fn port_mac(peering: &str, side: Side) -> String {
    let mut h = Sha256::new();
    h.update(b"ovn-peerd port mac\0");
    h.update(peering.as_bytes());
    h.update(b"\0");
    h.update(side.as_str().as_bytes());
    let digest = h.finalize();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] | 0x02) & !0x01;
    // One allocation, no formatting machinery (a full pass derives two MACs per peering).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(17);
    for (i, b) in mac.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use ipnet::IpNet;

    use super::*;
    use crate::peering::topology::{PortView, RouterView};
    use crate::peering::RouteSpec;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn port(name: &str, nets: &[&str]) -> PortView {
        PortView {
            name: name.into(),
            networks: nets.iter().map(|s| s.to_string()).collect(),
            ..PortView::default()
        }
    }

    fn topo() -> Vec<RouterView> {
        vec![
            RouterView {
                id: "r1".into(),
                name: "vpc-1".into(),
                ports: vec![
                    port("vpc-1-sw1", &["10.0.0.1/16"]),
                    PortView {
                        is_gateway: true,
                        ..port("vpc-1-ext", &["172.18.0.2/16"])
                    },
                    PortView {
                        peer: Some("x".into()),
                        ..port("vpc-1-x", &["169.254.9.1/30"])
                    },
                ],
                routes: vec![],
            },
            RouterView {
                id: "r2".into(),
                name: "vpc-2".into(),
                ports: vec![port("vpc-2-sw1", &["172.31.0.1/16", "fd31::1/64"])],
                routes: vec![],
            },
        ]
    }

    fn seed() -> PeeringSpec {
        PeeringSpec {
            name: "p1".into(),
            local_vpc: "vpc-1".into(),
            remote_vpc: "vpc-2".into(),
            local_connect: "169.254.0.1/30".parse().unwrap(),
            remote_connect: "169.254.0.2/30".parse().unwrap(),
            local_routes: vec![],
            remote_routes: vec![],
        }
    }

    #[test]
    fn seed_example_rows() {
        let d = desired_rows(&seed(), 3, &topo(), &[], &[]).unwrap();
        assert_eq!(d.ports.len(), 2);
        let (l, r) = (&d.ports[0], &d.ports[1]);
        assert_eq!(
            (
                l.router.as_str(),
                l.router_id.as_str(),
                l.name.as_str(),
                l.peer.as_str()
            ),
            ("vpc-1", "r1", "vpc-1-vpc-2", "vpc-2-vpc-1")
        );
        assert_eq!(
            (
                r.router.as_str(),
                r.router_id.as_str(),
                r.name.as_str(),
                r.peer.as_str()
            ),
            ("vpc-2", "r2", "vpc-2-vpc-1", "vpc-1-vpc-2")
        );
        assert_eq!(l.networks, vec!["169.254.0.1/30"]);
        assert_eq!(r.networks, vec!["169.254.0.2/30"]);
        assert_eq!(l.external_ids[SIDE_KEY], "local");
        assert_eq!(r.external_ids[GENERATION_KEY], "3");
        assert_eq!(r.external_ids[PEERING_KEY], "p1");
        assert_eq!(r.external_ids[OWNER_KEY], OWNER_VALUE);
        // Automatic: vpc-1 gets vpc-2's IPv4 subnet (no IPv6 on the link); vpc-2 gets vpc-1's
        // subnet only, not its gateway or peer port networks.
        let routes: Vec<(&str, &str, &str, &str)> = d
            .routes
            .iter()
            .map(|r| {
                (
                    r.router.as_str(),
                    r.ip_prefix.as_str(),
                    r.nexthop.as_str(),
                    r.policy.as_ovn_str(),
                )
            })
            .collect();
        assert_eq!(
            routes,
            vec![
                ("vpc-1", "172.31.0.0/16", "169.254.0.2", "dst-ip"),
                ("vpc-2", "10.0.0.0/16", "169.254.0.1", "dst-ip")
            ]
        );
        assert!(d.routes.iter().all(|r| r.route_table.is_empty()));
    }

    #[test]
    fn every_route_names_its_own_peer_port() {
        // Automatic routes, IPv6 over a link-local link: every OVN router port also holds an
        // fe80::/64 address, so the route must say which port the nexthop is on.
        let mut s = seed();
        s.local_connect = "169.254.0.1/30,fe80::a:1/64".parse().unwrap();
        s.remote_connect = "169.254.0.2/30,fe80::a:2/64".parse().unwrap();
        let mut t = topo();
        t[0].ports.push(port("vpc-1-sw6", &["fd10::1/64"]));
        let d = desired_rows(&s, 1, &t, &[], &[]).unwrap();
        let routes: Vec<(&str, &str, &str, &str)> = d
            .routes
            .iter()
            .map(|r| {
                (
                    r.router.as_str(),
                    r.ip_prefix.as_str(),
                    r.nexthop.as_str(),
                    r.output_port.as_str(),
                )
            })
            .collect();
        assert_eq!(
            routes,
            vec![
                ("vpc-1", "172.31.0.0/16", "169.254.0.2", "vpc-1-vpc-2"),
                ("vpc-1", "fd31::/64", "fe80::a:2", "vpc-1-vpc-2"),
                ("vpc-2", "10.0.0.0/16", "169.254.0.1", "vpc-2-vpc-1"),
                ("vpc-2", "fd10::/64", "fe80::a:1", "vpc-2-vpc-1"),
            ]
        );
        // Explicit routes too, whatever their policy.
        s.local_routes = vec![
            RouteSpec::dst(n("fd31::/64")),
            RouteSpec {
                prefix: n("172.31.0.0/16"),
                policy: RoutePolicy::SrcIp,
            },
        ];
        s.remote_routes = vec![RouteSpec::dst(n("10.0.0.0/16"))];
        let d = desired_rows(&s, 1, &t, &[], &[]).unwrap();
        assert_eq!(d.routes.len(), 3);
        for r in &d.routes {
            let own_port = d.ports.iter().find(|p| p.router == r.router).unwrap();
            assert_eq!(r.output_port, own_port.name, "{r:?}");
        }
    }

    #[test]
    fn dual_stack_explicit_routes_pick_nexthop_by_family() {
        let mut s = seed();
        s.local_connect = "169.254.0.1/30,fd00::1/126".parse().unwrap();
        s.remote_connect = "169.254.0.2/30,fd00::2/126".parse().unwrap();
        s.local_routes = vec![
            RouteSpec::dst(n("fd31::/64")),
            RouteSpec {
                prefix: n("172.31.0.0/16"),
                policy: RoutePolicy::SrcIp,
            },
        ];
        let d = desired_rows(&s, 1, &topo(), &[], &[]).unwrap();
        assert_eq!(d.ports[0].networks, vec!["169.254.0.1/30", "fd00::1/126"]);
        let local: Vec<(&str, &str, RoutePolicy)> = d
            .routes
            .iter()
            .filter(|r| r.router == "vpc-1")
            .map(|r| (r.ip_prefix.as_str(), r.nexthop.as_str(), r.policy))
            .collect();
        assert_eq!(
            local,
            vec![
                ("fd31::/64", "fd00::2", RoutePolicy::DstIp),
                ("172.31.0.0/16", "169.254.0.2", RoutePolicy::SrcIp)
            ]
        );
    }

    #[test]
    fn automatic_routes_follow_subnets() {
        let mut t = topo();
        let before = desired_rows(&seed(), 1, &t, &[], &[]).unwrap();
        t[1].ports.push(port("vpc-2-sw2", &["172.30.0.1/24"]));
        t[1].ports.push(PortView {
            is_gateway: true,
            ..port("vpc-2-ext", &["192.0.2.2/24"])
        });
        let after = desired_rows(&seed(), 1, &t, &[], &[]).unwrap();
        let prefixes = |d: &DesiredPeering| -> Vec<String> {
            d.routes
                .iter()
                .filter(|r| r.router == "vpc-1")
                .map(|r| r.ip_prefix.clone())
                .collect()
        };
        assert_eq!(prefixes(&before), vec!["172.31.0.0/16"]);
        assert_eq!(prefixes(&after), vec!["172.30.0.0/24", "172.31.0.0/16"]);
        // The ports do not change when only subnets do.
        assert_eq!(before.ports, after.ports);
    }

    #[test]
    fn cannot_derive_without_routers_or_with_overlap() {
        let mut t = topo();
        t.remove(1);
        let err = desired_rows(&seed(), 1, &t, &[], &[]).unwrap_err();
        assert!(
            err.contains("peering.remote_vpc") && err.contains("vpc-2"),
            "{err}"
        );
        let mut t = topo();
        t[1].ports.push(port("vpc-2-sw2", &["10.0.5.1/24"]));
        let err = desired_rows(&seed(), 1, &t, &[], &[]).unwrap_err();
        assert!(err.contains("10.0.5.0/24"), "{err}");
    }

    #[test]
    fn mac_is_stable_locally_administered_unicast() {
        let a = port_mac("p1", Side::Local);
        assert_eq!(a, port_mac("p1", Side::Local));
        assert_ne!(a, port_mac("p1", Side::Remote));
        assert_ne!(a, port_mac("p2", Side::Local));
        // Pinned: a MAC that changed between versions would rewrite every port in NB.
        assert_eq!(a, "b2:84:21:5b:7a:ec");
        assert_eq!(
            port_mac("a-very-long-peering-name", Side::Remote),
            "c2:ad:e5:a3:28:89"
        );
        for name in ["p1", "p2", "x", "a-very-long-peering-name"] {
            for side in Side::BOTH {
                let mac = port_mac(name, side);
                assert_eq!(mac.len(), 17);
                let first = u8::from_str_radix(&mac[..2], 16).unwrap();
                assert_eq!(first & 0x02, 0x02, "{mac} locally administered");
                assert_eq!(first & 0x01, 0x00, "{mac} unicast");
            }
        }
    }

    #[test]
    fn rows_are_deterministic() {
        let a = desired_rows(&seed(), 7, &topo(), &[], &[]).unwrap();
        let b = desired_rows(&seed(), 7, &topo(), &[], &[]).unwrap();
        assert_eq!(a, b);
    }
}
