//! [`in_sync`] and [`peerings_in_sync`]: yes exactly when the plan has nothing to do.

use super::*;

/// `in_sync` over the rows of `d` alone.
fn in_sync_over(d: &DesiredPeering, a: &ActualRows) -> bool {
    let ports: Vec<PortRow<'_>> = a
        .ports
        .iter()
        .map(|p| PortRow {
            router: RouterId::Text(&p.router_id),
            columns: p.columns(),
        })
        .collect();
    let routes: Vec<RouteRow<'_>> = a
        .routes
        .iter()
        .map(|r| RouteRow {
            router: RouterId::Text(&r.router_id),
            columns: r.columns(),
        })
        .collect();
    in_sync(d, &ports, &routes)
}

#[test]
fn in_sync_says_yes_exactly_when_the_plan_has_nothing_to_do() {
    let mut d = desired("p1", 1);
    // An IPv6 link address has unnormalised spellings NB may hold.
    d.ports[0].networks = vec!["fd00::1/126".into()];
    let exact = installed(&d, "a");
    let mut cases: Vec<(&str, ActualRows)> = vec![("exact", exact.clone())];
    let mut unnormalised = exact.clone();
    unnormalised.routes[0].ip_prefix = "172.31.7.9/16".into();
    unnormalised.ports[0].networks = vec!["fd00:0:0::0001/126".into()];
    cases.push(("unnormalised", unnormalised));
    type Edit = fn(&mut ActualRows);
    let edits: Vec<(&str, Edit)> = vec![
        ("route deleted", |a| {
            a.routes.pop();
        }),
        ("port deleted", |a| {
            a.ports.pop();
        }),
        ("duplicate route", |a| {
            let mut dup = a.routes[0].clone();
            dup.id = "dup".into();
            a.routes.push(dup);
        }),
        ("stale route", |a| {
            let mut stale = a.routes[0].clone();
            stale.id = "stale".into();
            stale.ip_prefix = "192.168.0.0/24".into();
            a.routes.push(stale);
        }),
        ("nexthop", |a| a.routes[0].nexthop = "169.254.0.9".into()),
        ("policy", |a| a.routes[0].policy = Some(RoutePolicy::SrcIp)),
        ("route table", |a| a.routes[0].route_table = "other".into()),
        ("output port", |a| a.routes[0].output_port = None),
        ("route options", |a| {
            a.routes[0]
                .options
                .insert("ecmp_symmetric_reply".into(), "true".into());
        }),
        ("bfd", |a| a.routes[1].bfd = true),
        ("route on the other router", |a| {
            a.routes[0].router_id = a.ports[1].router_id.clone()
        }),
        ("mac", |a| a.ports[0].mac = "0a:00:00:00:00:99".into()),
        ("networks", |a| {
            a.ports[1].networks = vec!["169.254.0.5/30".into()]
        }),
        ("peer", |a| a.ports[0].peer = None),
        ("disabled", |a| a.ports[0].enabled = Some(false)),
        ("gateway", |a| a.ports[1].gateway_chassis = true),
        ("ha group", |a| a.ports[1].ha_chassis_group = true),
        ("port options", |a| {
            a.ports[0].options.insert("x".into(), "y".into());
        }),
        ("port on the other router", |a| {
            a.ports[0].router_id = a.ports[1].router_id.clone()
        }),
        ("generation", |a| {
            a.ports[0]
                .external_ids
                .insert(GENERATION_KEY.into(), "0".into());
        }),
        ("instance missing", |a| {
            a.routes[0].external_ids.remove(INSTANCE_KEY);
        }),
    ];
    for (what, edit) in edits {
        let mut a = exact.clone();
        edit(&mut a);
        cases.push((what, a));
    }
    let mut d_with_instance = d.clone();
    d_with_instance.stamp_instance("dep");
    for (what, mut a) in cases {
        // The instance id as a stamped desired peering wants it (unless the case removed it).
        for ids in a
            .ports
            .iter_mut()
            .map(|p| &mut p.external_ids)
            .chain(a.routes.iter_mut().map(|r| &mut r.external_ids))
        {
            if what != "instance missing" || ids.contains_key(INSTANCE_KEY) {
                ids.insert(INSTANCE_KEY.into(), "dep".into());
            }
        }
        let p = plan(std::slice::from_ref(&d_with_instance), &none(), &a);
        let nothing = p.changes.is_empty() && p.outcomes["p1"] == Outcome::InSync;
        assert_eq!(
            in_sync_over(&d_with_instance, &a),
            nothing,
            "{what}: {:?}",
            p.changes
        );
        assert_eq!(nothing, matches!(what, "exact" | "unnormalised"), "{what}");
    }
}

/// The rows of `a` as the replica hands them to [`peerings_in_sync`]: each with whether it is
/// ours and its router (`None`: detached).
fn marked<'a>(
    a: &'a ActualRows,
    ours: impl Fn(&str) -> bool,
    detached: &str,
) -> Vec<MarkedRow<'a>> {
    let router = |id: &'a str, row: &str| (row != detached).then_some(RouterId::Text(id));
    let ports = a.ports.iter().map(|p| MarkedRow::Port {
        ours: ours(&p.id),
        router: router(&p.router_id, &p.id),
        columns: p.columns(),
    });
    let routes = a.routes.iter().map(|r| MarkedRow::Route {
        ours: ours(&r.id),
        router: router(&r.router_id, &r.id),
        columns: r.columns(),
    });
    ports.chain(routes).collect()
}

#[test]
fn peerings_in_sync_counts_only_owned_attached_rows_of_names_wanted_once() {
    let d = desired("p1", 1);
    let exact = installed(&d, "a");
    let pick = |desired: &[DesiredPeering], a: &ActualRows, not_ours: &str, detached: &str| {
        peerings_in_sync(desired, |_| marked(a, |id| id != not_ours, detached))
    };
    let one = std::slice::from_ref(&d);
    assert!(pick(one, &exact, "", "").contains("p1"), "exact");

    // Another deployment's copy of a route carrying the mark: the plan never sees it.
    let mut copy = exact.clone();
    let mut theirs = copy.routes[0].clone();
    theirs.id = "theirs".into();
    copy.routes.push(theirs);
    assert!(
        pick(one, &copy, "theirs", "").contains("p1"),
        "a route not ours"
    );
    // ... but in place of ours it is one row short (the plan creates ours).
    assert!(
        pick(one, &exact, "a-route-0", "").is_empty(),
        "our route not ours"
    );
    // A port holding a wanted name that is not ours blocks the peering.
    assert!(
        pick(one, &exact, "a-port-0", "").is_empty(),
        "our port not ours"
    );
    // A detached row: the plan does not see it, so it does not decide.
    assert!(
        pick(one, &exact, "", "a-port-1").is_empty(),
        "detached port"
    );
    assert!(
        pick(one, &exact, "", "a-route-1").is_empty(),
        "detached route"
    );
    // A port name two desired peerings want: the plan blocks one of them.
    let mut twin = d.clone();
    twin.name = "p1twin".into();
    assert!(pick(&[d.clone(), twin], &exact, "", "").is_empty(), "twin");
    // A name desired twice (with other ports): the plan keeps the first.
    let mut namesake = desired("p1", 1);
    for p in &mut namesake.ports {
        p.name.push_str("-b");
    }
    assert!(
        pick(&[d.clone(), namesake], &exact, "", "").is_empty(),
        "namesake"
    );
}

#[test]
fn a_router_uuid_matches_only_its_canonical_text() {
    let r1 = uuid::Uuid::from_u128(0xA1);
    let r2 = uuid::Uuid::from_u128(0xB2);
    let d = desired("p1", 1);
    let text = |r: &str, upper: bool| {
        let u = if r == "r1" { r1 } else { r2 };
        if upper {
            u.to_string().to_uppercase()
        } else {
            u.to_string()
        }
    };
    let rows = installed(&d, "a");
    let ports: Vec<PortRow<'_>> = rows
        .ports
        .iter()
        .map(|p| PortRow {
            router: RouterId::Uuid(if p.router_id == "r1" { r1 } else { r2 }),
            columns: p.columns(),
        })
        .collect();
    let routes: Vec<RouteRow<'_>> = rows
        .routes
        .iter()
        .map(|r| RouteRow {
            router: RouterId::Uuid(if r.router_id == "r1" { r1 } else { r2 }),
            columns: r.columns(),
        })
        .collect();
    for upper in [false, true] {
        let mut want = d.clone();
        for p in &mut want.ports {
            p.router_id = text(&p.router_id, upper);
        }
        for r in &mut want.routes {
            r.router_id = text(&r.router_id, upper);
        }
        // The plan compares the text: an upper-case UUID is another router to it.
        assert_eq!(
            in_sync(&want, &ports, &routes),
            !upper,
            "upper-case: {upper}"
        );
    }
}
