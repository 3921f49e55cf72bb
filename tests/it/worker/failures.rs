//! Peerings that cannot converge: STATE_FAILED with a reason, the others unaffected,
//! recovery when the cause goes; rows of peerings that no longer exist.

use std::time::Duration;

use ovn_peerd::store::PeeringState;

use super::{create, explicit, insert_sql, pool, record, store, two_vpcs, wait_state};
use crate::support::nbrows::NbRows;
use crate::support::peerd::Options;
use crate::support::vpc::{add_subnet, create_vpc};

#[tokio::test]
async fn a_foreign_port_in_the_way_fails_only_that_peering_until_it_goes() {
    let t = two_vpcs(Options {
        worker: true,
        ..Options::default()
    })
    .await;
    create_vpc(&t.nb, "vpc-3", &["10.3.0.1/24"]);
    // What Kube-OVN would have written for its own peering of vpc-1 and vpc-2.
    t.nb.nbctl(&[
        "lrp-add",
        "vpc-1",
        "vpc-1-vpc-2",
        "0e:00:00:ee:00:01",
        "169.254.77.1/30",
        "peer=vpc-2-vpc-1",
        "--",
        "set",
        "Logical_Router_Port",
        "vpc-1-vpc-2",
        "external_ids:vendor=kube-ovn",
    ]);
    let foreign = NbRows::read(&t.nb).foreign();
    // The API refuses it up front (see api_safety); stored anyway, as a peering
    // created before the foreign port appeared or restored from a backup is.
    let refused = t
        .client()
        .await
        .create_peering(ovn_peerd::proto::v1::CreatePeeringRequest {
            peering: Some(explicit(
                "p12",
                "vpc-1",
                "vpc-2",
                "169.254.0.1/30",
                "169.254.0.2/30",
            )),
            ..Default::default()
        })
        .await
        .expect_err("the port name is taken");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    insert_sql(
        &pool(&t.db.url).await,
        "p12",
        "vpc-1",
        "vpc-2",
        "169.254.0.1/30",
        "169.254.0.2/30",
    )
    .await;
    create(
        &t,
        explicit("p13", "vpc-1", "vpc-3", "169.254.0.5/30", "169.254.0.6/30"),
    )
    .await;
    let s = store(&t.db.url);
    let failed = wait_state(&s, "p12", PeeringState::Failed, Duration::from_secs(10)).await;
    assert!(
        failed.state_message.contains("\"vpc-1-vpc-2\"")
            && failed.state_message.contains("not owned by ovn-peerd"),
        "{failed:?}"
    );
    wait_state(&s, "p13", PeeringState::Active, Duration::from_secs(10)).await;
    let rows = NbRows::read(&t.nb);
    assert_eq!(rows.foreign(), foreign, "the foreign port is left as it is");
    assert!(
        rows.owned_ports_of("vpc-2").is_empty() && rows.owned_routes_of("vpc-2").is_empty(),
        "nothing of the blocked peering is written: {rows:?}"
    );

    // The owner removes its port: the peering converges by itself.
    t.nb.nbctl(&["lrp-del", "vpc-1-vpc-2"]);
    let active = wait_state(&s, "p12", PeeringState::Active, Duration::from_secs(10)).await;
    assert_eq!(active.state_message, "");
    assert!(active.update_time > failed.update_time);
    let rows = NbRows::read(&t.nb);
    assert_eq!(rows.owned_ports_of("vpc-2").len(), 1);
    assert_eq!(
        rows.owned_port_names(),
        ["vpc-1-vpc-2", "vpc-1-vpc-3", "vpc-2-vpc-1", "vpc-3-vpc-1"]
            .map(String::from)
            .into()
    );
}

#[tokio::test]
async fn a_deleted_router_fails_the_peering_removes_the_survivors_half_until_it_is_back() {
    let t = two_vpcs(Options::default()).await;
    create(
        &t,
        explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    let s = store(&t.db.url);
    let active = record(&s, "p").await;
    assert_eq!(active.state, PeeringState::Active);

    t.nb.nbctl(&["lr-del", "vpc-2"]);
    let outcome = t.converge().await;
    let why = outcome.failed.get("p").expect("p failed").clone();
    assert!(why.contains("vpc-2"), "{why}");
    let failed = record(&s, "p").await;
    assert_eq!(failed.state, PeeringState::Failed);
    assert_eq!(failed.state_message, why);
    assert_eq!(failed.observed_generation, 1);
    assert!(failed.update_time > active.update_time);
    // The surviving side's port and routes lead nowhere: removed, nothing stale.
    let rows = NbRows::read(&t.nb);
    assert!(
        rows.owned_ports_of("vpc-1").is_empty() && rows.owned_routes_of("vpc-1").is_empty(),
        "{rows:?}"
    );
    assert_eq!(rows.owned_count(), 0);
    assert_eq!(
        rows.ports_of("vpc-1").len(),
        1,
        "vpc-1's own subnet port stays"
    );

    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    let outcome = t.converge().await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    let back = record(&s, "p").await;
    assert_eq!(
        (back.state, back.state_message.as_str()),
        (PeeringState::Active, "")
    );
    assert!(back.update_time > failed.update_time);
    let rows = NbRows::read(&t.nb);
    assert_eq!(rows.owned_ports_of("vpc-2")[0].name, "vpc-2-vpc-1");
    assert_eq!(rows.owned_routes_of("vpc-2").len(), 1);
    assert_eq!(rows.owned_ports_of("vpc-1").len(), 1);
}

#[tokio::test]
async fn a_subnet_added_later_that_overlaps_fails_the_peering_until_removed() {
    let t = two_vpcs(Options::default()).await;
    create(
        &t,
        explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    add_subnet(&t.nb, "vpc-2", "vpc-2-s9", "10.1.0.129/25");
    let outcome = t.converge().await;
    let why = outcome.failed.get("p").expect("p failed");
    assert!(why.contains("10.1.0.128/25"), "{why}");
    assert_eq!(
        record(&store(&t.db.url), "p").await.state,
        PeeringState::Failed
    );
    // No route to the overlapping subnet was written.
    assert!(!NbRows::read(&t.nb)
        .owned_routes_of("vpc-1")
        .iter()
        .any(|r| r.0 == "10.1.0.128/25"));

    t.nb.nbctl(&["lrp-del", "vpc-2-s9"]);
    let outcome = t.converge().await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    assert_eq!(
        record(&store(&t.db.url), "p").await.state,
        PeeringState::Active
    );
}

#[tokio::test]
async fn a_new_generation_is_written_and_observed() {
    let t = two_vpcs(Options::default()).await;
    create(
        &t,
        explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    let s = store(&t.db.url);
    let first = record(&s, "p").await;
    // A desired change committed by another writer (there is no update RPC yet).
    sqlx::query(
        "UPDATE peerings SET local_routes = '[{\"cidr\": \"10.2.0.0/25\", \"policy\": \"dst-ip\"}]', \
         generation = generation + 1, generation_time = clock_timestamp() WHERE name = 'p'",
    )
    .execute(&pool(&t.db.url).await)
    .await
    .unwrap();
    let pending = record(&s, "p").await;
    assert_eq!((pending.generation, pending.observed_generation), (2, 1));
    t.converge().await;
    let second = record(&s, "p").await;
    assert_eq!(
        (second.state, second.generation, second.observed_generation),
        (PeeringState::Active, 2, 2)
    );
    assert!(second.update_time > first.update_time);
    let rows = NbRows::read(&t.nb);
    assert_eq!(
        rows.owned_routes_of("vpc-1"),
        vec![(
            "10.2.0.0/25".to_string(),
            "169.254.0.2".to_string(),
            "dst-ip".to_string()
        )]
    );
    for p in rows.ports.values().filter(|p| !p.external_ids.is_empty()) {
        assert_eq!(p.external_ids["ovn-peerd:generation"], "2", "{p:?}");
    }
    for r in rows.routes.values() {
        assert_eq!(r.external_ids["ovn-peerd:generation"], "2", "{r:?}");
    }
}

#[tokio::test]
async fn rows_of_a_peering_missing_from_postgres_are_removed() {
    let t = two_vpcs(Options::default()).await;
    create_vpc(&t.nb, "vpc-3", &["10.3.0.1/24"]);
    t.nb.nbctl(&["lr-route-add", "vpc-1", "192.168.0.0/16", "10.1.0.254"]);
    create(
        &t,
        explicit("gone", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    create(
        &t,
        explicit("kept", "vpc-1", "vpc-3", "169.254.0.5/30", "169.254.0.6/30"),
    )
    .await;
    t.converge().await;
    let before = NbRows::read(&t.nb);
    assert_eq!(before.owned_port_names().len(), 4);

    // A database restore from before "gone" existed.
    sqlx::query("DELETE FROM peerings WHERE name = 'gone'")
        .execute(&pool(&t.db.url).await)
        .await
        .unwrap();
    let outcome = t.converge().await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    let after = NbRows::read(&t.nb);
    assert_eq!(
        after.owned_port_names(),
        ["vpc-1-vpc-3", "vpc-3-vpc-1"].map(String::from).into()
    );
    assert!(after.routes.values().all(|r| r
        .external_ids
        .get("ovn-peerd:peering")
        .map(String::as_str)
        != Some("gone")));
    assert_eq!(after.owned_routes_of("vpc-2"), vec![]);
    assert_eq!(after.owned_routes_of("vpc-3").len(), 1);
    assert_eq!(after.foreign(), before.foreign());
}

#[tokio::test]
async fn two_routers_with_the_vpcs_name_fail_the_peering_until_one_goes() {
    let t = two_vpcs(Options::default()).await;
    create(
        &t,
        explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    // Router names are not unique in NB: a second "vpc-2" makes the VPC ambiguous.
    let dup =
        t.nb.nbctl(&["create", "Logical_Router", "name=vpc-2"])
            .trim()
            .to_string();
    let outcome = t.converge().await;
    let why = outcome.failed.get("p").expect("p failed");
    assert!(why.contains("vpc-2"), "{why}");
    t.nb.nbctl(&["destroy", "Logical_Router", &dup]);
    let outcome = t.converge().await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    assert_eq!(
        record(&store(&t.db.url), "p").await.state,
        PeeringState::Active
    );
}

#[tokio::test]
async fn deleting_a_failed_peering_removes_its_remaining_rows() {
    let t = two_vpcs(Options::default()).await;
    create(
        &t,
        explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    // An ambiguous router name freezes the peering's rows (which router do they serve?).
    t.nb.nbctl(&["create", "Logical_Router", "name=vpc-2"]);
    assert!(t.converge().await.failed.contains_key("p"));
    assert_eq!(
        NbRows::read(&t.nb).owned_count(),
        4,
        "frozen: both ports and routes"
    );
    super::delete(&t, "p").await;
    t.converge().await;
    assert_eq!(NbRows::read(&t.nb).owned_count(), 0);
    assert!(store(&t.db.url).peering_get("p").await.unwrap().is_none());
}

#[tokio::test]
async fn a_peering_re_created_after_delete_gets_its_rows_again() {
    // Same name, VPCs and link: the same row identities as the deleted peering's.
    let t = two_vpcs(Options::default()).await;
    let p = explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30");
    create(&t, p.clone()).await;
    t.converge().await;
    let first = NbRows::read(&t.nb);
    super::delete(&t, "p").await;
    t.converge().await;
    assert_eq!(NbRows::read(&t.nb).owned_count(), 0);
    create(&t, p).await;
    let outcome = t.converge().await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    let second = NbRows::read(&t.nb);
    assert_eq!(second.owned_port_names(), first.owned_port_names());
    assert_eq!(
        second.owned_routes_of("vpc-1"),
        first.owned_routes_of("vpc-1")
    );
    assert_eq!(
        record(&store(&t.db.url), "p").await.state,
        PeeringState::Active
    );
}
