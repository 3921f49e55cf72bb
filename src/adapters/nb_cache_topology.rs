//! The OVSDB replica of NB seen through the rules' [`Topology`] trait, for the API's
//! checks and the worker's derivations. Read-only: it borrows the cache and copies out
//! the few fields the rules look at.

use std::collections::BTreeSet;

use ipnet::IpNet;
use uuid::Uuid;

use crate::ovsdb::model::{LogicalRouter, LogicalRouterPort, LogicalRouterStaticRoute};
use crate::ovsdb::{NbCache, StrMap};
use crate::peering::topology::{
    Nearby, PortRef, PortView, RouteRef, RouteView, RouterRows, RouterView, RowId, Topology,
};
use crate::peering::{is_owned, INSTANCE_KEY, PEERING_KEY};

/// A borrowed view of the NB cache, as the rules' [`Topology`], for the deployment whose
/// instance id is the second field when known. A row another deployment wrote (another
/// `ovn-peerd:instance`) is foreign to the rules: its `peering` is shown as `None` (its
/// instance stays, for a refusal's text), so a peering of the same name there is never taken
/// for this deployment's own (ECMP partners, rows of a deleted peering). Rows without an
/// instance id (older versions) are adopted by the holder of their name. `None`: instance
/// unknown, rows told by their peering name alone.
pub struct NbCacheTopology<'a>(pub &'a NbCache, pub Option<&'a str>);

impl Topology for NbCacheTopology<'_> {
    fn routers_named(&self, name: &str) -> Vec<RouterView> {
        let cache = self.0;
        cache
            .router_by_name(name)
            .into_iter()
            .map(|r| RouterView {
                id: r.uuid.to_string(),
                name: r.name.to_string(),
                ports: r
                    .ports
                    .iter()
                    .filter_map(|u| cache.port(*u))
                    .map(|p| port_view(p, self.1))
                    .collect(),
                routes: r
                    .static_routes
                    .iter()
                    .filter_map(|u| cache.static_route(*u))
                    .map(|r| route_view(r, self.1))
                    .collect(),
            })
            .collect()
    }

    fn port_named(&self, name: &str) -> Option<PortView> {
        self.0.port_by_name(name).map(|p| port_view(p, self.1))
    }

    /// Lent in place: the rules resolve a hub's router (a port and a route per spoke) and
    /// read every judged peering's ports without copying them.
    fn visit_routers_named(&self, name: &str, f: &mut dyn FnMut(&dyn RouterRows)) {
        for r in self.0.router_by_name(name) {
            f(&CacheRouter(self.0, r, self.1));
        }
    }

    fn visit_port_named(&self, name: &str, f: &mut dyn FnMut(PortRef<'_>)) {
        if let Some(p) = self.0.port_by_name(name) {
            f(port_ref(p, self.1));
        }
    }

    /// That one row, looked up (a hub's router holds a route per spoke, and every conflicting
    /// route of a pass is described); a text id is parsed.
    fn visit_route(&self, _router: &str, id: RowId<'_>, f: &mut dyn FnMut(RouteRef<'_>)) {
        let uuid = match id {
            RowId::Uuid(u) => Some(u),
            RowId::Text(t) => t.parse().ok(),
        };
        if let Some(r) = uuid.and_then(|u| self.0.static_route(u)) {
            f(route_ref(r, self.1));
        }
    }

    fn router_of_port(&self, port: &str) -> Option<String> {
        let uuid = self.0.port_by_name(port)?.uuid;
        let router = self.0.routers_holding(uuid).next()?;
        self.0.router(router).map(|r| r.name.to_string())
    }

    fn router_count(&self, name: &str) -> usize {
        self.0.router_by_name(name).len()
    }

    /// A few range lookups in the replica's index, then the rows found.
    fn visit_ports_overlapping(
        &self,
        router: &str,
        q: &IpNet,
        f: &mut dyn FnMut(usize, PortRef<'_>),
    ) {
        let cache = self.0;
        for r in cache.router_by_name(router) {
            for u in cache.router_ports_overlapping(r.uuid, q) {
                if let (Ok(order), Some(p)) = (r.ports.binary_search(&u), cache.port(u)) {
                    f(order, port_ref(p, self.1));
                }
            }
        }
    }

    /// One range lookup in the replica's index, then the rows found.
    fn visit_routes_with_prefix(
        &self,
        router: &str,
        prefix: &IpNet,
        f: &mut dyn FnMut(usize, RouteRef<'_>),
    ) {
        let cache = self.0;
        for r in cache.router_by_name(router) {
            for u in cache.router_routes_with_prefix(r.uuid, prefix) {
                let found = (r.static_routes.binary_search(&u), cache.static_route(u));
                if let (Ok(order), Some(route)) = found {
                    f(order, route_ref(route, self.1));
                }
            }
        }
    }

    /// From the replica's index of every router's subnets: a hub's router holds a peer port
    /// per spoke and one or two subnets.
    fn subnets_named(&self, name: &str) -> Vec<IpNet> {
        let mut all: Vec<IpNet> = self
            .0
            .router_by_name(name)
            .into_iter()
            .flat_map(|r| self.0.router_subnets(r.uuid))
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Read in place: a hub's router has a port per spoke.
    fn port_networks_named(&self, name: &str) -> Vec<IpNet> {
        let cache = self.0;
        cache
            .router_by_name(name)
            .into_iter()
            .flat_map(|r| r.ports.iter().filter_map(|u| cache.port(*u)))
            .flat_map(|p| p.networks.iter().filter_map(|n| n.parse::<IpNet>().ok()))
            .map(|n| n.trunc())
            .collect()
    }
}

/// CreatePeering's probe of the neighbourhood ([`crate::peering::topology::ConflictQuery`]).
impl Nearby for NbCacheTopology<'_> {
    /// From the replica's subnet index (kept row change by row change): a few range lookups
    /// per network, whatever the size of NB.
    fn vpcs_with_subnets_overlapping(&self, nets: &[IpNet]) -> BTreeSet<String> {
        let cache = self.0;
        let mut found = Vec::new();
        for n in nets {
            cache.subnets_overlapping(n, &mut found);
        }
        let routers: BTreeSet<Uuid> = found.into_iter().map(|(_, r)| r).collect();
        routers
            .into_iter()
            .filter_map(|u| cache.router(u).map(|r| r.name.to_string()))
            .collect()
    }

    /// From the replica's index of each router's ports by network: a hub's router holds a
    /// peer port per spoke.
    fn peerings_of_ports_overlapping(&self, vpc: &str, nets: &[IpNet]) -> BTreeSet<String> {
        let cache = self.0;
        let mut ports = BTreeSet::new();
        for r in cache.router_by_name(vpc) {
            for n in nets {
                ports.extend(cache.router_ports_overlapping(r.uuid, n));
            }
        }
        ports
            .into_iter()
            .filter_map(|u| cache.port(u))
            .filter(|p| p.peer.as_deref().is_some_and(|peer| !peer.is_empty()))
            .filter_map(|p| owner(&p.external_ids, self.1))
            .collect()
    }
}

/// A router of the replica, its rows lent in place.
struct CacheRouter<'a>(&'a NbCache, &'a LogicalRouter, Option<&'a str>);

impl RouterRows for CacheRouter<'_> {
    fn id(&self) -> String {
        self.1.uuid.to_string()
    }

    fn name(&self) -> &str {
        &self.1.name
    }

    fn each_port(&self, f: &mut dyn FnMut(PortRef<'_>)) {
        let (cache, uuids, me) = (self.0, &self.1.ports, self.2);
        if dense(cache, uuids) {
            in_order(uuids, cache.ports(), |p| p.uuid).for_each(|p| f(port_ref(p, me)));
        } else {
            uuids
                .iter()
                .filter_map(|u| cache.port(*u))
                .for_each(|p| f(port_ref(p, me)));
        }
    }

    fn each_route(&self, f: &mut dyn FnMut(RouteRef<'_>)) {
        let (cache, uuids) = (self.0, &self.1.static_routes);
        let rows: Box<dyn Iterator<Item = &LogicalRouterStaticRoute>> = if dense(cache, uuids) {
            Box::new(in_order(uuids, cache.static_routes(), |r| r.uuid))
        } else {
            Box::new(uuids.iter().filter_map(|u| cache.static_route(*u)))
        };
        rows.for_each(|r| f(route_ref(r, self.2)));
    }

    /// The replica indexes its routers' ports by network and routes by prefix.
    fn indexed_rows(&self) -> Option<usize> {
        Some(self.1.ports.len() + self.1.static_routes.len())
    }
}

/// Whether a router's rows (`uuids`, sorted, as the replica keeps sets) are many enough to
/// read by walking the whole table in order instead of looking each one up: a hub's router
/// holds a port and a route per spoke, and 10,000 lookups in the replica's trees were most
/// of resolving it (per create and per narrow pass).
fn dense(cache: &NbCache, uuids: &[Uuid]) -> bool {
    uuids.len() * 16 > cache.len() && uuids.windows(2).all(|w| w[0] < w[1])
}

/// The rows of a table (`table`, in uuid order) whose uuid is in `uuids` (sorted), in that
/// order: one merge of the two.
fn in_order<'a, T: 'a>(
    uuids: &'a [Uuid],
    table: impl Iterator<Item = &'a T> + 'a,
    uuid: impl Fn(&T) -> Uuid + 'a,
) -> impl Iterator<Item = &'a T> + 'a {
    let (mut table, mut want) = (table, uuids.iter().peekable());
    std::iter::from_fn(move || loop {
        // Done once every wanted uuid is passed: the rest of the table is not read.
        want.peek()?;
        let row = table.next()?;
        let u = uuid(row);
        while want.next_if(|w| **w < u).is_some() {}
        if want.next_if(|w| **w == u).is_some() {
            return Some(row);
        }
    })
}

fn route_ref<'a>(r: &'a LogicalRouterStaticRoute, me: Option<&str>) -> RouteRef<'a> {
    let (peering, instance) = marks(&r.external_ids, me);
    RouteRef {
        id: RowId::Uuid(r.uuid),
        ip_prefix: &r.ip_prefix,
        nexthop: &r.nexthop,
        policy: r.policy.as_deref(),
        route_table: &r.route_table,
        peering,
        instance,
    }
}

fn port_ref<'a>(p: &'a LogicalRouterPort, me: Option<&str>) -> PortRef<'a> {
    let (peering, instance) = marks(&p.external_ids, me);
    PortRef {
        name: &p.name,
        networks: &p.networks,
        peer: p.peer.as_deref(),
        is_gateway: is_gateway(p),
        peering,
        instance,
    }
}

/// A row's marks: the peering it is of for deployment `me` ([`owner_ref`]) and the
/// deployment that wrote it (when owned), each key looked up once
/// (a full pass reads them on every port and route of 200,000 routers).
fn marks<'a>(external_ids: &'a StrMap, me: Option<&str>) -> (Option<&'a str>, Option<&'a str>) {
    if !is_owned(external_ids) {
        return (None, None);
    }
    let instance = external_ids.get(INSTANCE_KEY);
    let theirs = matches!((me, instance), (Some(me), Some(row)) if row != me);
    let peering = (!theirs).then(|| external_ids.get(PEERING_KEY).unwrap_or(""));
    (peering, instance)
}

/// As [`owner`], borrowed, for deployment `me` (when known): `None` for a row another
/// deployment wrote, which is foreign whatever its peering name.
fn owner_ref<'a>(external_ids: &'a StrMap, me: Option<&str>) -> Option<&'a str> {
    marks(external_ids, me).0
}

/// The deployment that wrote an owned row, when it says.
fn instance(external_ids: &StrMap) -> Option<String> {
    is_owned(external_ids)
        .then(|| external_ids.get(INSTANCE_KEY).map(str::to_owned))
        .flatten()
}

/// The peering an owned row belongs to; `None` when ovn-peerd does not own it.
fn owner(external_ids: &StrMap, me: Option<&str>) -> Option<String> {
    owner_ref(external_ids, me).map(str::to_string)
}

fn route_view(r: &LogicalRouterStaticRoute, me: Option<&str>) -> RouteView {
    RouteView {
        id: r.uuid.to_string(),
        ip_prefix: r.ip_prefix.to_string(),
        nexthop: r.nexthop.to_string(),
        policy: r.policy.as_deref().map(str::to_owned),
        route_table: r.route_table.to_string(),
        peering: owner(&r.external_ids, me),
        instance: instance(&r.external_ids),
    }
}

/// `gateway_chassis` non-empty or `ha_chassis_group` set.
fn is_gateway(p: &LogicalRouterPort) -> bool {
    !p.gateway_chassis.is_empty() || p.ha_chassis_group.is_some()
}

fn port_view(p: &LogicalRouterPort, me: Option<&str>) -> PortView {
    PortView {
        name: p.name.to_string(),
        networks: p.networks.to_vec(),
        peer: p.peer.as_deref().map(str::to_owned),
        is_gateway: is_gateway(p),
        peering: owner(&p.external_ids, me),
        instance: instance(&p.external_ids),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ordered merge finds exactly the wanted rows present, in order, whatever the
    /// overlap: none, all, the first, the last, gaps, wanted uuids the table lacks.
    #[test]
    fn in_order_yields_the_wanted_rows_present() {
        let table: Vec<Uuid> = (1..=40u128).map(|i| Uuid::from_u128(i * 3)).collect();
        for step in 1..7u128 {
            for offset in 0..4u128 {
                let wanted: Vec<Uuid> = (0..50u128)
                    .map(|i| Uuid::from_u128(offset + i * step))
                    .collect();
                let got: Vec<Uuid> = in_order(&wanted, table.iter(), |u| *u).copied().collect();
                let want: Vec<Uuid> = wanted
                    .iter()
                    .filter(|u| table.contains(u))
                    .copied()
                    .collect();
                assert_eq!(got, want, "step {step} offset {offset}");
            }
        }
        assert_eq!(in_order(&[], table.iter(), |u| *u).count(), 0);
    }

    /// A row is shown as of its peering only to its own deployment (or, without an instance
    /// id, to whoever holds the name); another deployment's row is foreign, its instance kept.
    #[test]
    fn another_deployments_row_is_of_no_peering_of_ours() {
        let row = |instance: Option<&str>| -> StrMap {
            let mut ids = vec![("ovn-peerd:owner", "ovn-peerd"), (PEERING_KEY, "p1")];
            ids.extend(instance.map(|i| (INSTANCE_KEY, i)));
            ids.into_iter().collect()
        };
        let (a, b, legacy) = (row(Some("dep-a")), row(Some("dep-b")), row(None));
        assert_eq!(owner_ref(&a, Some("dep-a")), Some("p1"));
        assert_eq!(owner_ref(&legacy, Some("dep-a")), Some("p1"));
        assert_eq!(owner_ref(&b, Some("dep-a")), None);
        assert_eq!(marks(&b, None).1, Some("dep-b"));
        assert_eq!(owner_ref(&b, None), Some("p1"), "instance unknown: by name");
        let foreign: StrMap = [(PEERING_KEY, "p1")].into();
        assert_eq!(owner_ref(&foreign, Some("dep-a")), None);
        assert_eq!(marks(&foreign, None), (None, None));
        assert_eq!(marks(&b, Some("dep-a")), (None, Some("dep-b")));
        assert_eq!(marks(&b, Some("dep-b")), (Some("p1"), Some("dep-b")));
        assert_eq!(marks(&legacy, Some("dep-a")), (Some("p1"), None));
    }

    /// A router of the replica says how many ports and routes it holds: what tells a router
    /// asked per question (a hub's) from one read whole, without asking the replica by name
    /// again.
    #[test]
    fn a_router_of_the_replica_counts_its_rows() {
        use crate::ovsdb::cache::tests::{types, ApplyValue};
        use crate::ovsdb::cache::UpdateFormat;
        use serde_json::json;
        let [router, p1, p2, r1] = [1u128, 2, 3, 4].map(Uuid::from_u128);
        let update = json!({
            "Logical_Router_Port": {
                p1.to_string(): {"insert": {"name": "a", "networks": "10.0.0.1/24"}},
                p2.to_string(): {"insert": {"name": "b", "networks": "10.0.1.1/24"}},
            },
            "Logical_Router_Static_Route": {
                r1.to_string(): {"insert": {"ip_prefix": "10.9.0.0/24", "nexthop": "10.0.0.9"}},
            },
            "Logical_Router": {
                router.to_string(): {"insert": {"name": "vpc-a",
                    "ports": ["set", [["uuid", p1.to_string()], ["uuid", p2.to_string()]]],
                    "static_routes": ["uuid", r1.to_string()]}},
            },
        });
        let mut cache = NbCache::new(Some(PEERING_KEY.into()));
        cache.apply_v(&types(), UpdateFormat::V2, &update).unwrap();
        let mut rows = Vec::new();
        NbCacheTopology(&cache, None)
            .visit_routers_named("vpc-a", &mut |r| rows.push(r.indexed_rows()));
        assert_eq!(rows, vec![Some(3)]);
    }
}
