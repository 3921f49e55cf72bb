//! The OVSDB replica of NB seen through the rules' [`Topology`] trait, for the API's
//! checks and the worker's derivations. Read-only: it borrows the cache and copies out
//! the few fields the rules look at.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use uuid::Uuid;

use super::subnet_index::SubnetIndex;
use crate::ovsdb::model::{LogicalRouter, LogicalRouterPort, LogicalRouterStaticRoute};
use crate::ovsdb::{NbCache, StrMap};
use crate::peering::overlaps;
use crate::peering::topology::{
    subnets_of_port, Nearby, PortRef, PortView, RouteRef, RouteView, RouterRows, RouterView, RowId,
    Topology,
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
        self.0
            .routers()
            .find(|r| r.ports.contains(&uuid))
            .map(|r| r.name.to_string())
    }

    fn router_count(&self, name: &str) -> usize {
        self.0.router_by_name(name).len()
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
    /// One pass over NB's routers and their ports, in place (peer ports are skipped before
    /// their networks are read, so a hub's N costs little).
    fn vpcs_with_subnets_overlapping(&self, nets: &[IpNet]) -> BTreeSet<String> {
        let (cache, index) = (self.0, all_subnets(self.0));
        let mut routers = BTreeSet::new();
        for n in nets {
            index.routers_overlapping(n, &mut routers);
        }
        routers
            .into_iter()
            .filter_map(|u| cache.router(u).map(|r| r.name.to_string()))
            .collect()
    }

    fn peerings_of_ports_overlapping(&self, vpc: &str, nets: &[IpNet]) -> BTreeSet<String> {
        let cache = self.0;
        cache
            .router_by_name(vpc)
            .into_iter()
            .flat_map(|r| r.ports.iter().filter_map(|u| cache.port(*u)))
            .filter(|p| p.peer.as_deref().is_some_and(|peer| !peer.is_empty()))
            .filter(|p| {
                p.networks
                    .iter()
                    .filter_map(|n| n.parse::<IpNet>().ok())
                    .any(|m| nets.iter().any(|n| overlaps(&m, n)))
            })
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
    RouteRef {
        id: RowId::Uuid(r.uuid),
        ip_prefix: &r.ip_prefix,
        nexthop: &r.nexthop,
        policy: r.policy.as_deref(),
        route_table: &r.route_table,
        peering: owner_ref(&r.external_ids, me),
        instance: instance_ref(&r.external_ids),
    }
}

fn port_ref<'a>(p: &'a LogicalRouterPort, me: Option<&str>) -> PortRef<'a> {
    PortRef {
        name: &p.name,
        networks: &p.networks,
        peer: p.peer.as_deref(),
        is_gateway: is_gateway(p),
        peering: owner_ref(&p.external_ids, me),
        instance: instance_ref(&p.external_ids),
    }
}

/// As [`owner`], borrowed, for deployment `me` (when known): `None` for a row another
/// deployment wrote, which is foreign whatever its peering name.
fn owner_ref<'a>(external_ids: &'a StrMap, me: Option<&str>) -> Option<&'a str> {
    let theirs = match (me, instance_ref(external_ids)) {
        (Some(me), Some(row)) => row != me,
        _ => false,
    };
    (!theirs && is_owned(external_ids)).then(|| external_ids.get(PEERING_KEY).unwrap_or(""))
}

/// As [`instance`], borrowed.
fn instance_ref(external_ids: &StrMap) -> Option<&str> {
    is_owned(external_ids)
        .then(|| external_ids.get(INSTANCE_KEY))
        .flatten()
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

/// Every subnet in NB with the router holding it.
type Subnets = Arc<SubnetIndex>;

/// Every router's subnets, kept for the NB state of routers and ports last asked about:
/// CreatePeering's probe at a hub and the worker's narrow probe ask on every peering which
/// VPCs' subnets overlap its networks, and walking and parsing every port of NB each time
/// cost more than the create itself (2,000 routers). The memo holds the cache it was built
/// from (persistent maps: a clone shares their nodes, and an unchanged row is the same
/// allocation in both) and follows a new state by the rows that differ
/// ([`follow`]: a peering changes a few routers and ports, and at low load every peering
/// sees a new NB state); rebuilt from scratch when many differ. Routers are kept by uuid
/// (their names are looked up only for a match, so an update allocates no string).
fn all_subnets(cache: &NbCache) -> Subnets {
    static MEMO: Mutex<Option<(NbCache, Subnets)>> = Mutex::new(None);
    let mut memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    let subnets = match memo.as_ref() {
        Some((of, subnets)) if of.same_routers_and_ports(cache) => return subnets.clone(),
        Some((of, subnets)) => match follow(of, subnets, cache) {
            Some(followed) => {
                debug_assert_eq!(
                    followed.entries(),
                    build(cache).entries(),
                    "the followed subnet index"
                );
                Arc::new(followed)
            }
            None => Arc::new(build(cache)),
        },
        None => Arc::new(build(cache)),
    };
    *memo = Some((cache.clone(), subnets.clone()));
    subnets
}

/// More rows changed than this since the memo's state: rebuilt rather than followed.
const FOLLOW_AT_MOST: usize = 256;

/// The index of `new`, from `index` (the index of `old`) and the rows that differ: the
/// subnets of every router that changed, or that holds a port that changed, are read again
/// from `new`; every other router holds the same ports as in `old`, unchanged, so its entries
/// stand. `None` when more than [`FOLLOW_AT_MOST`] rows differ.
fn follow(old: &NbCache, index: &SubnetIndex, new: &NbCache) -> Option<SubnetIndex> {
    let mut routers = changed(old.routers(), new.routers(), |r| r.uuid)?;
    let ports = changed(old.ports(), new.ports(), |p| p.uuid)?;
    if !ports.is_empty() {
        routers.extend(
            new.routers()
                .filter(|r| r.ports.iter().any(|u| ports.contains(u)))
                .map(|r| r.uuid),
        );
    }
    let mut added: Vec<(IpNet, Uuid)> = Vec::new();
    for r in routers.iter().filter_map(|u| new.router(*u)) {
        for p in r.ports.iter().filter_map(|u| new.port(*u)) {
            let subnets = subnets_of_port(&p.networks, p.peer.as_deref(), is_gateway(p));
            added.extend(subnets.map(|net| (net, r.uuid)));
        }
    }
    Some(index.changed(|r| routers.contains(r), added))
}

/// The uuids of the rows that differ between two tables walked in uuid order (added,
/// removed, or another allocation: a changed row); `None` past [`FOLLOW_AT_MOST`].
fn changed<'a, T: 'a>(
    old: impl Iterator<Item = &'a T>,
    new: impl Iterator<Item = &'a T>,
    uuid: impl Fn(&T) -> Uuid,
) -> Option<BTreeSet<Uuid>> {
    let mut out = BTreeSet::new();
    let (mut old, mut new) = (old.peekable(), new.peekable());
    loop {
        let differs = match (old.peek(), new.peek()) {
            (None, None) => return Some(out),
            (Some(a), None) => {
                let u = uuid(a);
                old.next();
                Some(u)
            }
            (None, Some(b)) => {
                let u = uuid(b);
                new.next();
                Some(u)
            }
            (Some(a), Some(b)) => match uuid(a).cmp(&uuid(b)) {
                std::cmp::Ordering::Less => {
                    let u = uuid(a);
                    old.next();
                    Some(u)
                }
                std::cmp::Ordering::Greater => {
                    let u = uuid(b);
                    new.next();
                    Some(u)
                }
                std::cmp::Ordering::Equal => {
                    let (a, b) = (old.next()?, new.next()?);
                    (!std::ptr::eq(a, b)).then(|| uuid(a))
                }
            },
        };
        if let Some(u) = differs {
            out.insert(u);
            if out.len() > FOLLOW_AT_MOST {
                return None;
            }
        }
    }
}

/// The index of every subnet of `cache`, from scratch.
fn build(cache: &NbCache) -> SubnetIndex {
    // Which routers hold each port, from the routers' port lists sorted by port: the ports
    // are walked in the same (uuid) order, so one cursor finds each port's holders.
    let mut holders: Vec<(Uuid, Uuid)> = cache
        .routers()
        .flat_map(|r| r.ports.iter().map(|u| (*u, r.uuid)))
        .collect();
    holders.sort_unstable();
    let mut subnets = Vec::new();
    let mut at = 0;
    for p in cache.ports() {
        while at < holders.len() && holders[at].0 < p.uuid {
            at += 1;
        }
        let end = at
            + holders[at..]
                .iter()
                .take_while(|(u, _)| *u == p.uuid)
                .count();
        if end == at {
            continue;
        }
        for net in subnets_of_port(&p.networks, p.peer.as_deref(), is_gateway(p)) {
            subnets.extend(holders[at..end].iter().map(|(_, r)| (net, *r)));
        }
    }
    SubnetIndex::new(subnets)
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
        assert_eq!(instance_ref(&b), Some("dep-b"));
        assert_eq!(owner_ref(&b, None), Some("p1"), "instance unknown: by name");
        let foreign: StrMap = [(PEERING_KEY, "p1")].into();
        assert_eq!(owner_ref(&foreign, Some("dep-a")), None);
    }
}
