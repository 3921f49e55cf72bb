//! A VPC's router as the rules read it, resolved once per VPC and pass: read in place through
//! [`Topology::visit_routers_named`] (a hub's router holds a port and a route per spoke; it
//! used to be copied whole, per create and per narrow pass), keeping its subnets, the
//! networks of its gateway and peer ports in a [`PrefixMap`] (a spoke's link is checked
//! against the ports it overlaps, not against all N), and its main-table routes by ECMP key;
//! and the ECMP rule that reads them ([`check_ecmp`]).

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::prefix::PrefixMap;
use super::rows::{PortRef, RouteRef, RowKey};
use super::{subnets_of_port, Topology};
use crate::peering::{PeeringSpec, RoutePolicy, RouteSpec, Side, Violation};

/// The router of a VPC, resolved once, with what the rules read of it.
#[derive(Debug, Clone)]
pub(super) struct ResolvedRouter {
    pub id: String,
    pub name: String,
    pub subnets: Vec<IpNet>,
    /// Its rows as the rules read them, or `None` when the topology indexes them
    /// ([`super::RouterRows::indexed_rows`]): each question is then asked of it (a hub's router is
    /// not read whole).
    kept: Option<Kept>,
    /// Debug builds, asked: the same router read whole, whose answers every question checks.
    #[cfg(debug_assertions)]
    twin: Option<Box<ResolvedRouter>>,
}

/// What a resolved router keeps of its rows when they are read whole.
#[derive(Debug, Clone)]
struct Kept {
    /// Networks of gateway ports and peer ports: ((router port order, order within the
    /// port), port name, claimed by an indexed peering of this VPC).
    port_nets: PrefixMap<((usize, usize), String, bool)>,
    /// Installed main-table routes: ((policy, prefix), router route order, the peering that
    /// owns it, its UUID), sorted. Only what tells a conflict apart and finds the row again;
    /// the rest of a route is read again, that one row, to describe it
    /// ([`Self::describe_route`]): a hub has a route per spoke.
    ecmp: Vec<(EcmpKey, usize, Option<Box<str>>, RowKey)>,
}

type EcmpKey = (RoutePolicy, IpNet);

impl ResolvedRouter {
    /// The one router named `vpc` (or why not, as [`super::resolve_router`] says it);
    /// `claimed(port)`: whether an indexed peering holds the port name `port` in it.
    /// `ask(rows)`, given what the router says of its rows ([`super::RouterRows::indexed_rows`]):
    /// keep none of them, ask `topo` per question (for a topology that indexes them, and few
    /// questions); `claimed` is then asked again per question and must say the same.
    pub(super) fn new(
        topo: &(impl Topology + ?Sized),
        vpc: &str,
        claimed: impl Fn(&str) -> bool,
        ask: impl Fn(Option<usize>) -> bool,
    ) -> Result<ResolvedRouter, String> {
        Self::resolve(topo, vpc, &claimed, &ask)
    }

    fn resolve(
        topo: &(impl Topology + ?Sized),
        vpc: &str,
        claimed: &dyn Fn(&str) -> bool,
        ask: &dyn Fn(Option<usize>) -> bool,
    ) -> Result<ResolvedRouter, String> {
        let mut found = 0;
        let mut resolved = None;
        topo.visit_routers_named(vpc, &mut |r| {
            found += 1;
            if found > 1 {
                return;
            }
            if ask(r.indexed_rows()) {
                resolved = Some(ResolvedRouter {
                    id: r.id(),
                    name: r.name().to_string(),
                    subnets: Vec::new(),
                    kept: None,
                    #[cfg(debug_assertions)]
                    twin: None,
                });
                return;
            }
            let (mut subnets, mut nets) = (Vec::new(), Vec::new());
            let mut order = 0;
            r.each_port(&mut |p: PortRef<'_>| {
                subnets.extend(subnets_of_port(p.networks, p.peer, p.is_gateway));
                if p.is_peer() || p.is_gateway {
                    let mine = claimed(p.name);
                    let at = |(k, n)| (n, ((order, k), p.name.to_string(), mine));
                    nets.extend(p.nets().enumerate().map(at));
                }
                order += 1;
            });
            subnets.sort_unstable();
            subnets.dedup();
            let mut ecmp = Vec::new();
            let mut order = 0;
            r.each_route(&mut |route: RouteRef<'_>| {
                // ovn-peerd installs every route in the main table ("").
                if route.route_table.is_empty() {
                    if let Some(key) = route.key() {
                        let id = RowKey::from(route.id);
                        ecmp.push((key, order, route.peering.map(Box::from), id));
                    }
                }
                order += 1;
            });
            ecmp.sort_unstable_by_key(|(key, order, ..)| (*key, *order));
            resolved = Some(ResolvedRouter {
                id: r.id(),
                name: r.name().to_string(),
                subnets,
                kept: Some(Kept {
                    port_nets: PrefixMap::new(nets),
                    ecmp,
                }),
                #[cfg(debug_assertions)]
                twin: None,
            });
        });
        match (found, resolved) {
            (1, Some(mut r)) => {
                if r.kept.is_none() {
                    // As the walk reads them (a port of a peering going is a peer port).
                    r.subnets = topo.subnets_named(vpc);
                    #[cfg(debug_assertions)]
                    {
                        r.twin = ResolvedRouter::resolve(topo, vpc, claimed, &|_| false)
                            .ok()
                            .map(Box::new);
                    }
                }
                Ok(r)
            }
            (0, _) => Err(format!("no OVN logical router is named {vpc:?}")),
            (n, _) => Err(format!(
                "{n} OVN logical routers are named {vpc:?}; a VPC must be exactly one"
            )),
        }
    }

    /// Networks of gateway ports and of peer ports that are not ours overlapping `q`, in
    /// router port order: (network, port name). Ours: `own` (the checked peering's port here)
    /// and the ports the indexed peerings claim (`claimed`, as resolved), unless only `me`
    /// claims them (`reclaimed`). `topo`: what the router was resolved from.
    pub(super) fn port_nets(
        &self,
        topo: &(impl Topology + ?Sized),
        q: &IpNet,
        own: &str,
        reclaimed: &dyn Fn(&str) -> bool,
        claimed: &dyn Fn(&str) -> bool,
    ) -> Vec<(IpNet, String)> {
        let foreign = |name: &str, claimed: bool| name != own && (!claimed || reclaimed(name));
        let mut hits: Vec<((usize, usize), IpNet, String)> = match &self.kept {
            Some(kept) => kept
                .port_nets
                .view()
                .overlapping_entries(q)
                .filter(|(_, (_, name, claimed))| foreign(name, *claimed))
                .map(|(n, (order, name, _))| (*order, *n, name.clone()))
                .collect(),
            None => {
                let mut hits = Vec::new();
                topo.visit_ports_overlapping(&self.name, q, &mut |order, p| {
                    if !foreign(p.name, claimed(p.name)) {
                        return;
                    }
                    for (k, n) in p.nets().enumerate() {
                        if super::overlaps(&n, q) {
                            hits.push(((order, k), n, p.name.to_string()));
                        }
                    }
                });
                hits
            }
        };
        hits.sort_by_key(|(order, _, _)| *order);
        let out: Vec<(IpNet, String)> = hits.into_iter().map(|(_, n, name)| (n, name)).collect();
        #[cfg(debug_assertions)]
        if let Some(twin) = &self.twin {
            let whole = twin.port_nets(topo, q, own, reclaimed, claimed);
            assert_eq!(out, whole, "port_nets({q}) asked vs read whole");
        }
        out
    }

    /// Installed main-table routes with this (policy, prefix), not of peering `me`: their
    /// orders in the router, ascending, each with its UUID (for [`Self::describe_route`]).
    pub(super) fn ecmp(
        &self,
        topo: &(impl Topology + ?Sized),
        key: EcmpKey,
        me: &str,
    ) -> Vec<(usize, RowKey)> {
        let Some(kept) = &self.kept else {
            let mut out = Vec::new();
            topo.visit_routes_with_prefix(&self.name, &key.1, &mut |order, route| {
                // ovn-peerd installs every route in the main table ("").
                if route.route_table.is_empty()
                    && route.key() == Some(key)
                    && route.peering != Some(me)
                {
                    out.push((order, RowKey::from(route.id)));
                }
            });
            out.sort_by_key(|(order, _)| *order);
            // Orders count the rows going too (read whole, they are skipped): compare the rows.
            #[cfg(debug_assertions)]
            if let Some(twin) = &self.twin {
                let ids =
                    |v: &[(usize, RowKey)]| v.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
                let whole = twin.ecmp(topo, key, me);
                assert_eq!(ids(&out), ids(&whole), "ecmp({key:?}) asked vs read whole");
            }
            return out;
        };
        let from = kept.ecmp.partition_point(|(k, ..)| *k < key);
        kept.ecmp[from..]
            .iter()
            .take_while(|(k, ..)| *k == key)
            .filter(|(_, _, peering, _)| peering.as_deref() != Some(me))
            .map(|(_, order, _, id)| (*order, id.clone()))
            .collect()
    }

    /// The route `id` of this router, as a refusal names it: that one row, read again from
    /// `topo` (the snapshot it was resolved from) by [`Topology::visit_route`].
    pub(super) fn describe_route(&self, topo: &(impl Topology + ?Sized), id: &RowKey) -> String {
        let mut out = None;
        topo.visit_route(&self.name, id.as_id(), &mut |route| {
            out.get_or_insert_with(|| route.to_view().describe(&self.name));
        });
        out.unwrap_or_else(|| format!("route {id} of router {:?}", self.name))
    }
}

/// A route this peering installs must not share (route table, policy, prefix) with a route
/// already in the router (ours of another peering, frozen or not, or a foreign one): OVN would
/// make them an ECMP group and split the flows. The peering's own rows never conflict.
pub(super) fn check_ecmp(
    spec: &PeeringSpec,
    side: Side,
    topo: &(impl Topology + ?Sized),
    router: &ResolvedRouter,
    routes: &[RouteSpec],
    v: &mut Vec<Violation>,
) {
    // Each installed route once, with the first of our routes sharing its key, in the
    // router's order.
    let mut keys = BTreeSet::new();
    let mut hits = Vec::new();
    for r in routes {
        if keys.insert((r.policy, r.prefix)) {
            hits.extend(
                router
                    .ecmp(topo, (r.policy, r.prefix), &spec.name)
                    .into_iter()
                    .map(|(order, id)| (order, id, r)),
            );
        }
    }
    hits.sort_by_key(|(order, _, _)| *order);
    for (_, id, r) in hits {
        v.push(Violation::new(
            format!("peering.{}_routes", side.as_str()),
            format!(
                "route {} would form an ECMP group with {}",
                r.prefix,
                router.describe_route(topo, &id)
            ),
        ));
    }
}

#[cfg(test)]
mod tests;
