//! The replica's index of what its routers hold, kept up to date row change by row change
//! (issue 14, a hub of 10,000 spokes): which router lists each port and static route, and the
//! subnets of every router (the networks of its ports that are neither peer ports nor gateway
//! ports), by router and by address. Without it, finding the holder of one row walked every
//! router of NB, and a hub's subnets (one LAN port) were found by walking its 10,000 peer
//! ports, several times per create and per narrow pass.
//!
//! Persistent sets (`imbl`), like the rows: a clone of the replica shares them. A change of a
//! router's `ports` or `static_routes` by an `update2` diff touches only the rows the diff
//! toggles, never the router's other 10,000 ([`RowIndex::router_toggled`]).
//! [`RowIndex::rebuilt`] is the same index made from scratch: debug builds check every update
//! against it (small replicas), and the tests compare them on random histories.

use std::ops::RangeInclusive;

use ipnet::IpNet;
use uuid::Uuid;

use super::model::{LogicalRouter, LogicalRouterPort, LogicalRouterStaticRoute};

type PSet<K> = imbl::OrdSet<K>;

const MAX_UUID: Uuid = Uuid::from_u128(u128::MAX);

/// See the module doc.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RowIndex {
    /// (port or route, router listing it).
    holders: PSet<(Uuid, Uuid)>,
    /// (router, port, subnet): each router's subnets.
    by_router: PSet<(Uuid, Uuid, IpNet)>,
    /// (subnet, router, port): every subnet by address (`IpNet` orders by family, first
    /// address, prefix length).
    by_start: PSet<(IpNet, Uuid, Uuid)>,
    /// How many subnets have each (family, prefix length): the lengths a wider subnet can have.
    lens: imbl::OrdMap<(bool, u8), usize>,
    /// (router, network, port) of the networks of its other ports (peer and gateway ports):
    /// what a link or a route of a peering must not overlap.
    port_nets: PSet<(Uuid, IpNet, Uuid)>,
    /// (router, prefix, route): its static routes by prefix.
    routes: PSet<(Uuid, IpNet, Uuid)>,
}

/// The subnets a port gives its router: its networks (host bits cleared; unparseable ones
/// skipped) unless it is a peer port (`peer` set and not empty) or a gateway port
/// (`gateway_chassis` or `ha_chassis_group` set). The rules' own reading is
/// `peering::topology::subnets_of_port`; a test holds the two equal.
pub fn port_subnets(p: &LogicalRouterPort) -> impl Iterator<Item = IpNet> + '_ {
    let counts = gives_subnets(p);
    p.networks
        .iter()
        .filter(move |_| counts)
        .filter_map(|n| n.parse::<IpNet>().ok())
        .map(|n| n.trunc())
}

/// Whether a port's networks are its router's subnets (see [`port_subnets`]).
fn gives_subnets(p: &LogicalRouterPort) -> bool {
    !(p.peer.as_deref().is_some_and(|peer| !peer.is_empty())
        || !p.gateway_chassis.is_empty()
        || p.ha_chassis_group.is_some())
}

/// A route's `ip_prefix` as a network (host bits cleared), or a bare address as a host
/// prefix; `None` when it is neither. The rules' own reading is `peering::topology`'s
/// `route_key`; a test holds the two equal.
pub fn route_prefix(r: &LogicalRouterStaticRoute) -> Option<IpNet> {
    match r.ip_prefix.parse::<IpNet>() {
        Ok(n) => Some(n.trunc()),
        Err(_) => r
            .ip_prefix
            .parse::<std::net::IpAddr>()
            .ok()
            .map(IpNet::from),
    }
}

/// The networks inside `n` (`n` itself included), as a key range: from `n` (its first address
/// with its own length) to its last address with the family's longest. A network starting
/// inside `n` after its first address is longer than `n` (prefixes nest), so the range holds
/// them all; the wider networks starting at `n`'s first address are not in it (they contain
/// `n` and are found by cutting `n` to their length).
fn inside(n: &IpNet) -> (IpNet, IpNet) {
    let last = match n {
        IpNet::V4(a) => IpNet::new(a.broadcast().into(), 32).expect("32 is a valid length"),
        IpNet::V6(a) => IpNet::new(a.broadcast().into(), 128).expect("128 is a valid length"),
    };
    (n.trunc(), last)
}

/// The least network (0.0.0.0/0), below every other in `IpNet`'s order.
fn min_net() -> IpNet {
    IpNet::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0).expect("0 is a valid length")
}

/// The greatest network, above every other in `IpNet`'s order.
fn max_net() -> IpNet {
    IpNet::new(std::net::Ipv6Addr::from(u128::MAX).into(), 128).expect("128 is a valid length")
}

fn is_v6(n: &IpNet) -> bool {
    matches!(n, IpNet::V6(_))
}

fn all_of(row: Uuid) -> RangeInclusive<(Uuid, Uuid)> {
    (row, Uuid::nil())..=(row, MAX_UUID)
}

impl RowIndex {
    /// The same index made from scratch from the replica's routers and ports.
    #[cfg(debug_assertions)]
    pub(super) fn rebuilt<'a>(
        routers: impl Iterator<Item = &'a LogicalRouter>,
        port: impl Fn(Uuid) -> Option<&'a LogicalRouterPort>,
        route: impl Fn(Uuid) -> Option<&'a LogicalRouterStaticRoute>,
    ) -> RowIndex {
        let mut out = RowIndex::default();
        for r in routers {
            out.router_added(r, &port, &route);
        }
        out
    }

    /// The routers listing the port or route `row` (one, unless NB shares a row).
    pub(super) fn holders(&self, row: Uuid) -> impl Iterator<Item = Uuid> + '_ {
        self.holders.range(all_of(row)).map(|(_, r)| *r)
    }

    /// The subnets of router `router`, sorted, without duplicates.
    pub(super) fn subnets_of(&self, router: Uuid) -> Vec<IpNet> {
        let (lo, hi) = (min_net(), max_net());
        let range = (router, Uuid::nil(), lo)..=(router, MAX_UUID, hi);
        let mut out: Vec<IpNet> = self.by_router.range(range).map(|(_, _, n)| *n).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Every (subnet, router) whose subnet overlaps `n`, once per port giving it: those inside
    /// `n`, and those wider, which overlap it only by containing it (prefixes nest), so are `n`
    /// cut to one of the shorter lengths present.
    pub(super) fn subnets_overlapping(&self, n: &IpNet, out: &mut Vec<(IpNet, Uuid)>) {
        let (lo, hi) = inside(n);
        let range = (lo, Uuid::nil(), Uuid::nil())..=(hi, MAX_UUID, MAX_UUID);
        out.extend(self.by_start.range(range).map(|(s, r, _)| (*s, *r)));
        let family = is_v6(n);
        for (&(_, len), _) in self.lens.range((family, 0)..(family, n.prefix_len())) {
            let Ok(wider) = IpNet::new(n.addr(), len).map(|w| w.trunc()) else {
                continue;
            };
            let range = (wider, Uuid::nil(), Uuid::nil())..=(wider, MAX_UUID, MAX_UUID);
            out.extend(self.by_start.range(range).map(|(s, r, _)| (*s, *r)));
        }
    }

    /// The peer and gateway ports of `router` with a network overlapping `n` (each once, in
    /// uuid order).
    pub(super) fn ports_overlapping(&self, router: Uuid, n: &IpNet) -> Vec<Uuid> {
        let mut out = Vec::new();
        let (lo, hi) = inside(n);
        let range = (router, lo, Uuid::nil())..=(router, hi, MAX_UUID);
        out.extend(self.port_nets.range(range).map(|(_, _, p)| *p));
        // Wider networks containing `n`: `n` cut to each shorter length.
        for len in 0..n.prefix_len() {
            let Ok(wider) = IpNet::new(n.addr(), len).map(|w| w.trunc()) else {
                continue;
            };
            let range = (router, wider, Uuid::nil())..=(router, wider, MAX_UUID);
            out.extend(self.port_nets.range(range).map(|(_, _, p)| *p));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The static routes of `router` whose prefix is `n` (as [`route_prefix`] reads it).
    pub(super) fn routes_with_prefix(&self, router: Uuid, n: &IpNet) -> Vec<Uuid> {
        let range = (router, *n, Uuid::nil())..=(router, *n, MAX_UUID);
        self.routes.range(range).map(|(_, _, r)| *r).collect()
    }

    /// A router came (or was re-indexed whole): its rows and the subnets of its ports present.
    pub(super) fn router_added<'a, 'b>(
        &mut self,
        r: &LogicalRouter,
        port: impl Fn(Uuid) -> Option<&'a LogicalRouterPort>,
        route: impl Fn(Uuid) -> Option<&'b LogicalRouterStaticRoute>,
    ) {
        for p in &r.ports {
            self.holders.insert((*p, r.uuid));
            if let Some(p) = port(*p) {
                self.subnets_add(r.uuid, p);
            }
        }
        for s in &r.static_routes {
            self.holders.insert((*s, r.uuid));
            if let Some(s) = route(*s) {
                self.route_add(r.uuid, s);
            }
        }
    }

    /// A router went (or is re-indexed whole): the reverse of [`Self::router_added`].
    pub(super) fn router_removed<'a, 'b>(
        &mut self,
        r: &LogicalRouter,
        port: impl Fn(Uuid) -> Option<&'a LogicalRouterPort>,
        route: impl Fn(Uuid) -> Option<&'b LogicalRouterStaticRoute>,
    ) {
        for p in &r.ports {
            self.holders.remove(&(*p, r.uuid));
            if let Some(p) = port(*p) {
                self.subnets_remove(r.uuid, p);
            }
        }
        for s in &r.static_routes {
            self.holders.remove(&(*s, r.uuid));
            if let Some(s) = route(*s) {
                self.route_remove(r.uuid, s);
            }
        }
    }

    /// An `update2` diff toggled the rows `toggled` in the router's `ports` (`is_port`) or
    /// `static_routes`; `r` is the router after the diff (its lists sorted).
    pub(super) fn router_toggled<'a, 'b>(
        &mut self,
        r: &LogicalRouter,
        is_port: bool,
        toggled: &[Uuid],
        port: impl Fn(Uuid) -> Option<&'a LogicalRouterPort>,
        route: impl Fn(Uuid) -> Option<&'b LogicalRouterStaticRoute>,
    ) {
        let list = if is_port { &r.ports } else { &r.static_routes };
        for u in toggled {
            let listed = list.binary_search(u).is_ok();
            match listed {
                true => self.holders.insert((*u, r.uuid)),
                false => self.holders.remove(&(*u, r.uuid)),
            };
            match (is_port, listed) {
                (true, true) => port(*u).map(|p| self.subnets_add(r.uuid, p)),
                (true, false) => port(*u).map(|p| self.subnets_remove(r.uuid, p)),
                (false, true) => route(*u).map(|x| self.route_add(r.uuid, x)),
                (false, false) => route(*u).map(|x| self.route_remove(r.uuid, x)),
            };
        }
    }

    /// A route came (or changed: after [`Self::route_removed`] of its old row).
    pub(super) fn route_added(&mut self, x: &LogicalRouterStaticRoute) {
        let holders: Vec<Uuid> = self.holders(x.uuid).collect();
        for r in holders {
            self.route_add(r, x);
        }
    }

    /// A route went (or is about to change).
    pub(super) fn route_removed(&mut self, x: &LogicalRouterStaticRoute) {
        let holders: Vec<Uuid> = self.holders(x.uuid).collect();
        for r in holders {
            self.route_remove(r, x);
        }
    }

    fn route_add(&mut self, router: Uuid, x: &LogicalRouterStaticRoute) {
        if let Some(n) = route_prefix(x) {
            self.routes.insert((router, n, x.uuid));
        }
    }

    fn route_remove(&mut self, router: Uuid, x: &LogicalRouterStaticRoute) {
        if let Some(n) = route_prefix(x) {
            self.routes.remove(&(router, n, x.uuid));
        }
    }

    /// A port came (or changed: after [`Self::port_removed`] of its old row).
    pub(super) fn port_added(&mut self, p: &LogicalRouterPort) {
        let holders: Vec<Uuid> = self.holders(p.uuid).collect();
        for r in holders {
            self.subnets_add(r, p);
        }
    }

    /// A port went (or is about to change).
    pub(super) fn port_removed(&mut self, p: &LogicalRouterPort) {
        let holders: Vec<Uuid> = self.holders(p.uuid).collect();
        for r in holders {
            self.subnets_remove(r, p);
        }
    }

    fn subnets_add(&mut self, router: Uuid, p: &LogicalRouterPort) {
        if !gives_subnets(p) {
            for n in p.networks.iter().filter_map(|n| n.parse::<IpNet>().ok()) {
                self.port_nets.insert((router, n.trunc(), p.uuid));
            }
        }
        for n in port_subnets(p) {
            if self.by_router.insert((router, p.uuid, n)).is_none() {
                self.by_start.insert((n, router, p.uuid));
                *self.lens.entry((is_v6(&n), n.prefix_len())).or_default() += 1;
            }
        }
    }

    fn subnets_remove(&mut self, router: Uuid, p: &LogicalRouterPort) {
        if !gives_subnets(p) {
            for n in p.networks.iter().filter_map(|n| n.parse::<IpNet>().ok()) {
                self.port_nets.remove(&(router, n.trunc(), p.uuid));
            }
        }
        for n in port_subnets(p) {
            if self.by_router.remove(&(router, p.uuid, n)).is_some() {
                self.by_start.remove(&(n, router, p.uuid));
                let key = (is_v6(&n), n.prefix_len());
                if let Some(c) = self.lens.get_mut(&key) {
                    *c -= 1;
                    if *c == 0 {
                        self.lens.remove(&key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::{json, Value};

    use super::*;
    use crate::adapters::NbCacheTopology;
    use crate::ovsdb::cache::tests::{types, ApplyValue};
    use crate::ovsdb::cache::UpdateFormat;
    use crate::ovsdb::NbCache;
    use crate::peering::overlaps;
    use crate::peering::topology::{
        subnets_of_port, PortView, RouteView, RouterRows, RouterView, Topology,
    };

    /// The replica's topology with the trait's default walks for the questions the adapter
    /// answers through the index.
    struct Walk<'a>(NbCacheTopology<'a>);

    impl Topology for Walk<'_> {
        fn routers_named(&self, name: &str) -> Vec<RouterView> {
            self.0.routers_named(name)
        }
        fn port_named(&self, name: &str) -> Option<PortView> {
            self.0.port_named(name)
        }
        fn router_of_port(&self, port: &str) -> Option<String> {
            self.0.router_of_port(port)
        }
        fn visit_routers_named(&self, name: &str, f: &mut dyn FnMut(&dyn RouterRows)) {
            self.0.visit_routers_named(name, f)
        }
    }

    /// (order, port name or route), in the order shown.
    type Shown = Vec<(usize, String)>;

    /// What `visit_ports_overlapping` and `visit_routes_with_prefix` show for `router`.
    fn visited(t: &dyn Topology, router: &str, q: &IpNet) -> (Shown, Shown) {
        let (mut ports, mut routes) = (Vec::new(), Vec::new());
        t.visit_ports_overlapping(router, q, &mut |o, p| ports.push((o, p.name.to_string())));
        t.visit_routes_with_prefix(router, q, &mut |o, r| {
            routes.push((o, format!("{:?} {}", r.id, r.ip_prefix)))
        });
        (ports, routes)
    }

    /// What the index answers, by a walk over the replica (the rules' own reading of a port's
    /// subnets).
    fn check_against_a_walk(c: &NbCache, rows: &[Uuid], queries: &[IpNet]) {
        for r in c.routers() {
            let mut want: Vec<IpNet> = r
                .ports
                .iter()
                .filter_map(|u| c.port(*u))
                .flat_map(|p| {
                    let gw = !p.gateway_chassis.is_empty() || p.ha_chassis_group.is_some();
                    subnets_of_port(&p.networks, p.peer.as_deref(), gw).collect::<Vec<_>>()
                })
                .collect();
            want.sort_unstable();
            want.dedup();
            assert_eq!(c.router_subnets(r.uuid), want, "subnets of {}", r.name);
        }
        for u in rows {
            let got: BTreeSet<Uuid> = c.routers_holding(*u).collect();
            let want: BTreeSet<Uuid> = c
                .routers()
                .filter(|r| r.ports.contains(u) || r.static_routes.contains(u))
                .map(|r| r.uuid)
                .collect();
            assert_eq!(got, want, "holders of {u}");
        }
        for r in c.routers() {
            for q in queries {
                let want: Vec<Uuid> = r
                    .ports
                    .iter()
                    .filter_map(|u| c.port(*u))
                    .filter(|p| {
                        let gw = !p.gateway_chassis.is_empty() || p.ha_chassis_group.is_some();
                        let peer = p.peer.as_deref().is_some_and(|x| !x.is_empty());
                        (peer || gw)
                            && p.networks
                                .iter()
                                .filter_map(|n| n.parse::<IpNet>().ok())
                                .any(|n| overlaps(&n.trunc(), q))
                    })
                    .map(|p| p.uuid)
                    .collect();
                assert_eq!(
                    c.router_ports_overlapping(r.uuid, q),
                    want,
                    "ports over {q}"
                );
                // The rules' reading of a route's prefix (`RouteView::key`).
                let want: BTreeSet<Uuid> = r
                    .static_routes
                    .iter()
                    .filter_map(|u| c.static_route(*u))
                    .filter(|x| {
                        let view = RouteView {
                            ip_prefix: x.ip_prefix.to_string(),
                            ..Default::default()
                        };
                        view.key().is_some_and(|(_, p)| p == *q)
                    })
                    .map(|x| x.uuid)
                    .collect();
                let got: BTreeSet<Uuid> =
                    c.router_routes_with_prefix(r.uuid, q).into_iter().collect();
                assert_eq!(got, want, "routes with prefix {q}");
            }
        }
        // The adapter's indexed answers against the default walks over the same replica. The
        // orders agree unless a router lists a row not (yet) there, which a consistent NB
        // snapshot never shows (the adapter counts the listed uuids, the walk the rows
        // present); then only the rows shown are compared.
        let (adapter, walk) = (NbCacheTopology(c, None), Walk(NbCacheTopology(c, None)));
        for name in ["r0", "r1", "r2", "none"] {
            let consistent = c.routers().filter(|r| r.name == name).all(|r| {
                r.ports.iter().all(|u| c.port(*u).is_some())
                    && r.static_routes.iter().all(|u| c.static_route(*u).is_some())
            });
            let rows =
                |v: Vec<(usize, String)>| -> Vec<String> { v.into_iter().map(|x| x.1).collect() };
            for q in queries {
                let (got, want) = (visited(&adapter, name, q), visited(&walk, name, q));
                if consistent {
                    assert_eq!(got, want, "adapter vs walk: {name} {q}");
                } else {
                    assert_eq!(
                        (rows(got.0), rows(got.1)),
                        (rows(want.0), rows(want.1)),
                        "adapter vs walk: {name} {q}"
                    );
                }
            }
        }
        for q in queries {
            let mut got = Vec::new();
            c.subnets_overlapping(q, &mut got);
            let got: BTreeSet<(IpNet, Uuid)> = got.into_iter().collect();
            let want: BTreeSet<(IpNet, Uuid)> = c
                .routers()
                .flat_map(|r| c.router_subnets(r.uuid).into_iter().map(|s| (s, r.uuid)))
                .filter(|(s, _)| overlaps(s, q))
                .collect();
            assert_eq!(got, want, "subnets overlapping {q}");
        }
    }

    /// On random histories of `update2` inserts, diffs and deletes (a router's lists toggled,
    /// ports that change network, peer and gateway, rows shared by two routers, references to
    /// rows not yet or no longer there), the followed index answers as a walk over the replica
    /// after every update.
    #[test]
    fn the_followed_index_answers_as_a_walk() {
        let t = types();
        let mut seed = 11u64;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let router = |i: u64| Uuid::from_u128(0x100 + u128::from(i));
        let port = |i: u64| Uuid::from_u128(0x200 + u128::from(i));
        let route = |i: u64| Uuid::from_u128(0x300 + u128::from(i));
        let rows: Vec<Uuid> = (0..12).map(port).chain((0..6).map(route)).collect();
        let queries: Vec<IpNet> = [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.0/24",
            "10.1.2.128/25",
            "fd00::/64",
            "0.0.0.0/0",
            "10.2.0.0/15",
            "10.1.2.5/32",
            "::/0",
            "fd00::/48",
            "fd00::5/128",
            "fd00::1/128",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let nets = [
            "10.1.0.1/16",
            "10.1.2.1/24",
            "10.2.0.1/24",
            "10.1.2.130/25",
            "fd00::1/64",
            "fd00::1/128",
            "fd00::1/48",
            "::/0",
            "10.3.0.1/16",
            "junk",
            "0.0.0.0/0",
        ];
        let mut c = NbCache::new(Some("owner".into()));
        let mut held_routes = BTreeSet::new();
        // Which rows the replica holds (the server's consistency rules).
        let (mut routers, mut ports): (BTreeMap<u64, BTreeSet<Uuid>>, BTreeSet<u64>) =
            Default::default();
        let uuid_set = |s: &[Uuid]| {
            json!([
                "set",
                s.iter()
                    .map(|u| json!(["uuid", u.to_string()]))
                    .collect::<Vec<_>>()
            ])
        };
        for step in 0..1500 {
            let update: Value = match next(9) {
                8 => {
                    // Several tables in one update: a port's peer and gateway_chassis, and a
                    // route's prefix.
                    let (i, j) = (next(12), next(6));
                    if !ports.contains(&i) || !held_routes.contains(&j) {
                        continue;
                    }
                    let peer = if next(2) == 0 {
                        json!("far")
                    } else {
                        json!(["set", []])
                    };
                    let gw = json!(["set", [["uuid", Uuid::from_u128(8).to_string()]]]);
                    json!({
                        "Logical_Router_Port": {port(i).to_string(): {"modify": {"peer": peer, "gateway_chassis": gw}}},
                        "Logical_Router_Static_Route": {route(j).to_string(): {"modify": {"ip_prefix": "fd00::5"}}},
                    })
                }
                6 | 7 => {
                    let i = next(6);
                    let prefixes = [
                        "10.1.2.0/24",
                        "10.1.2.7/24",
                        "10.1.2.5",
                        "fd00::/64",
                        "10.1.0.0/16",
                        "bad",
                        "fd00::5",
                        "::/0",
                        "fd00::/48",
                    ];
                    let prefix = prefixes[next(prefixes.len() as u64) as usize];
                    match (held_routes.contains(&i), next(3)) {
                        (false, _) => {
                            held_routes.insert(i);
                            json!({"Logical_Router_Static_Route": {route(i).to_string(): {"insert": {"ip_prefix": prefix, "nexthop": "10.9.9.9"}}}})
                        }
                        (true, 0) => {
                            held_routes.remove(&i);
                            json!({"Logical_Router_Static_Route": {route(i).to_string(): {"delete": null}}})
                        }
                        (true, _) => {
                            json!({"Logical_Router_Static_Route": {route(i).to_string(): {"modify": {"ip_prefix": prefix}}}})
                        }
                    }
                }
                0 | 1 => {
                    let i = next(4);
                    match routers.get(&i) {
                        None => {
                            let lists: Vec<Uuid> = (0..next(5))
                                .map(|_| rows[next(rows.len() as u64) as usize])
                                .collect::<BTreeSet<_>>()
                                .into_iter()
                                .collect();
                            let (p, r): (Vec<Uuid>, Vec<Uuid>) =
                                lists.iter().partition(|u| u.as_u128() < 0x300);
                            routers.insert(i, lists.iter().copied().collect());
                            json!({"Logical_Router": {router(i).to_string(): {"insert": {"name": format!("r{}", i % 3), "ports": uuid_set(&p), "static_routes": uuid_set(&r)}}}})
                        }
                        Some(_) if next(5) == 0 => {
                            routers.remove(&i);
                            json!({"Logical_Router": {router(i).to_string(): {"delete": null}}})
                        }
                        Some(held) => {
                            // A diff: toggles a few rows.
                            let toggle: BTreeSet<Uuid> = (0..1 + next(3))
                                .map(|_| rows[next(rows.len() as u64) as usize])
                                .collect();
                            let mut held = held.clone();
                            for u in &toggle {
                                if !held.remove(u) {
                                    held.insert(*u);
                                }
                            }
                            routers.insert(i, held);
                            let (p, r): (Vec<Uuid>, Vec<Uuid>) =
                                toggle.iter().partition(|u| u.as_u128() < 0x300);
                            let mut cols = serde_json::Map::new();
                            if !p.is_empty() {
                                cols.insert("ports".into(), uuid_set(&p));
                            }
                            if !r.is_empty() {
                                cols.insert("static_routes".into(), uuid_set(&r));
                            }
                            json!({"Logical_Router": {router(i).to_string(): {"modify": cols}}})
                        }
                    }
                }
                _ => {
                    let i = next(12);
                    let mut row = serde_json::Map::new();
                    row.insert(
                        "networks".into(),
                        json!([
                            "set",
                            [
                                nets[next(nets.len() as u64) as usize],
                                nets[next(nets.len() as u64) as usize]
                            ]
                        ]),
                    );
                    row.insert(
                        "peer".into(),
                        match next(3) {
                            0 => json!("far"),
                            1 => json!(""),
                            _ => json!(["set", []]),
                        },
                    );
                    row.insert(
                        "gateway_chassis".into(),
                        match next(4) {
                            0 => json!(["set", [["uuid", Uuid::from_u128(8).to_string()]]]),
                            _ => json!(["set", []]),
                        },
                    );
                    row.insert(
                        "ha_chassis_group".into(),
                        match next(5) {
                            0 => json!(["uuid", Uuid::from_u128(9).to_string()]),
                            _ => json!(["set", []]),
                        },
                    );
                    match (ports.contains(&i), next(4)) {
                        (false, _) => {
                            ports.insert(i);
                            row.insert("name".into(), json!(format!("p{i}")));
                            json!({"Logical_Router_Port": {port(i).to_string(): {"insert": row}}})
                        }
                        (true, 0) => {
                            ports.remove(&i);
                            json!({"Logical_Router_Port": {port(i).to_string(): {"delete": null}}})
                        }
                        (true, _) => {
                            // `networks` by diff: the new set toggled against the held one.
                            let held = c.port(port(i)).unwrap().networks.clone();
                            let Value::Array(new) = row["networks"][1].clone() else {
                                unreachable!()
                            };
                            let new: BTreeSet<String> = new
                                .iter()
                                .map(|v| v.as_str().unwrap().to_string())
                                .collect();
                            let held: BTreeSet<String> = held.iter().cloned().collect();
                            let diff: Vec<&String> = held.symmetric_difference(&new).collect();
                            row.insert("networks".into(), json!(["set", diff]));
                            json!({"Logical_Router_Port": {port(i).to_string(): {"modify": row}}})
                        }
                    }
                }
            };
            c.apply_v(&t, UpdateFormat::V2, &update)
                .unwrap_or_else(|e| panic!("step {step}: {e}: {update}"));
            check_against_a_walk(&c, &rows, &queries);
        }
        assert!(c.routers().count() > 0 && c.ports().count() > 0);
    }

    /// A subnet wider than the question and starting at its first address (10.0.0.0/8 for
    /// 10.0.0.0/24, ::/0 for ::/64) is answered once, not once as "inside" and again as "wider";
    /// one exactly equal to the question also once.
    #[test]
    fn a_wider_subnet_at_the_same_start_is_answered_once() {
        let (r, p) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let lan = LogicalRouterPort {
            uuid: p,
            networks: ["10.0.0.1/8", "10.1.0.1/24", "::1/0"]
                .map(String::from)
                .into(),
            ..Default::default()
        };
        let router = LogicalRouter {
            uuid: r,
            ports: [p].into(),
            ..Default::default()
        };
        let mut index = RowIndex::default();
        index.router_added(&router, |u| (u == p).then_some(&lan), |_| None);
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        for (q, want) in [
            ("10.0.0.0/24", vec![net("10.0.0.0/8")]),
            ("10.0.0.0/8", vec![net("10.0.0.0/8"), net("10.1.0.0/24")]),
            ("10.1.0.0/24", vec![net("10.0.0.0/8"), net("10.1.0.0/24")]),
            ("::/64", vec![net("::/0")]),
            ("::/0", vec![net("::/0")]),
        ] {
            let mut got = Vec::new();
            index.subnets_overlapping(&net(q), &mut got);
            got.sort_unstable();
            let want: Vec<(IpNet, Uuid)> = want.into_iter().map(|n| (n, r)).collect();
            assert_eq!(got, want, "subnets overlapping {q}");
        }
    }
}
