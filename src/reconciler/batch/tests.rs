//! Unit tests of how a plan is cut into transactions and which peerings are linked.
use std::collections::BTreeMap;

use super::*;
use crate::peering::desired::{DesiredPort, DesiredRoute};
use crate::peering::diff::{ActualRoute, RouteSlot};
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
    let actual = ActualRoute {
        id: id.into(),
        router_id: "r".into(),
        ip_prefix: prefix.into(),
        policy: RoutePolicy::from_ovn(None),
        ..ActualRoute::default()
    };
    Change::DeleteRoute {
        peering: peering.into(),
        id: id.into(),
        router_id: "r".into(),
        slot: RouteSlot::of_actual(&actual),
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
                networks: vec!["169.254.0.1/30".into()],
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

/// Only the same router, route table and policy and an overlapping prefix link: another
/// prefix, policy or router takes none of the removed route's traffic.
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
        create("d", "10.2.1.0/24"),
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
    let removers: Vec<Vec<usize>> = prerequisites(t[0].iter())
        .iter()
        .map(|w| w.iter().map(|w| w.remover).collect())
        .collect();
    assert_eq!(removers, vec![vec![], vec![0], vec![1], vec![]]);
}

/// The review's window with a longer prefix: tombstone "z" removes 10.2.1.0/24 on r while
/// live "a" creates 10.2.0.0/16 there (the rules ignore a tombstone's routes for overlap too).
/// Alone, a's /16 could commit first or without z's removal, and z's /24 would keep 10.2.1.x
/// by longest-prefix match: they go together, z first; an equal prefix (host bits, case) and
/// IPv6 alike.
#[test]
fn a_create_overlapping_another_peerings_removed_route_goes_with_it_after_it() {
    for (old, new) in [
        ("10.2.1.0/24", "10.2.0.0/16"),
        ("10.2.1.7", "10.2.1.0/24"),
        ("10.2.1.7/24", "10.2.1.0/24"),
        ("2001:db8:0:1::/64", "2001:db8::/48"),
        ("2001:DB8:5::/48", "2001:db8:5::/48"),
    ] {
        let plan = planned(vec![
            remove("z", "1", old),
            remove("a", "2", "10.9.0.0/24"),
            create("a", new),
            create("b", "10.3.0.0/24"),
        ]);
        assert_eq!(
            shape(&plan, 1),
            vec![vec![("z", 1), ("a", 2)], vec![("b", 1)]],
            "{old} removed, {new} created"
        );
    }
    // Disjoint prefixes, the other family (::/0 covers no IPv4 prefix), or a removed SHORTER
    // prefix (it takes none of the new longer one's traffic: a hub's 0.0.0.0/0 being replaced
    // must not pull every spoke created on the hub into its transaction) do not link.
    for (old, new) in [
        ("10.2.1.0/24", "10.2.2.0/24"),
        ("::/0", "10.2.0.0/16"),
        ("2001:db8:1::/48", "2001:db8:2::/48"),
        ("10.2.0.0/16", "10.2.1.0/24"),
        ("0.0.0.0/0", "10.2.1.0/24"),
        ("2001:DB8::/32", "2001:db8:5::/48"),
        ("::/0", "2001:db8::/48"),
    ] {
        let plan = planned(vec![remove("z", "1", old), create("a", new)]);
        assert_eq!(
            shape(&plan, 1),
            vec![vec![("z", 1)], vec![("a", 1)]],
            "{old} removed, {new} created"
        );
    }
}

fn port(peering: &str, router_id: &str, network: &str) -> Change {
    Change::CreatePort {
        peering: peering.into(),
        port: DesiredPort {
            router: "vpc-1".into(),
            router_id: router_id.into(),
            name: format!("vpc-1-{peering}"),
            mac: "0a:00:00:00:00:01".into(),
            networks: vec![network.into()],
            peer: format!("{peering}-vpc-1"),
            external_ids: BTreeMap::new(),
        },
    }
}

fn unport(peering: &str, networks: &[&str]) -> Change {
    Change::DeletePort {
        peering: peering.into(),
        id: format!("{peering}-port"),
        router_id: "r".into(),
        name: format!("vpc-1-{peering}"),
        networks: networks.iter().map(|n| n.to_string()).collect(),
        seen: BTreeMap::new(),
    }
}

/// A link address reused on the same router: tombstone "z"'s port 169.254.0.1/30 leaves r
/// while "a" adds 169.254.0.2/30 (same /30) there: both in NB would be two connected routes
/// to one subnet. They go together, z first; a port on another router, or in another
/// subnet, does not link.
#[test]
fn a_port_overlapping_another_peerings_removed_port_goes_with_it_after_it() {
    let plan = planned(vec![
        unport("z", &["169.254.0.1/30", "fd00::1/126"]),
        remove("a", "2", "10.9.0.0/24"),
        port("a", "r", "169.254.0.2/30"),
        port("b", "r", "169.254.0.5/30"),
        port("c", "r2", "169.254.0.1/30"),
    ]);
    assert_eq!(
        shape(&plan, 1),
        vec![vec![("z", 1), ("a", 2)], vec![("b", 1)], vec![("c", 1)]]
    );
    let t = transactions(&plan, 100);
    let waits = prerequisites(t[0].iter());
    let a = t[0].iter().position(|(p, _)| *p == "a").unwrap();
    assert_eq!(waits[a].len(), 1, "{waits:?}");
    assert_eq!(
        waits[a][0].what(),
        "port vpc-1-z (169.254.0.1/30, fd00::1/126)"
    );
    assert_eq!(waits[a][0].router, Some("vpc-1"));

    // A port readdressed in place into the removed subnet waits the same; one whose other
    // columns change does not.
    let readdress = |peering: &str, networks: Option<Vec<String>>| Change::UpdatePort {
        peering: peering.into(),
        id: format!("{peering}-port"),
        name: format!("vpc-1-{peering}"),
        router_id: "r".into(),
        mac: Some("0a:00:00:00:00:02".into()),
        networks,
        peer: None,
        external_ids: None,
        reset: vec![],
    };
    let plan = planned(vec![
        unport("z", &["169.254.0.1/30"]),
        readdress("d", Some(vec!["169.254.0.2/30".into()])),
        readdress("e", None),
    ]);
    assert_eq!(
        shape(&plan, 1),
        vec![vec![("z", 1), ("d", 1)], vec![("e", 1)]]
    );
    let waits = prerequisites(transactions(&plan, 1)[0].iter());
    assert_eq!(waits[1][0].router, None, "{waits:?}");
}

/// A new route over a removed port's network: tombstone "z"'s link 10.255.0.1/30 leaves r
/// while "a" creates a dst-ip route to 10.255.0.0/24 there; while z's port is in NB its
/// connected /30 is the longer prefix and keeps 10.255.0.0-3. They go together, z first. A
/// route that does not cover the port's network, or a src-ip one, does not link.
#[test]
fn a_route_covering_another_peerings_removed_port_goes_with_it_after_it() {
    let plan = planned(vec![
        unport("z", &["10.255.0.1/30"]),
        remove("a", "2", "10.9.0.0/24"),
        create("a", "10.255.0.0/24"),
        create("b", "10.255.1.0/24"),
    ]);
    assert_eq!(
        shape(&plan, 1),
        vec![vec![("z", 1), ("a", 2)], vec![("b", 1)]]
    );
    let mut src = create("c", "10.255.0.0/24");
    if let Change::CreateRoute { route, .. } = &mut src {
        route.policy = RoutePolicy::SrcIp;
    }
    let plan = planned(vec![unport("z", &["10.255.0.1/30"]), src]);
    assert_eq!(shape(&plan, 1), vec![vec![("z", 1)], vec![("c", 1)]]);
}

/// What a held-back creator's PENDING message names ("waiting for route 10.2.0.0/24 ...").
#[test]
fn a_wait_names_the_removed_route_and_the_router() {
    let plan = planned(vec![
        remove("z", "1", "10.2.0.7/24"),
        create("a", "10.2.0.0/16"),
    ]);
    let t = transactions(&plan, 100);
    let waits = prerequisites(t[0].iter());
    assert_eq!(waits[1].len(), 1, "{waits:?}");
    assert_eq!(
        (waits[1][0].remover, waits[1][0].router),
        (0, Some("vpc-1"))
    );
    assert_eq!(waits[1][0].what(), "route 10.2.0.0/24");
}

/// A cycle, possible between live peerings whose routes swap in one pass ("a" removes
/// 10.2.0.0/24 and creates 10.3.0.0/24, "b" the other way round): one unit; in the one-by-one
/// retry (after the unit was refused as one transaction) the first goes, the second only
/// once the first committed: neither waits for good.
#[test]
fn a_cycle_is_one_unit_whose_first_member_goes_alone_in_a_retry() {
    let plan = planned(vec![
        remove("a", "1", "10.2.0.0/24"),
        remove("b", "2", "10.3.0.0/24"),
        create("a", "10.3.0.0/24"),
        create("b", "10.2.0.0/24"),
        create("c", "10.4.0.0/24"),
    ]);
    assert_eq!(
        shape(&plan, 1),
        vec![vec![("a", 2), ("b", 2)], vec![("c", 1)]]
    );
    let t = transactions(&plan, 1);
    let waits = prerequisites(t[0].iter());
    let (order, ends) = linked_units(&waits);
    assert_eq!((order.as_slice(), ends.as_slice()), (&[0, 1][..], &[2][..]));
    assert_eq!(holding_back(&waits, &order, 0, &[false, false]), None);
    let held = holding_back(&waits, &order, 1, &[false, false]).expect("b waits for a");
    assert_eq!((held.remover, held.what()), (0, "route 10.2.0.0/24".into()));
    assert_eq!(holding_back(&waits, &order, 1, &[true, false]), None);
}
