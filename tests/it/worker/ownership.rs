//! "ovn-peerd never changes or deletes a row without `ovn-peerd:owner=ovn-peerd`", checked by
//! behaviour: rows of a peering whose owner mark an operator removed by hand stay exactly as
//! they were (read back with `ovn-nbctl`) through a new generation and the peering's deletion.

use ovn_peerd::store::PeeringState;

use super::{create, delete, explicit, pool, record, store, two_vpcs};
use crate::support::nb::NbServer;
use crate::support::nbrows::NbRows;
use crate::support::peerd::Options;

/// Every column of one row, as `ovn-nbctl list` prints it.
fn row(nb: &NbServer, table: &str, uuid: &str) -> String {
    nb.nbctl(&["list", table, uuid])
}

#[tokio::test]
async fn rows_whose_owner_mark_was_removed_are_never_updated_or_deleted() {
    let t = two_vpcs(Options::default()).await;
    create(
        &t,
        explicit("p12", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    let s = store(&t.db.url);
    assert_eq!(record(&s, "p12").await.state, PeeringState::Active);

    // An operator takes over vpc-1's port and route: the owner mark goes, the rest stays.
    let rows = NbRows::read(&t.nb);
    let port = rows.owned_ports_of("vpc-1")[0].uuid.clone();
    let route = rows
        .routes_of("vpc-1")
        .iter()
        .find(|r| r.external_ids.contains_key("ovn-peerd:owner"))
        .expect("a route of ours in vpc-1")
        .uuid
        .clone();
    for (table, uuid) in [
        ("Logical_Router_Port", &port),
        ("Logical_Router_Static_Route", &route),
    ] {
        t.nb.nbctl(&["remove", table, uuid, "external_ids", "\"ovn-peerd:owner\""]);
    }
    let taken_port = row(&t.nb, "Logical_Router_Port", &port);
    let taken_route = row(&t.nb, "Logical_Router_Static_Route", &route);
    assert!(!taken_port.contains("ovn-peerd:owner"), "{taken_port}");
    let untouched = |when: &str| {
        assert_eq!(
            row(&t.nb, "Logical_Router_Port", &port),
            taken_port,
            "port changed {when}"
        );
        assert_eq!(
            row(&t.nb, "Logical_Router_Static_Route", &route),
            taken_route,
            "route changed {when}"
        );
    };

    // A new generation would update every row of the peering (markers): not these.
    sqlx::query("UPDATE peerings SET generation = generation + 1 WHERE name = 'p12'")
        .execute(&pool(&t.db.url).await)
        .await
        .unwrap();
    t.converge().await;
    untouched("by a new generation");
    let r = record(&s, "p12").await;
    assert_eq!(r.state, PeeringState::Failed, "{r:?}");
    assert!(r.state_message.contains("vpc-1-vpc-2"), "{r:?}");

    // Deleting the peering removes its rows: not these.
    delete(&t, "p12").await;
    t.converge().await;
    t.converge().await;
    untouched("by the peering's deletion");
    let after = NbRows::read(&t.nb);
    assert!(after.ports.contains_key(&port) && after.routes.contains_key(&route));
    assert_eq!(
        after.owned_count(),
        0,
        "the rows still marked as ours are gone"
    );
}
