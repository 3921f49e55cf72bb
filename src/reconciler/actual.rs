//! What NB holds, as the plan sees it: this deployment's ports and routes (with
//! their routers) and every other port in the way, read from the NB cache.
//!
//! Ownership is decided here by [`Ownership::classify`], row by row: only rows
//! that are ours (or adoptable) reach the plan as rows to change; a port of
//! another deployment, of an older version's peering we do not hold, or of no
//! ovn-peerd at all, reaches it only as a name in the way and who holds it.
//!
//! **Peerings already in sync are not copied.** Most of a full pass's peerings (all of them
//! after a restart) have exactly their rows in NB. Each desired peering is first compared in
//! place with the replica's rows carrying its mark ([`in_sync`], borrowed columns, no copy);
//! only the others, and the rows of no in-sync peering (orphans, adoptions, rows without a
//! mark we know), are copied into [`ActualRows`] for the plan. A peering counts as in sync
//! only when the plan itself could not tell otherwise: every row of ours carrying its mark is
//! attached and matches one wanted row exactly, and no other desired peering wants one of its
//! port names. Rows of another deployment carrying the same mark (blue/green deployments
//! sharing peering names) are not the plan's and are skipped ([`peerings_in_sync`]; the
//! property `prop_in_sync_selection_changes_no_plan` checks the selection against the plan). Leaving its rows out of the plan then changes nothing the plan decides
//! about anyone else: the plan matches ports by name (unique in NB, and these names are
//! wanted by this peering alone) and routes by owner, so no other peering's change can
//! reach them, and they are never orphans (their owner is desired).

use std::collections::{BTreeSet, HashMap, HashSet};

use uuid::Uuid;

use crate::ovsdb::{LogicalRouterPort, LogicalRouterStaticRoute, NbCache, Table};
use crate::peering::desired::DesiredPeering;
use crate::peering::diff::{
    holds_exactly, peerings_in_sync, ActualPort, ActualRoute, ActualRows, MarkedRow, PortColumns,
    RouteColumns, RouterId,
};
use crate::peering::owner::{Ownership, RowOwner};
use crate::peering::{RoutePolicy, PEERING_KEY};

use super::pass::cores::in_chunks;

/// What NB holds for the plan: the desired peerings whose rows are exactly in NB (nothing to
/// plan for them) and the rows the plan must look at for the others.
pub(super) struct Actual {
    /// Desired peerings NB holds exactly (by name).
    pub in_sync: HashSet<String>,
    /// Every other row the plan looks at.
    pub rows: ActualRows,
}

/// Which router holds each port and route (of the scope): what tells an attached row from
/// one about to be garbage-collected, and on which router it is.
pub(super) struct Attachments {
    scoped: Option<HashSet<Uuid>>,
    port_router: HashMap<Uuid, Uuid>,
    route_router: HashMap<Uuid, Uuid>,
}

impl Attachments {
    /// Every router's rows, or with `only`, just the rows of those peerings.
    pub(super) fn new(cache: &NbCache, only: Option<&BTreeSet<String>>) -> Attachments {
        let scoped: Option<HashSet<Uuid>> = only.map(|names| {
            names
                .iter()
                .flat_map(|n| cache.rows_with_external_id(PEERING_KEY, n))
                .map(|(_, u)| u)
                .collect()
        });
        let mut port_router = HashMap::new();
        let mut route_router = HashMap::new();
        match &scoped {
            // A narrow pass: the holders of its rows, from the replica's index.
            Some(rows) => {
                for u in rows {
                    for router in cache.routers_holding(*u) {
                        let Some(r) = cache.router(router) else {
                            continue;
                        };
                        if r.ports.binary_search(u).is_ok() {
                            port_router.insert(*u, router);
                        }
                        if r.static_routes.binary_search(u).is_ok() {
                            route_router.insert(*u, router);
                        }
                    }
                }
            }
            None => {
                for router in cache.routers() {
                    for p in &router.ports {
                        port_router.insert(*p, router.uuid);
                    }
                    for r in &router.static_routes {
                        route_router.insert(*r, router.uuid);
                    }
                }
            }
        }
        Attachments {
            scoped,
            port_router,
            route_router,
        }
    }

    /// Whether NB holds exactly the rows of `d` (stamped with this deployment's instance),
    /// its name and port names wanted by no other desired peering (the caller knows):
    /// [`holds_exactly`] over the replica's rows carrying its mark, compared in place.
    pub(super) fn holds(&self, cache: &NbCache, d: &DesiredPeering, ownership: &Ownership) -> bool {
        holds_exactly(d, marked_rows(cache, &d.name, ownership, self))
    }
}

/// The rows NB holds that the diff looks at. With `only`, just the rows of
/// those peerings, and just the foreign ports in the way of `desired`. `settled`: peerings
/// the caller found in sync already ([`Attachments::holds`], their desired rows dropped).
/// The rows to copy are picked out on `threads` threads (a full pass reads every row of NB;
/// [`in_chunks`] keeps their order).
pub(super) fn actual_rows(
    cache: &NbCache,
    attach: &Attachments,
    desired: &[DesiredPeering],
    settled: HashSet<String>,
    ownership: &Ownership,
    threads: usize,
) -> Actual {
    let mut actual = ActualRows::default();
    let scoped = &attach.scoped;
    let (port_router, route_router) = (&attach.port_router, &attach.route_router);
    let mut in_sync = in_sync_peerings(cache, desired, ownership, attach);
    in_sync.extend(settled);
    // The rows of an in-sync peering are its own and all accounted for (see the module doc).
    let elsewhere =
        |ids: &crate::ovsdb::StrMap| ids.get(PEERING_KEY).is_none_or(|p| !in_sync.contains(p));
    // Only names a planned peering wants can block it.
    for p in desired
        .iter()
        .filter(|d| !in_sync.contains(&d.name))
        .flat_map(|d| &d.ports)
    {
        if let Some(existing) = cache.port_by_name(&p.name) {
            if let RowOwner::Foreign(who) = ownership.classify(&existing.external_ids) {
                actual.foreign_ports.insert(p.name.to_string(), who);
            }
        }
    }
    let ports: Vec<&LogicalRouterPort> = match &scoped {
        None => cache.ports().collect(),
        Some(uuids) => uuids.iter().filter_map(|u| cache.port(*u)).collect(),
    };
    let ports = in_chunks(&ports, threads, |_, rows| {
        let copied = rows.iter().copied();
        copied
            .filter(|p| ownership.is_ours(&p.external_ids) && elsewhere(&p.external_ids))
            .collect::<Vec<_>>()
    });
    for p in ports.into_iter().flatten() {
        let Some(router) = port_router.get(&p.uuid) else {
            continue; // not attached: about to be garbage-collected
        };
        actual.ports.push(ActualPort {
            id: p.uuid.to_string(),
            router_id: router.to_string(),
            name: p.name.to_string(),
            mac: p.mac.to_string(),
            networks: p.networks.to_vec(),
            peer: p.peer.as_deref().map(str::to_owned),
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
    let routes = in_chunks(&routes, threads, |_, rows| {
        let copied = rows.iter().copied();
        copied
            .filter(|r| ownership.is_ours(&r.external_ids) && elsewhere(&r.external_ids))
            .collect::<Vec<_>>()
    });
    for r in routes.into_iter().flatten() {
        let Some(router) = route_router.get(&r.uuid) else {
            continue;
        };
        actual.routes.push(ActualRoute {
            id: r.uuid.to_string(),
            router_id: router.to_string(),
            ip_prefix: r.ip_prefix.to_string(),
            nexthop: r.nexthop.to_string(),
            policy: RoutePolicy::from_ovn(r.policy.as_deref()),
            output_port: r.output_port.as_deref().map(str::to_owned),
            route_table: r.route_table.to_string(),
            options: r.options.to_map(),
            bfd: r.bfd.is_some(),
            external_ids: r.external_ids.to_map(),
        });
    }
    Actual {
        in_sync,
        rows: actual,
    }
}

/// The desired peerings whose rows NB holds exactly, compared in place (module doc; the
/// selection is [`peerings_in_sync`]'s, over the replica's rows carrying each mark).
fn in_sync_peerings(
    cache: &NbCache,
    desired: &[DesiredPeering],
    ownership: &Ownership,
    attach: &Attachments,
) -> HashSet<String> {
    peerings_in_sync(desired, |name| marked_rows(cache, name, ownership, attach))
}

/// Every row carrying the mark of `peering`, borrowed, with whether it is ours and its router.
fn marked_rows<'a>(
    cache: &'a NbCache,
    peering: &str,
    ownership: &'a Ownership,
    attach: &'a Attachments,
) -> impl Iterator<Item = MarkedRow<'a>> + 'a {
    cache
        .rows_with_external_id(PEERING_KEY, peering)
        .into_iter()
        .filter_map(move |(table, uuid)| match table {
            Table::LogicalRouterPort => cache.port(uuid).map(|p| MarkedRow::Port {
                ours: ownership.is_ours(&p.external_ids),
                router: attach.port_router.get(&uuid).copied().map(RouterId::Uuid),
                columns: port_columns(p),
            }),
            Table::LogicalRouterStaticRoute => cache.static_route(uuid).map(|r| MarkedRow::Route {
                ours: ownership.is_ours(&r.external_ids),
                router: attach.route_router.get(&uuid).copied().map(RouterId::Uuid),
                columns: route_columns(r),
            }),
            Table::LogicalRouter => None,
        })
}

fn port_columns(p: &LogicalRouterPort) -> PortColumns<'_> {
    PortColumns {
        name: &p.name,
        mac: &p.mac,
        networks: &p.networks,
        peer: p.peer.as_deref(),
        enabled: p.enabled,
        has_options: !p.options.is_empty(),
        gateway_chassis: !p.gateway_chassis.is_empty(),
        ha_chassis_group: p.ha_chassis_group.is_some(),
        external_ids: &p.external_ids,
    }
}

fn route_columns(r: &LogicalRouterStaticRoute) -> RouteColumns<'_> {
    RouteColumns {
        ip_prefix: &r.ip_prefix,
        nexthop: &r.nexthop,
        policy: RoutePolicy::from_ovn(r.policy.as_deref()),
        output_port: r.output_port.as_deref(),
        route_table: &r.route_table,
        has_options: !r.options.is_empty(),
        bfd: r.bfd.is_some(),
        external_ids: &r.external_ids,
    }
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
