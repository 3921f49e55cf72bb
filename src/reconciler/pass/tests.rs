//! A full pass's early settle (peerings NB holds exactly, dropped as soon as derived) against
//! the same pass without it: the same plan and outcomes.

use serde_json::{json, Value};
use uuid::Uuid;

use super::*;
use crate::ovsdb::cache::tests::types;
use crate::ovsdb::cache::UpdateFormat;
use crate::peering::{INSTANCE_KEY, PEERING_KEY};

const VPCS: [&str; 4] = ["vpc-a", "vpc-b", "vpc-c", "vpc-d"];

fn record(name: &str, local: &str, remote: &str, link: u8, age: i64) -> PeeringRecord {
    let at = chrono::DateTime::from_timestamp(1_700_000_000 + age, 0).unwrap();
    let addr = |host: u8| Some(format!("169.254.{link}.{host}/30").parse().unwrap());
    PeeringRecord {
        name: name.into(),
        local_vpc: local.into(),
        remote_vpc: remote.into(),
        local_v4: addr(1),
        remote_v4: addr(2),
        local_v6: None,
        remote_v6: None,
        local_routes: vec![],
        remote_routes: vec![],
        state: PeeringState::Active,
        state_message: String::new(),
        generation: 1,
        observed_generation: 1,
        request_id: None,
        create_time: at,
        update_time: at,
        generation_time: at,
        labels: Default::default(),
        etag: Uuid::nil(),
    }
}

fn router_uuid(i: usize) -> Uuid {
    Uuid::from_u128(0x100 + i as u128)
}

fn map(ids: &BTreeMap<String, String>) -> Value {
    json!([
        "map",
        ids.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
    ])
}

fn uuids(u: &[Uuid]) -> Value {
    json!([
        "set",
        u.iter()
            .map(|u| json!(["uuid", u.to_string()]))
            .collect::<Vec<_>>()
    ])
}

/// NB with the four routers (a LAN port each) and the given peerings' rows.
fn nb(rows: &[DesiredPeering]) -> NbCache {
    nb_over(&VPCS, rows)
}

/// NB with a router per name of `vpcs` (a name given twice: two routers), a LAN port each
/// (`10.{1 + i % 250}.{i / 250}.1/24`), and the given peerings' rows.
fn nb_over(vpcs: &[&str], rows: &[DesiredPeering]) -> NbCache {
    let (mut ports, mut routes, mut routers) = (json!({}), json!({}), json!({}));
    let mut next = 0x1000u128;
    let mut fresh = || {
        next += 1;
        Uuid::from_u128(next)
    };
    for (i, vpc) in vpcs.iter().enumerate() {
        let lan = fresh();
        ports[lan.to_string()] = json!({"initial": {"name": format!("{vpc}-lan-{i}"), "mac": "m",
            "networks": format!("10.{}.{}.1/24", 1 + i % 250, i / 250)}});
        let (mut mine, mut static_routes) = (vec![lan], vec![]);
        for d in rows {
            for p in d.ports.iter().filter(|p| p.router == *vpc) {
                let u = fresh();
                ports[u.to_string()] = json!({"initial": {"name": p.name, "mac": p.mac,
                    "networks": ["set", p.networks], "peer": p.peer,
                    "external_ids": map(&p.external_ids)}});
                mine.push(u);
            }
            for r in d.routes.iter().filter(|r| r.router == *vpc) {
                let u = fresh();
                routes[u.to_string()] = json!({"initial": {"ip_prefix": r.ip_prefix,
                    "nexthop": r.nexthop, "policy": r.policy.as_ovn_str(),
                    "output_port": r.output_port, "route_table": r.route_table,
                    "external_ids": map(&r.external_ids)}});
                static_routes.push(u);
            }
        }
        routers[router_uuid(i).to_string()] = json!({"initial": {"name": vpc,
            "ports": uuids(&mine), "static_routes": uuids(&static_routes)}});
    }
    let update = json!({"Logical_Router_Port": ports, "Logical_Router_Static_Route": routes,
        "Logical_Router": routers});
    let mut cache = NbCache::new(Some(PEERING_KEY.into()));
    cache
        .apply(&types(), UpdateFormat::V2, &update.to_string())
        .expect("NB rows");
    cache
}

/// p-ab in sync but sharing its port names with the younger p-ab2 (which fails), p-ad in
/// sync and alone, p-ac drifted (a nexthop changed by hand), p-bc not in NB at all.
#[test]
fn early_settle_gives_the_plan_and_outcomes_of_the_full_comparison() {
    let records = vec![
        record("p-ab", "vpc-a", "vpc-b", 0, 0),
        record("p-ac", "vpc-a", "vpc-c", 4, 1),
        record("p-ad", "vpc-a", "vpc-d", 8, 2),
        record("p-bc", "vpc-b", "vpc-c", 12, 3),
        record("p-ab2", "vpc-a", "vpc-b", 16, 4),
    ];
    let ownership = Ownership::new("dep-1", records.iter().map(|r| r.name.clone()));
    // The rows each peering wants, as derived over NB without them.
    let mut wanted = derive(
        Targets::All,
        &records,
        &nb(&[]),
        &[],
        "dep-1",
        1,
        &|d, _| {
            d.stamp_instance("dep-1");
            true
        },
    )
    .desired;
    wanted.retain(|d| d.name != "p-bc");
    let drifted = wanted.iter_mut().find(|d| d.name == "p-ac").unwrap();
    drifted.routes[0].nexthop = "169.254.4.3".into();
    let cache = nb(&wanted);
    // p-ad is one the early settle drops: NB holds it exactly.
    let p_ad = wanted.iter().find(|d| d.name == "p-ad").unwrap();
    assert!(Attachments::new(&cache, None).holds(&cache, p_ad, &ownership));

    let run =
        |early: bool| derive_and_plan(Targets::All, &records, &cache, &[], &ownership, early, 1);
    let (with, with_plan, with_steps) = run(true);
    let (without, without_plan, without_steps) = run(false);
    assert_eq!(with_plan, without_plan);
    assert_eq!(with.failed, without.failed);
    assert_eq!(with.untouched, without.untouched);
    assert_eq!(with_steps.in_sync, without_steps.in_sync);
    // And the plan is the expected one: two in sync, two to write, one failed.
    let outcome = |name: &str| without_plan.outcomes.get(name).cloned();
    assert_eq!(outcome("p-ab"), Some(Outcome::InSync));
    assert_eq!(outcome("p-ad"), Some(Outcome::InSync));
    assert_ne!(outcome("p-ac"), Some(Outcome::InSync));
    assert_ne!(outcome("p-bc"), Some(Outcome::InSync));
    assert!(without.failed.contains_key("p-ab2"), "{:?}", without.failed);
    assert_eq!(without_steps.in_sync, 2);
}

/// A full pass split over threads ([`super::cores`]) derives, settles and plans exactly
/// what one thread does: on 1,200 peerings over 300 VPCs (links reused in a VPC, so some fail
/// as younger duplicates; ties in age; a VPC with two routers; VPCs with none; tombstones
/// whose rows NB still holds) whose rows NB holds exactly, drifted, not at all, under another
/// deployment's id or under none (old rows to adopt); and NB rows of peerings Postgres does
/// not hold: ours (stale: deleted), unmarked (not ours to touch).
#[test]
fn split_derivation_equals_one_thread() {
    let mut vpcs: Vec<String> = (0..300).map(|i| format!("v{i}")).collect();
    vpcs.push("v-dup".into());
    let mut in_nb: Vec<&str> = vpcs.iter().map(String::as_str).collect();
    in_nb.push("v-dup");
    let mut seed = 7u64;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) % n) as usize
    };
    let mut records = Vec::new();
    for k in 0..1200 {
        let pick = |r: usize| match r {
            0 => "v-gone".to_string(),
            1 => "v-dup".to_string(),
            _ => vpcs[r % 300].clone(),
        };
        let (a, b) = (pick(next(600)), pick(next(600)));
        records.push(record(
            &format!("p-{k}"),
            &a,
            &b,
            next(60) as u8,
            next(900) as i64,
        ));
    }
    // Peerings NB holds rows of, gone from Postgres: q-0..q-3 ours (stale), q-4 and q-5
    // unmarked (an earlier ovn-peerd's rows of a peering this deployment does not hold).
    let gone: Vec<PeeringRecord> = (0..6)
        .map(|k| {
            let (a, b) = (&vpcs[10 + 40 * k], &vpcs[30 + 40 * k]);
            record(&format!("q-{k}"), a, b, 100 + k as u8, 0)
        })
        .collect();
    let stamp = |d: &mut DesiredPeering, _| {
        d.stamp_instance("dep-1");
        true
    };
    // Every peering's rows derived while all are live: the tombstones' rows are in NB.
    let all: Vec<PeeringRecord> = records.iter().chain(&gone).cloned().collect();
    let mut wanted = derive(
        Targets::All,
        &all,
        &nb_over(&in_nb, &[]),
        &[],
        "dep-1",
        1,
        &stamp,
    )
    .desired;
    // Most held exactly, some drifted, some missing.
    wanted.retain(|d| d.name.starts_with("q-") || next(10) != 0);
    for d in wanted.iter_mut().filter(|_| next(10) == 0) {
        d.ports[0].mac = "02:00:00:00:00:01".into();
    }
    let unmark = |d: &mut DesiredPeering| {
        let ids = d.ports.iter_mut().map(|p| &mut p.external_ids);
        let ids = ids.chain(d.routes.iter_mut().map(|r| &mut r.external_ids));
        ids.for_each(|ids| {
            ids.remove(INSTANCE_KEY);
        });
    };
    let (mut theirs, mut adopted) = (BTreeSet::new(), BTreeSet::new());
    for (i, d) in wanted.iter_mut().enumerate() {
        match (d.name.as_str(), i % 97) {
            ("q-4" | "q-5", _) => unmark(d),
            (n, _) if n.starts_with("q-") => {}
            (_, 3) => {
                d.stamp_instance("dep-2");
                theirs.insert(d.name.clone());
            }
            (_, 7) => {
                unmark(d);
                adopted.insert(d.name.clone());
            }
            _ => {}
        }
    }
    for rec in records.iter_mut().filter(|_| next(20) == 0) {
        rec.state = PeeringState::Deleting;
    }
    let tombstones: BTreeSet<String> = records
        .iter()
        .filter(|r| r.state == PeeringState::Deleting)
        .map(|r| r.name.clone())
        .collect();
    let ownership = Ownership::new("dep-1", records.iter().map(|r| r.name.clone()));
    let cache = nb_over(&in_nb, &wanted);
    let run = |early: bool, threads| {
        derive_and_plan(
            Targets::All,
            &records,
            &cache,
            &[],
            &ownership,
            early,
            threads,
        )
    };
    let names = |d: &Derivation| d.desired.iter().map(|d| d.name.clone()).collect::<Vec<_>>();
    let (one, one_plan, one_steps) = run(true, 1);
    // The fixture has every kind: failed, in sync (settled early), to write.
    assert!(one.failed.len() > 50, "{}", one.failed.len());
    assert!(one_steps.in_sync > 300, "{}", one_steps.in_sync);
    assert!(one_plan.changes.len() > 100, "{}", one_plan.changes.len());
    // Tombstones' rows and stale rows of ours deleted; unmarked rows of a peering we do not
    // hold, and another deployment's, left alone (the peering wanting the latter's names
    // fails); old rows of ours adopted.
    let tombstone_rows = one_plan.deletions(&BTreeSet::new()) - one_plan.deletions(&tombstones);
    assert!(tombstone_rows > 10, "{tombstone_rows}");
    assert!((0..4).all(|k| one_plan.touches(&format!("q-{k}"))));
    assert!(!one_plan.touches("q-4") && !one_plan.touches("q-5"));
    assert!(one_plan.deletions(&tombstones) >= 4);
    let refused = |n: &String| {
        one.failed
            .get(n)
            .is_some_and(|w| w.contains("deployment dep-2"))
    };
    assert!(theirs.iter().any(refused), "{theirs:?}");
    assert!(theirs.iter().all(|n| !one_plan.touches(n)));
    assert!(adopted.iter().any(|n| one_plan.touches(n)), "{adopted:?}");
    for (early, threads) in [(true, 2), (true, 5), (false, 3)] {
        let (split, plan, steps) = run(early, threads);
        assert_eq!(plan, one_plan, "early {early}, {threads} threads");
        assert_eq!(names(&split), names(&one), "desired, in age order");
        assert_eq!(split.failed, one.failed);
        assert_eq!(split.untouched, one.untouched);
        assert_eq!(steps.in_sync, one_steps.in_sync);
    }
    // And the settle itself, derived alone (its names in age order).
    let attach = Attachments::new(&cache, None);
    let settle = |d: &mut DesiredPeering, alone: bool| {
        d.stamp_instance("dep-1");
        !(alone && attach.holds(&cache, d, &ownership))
    };
    let derive_with = |threads| {
        derive(
            Targets::All,
            &records,
            &cache,
            &[],
            "dep-1",
            threads,
            &settle,
        )
    };
    let (a, b) = (derive_with(1), derive_with(4));
    assert_eq!(a.settled, b.settled);
    assert!(!a.settled.is_empty());
    assert_eq!(names(&a), names(&b));
}
