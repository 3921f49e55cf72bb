//! How a pass's plan is cut into NB transactions: whole peerings, up to a row budget.
//!
//! Make-before-break lives here: a peering's changes are never split across transactions,
//! so a route set that changes (10.2.0.0/16 -> 10.2.0.0/17 + 10.2.128.0/17) is replaced by
//! one transaction that inserts the new routes and removes the old ones; ovn-northd and
//! ovn-controller never see the peering without a route to a prefix both sets cover. Routes
//! whose identity stays are updated in place by the plan (`peering::diff`), never
//! removed and inserted again.
//!
//! Break-before-make across peerings lives here too: a route one peering creates over a
//! route another peering removes on the same router, route table and policy (a tombstone's
//! route: the rules ignore it, since the same pass removes it), its prefix equal to or
//! overlapping the old one's, or a port whose networks overlap a removed port's on the same
//! router, goes out in the transaction that removes the old one, after it. Were they apart,
//! the create could commit first, or alone when the removal is refused (its ownership guard
//! found the row changed): an ECMP group splitting the traffic, a longer old prefix keeping
//! part of it, two connected routes to one subnet, until a later pass.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;

use crate::peering::diff::{prefix_net, Change, Plan};
use crate::peering::RoutePolicy;

use super::translate;

/// The plan's changes grouped by peering, in plan order.
pub(super) type Group<'p> = (&'p str, Vec<&'p Change>);

/// The plan packed into transactions of whole peerings up to `budget` rows. A peering's
/// changes are never split: its new routes are inserted by the transaction that removes
/// its old ones (make-before-break: traffic to a prefix both sets cover never stops, and
/// ovn-northd never sees the peering half-changed). Peerings linked by a route slot (one
/// removes a route there, another creates one: [`prerequisites`]) go in one transaction,
/// the remover first, chains included. A peering, or linked peerings, larger than the
/// budget get a transaction of their own.
pub(super) fn transactions(plan: &Plan, budget: usize) -> Vec<Vec<Group<'_>>> {
    let mut groups: Vec<Option<Group<'_>>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for c in &plan.changes {
        let i = *index.entry(c.peering()).or_insert_with(|| {
            groups.push(Some((c.peering(), Vec::new())));
            groups.len() - 1
        });
        groups[i].as_mut().expect("not taken yet").1.push(c);
    }
    let (order, ends) = linked_units(&prerequisites(
        groups.iter().map(|g| g.as_ref().expect("not taken yet")),
    ));
    let budget = budget.max(1);
    let mut out: Vec<Vec<Group<'_>>> = Vec::new();
    let mut rows = 0;
    let mut start = 0;
    for end in ends {
        let unit = &order[start..end];
        start = end;
        let unit_rows: usize = unit
            .iter()
            .flat_map(|&i| &groups[i].as_ref().expect("each group in one unit").1)
            .map(|c| translate::rows_written(c))
            .sum();
        if out.is_empty() || rows + unit_rows > budget {
            out.push(Vec::new());
            rows = 0;
        }
        let batch = out.last_mut().expect("pushed above");
        batch.extend(
            unit.iter()
                .map(|&i| groups[i].take().expect("each group in one unit")),
        );
        rows += unit_rows;
    }
    out
}

/// What a creating peering waits for: another peering's removal of a route or port whose
/// addresses overlap one it creates on the same router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wait<'p> {
    /// The remover's position among the groups.
    pub remover: usize,
    /// The removal (a [`Change::DeleteRoute`] or [`Change::DeletePort`]).
    pub removal: &'p Change,
    /// The router's name (the creator's, same router; `None` for a port updated in place,
    /// which names its router by UUID only).
    pub router: Option<&'p str>,
}

impl Wait<'_> {
    /// What leaves: "route 10.2.0.0/24" or "port vpc-1-vpc-2 (169.254.0.1/30)".
    pub fn what(&self) -> String {
        match self.removal {
            Change::DeleteRoute { slot, .. } => format!("route {}", slot.prefix),
            Change::DeletePort { name, networks, .. } => {
                format!("port {name} ({})", networks.join(", "))
            }
            other => format!("{other:?}"),
        }
    }
}

/// A removed route or port address, by router.
struct Removed<'p> {
    group: usize,
    change: &'p Change,
    /// Routes: (route table, policy); ports: `None`.
    route: Option<(&'p str, Option<RoutePolicy>)>,
    /// The address as written (unreadable ones link by equal text only).
    text: &'p str,
    net: Option<IpNet>,
}

impl Removed<'_> {
    /// Whether an address created on the same router (`route`: a route's (route table,
    /// policy), `None` for a port's network) could meet this removed one while both are in
    /// NB. A route takes traffic from the new route only where it is at least as long
    /// (longest prefix wins; equal ones form an ECMP group), so a new route waits for a
    /// removed route of its table and policy, or a removed port's network (a connected route
    /// of the router), that it covers; a removed shorter prefix (a `0.0.0.0/0` being
    /// replaced) takes nothing from it. Two ports of one router whose networks overlap in
    /// either direction are ambiguous, so a new port waits for any such removed port.
    fn blocks(
        &self,
        route: Option<(&str, Option<RoutePolicy>)>,
        text: &str,
        net: Option<IpNet>,
    ) -> bool {
        let covers = || match (net, self.net) {
            (Some(new), Some(old)) => new.contains(&old),
            _ => self.text == text,
        };
        match (route, self.route) {
            (Some(new), Some(old)) => new == old && covers(),
            (Some((_, policy)), None) => policy == Some(RoutePolicy::DstIp) && covers(),
            (None, None) => match (self.net, net) {
                (Some(a), Some(b)) => a.contains(&b) || b.contains(&a),
                _ => self.text == text,
            },
            (None, Some(_)) => false,
        }
    }
}

/// For each of `groups` (by position), what it waits for: the other groups' removals, on a
/// router where it creates a route or a port, that the new row could meet while both are in
/// NB ([`Removed::blocks`]: a removed route of the same route table and policy, or a removed
/// port's network, that a new route's prefix covers; a removed port whose networks overlap a
/// port it creates or readdresses). It must not commit unless they have: two routes to one
/// prefix form an ECMP group, a longer prefix takes part of a shorter one's traffic, and two
/// ports of one router in one subnet make two connected routes.
pub(super) fn prerequisites<'p, 'g>(
    groups: impl Iterator<Item = &'g Group<'p>>,
) -> Vec<Vec<Wait<'p>>>
where
    'p: 'g,
{
    let groups: Vec<&Group<'p>> = groups.collect();
    let mut removed: HashMap<&'p str, Vec<Removed<'p>>> = HashMap::new();
    for (i, (_, changes)) in groups.iter().enumerate() {
        for &c in changes {
            match c {
                Change::DeleteRoute {
                    router_id, slot, ..
                } => removed.entry(router_id).or_default().push(Removed {
                    group: i,
                    change: c,
                    route: Some((&slot.route_table, slot.policy)),
                    text: &slot.prefix,
                    net: prefix_net(&slot.prefix),
                }),
                Change::DeletePort {
                    router_id,
                    networks,
                    ..
                } => {
                    let on = removed.entry(router_id).or_default();
                    on.extend(networks.iter().map(|n| Removed {
                        group: i,
                        change: c,
                        route: None,
                        text: n,
                        net: prefix_net(n),
                    }));
                }
                _ => {}
            }
        }
    }
    let mut out = vec![Vec::new(); groups.len()];
    if removed.is_empty() {
        return out; // a pass that removes nothing (a bulk of creates): nothing to link
    }
    for (j, (_, changes)) in groups.iter().enumerate() {
        for &c in changes {
            // Only routers with a removal pay anything (a parse per created address).
            let (router, on, route, addresses) = match c {
                Change::CreateRoute { route, .. } => match removed.get(route.router_id.as_str()) {
                    Some(on) => (
                        Some(route.router.as_str()),
                        on,
                        Some((route.route_table.as_str(), Some(route.policy))),
                        std::slice::from_ref(&route.ip_prefix),
                    ),
                    None => continue,
                },
                Change::CreatePort { port, .. } => match removed.get(port.router_id.as_str()) {
                    Some(on) => (
                        Some(port.router.as_str()),
                        on,
                        None,
                        port.networks.as_slice(),
                    ),
                    None => continue,
                },
                Change::UpdatePort {
                    router_id,
                    networks: Some(networks),
                    ..
                } => match removed.get(router_id.as_str()) {
                    Some(on) => (None, on, None, networks.as_slice()),
                    None => continue,
                },
                _ => continue,
            };
            for text in addresses {
                let net = prefix_net(text);
                for r in on {
                    let linked = r.group != j
                        && r.blocks(route, text, net)
                        && !out[j].iter().any(|w: &Wait<'_>| {
                            w.remover == r.group && std::ptr::eq(w.removal, r.change)
                        });
                    if linked {
                        out[j].push(Wait {
                            remover: r.group,
                            removal: r.change,
                            router,
                        });
                    }
                }
            }
        }
    }
    out
}

/// In the one-by-one retry of a linked `unit` (positions, removers first), what holds back
/// its member at `pos`: a removal it waits for, by a member placed before it, that did not
/// commit (`committed`, by position). In a cycle the first member waits for none after it
/// and goes: else every member would wait for another, pending for good.
pub(super) fn holding_back<'w, 'p>(
    waits: &'w [Vec<Wait<'p>>],
    unit: &[usize],
    pos: usize,
    committed: &[bool],
) -> Option<&'w Wait<'p>> {
    waits[unit[pos]]
        .iter()
        .find(|w| !committed[w.remover] && unit[..pos].contains(&w.remover))
}

/// The groups (by position) cut into units that must commit together: the connected parts
/// of the [`prerequisites`] links, in the order of each unit's first group; within a unit,
/// every group after the ones it waits for (in position order otherwise, and for a cycle).
/// Flat: every position in that order, and where each unit ends in it.
pub(super) fn linked_units(prereqs: &[Vec<Wait<'_>>]) -> (Vec<usize>, Vec<usize>) {
    let n = prereqs.len();
    if prereqs.iter().all(Vec::is_empty) {
        return ((0..n).collect(), (1..=n).collect()); // each peering alone, as planned
    }
    let mut root: Vec<usize> = (0..n).collect();
    fn find(root: &mut [usize], mut i: usize) -> usize {
        while root[i] != i {
            root[i] = root[root[i]];
            i = root[i];
        }
        i
    }
    for (j, before) in prereqs.iter().enumerate() {
        for i in before.iter().map(|w| w.remover) {
            let (a, b) = (find(&mut root, i), find(&mut root, j));
            // The smaller position is the unit's root: units keep their first group's place.
            root[a.max(b)] = a.min(b);
        }
    }
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..n {
        let r = find(&mut root, i);
        if r != i {
            members.entry(r).or_default().push(i);
        }
    }
    let (mut order, mut ends) = (Vec::with_capacity(n), Vec::new());
    // Roots only: the others are placed with their unit's root.
    for i in (0..n).filter(|&i| root[i] == i) {
        match members.remove(&i) {
            None => order.push(i),
            Some(rest) => {
                let mut unit = vec![i];
                unit.extend(rest);
                order.extend(removers_first(unit, prereqs));
            }
        }
        ends.push(order.len());
    }
    (order, ends)
}

/// `unit` (positions, ascending) ordered so that each group comes after its prerequisites;
/// groups in a cycle keep their position order.
fn removers_first(unit: Vec<usize>, prereqs: &[Vec<Wait<'_>>]) -> Vec<usize> {
    let mut placed: HashSet<usize> = HashSet::new();
    let mut out = Vec::with_capacity(unit.len());
    while out.len() < unit.len() {
        let ready = unit.iter().find(|&&g| {
            !placed.contains(&g) && prereqs[g].iter().all(|w| placed.contains(&w.remover))
        });
        // A cycle (each waits for another): the first one left goes.
        let next = ready.or_else(|| unit.iter().find(|g| !placed.contains(g)));
        let g = *next.expect("a group is left");
        placed.insert(g);
        out.push(g);
    }
    out
}

/// What a transaction's rows hang off or are found by: two transactions that share none can be
/// on the wire together (neither's success or failure changes what the other asks of NB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Key<'p> {
    /// A router whose `ports` / `static_routes` it mutates (its routes' identities and ECMP
    /// groups live there too).
    Router(&'p str),
    /// A port name it inserts, renames into or removes (names are unique across all routers).
    PortName(&'p str),
    /// A row it updates in place.
    Row(&'p str),
}

/// The [`Key`]s of one transaction's peerings.
pub(super) fn keys<'p>(batch: &[Group<'p>]) -> HashSet<Key<'p>> {
    let mut out = HashSet::new();
    for c in batch.iter().flat_map(|(_, changes)| changes) {
        match c {
            Change::CreatePort { port, .. } => {
                out.insert(Key::Router(&port.router_id));
                out.insert(Key::PortName(&port.name));
            }
            Change::UpdatePort { id, name, .. } => {
                out.insert(Key::Row(id));
                out.insert(Key::PortName(name));
            }
            Change::DeletePort {
                router_id, name, ..
            } => {
                out.insert(Key::Router(router_id));
                out.insert(Key::PortName(name));
            }
            Change::CreateRoute { route, .. } => {
                out.insert(Key::Router(&route.router_id));
            }
            Change::UpdateRoute { id, .. } => {
                out.insert(Key::Row(id));
            }
            Change::DeleteRoute { router_id, .. } => {
                out.insert(Key::Router(router_id));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
