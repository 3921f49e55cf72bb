//! "Nothing that would share a prefix (ECMP) with another route", across two peerings in one
//! pass: a tombstone's route to a prefix leaves the router before (or with) another
//! peering's new route to it, never after, also when the removal is refused. The rules
//! ignore a tombstone's rows (the same pass removes them), so the new peering may take the
//! prefix at once; the worker must not let its route land while the old one stays
//! (`src/reconciler/batch.rs`). Real `ovsdb-server`, rows read with `ovn-nbctl`.

use std::time::Duration;

use ovn_peerd::store::PeeringState;

use ovn_peerd::reconciler::MAX_ROWS_PER_TRANSACTION;

use super::ownership_guard::{lagging_worker_with, LaggingNb};
use super::{create, delete, eventually, explicit, insert_sql, pool, record, store, two_vpcs};
use crate::support::nbrows::NbRows;
use crate::support::peerd::Options;
use crate::support::vpc::create_vpc;

/// vpc-1's static routes into 10.2.0.0/16 (vpc-2's 10.2.0.0/24 and vpc-3's subnet), as
/// (uuid, prefix, nexthop).
fn routes_to_vpc_2s_prefix(rows: &NbRows) -> Vec<(String, String, String)> {
    rows.routes_of("vpc-1")
        .into_iter()
        .filter(|r| r.ip_prefix.starts_with("10.2."))
        .map(|r| (r.uuid.clone(), r.ip_prefix.clone(), r.nexthop.clone()))
        .collect()
}

/// p12 (vpc-1 <-> vpc-2, 10.2.0.0/24) is deleted and p13 stored to vpc-3, which has the
/// same subnet: on vpc-1 p13's route to 10.2.0.0/24 replaces p12's. An operator annotated
/// p12's route after the worker's replica last looked (a proxy makes it lag), so the
/// removal's ownership guard refuses it: p13's route must not be written either (NB would
/// hold both, an ECMP group splitting vpc-1's traffic between vpc-2 and vpc-3). Once the
/// replica has caught up, one pass swaps them. In one transaction of the two peerings, the
/// refused batch is retried peering by peering (`src/reconciler/write.rs`): p13 only after
/// p12's removal committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_route_never_joins_a_tombstones_route_whose_removal_was_refused() {
    refused_removal_holds_back_the_new_route(MAX_ROWS_PER_TRANSACTION, "10.2.0.1/24").await;
}

/// The same with a shorter prefix over the tombstone's: vpc-3 is 10.2.0.0/16, so p13's route
/// to it would not share p12's slot, but while p12's 10.2.0.0/24 stays, longest-prefix match
/// keeps sending 10.2.0.x to vpc-2 through it: p13's route is held back the same way
/// (the rules ignore a tombstone's routes for overlap too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_shorter_route_never_lands_under_a_tombstones_longer_one() {
    refused_removal_holds_back_the_new_route(MAX_ROWS_PER_TRANSACTION, "10.2.0.1/16").await;
}

/// The same with transactions of one row: whole peerings still, so each would go alone;
/// the two linked peerings go together (`src/reconciler/batch.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_budget_of_one_row_the_removal_and_the_new_route_still_go_together() {
    refused_removal_holds_back_the_new_route(1, "10.2.0.1/24").await;
}

/// vpc-3's subnet is `vpc_3` (the new route's prefix, over or on p12's 10.2.0.0/24).
async fn refused_removal_holds_back_the_new_route(max_rows: usize, vpc_3: &str) {
    let t = two_vpcs(Options::default()).await;
    create_vpc(&t.nb, "vpc-3", &[vpc_3]);
    create(
        &t,
        explicit("p12", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    let before = routes_to_vpc_2s_prefix(&NbRows::read(&t.nb));
    assert_eq!(before.len(), 1, "{before:?}");
    let (old, _, _) = before[0].clone();

    let nb = LaggingNb::start(t.nb.sock()).await;
    let worker = lagging_worker_with(&t, &nb, max_rows).await;
    nb.lag(Duration::from_secs(3));
    t.nb.nbctl(&[
        "set",
        "Logical_Router_Static_Route",
        &old,
        "external_ids:note=checked-by-ops",
    ]);
    delete(&t, "p12").await;
    // The API refuses p13 while p12's route is in NB; the worker's rules do not (p12's rows
    // leave in the same pass): another replica's API, or a restore, can store it.
    let db = pool(&t.db.url).await;
    insert_sql(
        &db,
        "p13",
        "vpc-1",
        "vpc-3",
        "169.254.0.5/30",
        "169.254.0.6/30",
    )
    .await;

    let outcome = worker
        .run_once()
        .await
        .expect("a guard miss is no pass failure");
    assert!(
        outcome.incomplete > 0,
        "p12's removal was not refused: the replica was not stale ({outcome:?})"
    );
    let after = routes_to_vpc_2s_prefix(&NbRows::read(&t.nb));
    assert_eq!(
        after,
        vec![(old.clone(), "10.2.0.0/24".into(), "169.254.0.2".into())],
        "vpc-1 holds another route into p12's 10.2.0.0/24 beside it (ECMP or a split by prefix)"
    );
    let s = store(&t.db.url);
    let p13 = record(&s, "p13").await;
    assert_eq!(p13.state, PeeringState::Pending);
    assert_eq!(
        p13.state_message,
        "waiting for route 10.2.0.0/24 of deleted peering p12 to leave vpc-1"
    );

    // The replica catches up (the annotated route is still p12's): the removal and the new
    // route go together.
    nb.lag(Duration::ZERO);
    eventually("p13 ACTIVE", Duration::from_secs(20), || async {
        worker.run_once().await.expect("pass");
        (record(&s, "p13").await.state == PeeringState::Active).then_some(())
    })
    .await;
    let last = routes_to_vpc_2s_prefix(&NbRows::read(&t.nb));
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0].2, "169.254.0.6", "{last:?}");
}
