//! The plan that turns the Northbound rows we own into the desired ones: a minimal,
//! deterministic list of row changes plus an outcome per desired peering.
//!
//! Rules:
//! - Only rows whose `external_ids` carry our owner marker are ever changed or deleted; the
//!   caller may pass other rows, they are ignored. The caller passes only the rows of this
//!   deployment (see [`super::owner`]); every other port goes in [`ActualRows::foreign_ports`].
//! - Ports are matched by name (unique in NB). A port on the wrong router is deleted and
//!   re-created; otherwise only the changed columns are updated. `external_ids` updates keep
//!   keys that are not ours (and add our instance id to a row adopted from an older version).
//! - Every column of our rows that affects forwarding is repaired: the ones we write are set
//!   back to the desired values; the ones we never set (`enabled=false`, `options`,
//!   `gateway_chassis`, `ha_chassis_group` on ports; `options`, `bfd` on routes) are reset to
//!   their defaults in place. A route's nexthop, policy and table are its identity (below).
//! - A route's identity is what `ovn-nbctl lr-route-add` uses, (route_table, policy with empty
//!   = dst-ip, normalised prefix), plus the nexthop and router, within its peering. A route
//!   whose identity changed (e.g. a new nexthop) is deleted and a new one created: routes have
//!   no index, so a fresh row is as cheap as an update and never leaves a half-changed row.
//!   `output_port` is not identity: a wrong or missing one (drift, or a row from a version
//!   that did not set it) is updated in place, so the route never disappears.
//!   Identical copies of an owned route are reduced to one (the smallest UUID).
//! - Owned rows of a peering that is not desired are deleted, unless the caller lists that
//!   peering in `untouched` (e.g. one it chooses to freeze).
//! - A peering whose port name is held by a foreign port (or by an earlier peering, in name
//!   order) is `Blocked`: nothing of it is created, changed or deleted.
//!
//! Changes are ordered route deletions, port deletions, port updates, port creations, route
//! updates, route creations; within each by peering, router and name. Applied in one
//! transaction in that order, a port that moves routers keeps its unique name valid.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::desired::{DesiredPeering, DesiredPort, DesiredRoute};
use super::{
    is_owned, ExternalIds, RoutePolicy, GENERATION_KEY, INSTANCE_KEY, OWNER_KEY, PEERING_KEY,
    SIDE_KEY,
};

/// A `Logical_Router_Port` as NB holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActualPort {
    /// Row UUID.
    pub id: String,
    /// UUID of the router whose `ports` hold it.
    pub router_id: String,
    /// `name`.
    pub name: String,
    /// `mac`.
    pub mac: String,
    /// `networks`.
    pub networks: Vec<String>,
    /// `peer`.
    pub peer: Option<String>,
    /// `enabled` (absent = enabled).
    pub enabled: Option<bool>,
    /// `options`.
    pub options: BTreeMap<String, String>,
    /// Whether `gateway_chassis` is non-empty.
    pub gateway_chassis: bool,
    /// Whether `ha_chassis_group` is set.
    pub ha_chassis_group: bool,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
}

/// A `Logical_Router_Static_Route` as NB holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActualRoute {
    /// Row UUID.
    pub id: String,
    /// UUID of the router whose `static_routes` hold it.
    pub router_id: String,
    /// `ip_prefix`, possibly not normalised.
    pub ip_prefix: String,
    /// `nexthop`.
    pub nexthop: String,
    /// `policy` (absent = dst-ip); `None` for a value ovn-peerd does not know, which never
    /// matches a desired route.
    pub policy: Option<RoutePolicy>,
    /// `output_port` (absent in rows written before ovn-peerd set it).
    pub output_port: Option<String>,
    /// `route_table`.
    pub route_table: String,
    /// `options`.
    pub options: BTreeMap<String, String>,
    /// Whether `bfd` is set.
    pub bfd: bool,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
}

/// NB router ports that exist but are not ours to change: name → who holds it (for the
/// FAILED message of a peering that needs the name, e.g. "is not owned by ovn-peerd").
pub type ForeignPorts = BTreeMap<String, String>;

/// What NB holds, as far as the plan cares.
#[derive(Debug, Clone, Default)]
pub struct ActualRows {
    /// Router ports (ours; others are ignored).
    pub ports: Vec<ActualPort>,
    /// Static routes (ours; others are ignored).
    pub routes: Vec<ActualRoute>,
    /// Router ports in NB that are not ours, and who holds them.
    pub foreign_ports: ForeignPorts,
}

/// The columns of a port the plan compares, borrowed from wherever the row lives: an
/// [`ActualPort`], or the NB replica itself ([`in_sync`], which copies nothing).
#[derive(Debug, Clone, Copy)]
pub struct PortColumns<'a> {
    /// `name`.
    pub name: &'a str,
    /// `mac`.
    pub mac: &'a str,
    /// `networks`.
    pub networks: &'a [String],
    /// `peer`.
    pub peer: Option<&'a str>,
    /// `enabled` (absent = enabled).
    pub enabled: Option<bool>,
    /// Whether `options` is non-empty.
    pub has_options: bool,
    /// Whether `gateway_chassis` is non-empty.
    pub gateway_chassis: bool,
    /// Whether `ha_chassis_group` is set.
    pub ha_chassis_group: bool,
    /// `external_ids` (a desired row's map, or the NB replica's).
    pub external_ids: &'a dyn ExternalIds,
}

/// The columns of a route the plan compares, borrowed (as [`PortColumns`]).
#[derive(Debug, Clone, Copy)]
pub struct RouteColumns<'a> {
    /// `ip_prefix`, possibly not normalised.
    pub ip_prefix: &'a str,
    /// `nexthop`.
    pub nexthop: &'a str,
    /// `policy`; `None` for a value ovn-peerd does not know.
    pub policy: Option<RoutePolicy>,
    /// `output_port`.
    pub output_port: Option<&'a str>,
    /// `route_table`.
    pub route_table: &'a str,
    /// Whether `options` is non-empty.
    pub has_options: bool,
    /// Whether `bfd` is set.
    pub bfd: bool,
    /// `external_ids` (a desired row's map, or the NB replica's).
    pub external_ids: &'a dyn ExternalIds,
}

impl ActualPort {
    /// Its columns, borrowed.
    pub fn columns(&self) -> PortColumns<'_> {
        PortColumns {
            name: &self.name,
            mac: &self.mac,
            networks: &self.networks,
            peer: self.peer.as_deref(),
            enabled: self.enabled,
            has_options: !self.options.is_empty(),
            gateway_chassis: self.gateway_chassis,
            ha_chassis_group: self.ha_chassis_group,
            external_ids: &self.external_ids,
        }
    }
}

impl ActualRoute {
    /// Its columns, borrowed.
    pub fn columns(&self) -> RouteColumns<'_> {
        RouteColumns {
            ip_prefix: &self.ip_prefix,
            nexthop: &self.nexthop,
            policy: self.policy,
            output_port: self.output_port.as_deref(),
            route_table: &self.route_table,
            has_options: !self.options.is_empty(),
            bfd: self.bfd,
            external_ids: &self.external_ids,
        }
    }
}

/// One row change. `peering` is the peering the change serves (for deletions: the owner
/// marker of the row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Insert the port and add it to its router's `ports`.
    CreatePort { peering: String, port: DesiredPort },
    /// Update the columns that are `Some`.
    UpdatePort {
        peering: String,
        id: String,
        name: String,
        /// UUID of the router whose `ports` hold it (new `networks` there must not land
        /// before another peering's port in that subnet leaves: `reconciler::batch`).
        router_id: String,
        mac: Option<String>,
        networks: Option<Vec<String>>,
        peer: Option<String>,
        external_ids: Option<BTreeMap<String, String>>,
        /// Columns set by hand that we never set, back to their defaults (`enabled=false`,
        /// `options`, `gateway_chassis`, `ha_chassis_group`).
        reset: Vec<&'static str>,
    },
    /// Remove the port from its router's `ports` (it is then garbage-collected), provided its
    /// `external_ids` are still `seen` (the ownership guard).
    DeletePort {
        peering: String,
        id: String,
        router_id: String,
        name: String,
        /// Its `networks`: another peering's port given an overlapping address on the same
        /// router must not land before this one leaves (`reconciler::batch`).
        networks: Vec<String>,
        seen: BTreeMap<String, String>,
    },
    /// Insert the route and add it to its router's `static_routes`.
    CreateRoute {
        peering: String,
        route: DesiredRoute,
    },
    /// Update the columns that are `Some`: `output_port` (cleared or changed by hand, or a
    /// row written before ovn-peerd set it: updated in place, so traffic never stops) and
    /// `external_ids` (generation bump).
    UpdateRoute {
        peering: String,
        id: String,
        output_port: Option<String>,
        external_ids: Option<BTreeMap<String, String>>,
        /// Columns set by hand that we never set, back to their defaults (`options`, `bfd`).
        reset: Vec<&'static str>,
    },
    /// Remove the route from its router's `static_routes`, provided its `external_ids` are
    /// still `seen` (the ownership guard).
    DeleteRoute {
        peering: String,
        id: String,
        router_id: String,
        /// Where the route sits on its router: another peering's route created in the same
        /// slot must not land before this one leaves (`reconciler::batch`).
        slot: RouteSlot,
        seen: BTreeMap<String, String>,
    },
}

/// Where OVN places a route among its router's routes: `ovn-nbctl lr-route-add`'s identity
/// without the nexthop, (route table, policy, normalised prefix). Two routes in one slot of
/// one router form an ECMP group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteSlot {
    /// `route_table` ("" = main).
    pub route_table: String,
    /// `policy` (absent = dst-ip); `None` for a value ovn-peerd does not know, which no
    /// route of ours has.
    pub policy: Option<RoutePolicy>,
    /// `ip_prefix`, host bits cleared (a bare address: a host route).
    pub prefix: String,
}

impl RouteSlot {
    /// The slot of a route we would install.
    pub fn of(route: &DesiredRoute) -> RouteSlot {
        RouteSlot {
            route_table: route.route_table.clone(),
            policy: Some(route.policy),
            prefix: normalise_prefix(&route.ip_prefix),
        }
    }

    /// The slot of a route NB holds.
    pub fn of_actual(route: &ActualRoute) -> RouteSlot {
        RouteSlot {
            route_table: route.route_table.clone(),
            policy: route.policy,
            prefix: normalise_prefix(&route.ip_prefix),
        }
    }
}

impl Change {
    /// The peering this change serves.
    pub fn peering(&self) -> &str {
        match self {
            Change::CreatePort { peering, .. }
            | Change::UpdatePort { peering, .. }
            | Change::DeletePort { peering, .. }
            | Change::CreateRoute { peering, .. }
            | Change::UpdateRoute { peering, .. }
            | Change::DeleteRoute { peering, .. } => peering,
        }
    }

    fn order_key(&self) -> (u8, &str, &str, &str, &str) {
        match self {
            Change::DeleteRoute {
                peering,
                id,
                router_id,
                ..
            } => (0, peering, router_id, "", id),
            Change::DeletePort {
                peering,
                id,
                router_id,
                name,
                ..
            } => (1, peering, router_id, name, id),
            Change::UpdatePort {
                peering, id, name, ..
            } => (2, peering, "", name, id),
            Change::CreatePort { peering, port } => (3, peering, &port.router_id, &port.name, ""),
            Change::UpdateRoute { peering, id, .. } => (4, peering, "", "", id),
            Change::CreateRoute { peering, route } => (
                5,
                peering,
                &route.router_id,
                &route.ip_prefix,
                &route.nexthop,
            ),
        }
    }
}

/// Where a desired peering stands after planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// NB already holds exactly its rows.
    InSync,
    /// The plan changes some of its rows.
    Changed,
    /// It cannot be converged; why.
    Blocked(String),
}

/// The result of [`plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Row changes, in application order.
    pub changes: Vec<Change>,
    /// One outcome per desired peering.
    pub outcomes: BTreeMap<String, Outcome>,
}

impl Plan {
    /// Whether any change serves `peering` (e.g. rows of a deleted peering are left).
    pub fn touches(&self, peering: &str) -> bool {
        self.changes.iter().any(|c| c.peering() == peering)
    }

    /// How many rows the plan deletes, except those of the peerings in `exempt` (e.g. the
    /// ones deleted through the API: their deletion is asked for, however large).
    pub fn deletions(&self, exempt: &BTreeSet<String>) -> usize {
        self.changes
            .iter()
            .filter(|c| is_deletion(c) && !exempt.contains(c.peering()))
            .count()
    }

    /// Drops every change of every peering not in `exempt` that deletes a row (the
    /// mass-deletion brake), so nothing is deleted and no peering is left half-written (a
    /// port moving routers is a deletion and a creation); returns those peerings.
    pub fn hold_deletions(&mut self, exempt: &BTreeSet<String>) -> BTreeSet<String> {
        let held: BTreeSet<String> = self
            .changes
            .iter()
            .filter(|c| is_deletion(c) && !exempt.contains(c.peering()))
            .map(|c| c.peering().to_string())
            .collect();
        self.changes.retain(|c| !held.contains(c.peering()));
        held
    }
}

/// Plans the changes from `actual` to `desired` (duplicated peering names: the first wins).
/// Owned rows of peerings in `untouched` that are not desired are left alone.
pub fn plan(desired: &[DesiredPeering], untouched: &BTreeSet<String>, actual: &ActualRows) -> Plan {
    let mut by_name: BTreeMap<&str, &DesiredPeering> = BTreeMap::new();
    for d in desired {
        by_name.entry(d.name.as_str()).or_insert(d);
    }
    let ports: Vec<&ActualPort> = actual
        .ports
        .iter()
        .filter(|p| is_owned(&p.external_ids))
        .collect();
    let routes: Vec<&ActualRoute> = actual
        .routes
        .iter()
        .filter(|r| is_owned(&r.external_ids))
        .collect();

    // Owned ports by name: `blocked` looks them up once per desired port.
    let mut ports_by_name: HashMap<&str, Vec<&ActualPort>> = HashMap::new();
    for p in &ports {
        ports_by_name.entry(p.name.as_str()).or_default().push(p);
    }
    let mut outcomes = BTreeMap::new();
    let mut claims: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, d) in &by_name {
        if let Some(reason) = blocked(d, untouched, &ports_by_name, &claims, &by_name, actual) {
            outcomes.insert(name.to_string(), Outcome::Blocked(reason));
        }
        for p in &d.ports {
            claims.entry(p.name.as_str()).or_insert(name);
        }
    }
    let active: Vec<&DesiredPeering> = by_name
        .values()
        .copied()
        .filter(|d| !outcomes.contains_key(&d.name))
        .collect();
    // Rows of these peerings are never deleted here.
    let kept: BTreeSet<&str> = untouched
        .iter()
        .map(String::as_str)
        .filter(|n| !by_name.contains_key(n))
        .chain(outcomes.keys().map(String::as_str))
        .collect();

    let mut changes = Vec::new();
    plan_ports(&active, &kept, &ports, &mut changes);
    plan_routes(&active, &kept, &routes, &mut changes);
    changes.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    let changed: HashSet<&str> = changes.iter().map(Change::peering).collect();
    for d in active {
        let outcome = if changed.contains(d.name.as_str()) {
            Outcome::Changed
        } else {
            Outcome::InSync
        };
        outcomes.insert(d.name.clone(), outcome);
    }
    Plan { changes, outcomes }
}

fn is_deletion(c: &Change) -> bool {
    matches!(c, Change::DeletePort { .. } | Change::DeleteRoute { .. })
}

/// Why `d` cannot be converged now, if it cannot.
fn blocked(
    d: &DesiredPeering,
    untouched: &BTreeSet<String>,
    owned: &HashMap<&str, Vec<&ActualPort>>,
    claims: &BTreeMap<&str, &str>,
    desired: &BTreeMap<&str, &DesiredPeering>,
    actual: &ActualRows,
) -> Option<String> {
    for p in &d.ports {
        if let Some(holder) = actual.foreign_ports.get(&p.name) {
            return Some(format!(
                "router port {:?} already exists in OVN NB and {holder}",
                p.name
            ));
        }
        if let Some(other) = claims.get(p.name.as_str()) {
            return Some(format!(
                "router port name {:?} is also wanted by peering {other:?}",
                p.name
            ));
        }
        for a in owned.get(p.name.as_str()).into_iter().flatten() {
            let o = owner(&a.external_ids);
            if o != d.name && untouched.contains(o) && !desired.contains_key(o) {
                return Some(format!(
                    "router port {:?} still belongs to peering {o:?}",
                    p.name
                ));
            }
        }
    }
    None
}

fn plan_ports(
    active: &[&DesiredPeering],
    kept: &BTreeSet<&str>,
    owned: &[&ActualPort],
    changes: &mut Vec<Change>,
) {
    let mut by_name: BTreeMap<&str, &ActualPort> = BTreeMap::new();
    for a in owned {
        by_name.entry(a.name.as_str()).or_insert(a);
    }
    let mut consumed: BTreeSet<&str> = BTreeSet::new();
    for d in active {
        for want in &d.ports {
            let peering = d.name.clone();
            let Some(have) = by_name.get(want.name.as_str()) else {
                changes.push(Change::CreatePort {
                    peering,
                    port: want.clone(),
                });
                continue;
            };
            consumed.insert(have.id.as_str());
            if have.router_id != want.router_id {
                changes.push(Change::DeletePort {
                    peering: peering.clone(),
                    id: have.id.clone(),
                    router_id: have.router_id.clone(),
                    name: have.name.clone(),
                    networks: have.networks.clone(),
                    seen: have.external_ids.clone(),
                });
                changes.push(Change::CreatePort {
                    peering,
                    port: want.clone(),
                });
                continue;
            }
            let delta = port_delta(&have.columns(), want);
            if !delta.is_empty() {
                changes.push(Change::UpdatePort {
                    peering,
                    id: have.id.clone(),
                    name: have.name.clone(),
                    router_id: have.router_id.clone(),
                    mac: delta.mac,
                    networks: delta.networks,
                    peer: delta.peer,
                    external_ids: delta.external_ids,
                    reset: delta.reset,
                });
            }
        }
    }
    for a in owned {
        let peering = owner(&a.external_ids);
        if !consumed.contains(a.id.as_str()) && !kept.contains(peering) {
            changes.push(Change::DeletePort {
                peering: peering.to_string(),
                id: a.id.clone(),
                router_id: a.router_id.clone(),
                name: a.name.clone(),
                networks: a.networks.clone(),
                seen: a.external_ids.clone(),
            });
        }
    }
}

/// (peering, router_id, route_table, policy, prefix, nexthop), normalised.
type RouteKey = (String, String, String, String, String, String);

fn plan_routes(
    active: &[&DesiredPeering],
    kept: &BTreeSet<&str>,
    owned: &[&ActualRoute],
    changes: &mut Vec<Change>,
) {
    let mut groups: BTreeMap<RouteKey, Vec<&ActualRoute>> = BTreeMap::new();
    for a in owned {
        let key = (
            owner(&a.external_ids).to_string(),
            a.router_id.clone(),
            a.route_table.clone(),
            // An unknown policy gets a key no desired route has: the row is replaced.
            a.policy.map_or("?", RoutePolicy::as_ovn_str).to_string(),
            normalise_prefix(&a.ip_prefix),
            normalise_addr(&a.nexthop),
        );
        groups.entry(key).or_default().push(a);
    }
    for group in groups.values_mut() {
        group.sort_by(|x, y| x.id.cmp(&y.id));
    }
    let mut seen: BTreeSet<RouteKey> = BTreeSet::new();
    for d in active {
        for want in &d.routes {
            let key = (
                d.name.clone(),
                want.router_id.clone(),
                want.route_table.clone(),
                want.policy.as_ovn_str().to_string(),
                normalise_prefix(&want.ip_prefix),
                normalise_addr(&want.nexthop),
            );
            if !seen.insert(key.clone()) {
                continue; // an identical desired route: one row serves both
            }
            let Some(group) = groups.remove(&key) else {
                changes.push(Change::CreateRoute {
                    peering: d.name.clone(),
                    route: want.clone(),
                });
                continue;
            };
            let (keep, extra) = group.split_first().expect("groups are never empty");
            let delta = route_delta(&keep.columns(), want);
            if !delta.is_empty() {
                changes.push(Change::UpdateRoute {
                    peering: d.name.clone(),
                    id: keep.id.clone(),
                    output_port: delta.output_port,
                    external_ids: delta.external_ids,
                    reset: delta.reset,
                });
            }
            for dup in extra {
                changes.push(Change::DeleteRoute {
                    peering: d.name.clone(),
                    id: dup.id.clone(),
                    router_id: dup.router_id.clone(),
                    slot: RouteSlot::of_actual(dup),
                    seen: dup.external_ids.clone(),
                });
            }
        }
    }
    for ((peering, ..), group) in groups {
        if kept.contains(peering.as_str()) {
            continue;
        }
        for a in group {
            changes.push(Change::DeleteRoute {
                peering: peering.clone(),
                id: a.id.clone(),
                router_id: a.router_id.clone(),
                slot: RouteSlot::of_actual(a),
                seen: a.external_ids.clone(),
            });
        }
    }
}

/// What an update of an owned port that stays on its router sets: each `Some` column, and the
/// columns back to their defaults. Allocates only for what differs.
struct PortDelta {
    mac: Option<String>,
    networks: Option<Vec<String>>,
    peer: Option<String>,
    external_ids: Option<BTreeMap<String, String>>,
    reset: Vec<&'static str>,
}

impl PortDelta {
    fn is_empty(&self) -> bool {
        self.mac.is_none()
            && self.networks.is_none()
            && self.peer.is_none()
            && self.external_ids.is_none()
            && self.reset.is_empty()
    }
}

fn port_delta(have: &PortColumns<'_>, want: &DesiredPort) -> PortDelta {
    PortDelta {
        mac: (!have.mac.eq_ignore_ascii_case(&want.mac)).then(|| want.mac.clone()),
        networks: (!same_networks(have.networks, &want.networks)).then(|| want.networks.clone()),
        peer: (have.peer != Some(want.peer.as_str())).then(|| want.peer.clone()),
        external_ids: merged_ids(have.external_ids, &want.external_ids),
        reset: port_resets(have),
    }
}

/// The same for a route of the same identity (`route_identity_eq`).
struct RouteDelta {
    output_port: Option<String>,
    external_ids: Option<BTreeMap<String, String>>,
    reset: Vec<&'static str>,
}

impl RouteDelta {
    fn is_empty(&self) -> bool {
        self.output_port.is_none() && self.external_ids.is_none() && self.reset.is_empty()
    }
}

fn route_delta(have: &RouteColumns<'_>, want: &DesiredRoute) -> RouteDelta {
    RouteDelta {
        // The output port is not part of a route's identity: a row that lacks it or names
        // another port is the same route, repaired in place.
        output_port: (have.output_port != Some(want.output_port.as_str()))
            .then(|| want.output_port.clone()),
        external_ids: merged_ids(have.external_ids, &want.external_ids),
        reset: route_resets(have),
    }
}

/// Whether a route row is `want` by identity (leaving out router and peering, which the
/// caller matches): the [`RouteKey`] of both, compared without building it.
fn route_identity_eq(have: &RouteColumns<'_>, want: &DesiredRoute) -> bool {
    have.route_table == want.route_table
        && have.policy == Some(want.policy)
        && (have.ip_prefix == want.ip_prefix
            || normalise_prefix(have.ip_prefix) == normalise_prefix(&want.ip_prefix))
        && (have.nexthop == want.nexthop
            || normalise_addr(have.nexthop) == normalise_addr(&want.nexthop))
}

const MARKER_KEYS: [&str; 5] = [
    OWNER_KEY,
    PEERING_KEY,
    GENERATION_KEY,
    SIDE_KEY,
    INSTANCE_KEY,
];

/// `have` with our marker keys set as in `want`, if that changes anything.
fn merged_ids(
    have: &dyn ExternalIds,
    want: &BTreeMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    // The common case (nothing to change) without copying the map.
    if MARKER_KEYS
        .iter()
        .all(|k| have.id(k) == want.get(*k).map(String::as_str))
    {
        return None;
    }
    let have = have.to_map();
    let mut merged = have.clone();
    for key in MARKER_KEYS {
        match want.get(key) {
            Some(v) => merged.insert(key.to_string(), v.clone()),
            None => merged.remove(key),
        };
    }
    (merged != have).then_some(merged)
}

/// Columns of our port that affect forwarding, that we never set, and that someone set by
/// hand: back to their defaults. (`enabled=true` means the same as unset.)
fn port_resets(have: &PortColumns<'_>) -> Vec<&'static str> {
    let mut reset = Vec::new();
    if have.enabled == Some(false) {
        reset.push("enabled");
    }
    if have.has_options {
        reset.push("options");
    }
    if have.gateway_chassis {
        reset.push("gateway_chassis");
    }
    if have.ha_chassis_group {
        reset.push("ha_chassis_group");
    }
    reset
}

/// The same for our routes.
fn route_resets(have: &RouteColumns<'_>) -> Vec<&'static str> {
    let mut reset = Vec::new();
    if have.has_options {
        reset.push("options");
    }
    if have.bfd {
        reset.push("bfd");
    }
    reset
}

fn owner(ids: &BTreeMap<String, String>) -> &str {
    ids.get(PEERING_KEY).map_or("", String::as_str)
}

/// The same networks, in any order and however written (the exact same list needs no parsing).
fn same_networks(have: &[String], want: &[String]) -> bool {
    have == want || normalised_set(have) == normalised_set(want)
}

fn normalised_set(networks: &[String]) -> BTreeSet<String> {
    networks
        .iter()
        .map(|n| {
            n.parse::<IpNet>()
                .map_or_else(|_| n.clone(), |p| p.to_string())
        })
        .collect()
}

/// A prefix as identity: host bits cleared; a bare address is a host route.
fn normalise_prefix(s: &str) -> String {
    prefix_net(s).map_or_else(|| s.to_string(), |net| net.to_string())
}

/// A route's `ip_prefix` or a port's network as the network it covers (host bits cleared, a
/// bare address: a host route), as `ovn-nbctl` compares them; `None` when unreadable.
pub fn prefix_net(s: &str) -> Option<IpNet> {
    match s.parse::<IpNet>() {
        Ok(p) => Some(p.trunc()),
        Err(_) => s.parse::<IpAddr>().ok().map(IpNet::from),
    }
}

fn normalise_addr(s: &str) -> String {
    s.parse::<IpAddr>()
        .map_or_else(|_| s.to_string(), |a| a.to_string())
}

mod in_sync;
pub use in_sync::{
    holds_exactly, in_sync, peerings_in_sync, MarkedRow, PortRow, RouteRow, RouterId,
};

#[cfg(test)]
mod tests;
