//! Writes that cannot break a working peering (issue 10): deletions guarded by the row's
//! ownership marks, guarded updates that matched nothing reported as not done, whole drift
//! repair, and narrow passes that re-judge the neighbours of the peering they handle.

use std::collections::BTreeSet;
use std::time::Duration;

use ovn_peerd::ovsdb::{Client, ClientConfig, OvsdbErrorKind, TransactError};
use ovn_peerd::peering::diff::Change;
use ovn_peerd::reconciler::translate::{append_ops, not_done, RowIds};
use ovn_peerd::startup::NB_DATABASE;
use ovn_peerd::store::PeeringState;

use super::{active_p, create, eventually, explicit, pool, record, store, two_vpcs, wait_state};
use crate::support::nbrows::NbRows;
use crate::support::peerd::Options;
use crate::support::vpc::create_vpc;

const PROMPT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_deletion_planned_on_a_stale_view_is_refused_and_a_guarded_update_reports_not_done() {
    let t = two_vpcs(Options::default()).await;
    create(
        &t,
        explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    let rows = NbRows::read(&t.nb);
    let port = rows.owned_ports_of("vpc-1")[0].clone();
    let router = rows.router("vpc-1").uuid.clone();
    // The plan's view of the port; then an operator takes it over before the write lands.
    let seen = port.external_ids.clone();
    t.nb.nbctl(&[
        "remove",
        "Logical_Router_Port",
        &port.uuid,
        "external_ids",
        "\"ovn-peerd:owner\"",
    ]);
    let nb = Client::start(ClientConfig::new(&t.config.ovn_nb_db, NB_DATABASE).unwrap()).unwrap();
    nb.wait_synced(PROMPT).await.unwrap();
    let ops_of = |change: &Change| {
        let mut ops = Vec::new();
        let cache = nb.cache();
        append_ops(change, &mut ops, &mut RowIds::new(&cache));
        ops
    };

    let delete = Change::DeletePort {
        peering: "p".into(),
        id: port.uuid.clone(),
        router_id: router.clone(),
        name: port.name.clone(),
        networks: port.networks.iter().cloned().collect(),
        seen,
    };
    match nb.transact(ops_of(&delete)).await {
        Err(TransactError::Operation { index: 0, error }) => {
            assert_eq!(error.kind, OvsdbErrorKind::TimedOut, "{error:?}")
        }
        other => panic!("the guard must refuse the deletion: {other:?}"),
    }
    let after = NbRows::read(&t.nb);
    assert!(
        after.router("vpc-1").ports.contains(&port.uuid),
        "port kept"
    );
    assert_eq!(after.ports[&port.uuid].mac, port.mac);

    // An update guarded by our owner mark matches no row now: committed, but not done.
    let update = Change::UpdatePort {
        peering: "p".into(),
        id: port.uuid.clone(),
        name: port.name.clone(),
        router_id: router.clone(),
        mac: Some("0a:00:00:00:00:99".into()),
        networks: None,
        peer: None,
        external_ids: None,
        reset: vec![],
    };
    let ops = ops_of(&update);
    let results = nb.transact(ops.clone()).await.expect("committed");
    let owners = vec![Some("p"); ops.len()];
    assert_eq!(not_done(&owners, &ops, &results), BTreeSet::from(["p"]));
    assert_eq!(NbRows::read(&t.nb).ports[&port.uuid].mac, port.mac);
    nb.shutdown();
}

fn nbctl_get(t: &crate::support::peerd::TestPeerd, table: &str, row: &str, col: &str) -> String {
    t.nb.nbctl(&["get", table, row, col]).trim().to_string()
}

#[tokio::test]
async fn forwarding_columns_changed_by_hand_on_our_rows_are_repaired_in_place() {
    let (t, s, _) = active_p(PROMPT).await;
    let before = NbRows::read(&t.nb);
    let port = before.owned_ports_of("vpc-1")[0].uuid.clone();
    let route = before.routes_of("vpc-1")[0].uuid.clone();

    t.nb.nbctl(&["set", "Logical_Router_Port", &port, "enabled=false"]);
    eventually("enabled=false repaired", PROMPT, || async {
        (nbctl_get(&t, "Logical_Router_Port", &port, "enabled") == "[]").then_some(())
    })
    .await;
    t.nb.nbctl(&[
        "set",
        "Logical_Router_Static_Route",
        &route,
        "options:ecmp_symmetric_reply=true",
    ]);
    eventually("route options repaired", PROMPT, || async {
        (nbctl_get(&t, "Logical_Router_Static_Route", &route, "options") == "{}").then_some(())
    })
    .await;
    let after = NbRows::read(&t.nb);
    assert_eq!(
        after.ports.keys().collect::<Vec<_>>(),
        before.ports.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        after.routes.keys().collect::<Vec<_>>(),
        before.routes.keys().collect::<Vec<_>>()
    );
    assert_eq!(record(&s, "p").await.state, PeeringState::Active);
}

#[tokio::test]
async fn the_older_of_two_conflicting_peerings_wins_and_the_newer_recovers_when_it_goes() {
    // The periodic full pass is 300 s away: only the narrow pass can bring the newer back.
    let t = two_vpcs(Options {
        worker: true,
        ..Options::default()
    })
    .await;
    create_vpc(&t.nb, "vpc-3", &["10.2.0.1/24"]); // the same subnet as vpc-2
                                                  // Inserted together, as another replica's API could before the rules saw both: they
                                                  // conflict on vpc-1's route to 10.2.0.0/24. The newer sorts first by name.
    sqlx::query(
        "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4, create_time) \
         VALUES ('a-new', 'vpc-1', 'vpc-3', '169.254.0.5/30', '169.254.0.6/30', now()), \
                ('z-old', 'vpc-1', 'vpc-2', '169.254.0.1/30', '169.254.0.2/30', \
                 now() - interval '1 hour')",
    )
    .execute(&pool(&t.db.url).await)
    .await
    .unwrap();
    let s = store(&t.db.url);
    wait_state(&s, "z-old", PeeringState::Active, PROMPT).await;
    let failed = wait_state(&s, "a-new", PeeringState::Failed, PROMPT).await;
    assert!(failed.state_message.contains("\"z-old\""), "{failed:?}");
    // Judged again by a full pass, whatever the order: the same verdicts.
    let outcome = t.reconciler().await.run_once().await.unwrap();
    assert_eq!(
        (
            outcome.active,
            outcome
                .failed
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
        ),
        (1, vec!["a-new"]),
        "{outcome:?}"
    );
    assert_eq!(record(&s, "z-old").await.state, PeeringState::Active);
    assert_eq!(NbRows::read(&t.nb).owned_routes_of("vpc-1").len(), 1);

    super::delete(&t, "z-old").await;
    wait_state(&s, "a-new", PeeringState::Active, PROMPT).await;
    let rows = NbRows::read(&t.nb);
    assert_eq!(
        rows.owned_routes_of("vpc-1"),
        vec![("10.2.0.0/24".into(), "169.254.0.6".into(), "dst-ip".into())]
    );
    assert_eq!(
        rows.owned_port_names(),
        ["vpc-1-vpc-3", "vpc-3-vpc-1"].map(String::from).into()
    );
}
