//! Unit tests of the plan: in sync, create all, drift, conflicts, orphans, duplicates.

use super::*;
use crate::peering::desired::{desired_from_facts, markers};
use crate::peering::topology::TopologyFacts;
use crate::peering::{PeeringSpec, RouteSpec, Side};

fn spec(name: &str, local: &str, remote: &str, link: (&str, &str)) -> PeeringSpec {
    PeeringSpec {
        name: name.into(),
        local_vpc: local.into(),
        remote_vpc: remote.into(),
        local_connect: link.0.parse().unwrap(),
        remote_connect: link.1.parse().unwrap(),
        local_routes: vec![],
        remote_routes: vec![],
    }
}

/// p1: vpc-1 (r1, 10.0.0.0/16) <-> vpc-2 (r2, 172.31.0.0/16, 172.30.0.0/24).
fn desired(name: &str, generation: i64) -> DesiredPeering {
    let s = spec(name, "vpc-1", "vpc-2", ("169.254.0.1/30", "169.254.0.2/30"));
    let facts = TopologyFacts {
        local_router_id: "r1".into(),
        remote_router_id: "r2".into(),
        local_subnets: vec![],
        remote_subnets: vec![],
        local_routes: vec![
            RouteSpec::dst("172.31.0.0/16".parse().unwrap()),
            RouteSpec::dst("172.30.0.0/24".parse().unwrap()),
        ],
        remote_routes: vec![RouteSpec::dst("10.0.0.0/16".parse().unwrap())],
    };
    desired_from_facts(&s, generation, &facts)
}

/// NB rows exactly as `d` wants them, with UUIDs `<prefix>-<n>`.
fn installed(d: &DesiredPeering, prefix: &str) -> ActualRows {
    let ports = d
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| ActualPort {
            id: format!("{prefix}-port-{i}"),
            router_id: p.router_id.clone(),
            name: p.name.clone(),
            mac: p.mac.to_uppercase(),
            networks: p.networks.clone(),
            peer: Some(p.peer.clone()),
            enabled: None,
            options: BTreeMap::new(),
            gateway_chassis: false,
            ha_chassis_group: false,
            external_ids: p.external_ids.clone(),
        })
        .collect();
    let routes = d
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| ActualRoute {
            id: format!("{prefix}-route-{i}"),
            router_id: r.router_id.clone(),
            ip_prefix: r.ip_prefix.clone(),
            nexthop: r.nexthop.clone(),
            policy: Some(r.policy),
            output_port: Some(r.output_port.clone()),
            route_table: String::new(),
            options: BTreeMap::new(),
            bfd: false,
            external_ids: r.external_ids.clone(),
        })
        .collect();
    ActualRows {
        ports,
        routes,
        foreign_ports: BTreeMap::new(),
    }
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

fn kinds(p: &Plan) -> Vec<&'static str> {
    p.changes
        .iter()
        .map(|c| match c {
            Change::CreatePort { .. } => "create-port",
            Change::UpdatePort { .. } => "update-port",
            Change::DeletePort { .. } => "delete-port",
            Change::CreateRoute { .. } => "create-route",
            Change::UpdateRoute { .. } => "update-route",
            Change::DeleteRoute { .. } => "delete-route",
        })
        .collect()
}

#[test]
fn nothing_to_do() {
    let d = desired("p1", 1);
    let p = plan(std::slice::from_ref(&d), &none(), &installed(&d, "a"));
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    assert_eq!(p.outcomes["p1"], Outcome::InSync);
}

#[test]
fn create_all() {
    let d = desired("p1", 1);
    let p = plan(&[d], &none(), &ActualRows::default());
    assert_eq!(
        kinds(&p),
        vec![
            "create-port",
            "create-port",
            "create-route",
            "create-route",
            "create-route"
        ]
    );
    assert_eq!(p.outcomes["p1"], Outcome::Changed);
    assert!(p.touches("p1"));
}

#[test]
fn drift_route_deleted() {
    let d = desired("p1", 1);
    let mut actual = installed(&d, "a");
    actual.routes.remove(1);
    let p = plan(std::slice::from_ref(&d), &none(), &actual);
    assert_eq!(
        p.changes,
        vec![Change::CreateRoute {
            peering: "p1".into(),
            route: d.routes[1].clone()
        }]
    );
}

#[test]
fn drift_route_nexthop_changed_is_delete_and_create() {
    let d = desired("p1", 1);
    let mut actual = installed(&d, "a");
    actual.routes[2].nexthop = "169.254.0.9".into();
    let p = plan(std::slice::from_ref(&d), &none(), &actual);
    assert_eq!(
        p.changes,
        vec![
            Change::DeleteRoute {
                peering: "p1".into(),
                id: "a-route-2".into(),
                router_id: "r2".into(),
                slot: RouteSlot::of_actual(&actual.routes[2]),
                seen: actual.routes[2].external_ids.clone(),
            },
            Change::CreateRoute {
                peering: "p1".into(),
                route: d.routes[2].clone()
            },
        ]
    );
}

#[test]
fn unnormalised_actual_route_still_matches() {
    let d = desired("p1", 1);
    let mut actual = installed(&d, "a");
    actual.routes[0].ip_prefix = "172.31.0.1/16".into();
    // An empty NB policy column is dst-ip (read at the edge).
    actual.routes[1].policy = RoutePolicy::from_ovn(Some(""));
    assert!(plan(&[d], &none(), &actual).changes.is_empty());
}

#[test]
fn drift_port_columns_update_only_what_changed() {
    let d = desired("p1", 1);
    let mut actual = installed(&d, "a");
    actual.ports[0].mac = "0a:00:00:00:aa:01".into();
    actual.ports[1].peer = None;
    actual.ports[1]
        .external_ids
        .insert("note".into(), "kept".into());
    let p = plan(std::slice::from_ref(&d), &none(), &actual);
    assert_eq!(
        p.changes,
        vec![
            Change::UpdatePort {
                peering: "p1".into(),
                id: "a-port-0".into(),
                name: "vpc-1-vpc-2".into(),
                router_id: "r1".into(),
                mac: Some(d.ports[0].mac.clone()),
                networks: None,
                peer: None,
                external_ids: None,
                reset: vec![],
            },
            Change::UpdatePort {
                peering: "p1".into(),
                id: "a-port-1".into(),
                name: "vpc-2-vpc-1".into(),
                router_id: "r2".into(),
                mac: None,
                networks: None,
                peer: Some("vpc-1-vpc-2".into()),
                external_ids: None,
                reset: vec![],
            },
        ]
    );
}

#[test]
fn generation_bump_updates_markers_and_keeps_foreign_keys() {
    let old = desired("p1", 1);
    let mut actual = installed(&old, "a");
    actual.routes[0]
        .external_ids
        .insert("note".into(), "kept".into());
    let p = plan(&[desired("p1", 2)], &none(), &actual);
    assert_eq!(
        kinds(&p),
        vec![
            "update-port",
            "update-port",
            "update-route",
            "update-route",
            "update-route"
        ]
    );
    let Change::UpdateRoute {
        id, external_ids, ..
    } = &p.changes[2]
    else {
        panic!()
    };
    assert_eq!(id, "a-route-0");
    let external_ids = external_ids.as_ref().unwrap();
    assert_eq!(external_ids[GENERATION_KEY], "2");
    assert_eq!(external_ids["note"], "kept");
}

#[test]
fn output_port_cleared_or_changed_is_repaired_in_place() {
    let d = desired("p1", 1);
    let mut actual = installed(&d, "a");
    // Cleared by hand, or a row written before ovn-peerd set the column.
    actual.routes[0].output_port = None;
    // Pointed at another port by hand.
    actual.routes[2].output_port = Some("vpc-2-sw1".into());
    let p = plan(std::slice::from_ref(&d), &none(), &actual);
    assert_eq!(
        p.changes,
        vec![
            Change::UpdateRoute {
                peering: "p1".into(),
                id: "a-route-0".into(),
                output_port: Some("vpc-1-vpc-2".into()),
                external_ids: None,
                reset: vec![],
            },
            Change::UpdateRoute {
                peering: "p1".into(),
                id: "a-route-2".into(),
                output_port: Some("vpc-2-vpc-1".into()),
                external_ids: None,
                reset: vec![],
            },
        ]
    );
    assert_eq!(p.outcomes["p1"], Outcome::Changed);
}

#[test]
fn unknown_policy_is_replaced() {
    let d = desired("p1", 1);
    let mut actual = installed(&d, "a");
    actual.routes[0].policy = None;
    let p = plan(std::slice::from_ref(&d), &none(), &actual);
    assert_eq!(kinds(&p), vec!["delete-route", "create-route"]);
}

#[test]
fn port_on_wrong_router_is_recreated_after_deletion() {
    let d = desired("p1", 1);
    let mut actual = installed(&d, "a");
    actual.ports[0].router_id = "r-old".into();
    let p = plan(std::slice::from_ref(&d), &none(), &actual);
    assert_eq!(
        p.changes,
        vec![
            Change::DeletePort {
                peering: "p1".into(),
                id: "a-port-0".into(),
                router_id: "r-old".into(),
                name: "vpc-1-vpc-2".into(),
                networks: actual.ports[0].networks.clone(),
                seen: actual.ports[0].external_ids.clone(),
            },
            Change::CreatePort {
                peering: "p1".into(),
                port: d.ports[0].clone()
            },
        ]
    );
}

#[test]
fn foreign_port_conflict_blocks_the_peering_only() {
    let d = desired("p1", 1);
    let other = DesiredPeering {
        name: "p0".into(),
        generation: 1,
        ports: vec![],
        routes: vec![],
    };
    let mut actual = installed(&d, "a");
    actual.routes.clear(); // would need creating, but the peering is blocked
    actual
        .foreign_ports
        .insert("vpc-2-vpc-1".into(), "is not owned by ovn-peerd".into());
    actual.ports.remove(1);
    let p = plan(&[d, other], &none(), &actual);
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    let Outcome::Blocked(why) = &p.outcomes["p1"] else {
        panic!("{:?}", p.outcomes)
    };
    assert!(
        why.contains("vpc-2-vpc-1") && why.contains("not owned"),
        "{why}"
    );
    assert_eq!(p.outcomes["p0"], Outcome::InSync);
}

#[test]
fn port_name_wanted_by_two_peerings_blocks_the_later() {
    let p = plan(
        &[desired("p2", 1), desired("p1", 1)],
        &none(),
        &ActualRows::default(),
    );
    assert_eq!(p.outcomes["p1"], Outcome::Changed);
    assert!(matches!(&p.outcomes["p2"], Outcome::Blocked(w) if w.contains("p1")));
    assert!(!p.touches("p2"));
}

#[test]
fn orphans_are_deleted_untouched_and_foreign_rows_kept() {
    let gone = desired("gone", 1);
    let frozen = desired("frozen", 1);
    let mut actual = installed(&gone, "g");
    let mut frozen_rows = installed(&frozen, "f");
    for r in &mut frozen_rows.ports {
        r.name = format!("{}-f", r.name);
    }
    actual.ports.extend(frozen_rows.ports);
    actual.routes.extend(frozen_rows.routes);
    // Not ours: never touched even though no peering wants them.
    actual.routes.push(ActualRoute {
        id: "kube".into(),
        router_id: "r1".into(),
        ip_prefix: "0.0.0.0/0".into(),
        external_ids: BTreeMap::from([(OWNER_KEY.into(), "kube-ovn".into())]),
        ..ActualRoute::default()
    });
    actual.ports.push(ActualPort {
        id: "lsp".into(),
        name: "vpc-1-sw1".into(),
        ..ActualPort::default()
    });
    let untouched = BTreeSet::from(["frozen".to_string()]);
    let p = plan(&[], &untouched, &actual);
    assert_eq!(
        kinds(&p),
        vec![
            "delete-route",
            "delete-route",
            "delete-route",
            "delete-port",
            "delete-port"
        ]
    );
    assert!(p.changes.iter().all(|c| c.peering() == "gone"));
    assert!(p.outcomes.is_empty());
}

#[test]
fn stale_rows_of_a_desired_peering_are_deleted() {
    let d = desired("p1", 1);
    let mut actual = installed(&d, "a");
    let mut stale = actual.routes[0].clone();
    stale.id = "a-route-9".into();
    stale.ip_prefix = "192.168.0.0/24".into();
    actual.routes.push(stale);
    let p = plan(&[d], &none(), &actual);
    assert_eq!(
        p.changes,
        vec![Change::DeleteRoute {
            peering: "p1".into(),
            id: "a-route-9".into(),
            router_id: "r1".into(),
            slot: RouteSlot {
                route_table: String::new(),
                policy: Some(RoutePolicy::DstIp),
                prefix: "192.168.0.0/24".into(),
            },
            seen: actual.routes[0].external_ids.clone(),
        }]
    );
    assert_eq!(p.outcomes["p1"], Outcome::Changed);
}

#[test]
fn duplicate_owned_routes_keep_one() {
    let d = desired("p1", 1);
    let mut actual = installed(&d, "b");
    for id in ["c-dup", "a-dup"] {
        let mut dup = actual.routes[0].clone();
        dup.id = id.into();
        actual.routes.push(dup);
    }
    let p = plan(&[d], &none(), &actual);
    // The smallest UUID is kept: "a-dup"; the original and the other copy go.
    assert_eq!(
        p.changes,
        vec![
            Change::DeleteRoute {
                peering: "p1".into(),
                id: "b-route-0".into(),
                router_id: "r1".into(),
                slot: RouteSlot::of_actual(&actual.routes[0]),
                seen: actual.routes[0].external_ids.clone(),
            },
            Change::DeleteRoute {
                peering: "p1".into(),
                id: "c-dup".into(),
                router_id: "r1".into(),
                slot: RouteSlot::of_actual(&actual.routes[0]),
                seen: actual.routes[0].external_ids.clone(),
            },
        ]
    );
}

#[test]
fn plan_is_deterministic_whatever_the_input_order() {
    let (d1, mut d2) = (desired("p1", 1), desired("p2", 1));
    for p in &mut d2.ports {
        p.name = format!("{}-2", p.name);
        p.peer = format!("{}-2", p.peer);
        p.external_ids = markers(
            "p2",
            1,
            if p.router == "vpc-1" {
                Side::Local
            } else {
                Side::Remote
            },
        );
    }
    let mut actual = installed(&desired("gone", 1), "g");
    let forward = plan(&[d1.clone(), d2.clone()], &none(), &actual);
    actual.ports.reverse();
    actual.routes.reverse();
    let backward = plan(&[d2, d1], &none(), &actual);
    assert_eq!(forward, backward);
    // Deletions first. p1 adopts the orphan's ports (same names, same routers): only their
    // markers change; the orphan's routes go and p1's are created.
    assert_eq!(forward.changes.first().map(Change::peering), Some("gone"));
    assert_eq!(
        kinds(&forward),
        [
            "delete-route",
            "delete-route",
            "delete-route",
            "update-port",
            "update-port",
            "create-port",
            "create-port",
            "create-route",
            "create-route",
            "create-route",
            "create-route",
            "create-route",
            "create-route",
        ]
    );
}

#[test]
fn forwarding_columns_set_by_hand_are_reset_in_place() {
    let d = desired("p1", 1);
    let mut actual = installed(&d, "a");
    actual.ports[0].enabled = Some(false);
    actual.ports[1].options.insert("foo".into(), "bar".into());
    actual.ports[1].enabled = Some(true); // same as unset: no drift
    actual.routes[0]
        .options
        .insert("ecmp_symmetric_reply".into(), "true".into());
    actual.routes[1].bfd = true;
    let p = plan(std::slice::from_ref(&d), &none(), &actual);
    let resets: Vec<(&str, &[&str])> = p
        .changes
        .iter()
        .map(|c| match c {
            Change::UpdatePort { id, reset, .. } | Change::UpdateRoute { id, reset, .. } => {
                (id.as_str(), reset.as_slice())
            }
            other => panic!("only updates in place: {other:?}"),
        })
        .collect();
    assert_eq!(
        resets,
        vec![
            ("a-port-0", &["enabled"][..]),
            ("a-port-1", &["options"][..]),
            ("a-route-0", &["options"][..]),
            ("a-route-1", &["bfd"][..]),
        ]
    );
}

#[test]
fn an_adopted_row_gets_the_instance_id_in_place() {
    let mut d = desired("p1", 1);
    let actual = installed(&d, "a"); // written without an instance id
    d.stamp_instance("dep-a");
    let p = plan(std::slice::from_ref(&d), &none(), &actual);
    assert_eq!(p.changes.len(), d.ports.len() + d.routes.len(), "{p:?}");
    for c in &p.changes {
        let ids = match c {
            Change::UpdatePort {
                external_ids: Some(ids),
                ..
            }
            | Change::UpdateRoute {
                external_ids: Some(ids),
                ..
            } => ids,
            other => panic!("only updates: {other:?}"),
        };
        assert_eq!(ids[INSTANCE_KEY], "dep-a");
    }
}

#[test]
fn holding_deletions_drops_every_change_of_the_peerings_that_delete() {
    let d = desired("p1", 1);
    let mut actual = installed(&d, "a");
    actual.ports[0].router_id = "r-old".into(); // p1: a delete and a create
    let mut orphan = installed(&desired("p0", 1), "o");
    actual.routes.append(&mut orphan.routes);
    let s2 = spec("p2", "vpc-3", "vpc-4", ("169.254.0.5/30", "169.254.0.6/30"));
    let facts = TopologyFacts {
        local_router_id: "r3".into(),
        remote_router_id: "r4".into(),
        local_subnets: vec![],
        remote_subnets: vec![],
        local_routes: vec![],
        remote_routes: vec![],
    };
    let p2 = desired_from_facts(&s2, 1, &facts);
    let mut p = plan(&[d, p2], &none(), &actual);
    assert!(p.deletions(&none()) > 2, "{p:?}");
    let tombstone = BTreeSet::from(["p0".to_string()]);
    assert_eq!(p.deletions(&tombstone), 1, "p0's deletions were asked for");
    let held = p.hold_deletions(&none());
    assert_eq!(held, BTreeSet::from(["p0".to_string(), "p1".to_string()]));
    assert_eq!(p.deletions(&none()), 0);
    assert!(p.changes.iter().all(|c| c.peering() == "p2"), "{p:?}");
    assert!(p.touches("p2"));
}

mod in_sync;

/// A route's slot as the plan reads NB (`RouteSlot::of_actual`, policy read as the actual
/// rows read it), as we would install it (`RouteSlot::of`) and as the rules key it
/// (`RouteView::key`) agree: host bits, a bare address, IPv6 text case, `::/0`, and policy
/// absent, "" and "dst-ip" alike.
#[test]
fn a_routes_slot_is_read_alike_from_nb_from_the_plan_and_by_the_rules() {
    use crate::peering::topology::RouteView;
    let cases = [
        // (NB's policy column, NB's ip_prefix, the prefix we install, its policy)
        (None, "10.2.0.7/24", "10.2.0.0/24", RoutePolicy::DstIp),
        (Some(""), "10.2.0.1", "10.2.0.1/32", RoutePolicy::DstIp),
        (
            Some("dst-ip"),
            "2001:DB8::1/64",
            "2001:db8::/64",
            RoutePolicy::DstIp,
        ),
        (None, "2001:db8::5", "2001:db8::5/128", RoutePolicy::DstIp),
        (None, "::/0", "::/0", RoutePolicy::DstIp),
        (
            Some("src-ip"),
            "10.3.0.9/16",
            "10.3.0.0/16",
            RoutePolicy::SrcIp,
        ),
    ];
    for (policy, in_nb, ours, our_policy) in cases {
        let actual = ActualRoute {
            ip_prefix: in_nb.into(),
            policy: RoutePolicy::from_ovn(policy),
            ..ActualRoute::default()
        };
        let desired = DesiredRoute {
            router: "vpc-1".into(),
            router_id: "r1".into(),
            ip_prefix: ours.into(),
            nexthop: "169.254.0.2".into(),
            policy: our_policy,
            output_port: "vpc-1-vpc-2".into(),
            route_table: String::new(),
            external_ids: BTreeMap::new(),
        };
        let slot = RouteSlot::of_actual(&actual);
        assert_eq!(slot, RouteSlot::of(&desired), "{in_nb}");
        let view = RouteView {
            ip_prefix: in_nb.into(),
            policy: policy.map(str::to_string),
            ..RouteView::default()
        };
        let (rule_policy, rule_prefix) = view.key().expect("readable");
        assert_eq!(
            (Some(rule_policy), rule_prefix.to_string()),
            (slot.policy, slot.prefix.clone()),
            "{in_nb}"
        );
    }
    // Another length is another slot.
    let route = |p: &str| ActualRoute {
        ip_prefix: p.into(),
        ..ActualRoute::default()
    };
    assert_ne!(
        RouteSlot::of_actual(&route("10.2.0.0/24")),
        RouteSlot::of_actual(&route("10.2.0.0/25"))
    );
}
