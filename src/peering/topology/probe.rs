//! Which stored peerings can take part in the rules for a new peering: the question the store
//! answers in SQL through indexes (`CreateTx::list_for_batch_probe`), so that judging one new
//! spoke of a hub with N spokes reads its few neighbours, not all N.
//!
//! Another peering takes part in the rules for a peering P only by sharing P's name, a port
//! name or P's VPC pair ([`super::check_topology`]'s name rules), or by having a link or a route
//! in a VPC of P that overlaps P's link or a route P installs there (the overlap rules). A
//! route it installs there is explicit (stored) or automatic: a subnet of its other VPC, so the
//! VPCs whose subnets overlap P's networks are looked up in NB and their pairs with P's VPCs
//! asked for. The rest of the rules read NB alone, with one exception: a peer port in P's
//! VPCs is "ours" (not in the way) when a judged peering claims it, so the peerings named by
//! the NB peer ports overlapping P's networks are asked for too.
//!
//! A link to be allocated is not known when the neighbours are read: the allocator avoids
//! every link of P's VPCs (read apart, links only) and every network in use there, so only the
//! routes that overlap the link pools ([`ConflictQuery::route_nets`]) are asked for on its
//! account; the link it picks then overlaps nothing of the peerings not read.
//!
//! The answer is a superset (networks of one VPC are also matched in the other), never less:
//! the rules judged against it reach the verdicts they reach against every peering.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::{effective_routes, is_peer, port_names, subnets_of_port, RouterView, Topology};
use crate::peering::{overlaps, PeeringSpec, Side};

/// What NB says about the neighbourhood of a peering, beyond [`Topology`].
pub trait Nearby {
    /// The names of the routers with a subnet overlapping one of `nets`.
    fn vpcs_with_subnets_overlapping(&self, nets: &[IpNet]) -> BTreeSet<String>;
    /// The peerings (named in `external_ids` of owned rows) of the peer ports of the routers
    /// named `vpc` with a network overlapping one of `nets`.
    fn peerings_of_ports_overlapping(&self, vpc: &str, nets: &[IpNet]) -> BTreeSet<String>;
}

/// What a stored peering must share with, or overlap in, the probed peerings (see the module
/// doc); several peerings' probes merge into one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConflictQuery {
    /// Names: the probed peerings' own, and those of NB peer ports overlapping them.
    pub names: BTreeSet<String>,
    /// Port names of the probed peerings.
    pub ports: BTreeSet<String>,
    /// Unordered VPC pairs (lower, higher): the probed peerings' own, and (VPC of a probed
    /// peering, a VPC whose subnets overlap its networks or a link pool).
    pub pairs: BTreeSet<(String, String)>,
    /// Networks a link must overlap (in one of `vpcs`).
    pub nets: BTreeSet<IpNet>,
    /// The probed peerings' VPCs: the links overlapping `nets` there, and every peering there
    /// with explicit routes, a tombstone, a failed peering or a state this version does not
    /// know (few; read whole, so a row that does not decode fails the creates it touches).
    pub vpcs: BTreeSet<String>,
}

impl ConflictQuery {
    /// Adds `spec` (with empty `*_connect` when its link is to be allocated from `pools`:
    /// then every subnet of the other VPC counts, whatever its family); `also`: networks of
    /// its rows as NB holds them (they may predate a change of subnets).
    pub fn add<T>(&mut self, spec: &PeeringSpec, topo: &T, pools: &[IpNet], also: &[IpNet])
    where
        T: Topology + Nearby + ?Sized,
    {
        self.names.insert(spec.name.clone());
        self.ports
            .extend(port_names(&spec.local_vpc, &spec.remote_vpc));
        self.pairs.insert(pair(&spec.local_vpc, &spec.remote_vpc));
        let mut nets: Vec<IpNet> = also.to_vec();
        let allocated = spec.local_connect.networks().is_empty();
        for side in Side::BOTH {
            let other_subnets = topo.subnets_named(spec.vpc(side.other()));
            let link = spec.connect(side);
            nets.extend(link.networks());
            if allocated && spec.routes(side).is_empty() {
                nets.extend(other_subnets);
            } else {
                let installed = effective_routes(spec.routes(side), &other_subnets, link);
                nets.extend(installed.iter().map(|r| r.prefix));
            }
        }
        let mut near_nets = nets.clone();
        if allocated {
            near_nets.extend(pools);
        }
        let near = topo.vpcs_with_subnets_overlapping(&near_nets);
        for vpc in [&spec.local_vpc, &spec.remote_vpc] {
            self.vpcs.insert(vpc.clone());
            for other in near.iter().filter(|o| *o != vpc) {
                self.pairs.insert(pair(vpc, other));
            }
            self.names
                .extend(topo.peerings_of_ports_overlapping(vpc, &nets));
        }
        self.nets.extend(nets.iter().map(IpNet::trunc));
    }
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

fn overlaps_any(n: &IpNet, nets: &[IpNet]) -> bool {
    nets.iter().any(|m| overlaps(n, m))
}

impl Nearby for [RouterView] {
    fn vpcs_with_subnets_overlapping(&self, nets: &[IpNet]) -> BTreeSet<String> {
        self.iter()
            .filter(|r| {
                r.ports.iter().any(|p| {
                    subnets_of_port(&p.networks, p.peer.as_deref(), p.is_gateway)
                        .any(|s| overlaps_any(&s, nets))
                })
            })
            .map(|r| r.name.clone())
            .collect()
    }

    fn peerings_of_ports_overlapping(&self, vpc: &str, nets: &[IpNet]) -> BTreeSet<String> {
        self.iter()
            .filter(|r| r.name == vpc)
            .flat_map(|r| &r.ports)
            .filter(|p| is_peer(p))
            .filter(|p| {
                super::parse_networks(p)
                    .iter()
                    .any(|n| overlaps_any(n, nets))
            })
            .filter_map(|p| p.peering.clone())
            .collect()
    }
}

impl Nearby for Vec<RouterView> {
    fn vpcs_with_subnets_overlapping(&self, nets: &[IpNet]) -> BTreeSet<String> {
        self.as_slice().vpcs_with_subnets_overlapping(nets)
    }

    fn peerings_of_ports_overlapping(&self, vpc: &str, nets: &[IpNet]) -> BTreeSet<String> {
        self.as_slice().peerings_of_ports_overlapping(vpc, nets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peering::topology::PortView;
    use crate::peering::ConnectAddrs;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn router(name: &str, subnet: &str, peer_ports: &[(&str, &str, &str)]) -> RouterView {
        let mut ports = vec![PortView {
            name: format!("{name}-lan"),
            networks: vec![subnet.into()],
            ..Default::default()
        }];
        for (port, net, peering) in peer_ports {
            ports.push(PortView {
                name: port.to_string(),
                networks: vec![net.to_string()],
                peer: Some("elsewhere".into()),
                peering: Some(peering.to_string()),
                ..Default::default()
            });
        }
        RouterView {
            id: format!("id-{name}"),
            name: name.into(),
            ports,
            routes: vec![],
        }
    }

    fn spec(name: &str, a: &str, b: &str, link: Option<(&str, &str)>) -> PeeringSpec {
        let (l, r) = link.map_or(
            (ConnectAddrs::default(), ConnectAddrs::default()),
            |(l, r)| (l.parse().unwrap(), r.parse().unwrap()),
        );
        PeeringSpec {
            name: name.into(),
            local_vpc: a.into(),
            remote_vpc: b.into(),
            local_connect: l,
            remote_connect: r,
            local_routes: vec![],
            remote_routes: vec![],
        }
    }

    fn pairs(q: &ConflictQuery) -> Vec<(&str, &str)> {
        q.pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect()
    }

    /// A new spoke `x` whose subnet overlaps spoke `s3`'s: the probe asks for its own pair and
    /// (hub, s3), whose automatic route in the hub overlaps x's (and (s3, x): a VPC's subnets
    /// are matched against both VPCs' networks, a harmless superset), for the peering of the
    /// hub's peer port in the way of its link, for its networks, and for nothing of s1. A link
    /// to be allocated: the VPCs with a subnet in the pool (`lab`) too.
    #[test]
    fn a_spoke_probe_names_the_overlapping_spoke_and_port_not_the_others() {
        let topo = vec![
            router(
                "hub",
                "10.0.0.1/24",
                &[
                    ("hub-s1", "169.254.0.1/30", "h1"),
                    ("hub-s3", "169.254.0.9/30", "h3"),
                ],
            ),
            router("s1", "10.1.1.1/24", &[]),
            router("s3", "10.3.1.1/24", &[]),
            router("x", "10.3.0.1/16", &[]),
            router("lab", "169.254.200.1/24", &[]),
        ];
        let pool = [n("169.254.0.0/16")];
        let mut q = ConflictQuery::default();
        let linked = spec(
            "new",
            "hub",
            "x",
            Some(("169.254.0.9/30", "169.254.0.10/30")),
        );
        q.add(&linked, &topo, &pool, &[]);
        assert_eq!(pairs(&q), [("hub", "s3"), ("hub", "x"), ("s3", "x")]);
        assert_eq!(q.names, ["h3", "new"].map(String::from).into());
        assert_eq!(q.ports, ["hub-x", "x-hub"].map(String::from).into());
        assert_eq!(q.vpcs, ["hub", "x"].map(String::from).into());
        let want = ["10.0.0.0/24", "10.3.0.0/16", "169.254.0.8/30"].map(n);
        assert_eq!(q.nets, want.into());

        // Its link to be allocated: the other VPCs' subnets whatever their family, no link,
        // and the pairs with VPCs whose subnets lie in the pool.
        let mut unlinked = ConflictQuery::default();
        unlinked.add(&spec("new", "hub", "x", None), &topo, &pool, &[]);
        assert_eq!(
            pairs(&unlinked),
            [
                ("hub", "lab"),
                ("hub", "s3"),
                ("hub", "x"),
                ("lab", "x"),
                ("s3", "x")
            ]
        );
        assert_eq!(unlinked.names, ["new"].map(String::from).into());
        assert_eq!(unlinked.nets, ["10.0.0.0/24", "10.3.0.0/16"].map(n).into());
    }

    /// NB changed between two probes: a subnet of a third VPC (`core2`) now holds `lab`'s, so
    /// the probe wants the pair (hub, core2), which the first one did not.
    #[test]
    fn a_probe_sees_a_new_neighbour() {
        let before = vec![
            router("hub", "10.0.0.1/24", &[]),
            router("core2", "10.9.0.1/16", &[]),
            router("lab", "10.2.5.1/24", &[]),
        ];
        let mut after = before.clone();
        after[1] = router("core2", "10.2.0.1/16", &[]);
        let p = spec(
            "p",
            "hub",
            "lab",
            Some(("169.254.0.1/30", "169.254.0.2/30")),
        );
        let probe = |topo: &[RouterView]| {
            let mut q = ConflictQuery::default();
            q.add(&p, topo, &[], &[]);
            q
        };
        let (first, again) = (probe(&before), probe(&after));
        assert!(again.pairs.contains(&("core2".into(), "hub".into())));
        assert!(
            !first.pairs.contains(&("core2".into(), "hub".into())),
            "{:?}",
            pairs(&first)
        );
    }
}
