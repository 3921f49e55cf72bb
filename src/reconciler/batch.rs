//! How a pass's plan is cut into NB transactions: whole peerings, up to a row budget.
//!
//! Make-before-break lives here: a peering's changes are never split across transactions,
//! so a route set that changes (10.2.0.0/16 -> 10.2.0.0/17 + 10.2.128.0/17) is replaced by
//! one transaction that inserts the new routes and removes the old ones; ovn-northd and
//! ovn-controller never see the peering without a route to a prefix both sets cover. Routes
//! whose identity stays are updated in place by the plan (`peering::diff`), never
//! removed and inserted again.

use std::collections::{HashMap, HashSet};

use crate::peering::diff::{Change, Plan};

use super::translate;

/// The plan's changes grouped by peering, in plan order.
pub(super) type Group<'p> = (&'p str, Vec<&'p Change>);

/// The plan packed into transactions of whole peerings up to `budget` rows. A peering's
/// changes are never split: its new routes are inserted by the transaction that removes
/// its old ones (make-before-break: traffic to a prefix both sets cover never stops, and
/// ovn-northd never sees the peering half-changed). A peering larger than the budget gets a
/// transaction of its own.
pub(super) fn transactions(plan: &Plan, budget: usize) -> Vec<Vec<Group<'_>>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for c in &plan.changes {
        let i = *index.entry(c.peering()).or_insert_with(|| {
            groups.push((c.peering(), Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(c);
    }
    let budget = budget.max(1);
    let mut out: Vec<Vec<Group<'_>>> = Vec::new();
    let mut rows = 0;
    for group in groups {
        let group_rows: usize = group.1.iter().map(|c| translate::rows_written(c)).sum();
        match out.last_mut() {
            Some(batch) if rows + group_rows <= budget => batch.push(group),
            _ => {
                out.push(vec![group]);
                rows = 0;
            }
        }
        rows += group_rows;
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
    use crate::peering::RoutePolicy;

    fn delete(peering: &str, id: &str) -> Change {
        Change::DeleteRoute {
            peering: peering.into(),
            id: id.into(),
            router_id: "r".into(),
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
}
