//! How a pass's plan is cut into NB transactions: whole peerings, up to a row budget.
//!
//! Make-before-break lives here: a peering's changes are never split across transactions,
//! so a route set that changes (10.2.0.0/16 -> 10.2.0.0/17 + 10.2.128.0/17) is replaced by
//! one transaction that inserts the new routes and removes the old ones; ovn-northd and
//! ovn-controller never see the peering without a route to a prefix both sets cover. Routes
//! whose identity stays are updated in place by the plan (`peering::diff`), never
//! removed and inserted again.
//!
//! Break-before-make across peerings lives here too: a route one peering creates in the
//! slot (router, route table, policy, prefix) of a route another peering removes (a
//! tombstone's route: the rules ignore it, since the same pass removes it) goes out in the
//! transaction that removes the old one, after it. Were they apart, the create could commit
//! first, or alone when the removal is refused (its ownership guard found the row changed):
//! both routes on the router, an ECMP group splitting the traffic until a later pass.

use std::collections::{HashMap, HashSet};

use crate::peering::diff::{Change, Plan, RouteSlot};

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

/// For each of `groups` (by position), the positions of the other groups that remove a route
/// from a slot (router, route table, policy, prefix) it creates a route in: it must not
/// commit unless they have (else the two routes form an ECMP group).
pub(super) fn prerequisites<'p, 'g>(groups: impl Iterator<Item = &'g Group<'p>>) -> Vec<Vec<usize>>
where
    'p: 'g,
{
    let groups: Vec<&Group<'p>> = groups.collect();
    let mut removed: HashMap<(&str, &RouteSlot), Vec<usize>> = HashMap::new();
    for (i, (_, changes)) in groups.iter().enumerate() {
        for c in changes {
            if let Change::DeleteRoute {
                router_id, slot, ..
            } = c
            {
                removed.entry((router_id, slot)).or_default().push(i);
            }
        }
    }
    let mut out = vec![Vec::new(); groups.len()];
    if removed.is_empty() {
        return out; // a pass that removes no route (a bulk of creates): nothing to link
    }
    for (j, (_, changes)) in groups.iter().enumerate() {
        for c in changes {
            let Change::CreateRoute { route, .. } = c else {
                continue;
            };
            let slot = RouteSlot::of(route);
            for &i in removed
                .get(&(route.router_id.as_str(), &slot))
                .into_iter()
                .flatten()
            {
                if i != j && !out[j].contains(&i) {
                    out[j].push(i);
                }
            }
        }
    }
    out
}

/// The groups (by position) cut into units that must commit together: the connected parts
/// of the [`prerequisites`] links, in the order of each unit's first group; within a unit,
/// every group after the ones it waits for (in position order otherwise, and for a cycle).
/// Flat: every position in that order, and where each unit ends in it.
fn linked_units(prereqs: &[Vec<usize>]) -> (Vec<usize>, Vec<usize>) {
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
        for &i in before {
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
fn removers_first(unit: Vec<usize>, prereqs: &[Vec<usize>]) -> Vec<usize> {
    let mut placed: HashSet<usize> = HashSet::new();
    let mut out = Vec::with_capacity(unit.len());
    while out.len() < unit.len() {
        let ready = unit
            .iter()
            .find(|&&g| !placed.contains(&g) && prereqs[g].iter().all(|p| placed.contains(p)));
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
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::peering::desired::DesiredRoute;
    use crate::peering::diff::RouteSlot;
    use crate::peering::RoutePolicy;

    fn delete(peering: &str, id: &str) -> Change {
        Change::DeleteRoute {
            peering: peering.into(),
            id: id.into(),
            router_id: "r".into(),
            slot: RouteSlot::default(),
            seen: BTreeMap::new(),
        }
    }

    fn create(peering: &str, prefix: &str) -> Change {
        Change::CreateRoute {
            peering: peering.into(),
            route: DesiredRoute {
                router: "vpc-1".into(),
                router_id: "r".into(),
                ip_prefix: prefix.into(),
                nexthop: "169.254.0.2".into(),
                policy: RoutePolicy::DstIp,
                output_port: "vpc-1-vpc-2".into(),
                route_table: String::new(),
                external_ids: BTreeMap::new(),
            },
        }
    }

    /// The removal of `peering`'s dst-ip route to `prefix` (as NB holds it) on router "r".
    fn remove(peering: &str, id: &str, prefix: &str) -> Change {
        Change::DeleteRoute {
            peering: peering.into(),
            id: id.into(),
            router_id: "r".into(),
            slot: RouteSlot {
                route_table: String::new(),
                policy: Some(RoutePolicy::DstIp),
                prefix: prefix.parse::<ipnet::IpNet>().unwrap().trunc().to_string(),
            },
            seen: BTreeMap::new(),
        }
    }

    /// A plan of `changes` in the planner's order (deletions first, by peering).
    fn planned(mut changes: Vec<Change>) -> Plan {
        let rank = |c: &Change| match c {
            Change::DeleteRoute { .. } | Change::DeletePort { .. } => 0,
            _ => 1,
        };
        changes.sort_by(|a, b| (rank(a), a.peering()).cmp(&(rank(b), b.peering())));
        Plan {
            changes,
            outcomes: BTreeMap::new(),
        }
    }

    /// Each transaction as (peering, number of its changes).
    fn shape(plan: &Plan, budget: usize) -> Vec<Vec<(&str, usize)>> {
        transactions(plan, budget)
            .iter()
            .map(|t| t.iter().map(|(p, cs)| (*p, cs.len())).collect())
            .collect()
    }

    /// ovsdb-server's CPU per row grows with a transaction's size (README "What our NB writes
    /// cost ovsdb-server"): a bulk of new peerings (8 rows each, here four 2-row route inserts)
    /// goes out in transactions of at most 25 peerings, not in a few of hundreds.
    #[test]
    fn a_bulk_goes_out_in_transactions_of_at_most_25_new_peerings() {
        let names: Vec<String> = (0..100).map(|i| format!("p{i}")).collect();
        let plan = Plan {
            changes: names
                .iter()
                .flat_map(|p| (0..4).map(move |r| create(p, &format!("10.{r}.0.0/24"))))
                .collect(),
            outcomes: BTreeMap::new(),
        };
        let shape = shape(&plan, crate::reconciler::MAX_ROWS_PER_TRANSACTION);
        assert_eq!(shape.len(), 4, "{shape:?}");
        assert!(shape.iter().all(|t| t.len() == 25), "{shape:?}");
    }

    #[test]
    fn transactions_on_other_routers_and_port_names_do_not_depend_on_each_other() {
        let plan = Plan {
            changes: vec![
                delete("a", "1"),
                create("b", "10.3.0.0/24"),
                Change::DeletePort {
                    peering: "c".into(),
                    id: "3".into(),
                    router_id: "r2".into(),
                    name: "vpc-1-vpc-2".into(),
                    seen: BTreeMap::new(),
                },
            ],
            outcomes: BTreeMap::new(),
        };
        let t = transactions(&plan, 1);
        let (a, b, c) = (keys(&t[0]), keys(&t[1]), keys(&t[2]));
        // a and b both change router "r": b waits for a; c is on r2.
        assert!(!a.is_disjoint(&b));
        assert!(a.is_disjoint(&c) && b.is_disjoint(&c));
        assert!(c.contains(&Key::PortName("vpc-1-vpc-2")));
    }

    #[test]
    fn a_peerings_changes_are_never_split_across_transactions() {
        // In plan order: deletions first (all peerings), then creations.
        let plan = Plan {
            changes: vec![
                delete("a", "1"),
                delete("b", "2"),
                create("a", "10.2.0.0/17"),
                create("a", "10.2.128.0/17"),
                create("b", "10.3.0.0/24"),
                create("c", "10.4.0.0/24"),
            ],
            outcomes: BTreeMap::new(),
        };
        // "a" writes 5 rows: over a budget of 2 it still goes in one transaction, alone.
        assert_eq!(
            shape(&plan, 2),
            vec![vec![("a", 3)], vec![("b", 2)], vec![("c", 1)]]
        );
        assert_eq!(
            shape(&plan, 8),
            vec![vec![("a", 3), ("b", 2)], vec![("c", 1)]]
        );
        assert_eq!(shape(&plan, 100), vec![vec![("a", 3), ("b", 2), ("c", 1)]]);
        assert_eq!(shape(&plan, 0), shape(&plan, 1));
    }

    /// The window a review found: tombstone "z" removes its route to 10.2.0.0/24 on r, live
    /// "a" creates its own there (the rules ignore a tombstone's rows) and also removes a
    /// stale route, so it sorts first. Even a budget of one row keeps them in one
    /// transaction, the removal first: "a"'s route commits only if "z"'s leaves.
    #[test]
    fn a_create_in_the_slot_of_another_peerings_removal_goes_with_it_after_it() {
        let plan = planned(vec![
            remove("z", "1", "10.2.0.0/24"),
            remove("a", "2", "10.9.0.0/24"),
            create("a", "10.2.0.0/24"),
            create("b", "10.3.0.0/24"),
        ]);
        assert_eq!(plan.changes[0].peering(), "a", "a sorts first");
        assert_eq!(
            shape(&plan, 1),
            vec![vec![("z", 1), ("a", 2)], vec![("b", 1)]]
        );
        // A removal written as NB holds it (host bits set) is the same slot.
        let plan = planned(vec![
            remove("z", "1", "10.2.0.7/24"),
            remove("a", "2", "10.9.0.0/24"),
            create("a", "10.2.0.0/24"),
        ]);
        assert_eq!(shape(&plan, 1), vec![vec![("z", 1), ("a", 2)]]);
    }

    /// A chain: "z" removes P, "b" creates P and removes Q, "c" creates Q: all three in one
    /// transaction (c waits for b, which waits for z), each after what it waits for; "d",
    /// linked to none, on its own.
    #[test]
    fn a_chain_of_removals_and_creates_in_one_transaction_in_order() {
        let plan = planned(vec![
            remove("z", "1", "10.2.0.0/24"),
            remove("b", "2", "10.3.0.0/24"),
            create("b", "10.2.0.0/24"),
            create("c", "10.3.0.0/24"),
            create("d", "10.4.0.0/24"),
        ]);
        assert_eq!(
            shape(&plan, 1),
            vec![vec![("z", 1), ("b", 2), ("c", 1)], vec![("d", 1)]]
        );
        // Within the budget, linked peerings fill a transaction as others do.
        assert_eq!(
            shape(&plan, 100),
            vec![vec![("z", 1), ("b", 2), ("c", 1), ("d", 1)]]
        );
    }

    /// Only the same router, route table, policy and prefix links: another prefix, policy
    /// or router is no ECMP group.
    #[test]
    fn other_slots_are_not_linked() {
        let mut src_ip = create("a", "10.2.0.0/24");
        let mut other_router = create("b", "10.2.0.0/24");
        let mut other_table = create("c", "10.2.0.0/24");
        if let Change::CreateRoute { route, .. } = &mut src_ip {
            route.policy = RoutePolicy::SrcIp;
        }
        if let Change::CreateRoute { route, .. } = &mut other_router {
            route.router_id = "r2".into();
        }
        if let Change::CreateRoute { route, .. } = &mut other_table {
            route.route_table = "t1".into();
        }
        let plan = planned(vec![
            remove("z", "1", "10.2.0.0/24"),
            src_ip,
            other_router,
            other_table,
            create("d", "10.2.0.0/25"),
        ]);
        assert_eq!(
            shape(&plan, 1),
            vec![
                vec![("z", 1)],
                vec![("a", 1)],
                vec![("b", 1)],
                vec![("c", 1)],
                vec![("d", 1)]
            ]
        );
    }

    /// Each creating peering's prerequisites, as the one-by-one retry of a refused batch
    /// reads them (it writes a creator only once its removers committed).
    #[test]
    fn prerequisites_name_the_removers_of_each_creators_slots() {
        let plan = planned(vec![
            remove("z", "1", "10.2.0.0/24"),
            remove("b", "2", "10.3.0.0/24"),
            create("b", "10.2.0.0/24"),
            create("c", "10.3.0.0/24"),
            create("d", "10.4.0.0/24"),
        ]);
        let t = transactions(&plan, 100);
        let names: Vec<&str> = t[0].iter().map(|(p, _)| *p).collect();
        assert_eq!(names, ["z", "b", "c", "d"]);
        assert_eq!(
            prerequisites(t[0].iter()),
            vec![vec![], vec![0], vec![1], vec![]]
        );
    }
}
