//! The convergence worker against a real Postgres and a real NB `ovsdb-server` (issue 5).
//!
//! Deterministic tests drive the worker with `TestPeerd::converge` (passes until idle);
//! event-driven ones run it in the background (`Options { worker: true }`) and poll with a
//! deadline. NB rows are always read back with `ovn-nbctl`.

mod cluster;
mod ecmp;
mod events;
mod failures;
mod faults;
mod fencing;
mod foreign_edits;
mod narrow;
mod output_port;
mod ownership;
mod ownership_guard;
mod partition;
mod pipeline;
mod report;
mod restart;
mod rows;
mod safety;

use std::future::Future;
use std::time::Duration;

use ovn_peerd::proto::v1::{CreatePeeringRequest, Peering};
use ovn_peerd::store::{PeeringRecord, PeeringState, Store};
use sqlx::PgPool;

use crate::support::peerd::{Options, TestPeerd};
use crate::support::vpc::create_vpc;

/// ovn-peerd with vpc-1 (10.1.0.0/24) and vpc-2 (10.2.0.0/24).
async fn two_vpcs(opts: Options) -> TestPeerd {
    let t = TestPeerd::start_with(opts).await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    t
}

/// The worker running, vpc-1 and vpc-2 peered as "p" (169.254.0.1/30 and .2/30) through the
/// API and ACTIVE within `timeout`; returns ovn-peerd, its store and p as it turned ACTIVE.
async fn active_p(timeout: Duration) -> (TestPeerd, Store, PeeringRecord) {
    let t = two_vpcs(Options {
        worker: true,
        ..Options::default()
    })
    .await;
    create(
        &t,
        explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    let s = store(&t.db.url);
    let p = wait_state(&s, "p", PeeringState::Active, timeout).await;
    (t, s, p)
}

fn explicit(name: &str, local: &str, remote: &str, lip: &str, rip: &str) -> Peering {
    Peering {
        name: name.into(),
        local_vpc: local.into(),
        remote_vpc: remote.into(),
        local_connect_ip: lip.into(),
        remote_connect_ip: rip.into(),
        ..Default::default()
    }
}

/// Creates a peering through the API.
async fn create<N>(t: &TestPeerd<N>, p: Peering) -> Peering {
    t.client()
        .await
        .create_peering(CreatePeeringRequest {
            peering: Some(p),
            ..Default::default()
        })
        .await
        .expect("create peering")
        .into_inner()
}

/// Deletes a peering through the API.
async fn delete(t: &TestPeerd, name: &str) {
    t.client()
        .await
        .delete_peering(ovn_peerd::proto::v1::DeletePeeringRequest {
            name: name.into(),
            allow_missing: false,
            ..Default::default()
        })
        .await
        .expect("delete peering");
}

fn store(url: &str) -> Store {
    Store::connect_lazy(url).expect("store")
}

/// The stored peering, which must exist.
async fn record(store: &Store, name: &str) -> PeeringRecord {
    store
        .peering_get(name)
        .await
        .expect("peering_get")
        .unwrap_or_else(|| panic!("peering {name:?} not stored"))
}

async fn pool(url: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("connect")
}

/// Inserts a peering with SQL, as a database restore or another replica's API would.
async fn insert_sql(pool: &PgPool, name: &str, local: &str, remote: &str, lv4: &str, rv4: &str) {
    sqlx::query(
        "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4) \
         VALUES ($1, $2, $3, $4::inet, $5::inet)",
    )
    .bind(name)
    .bind(local)
    .bind(remote)
    .bind(lv4)
    .bind(rv4)
    .execute(pool)
    .await
    .unwrap_or_else(|e| panic!("insert {name}: {e}"));
}

/// Counts stored peerings by state.
async fn count_in_state(pool: &PgPool, state: PeeringState) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM peerings WHERE state = $1")
        .bind(state.as_str())
        .fetch_one(pool)
        .await
        .expect("count")
}

/// The support crate's `wait_until_async`, panicking on its timeout (the worker tests' shorthand).
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    ovn_peerd_test_support::wait_until_async(what, timeout, f)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until the peering is in `state` at its current generation; returns it.
async fn wait_state(
    store: &Store,
    name: &str,
    state: PeeringState,
    timeout: Duration,
) -> PeeringRecord {
    eventually(&format!("{name} in {state:?}"), timeout, || async {
        let r = store.peering_get(name).await.ok().flatten()?;
        (r.state == state && r.observed_generation == r.generation).then_some(r)
    })
    .await
}
