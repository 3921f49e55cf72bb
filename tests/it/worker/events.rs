//! The background worker reacts to events: a committed desired change (Postgres NOTIFY) and
//! NB changes (drift). The periodic pass is 300 s in tests, so anything prompt here was
//! event-driven.

use std::time::{Duration, Instant};

use ovn_peerd::store::PeeringState;

use super::{create, delete, eventually, explicit, store, two_vpcs, wait_state};
use crate::support::nbrows::NbRows;
use crate::support::peerd::{Options, TestPeerd};
use crate::support::vpc::add_subnet;

const PROMPT: Duration = Duration::from_secs(10);

async fn active_peering() -> TestPeerd {
    let t = two_vpcs(Options {
        worker: true,
        ..Options::default()
    })
    .await;
    assert_eq!(t.config.resync_interval, Duration::from_secs(300));
    create(
        &t,
        explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    wait_state(&store(&t.db.url), "p", PeeringState::Active, PROMPT).await;
    t
}

#[tokio::test]
async fn creates_and_deletes_converge_without_being_driven() {
    let t = active_peering().await;
    let rows = NbRows::read(&t.nb);
    assert_eq!(rows.owned_ports_of("vpc-1").len(), 1);
    assert_eq!(rows.owned_routes_of("vpc-2").len(), 1);
    delete(&t, "p").await;
    let s = store(&t.db.url);
    eventually("tombstone removed", PROMPT, || async {
        s.peering_get("p").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(NbRows::read(&t.nb).owned_count(), 0);
}

#[tokio::test]
async fn a_route_deleted_by_hand_is_back_promptly() {
    let t = active_peering().await;
    let before = NbRows::read(&t.nb).owned_routes_of("vpc-1");
    assert_eq!(before.len(), 1);
    let started = Instant::now();
    t.nb.nbctl(&["lr-route-del", "vpc-1", "10.2.0.0/24"]);
    eventually("the route back", PROMPT, || async {
        (NbRows::read(&t.nb).owned_routes_of("vpc-1") == before).then_some(())
    })
    .await;
    eprintln!("route repaired in {:?}", started.elapsed());
    // Repaired by re-inserting the row: the server accepted our deterministic uuid again.
    assert!(NbRows::read(&t.nb).duplicate_routes().is_empty());
    // And the same twice more (the same uuid each time).
    for _ in 0..2 {
        t.nb.nbctl(&["lr-route-del", "vpc-1", "10.2.0.0/24"]);
        eventually("the route back again", PROMPT, || async {
            (NbRows::read(&t.nb).owned_routes_of("vpc-1") == before).then_some(())
        })
        .await;
    }
    let p = super::record(&store(&t.db.url), "p").await;
    assert_eq!(p.state, PeeringState::Active, "{p:?}");
}

#[tokio::test]
async fn a_port_changed_or_deleted_by_hand_is_repaired_promptly() {
    let t = active_peering().await;
    let want = NbRows::read(&t.nb).owned_ports_of("vpc-2")[0].clone();
    t.nb.nbctl(&[
        "set",
        "Logical_Router_Port",
        "vpc-2-vpc-1",
        "networks=\"169.254.99.2/30\"",
        "mac=\"0e:00:00:00:00:99\"",
    ]);
    eventually("port networks and mac repaired", PROMPT, || async {
        let rows = NbRows::read(&t.nb);
        let now = rows.owned_ports_of("vpc-2").first().map(|p| (*p).clone());
        (now.as_ref() == Some(&want)).then_some(())
    })
    .await;
    t.nb.nbctl(&["lrp-del", "vpc-2-vpc-1"]);
    eventually("port re-created", PROMPT, || async {
        let rows = NbRows::read(&t.nb);
        let now = rows.owned_ports_of("vpc-2").first().map(|p| (*p).clone());
        now.filter(|p| {
            (&p.name, &p.mac, &p.networks, &p.peer, &p.external_ids)
                == (
                    &want.name,
                    &want.mac,
                    &want.networks,
                    &want.peer,
                    &want.external_ids,
                )
        })
    })
    .await;
}

#[tokio::test]
async fn automatic_routes_follow_subnets_without_being_driven() {
    let t = active_peering().await;
    add_subnet(&t.nb, "vpc-2", "vpc-2-s1", "10.22.0.1/24");
    eventually("route to the new subnet", PROMPT, || async {
        NbRows::read(&t.nb)
            .owned_routes_of("vpc-1")
            .iter()
            .any(|r| r.0 == "10.22.0.0/24")
            .then_some(())
    })
    .await;
    t.nb.nbctl(&["lrp-del", "vpc-2-s1"]);
    eventually("route to the removed subnet gone", PROMPT, || async {
        (NbRows::read(&t.nb).owned_routes_of("vpc-1").len() == 1).then_some(())
    })
    .await;
}

/// The uuid of our one route on `router`.
fn our_route_uuid(t: &TestPeerd, router: &str) -> String {
    let rows = NbRows::read(&t.nb);
    let ours: Vec<String> = rows
        .routes_of(router)
        .into_iter()
        .filter(|r| r.external_ids.contains_key("ovn-peerd:owner"))
        .map(|r| r.uuid.clone())
        .collect();
    assert_eq!(ours.len(), 1, "{rows:?}");
    ours[0].clone()
}

#[tokio::test]
async fn a_route_whose_nexthop_or_policy_was_changed_by_hand_is_repaired_promptly() {
    let t = active_peering().await;
    let want = NbRows::read(&t.nb).owned_routes_of("vpc-1");
    let s = store(&t.db.url);
    for change in ["nexthop=\"169.254.0.99\"", "policy=src-ip"] {
        let uuid = our_route_uuid(&t, "vpc-1");
        t.nb.nbctl(&["set", "Logical_Router_Static_Route", &uuid, change]);
        eventually(
            &format!("route repaired after {change}"),
            PROMPT,
            || async { (NbRows::read(&t.nb).owned_routes_of("vpc-1") == want).then_some(()) },
        )
        .await;
        let p = super::record(&s, "p").await;
        assert_eq!(p.state, PeeringState::Active, "{p:?}");
    }
    assert!(NbRows::read(&t.nb).duplicate_routes().is_empty());
}

#[tokio::test]
async fn a_route_disowned_by_hand_is_left_to_its_new_owner_and_fails_the_peering_until_it_goes() {
    let t = active_peering().await;
    let want = NbRows::read(&t.nb).owned_routes_of("vpc-1");
    let uuid = our_route_uuid(&t, "vpc-1");
    t.nb.nbctl(&[
        "remove",
        "Logical_Router_Static_Route",
        &uuid,
        "external_ids",
        "\"ovn-peerd:owner\"",
    ]);
    // Re-creating ours beside it would make an ECMP group with the new owner's row.
    let s = store(&t.db.url);
    let failed = wait_state(&s, "p", PeeringState::Failed, PROMPT).await;
    assert!(
        failed.state_message.contains("ECMP") && failed.state_message.contains(&uuid),
        "{failed:?}"
    );
    let rows = NbRows::read(&t.nb);
    assert!(
        rows.routes.contains_key(&uuid),
        "the disowned row is not touched"
    );
    assert!(rows.owned_routes_of("vpc-1").is_empty(), "{rows:?}");

    // Its new owner removes it: ours comes back.
    t.nb.nbctl(&[
        "--",
        "remove",
        "Logical_Router",
        "vpc-1",
        "static_routes",
        &uuid,
    ]);
    wait_state(&s, "p", PeeringState::Active, PROMPT).await;
    eventually("our route re-created", PROMPT, || async {
        (NbRows::read(&t.nb).owned_routes_of("vpc-1") == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_periodic_pass_corrects_what_no_event_announces() {
    // A status overwritten by hand notifies nothing (the trigger fires on generation changes
    // only): with a 1 s period the timer pass puts it right.
    let db = crate::support::pg::TestDb::create().await;
    let nb = crate::support::nb::NbServer::start();
    crate::support::vpc::create_vpc(&nb, "vpc-1", &["10.1.0.1/24"]);
    crate::support::vpc::create_vpc(&nb, "vpc-2", &["10.2.0.1/24"]);
    let mut config = crate::support::peerd::test_config(
        &db.url,
        &nb.remote(),
        &Options {
            worker: true,
            ..Options::default()
        },
    );
    config.resync_interval = Duration::from_secs(1);
    let t = TestPeerd::start_on(db, nb, config).await;
    create(
        &t,
        explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    let s = store(&t.db.url);
    wait_state(&s, "p", PeeringState::Active, PROMPT).await;
    sqlx::query("UPDATE peerings SET state = 'pending', observed_generation = 0")
        .execute(&super::pool(&t.db.url).await)
        .await
        .unwrap();
    wait_state(&s, "p", PeeringState::Active, Duration::from_secs(5)).await;
}
