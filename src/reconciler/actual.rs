//! What NB holds, as the plan sees it: this deployment's ports and routes (with
//! their routers) and every other port in the way, read from the NB cache.
//!
//! Ownership is decided here by [`Ownership::classify`], row by row: only rows
//! that are ours (or adoptable) reach the plan as rows to change; a port of
//! another deployment, of an older version's peering we do not hold, or of no
//! ovn-peerd at all, reaches it only as a name in the way and who holds it.

use std::collections::{BTreeSet, HashMap, HashSet};

use uuid::Uuid;

use crate::ovsdb::{LogicalRouterPort, LogicalRouterStaticRoute, NbCache, Table};
use crate::peering::desired::DesiredPeering;
use crate::peering::diff::{ActualPort, ActualRoute, ActualRows};
use crate::peering::owner::{Ownership, RowOwner};
use crate::peering::{RoutePolicy, PEERING_KEY};

/// The rows NB holds that the diff looks at. With `only`, just the rows of
/// those peerings, and just the foreign ports in the way of `desired`.
pub(super) fn actual_rows(
    cache: &NbCache,
    only: Option<&BTreeSet<String>>,
    desired: &[DesiredPeering],
    ownership: &Ownership,
) -> ActualRows {
    let mut actual = ActualRows::default();
    let scoped: Option<HashSet<Uuid>> = only.map(|names| {
        names
            .iter()
            .flat_map(|n| cache.rows_with_external_id(PEERING_KEY, n))
            .map(|(_, u)| u)
            .collect()
    });
    let in_scope = |u: &Uuid| scoped.as_ref().is_none_or(|s| s.contains(u));
    let mut port_router = HashMap::new();
    let mut route_router = HashMap::new();
    for router in cache.routers() {
        for p in router.ports.iter().filter(|u| in_scope(u)) {
            port_router.insert(*p, router.uuid);
        }
        for r in router.static_routes.iter().filter(|u| in_scope(u)) {
            route_router.insert(*r, router.uuid);
        }
    }
    let ports: Vec<&LogicalRouterPort> = match &scoped {
        None => cache.ports().collect(),
        Some(uuids) => {
            for p in desired.iter().flat_map(|d| &d.ports) {
                if let Some(existing) = cache.port_by_name(&p.name) {
                    if let RowOwner::Foreign(who) = ownership.classify(&existing.external_ids) {
                        actual.foreign_ports.insert(p.name.clone(), who);
                    }
                }
            }
            uuids.iter().filter_map(|u| cache.port(*u)).collect()
        }
    };
    for p in ports {
        if let RowOwner::Foreign(who) = ownership.classify(&p.external_ids) {
            actual.foreign_ports.insert(p.name.clone(), who);
            continue;
        }
        let Some(router) = port_router.get(&p.uuid) else {
            continue; // not attached: about to be garbage-collected
        };
        actual.ports.push(ActualPort {
            id: p.uuid.to_string(),
            router_id: router.to_string(),
            name: p.name.clone(),
            mac: p.mac.clone(),
            networks: p.networks.clone(),
            peer: p.peer.clone(),
            enabled: p.enabled,
            options: p.options.to_map(),
            gateway_chassis: !p.gateway_chassis.is_empty(),
            ha_chassis_group: p.ha_chassis_group.is_some(),
            external_ids: p.external_ids.to_map(),
        });
    }
    let routes: Vec<&LogicalRouterStaticRoute> = match &scoped {
        None => cache.static_routes().collect(),
        Some(uuids) => uuids
            .iter()
            .filter_map(|u| cache.static_route(*u))
            .collect(),
    };
    for r in routes
        .into_iter()
        .filter(|r| ownership.is_ours(&r.external_ids))
    {
        let Some(router) = route_router.get(&r.uuid) else {
            continue;
        };
        actual.routes.push(ActualRoute {
            id: r.uuid.to_string(),
            router_id: router.to_string(),
            ip_prefix: r.ip_prefix.clone(),
            nexthop: r.nexthop.clone(),
            policy: RoutePolicy::from_ovn(r.policy.as_deref()),
            output_port: r.output_port.clone(),
            route_table: r.route_table.clone(),
            options: r.options.to_map(),
            bfd: r.bfd.is_some(),
            external_ids: r.external_ids.to_map(),
        });
    }
    actual
}

/// How many NB rows (ports and routes) are this deployment's: the base of the
/// mass-deletion brake.
pub(super) fn our_row_count(cache: &NbCache, ownership: &Ownership) -> usize {
    let ports = cache
        .ports()
        .filter(|p| ownership.is_ours(&p.external_ids))
        .count();
    let routes = cache
        .static_routes()
        .filter(|r| ownership.is_ours(&r.external_ids))
        .count();
    ports + routes
}

/// Whether NB still holds a row of `peering` that this deployment would delete
/// (what a tombstone waits for). Rows taken over by hand (owner mark removed)
/// or another deployment's rows of the same name never hold a tombstone.
pub(super) fn holds_rows_of(cache: &NbCache, peering: &str, ownership: &Ownership) -> bool {
    cache
        .rows_with_external_id(PEERING_KEY, peering)
        .into_iter()
        .any(|(table, uuid)| {
            let ids = match table {
                Table::LogicalRouterPort => cache.port(uuid).map(|p| &p.external_ids),
                Table::LogicalRouterStaticRoute => {
                    cache.static_route(uuid).map(|r| &r.external_ids)
                }
                Table::LogicalRouter => cache.router(uuid).map(|r| &r.external_ids),
            };
            ids.is_some_and(|ids| ownership.is_ours(ids))
        })
}
