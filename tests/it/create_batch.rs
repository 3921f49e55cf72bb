//! CreatePeering's group commit (`src/api/create_batch.rs`): the creates of one batch are
//! judged in arrival order, each seeing the earlier ones, and each gets its own answer.
//! The batches are made up by the test (`PeeringApi::create_as_one_batch`: as if they had
//! arrived while another batch ran), against the real Postgres and NB of a [`TestPeerd`];
//! every claim is checked in Postgres too, not only in the answers. A caller going away is
//! its cancelled token (what a passed deadline does to a CreatePeering call).

use ovn_peerd::api::{ApiError, PeeringApi};
use ovn_peerd::proto::v1::{CreatePeeringRequest, Peering};
use ovn_peerd::store::Store;

use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::support::park;
use crate::support::peerd::TestPeerd;
use crate::support::vpc::create_vpc;

fn create(name: &str, local: &str, remote: &str, request_id: &str) -> CreatePeeringRequest {
    CreatePeeringRequest {
        peering: Some(Peering {
            name: name.into(),
            local_vpc: local.into(),
            remote_vpc: remote.into(),
            ..Default::default()
        }),
        request_id: request_id.into(),
        validate_only: false,
    }
}

/// A second API over the test's Postgres and NB (the served one is not reachable in-process).
async fn api(t: &TestPeerd) -> PeeringApi {
    let store = Store::connect_lazy(&t.db.url).expect("store");
    PeeringApi::new(
        store,
        t.nb_client.clone(),
        ovn_peerd::startup::api_settings(&t.config),
    )
}

/// The fields a refusal names.
fn fields(e: &ApiError) -> Vec<String> {
    match e {
        ApiError::Refused(r) => r.violations.iter().map(|v| v.field.clone()).collect(),
        ApiError::AlreadyExists { field, .. } => vec![field.to_string()],
        ApiError::RequestIdReused(_) => vec!["request_id".into()],
        other => panic!("not a refusal: {other:?}"),
    }
}

/// (name, local_vpc, remote_vpc, local link) of every stored peering, by name.
async fn stored(t: &TestPeerd) -> Vec<(String, String, String, String)> {
    let pool = sqlx::PgPool::connect(&t.db.url).await.expect("connect");
    sqlx::query_as("SELECT name, local_vpc, remote_vpc, host(local_v4) FROM peerings ORDER BY name")
        .fetch_all(&pool)
        .await
        .expect("peerings")
}

/// How many transactions wrote the stored peerings (their distinct `xmin`): 1 when the
/// batch was one transaction, not a fallback to one create at a time.
async fn writers(t: &TestPeerd) -> i64 {
    let pool = sqlx::PgPool::connect(&t.db.url).await.expect("connect");
    sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM peerings")
        .fetch_one(&pool)
        .await
        .expect("xmin")
}

fn row(name: &str, local: &str, remote: &str, link: &str) -> (String, String, String, String) {
    (name.into(), local.into(), remote.into(), link.into())
}

#[tokio::test]
async fn a_later_create_of_a_batch_sees_the_earlier_ones() {
    // vpc-2 and vpc-3 have the same subnet: peering both with vpc-1 would give vpc-1 two
    // routes to 10.2.0.0/24. Only the rules catch that (no constraint does): the second
    // create of the batch must be judged with the first one in view.
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    create_vpc(&t.nb, "vpc-3", &["10.2.0.1/24"]);
    create_vpc(&t.nb, "vpc-4", &["10.4.0.1/24"]);
    let api = api(&t).await;
    let answers = api
        .create_as_one_batch(vec![
            create("a", "vpc-1", "vpc-2", ""),
            create("b", "vpc-1", "vpc-3", ""),
            // On the same hub, after a refusal: its link is the next one free on vpc-1.
            create("c", "vpc-4", "vpc-1", ""),
        ])
        .await;
    let a = answers[0].as_ref().expect("a is stored");
    assert_eq!(a.local_connect_ip, "169.254.0.1/30");
    let refused = answers[1].as_ref().expect_err("b overlaps a");
    assert!(
        fields(refused).iter().any(|f| f == "peering.local_routes"),
        "{refused:?}"
    );
    let c = answers[2].as_ref().expect("c is stored");
    assert_eq!(c.local_connect_ip, "169.254.0.5/30", "vpc-1's next link");
    assert_eq!(
        stored(&t).await,
        vec![
            row("a", "vpc-1", "vpc-2", "169.254.0.1"),
            row("c", "vpc-4", "vpc-1", "169.254.0.5"),
        ]
    );
    assert_eq!(writers(&t).await, 1, "one transaction");
}

#[tokio::test]
async fn a_refusal_in_a_batch_refuses_only_that_create() {
    let t = TestPeerd::start().await;
    for (vpc, subnet) in [
        ("vpc-1", "10.1.0.1/24"),
        ("vpc-2", "10.2.0.1/24"),
        ("vpc-3", "10.3.0.1/24"),
        ("vpc-4", "10.4.0.1/24"),
    ] {
        create_vpc(&t.nb, vpc, &[subnet]);
    }
    let api = api(&t).await;
    let answers = api
        .create_as_one_batch(vec![
            create("a", "vpc-1", "vpc-2", ""),
            create("b", "vpc-3", "vpc-404", ""),
            create("c", "vpc-3", "vpc-4", ""),
            // The name of an earlier create of the batch.
            create("a", "vpc-2", "vpc-4", ""),
        ])
        .await;
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    let missing = answers[1].as_ref().expect_err("vpc-404 has no router");
    assert_eq!(fields(missing), vec!["peering.remote_vpc".to_string()]);
    assert!(answers[2].is_ok(), "{:?}", answers[2]);
    let taken = answers[3]
        .as_ref()
        .expect_err("the name is the first create's");
    assert_eq!(fields(taken), vec!["peering.name".to_string()]);
    assert_eq!(
        stored(&t).await,
        vec![
            row("a", "vpc-1", "vpc-2", "169.254.0.1"),
            row("c", "vpc-3", "vpc-4", "169.254.0.1"),
        ]
    );
    assert_eq!(writers(&t).await, 1, "one transaction");
}

#[tokio::test]
async fn a_request_id_retried_inside_a_batch_gets_the_first_answer() {
    let t = TestPeerd::start().await;
    for (vpc, subnet) in [
        ("vpc-1", "10.1.0.1/24"),
        ("vpc-2", "10.2.0.1/24"),
        ("vpc-3", "10.3.0.1/24"),
        ("vpc-4", "10.4.0.1/24"),
    ] {
        create_vpc(&t.nb, vpc, &[subnet]);
    }
    let api = api(&t).await;
    let answers = api
        .create_as_one_batch(vec![
            create("a", "vpc-1", "vpc-2", "req-1"),
            // The same request again (a client's retry racing its first try).
            create("a", "vpc-1", "vpc-2", "req-1"),
            // The same request_id with another request.
            create("b", "vpc-1", "vpc-3", "req-1"),
            create("c", "vpc-3", "vpc-4", "req-2"),
        ])
        .await;
    let first = answers[0].as_ref().expect("stored");
    assert_eq!(answers[1].as_ref().expect("the first answer"), first);
    let reused = answers[2].as_ref().expect_err("another request");
    assert_eq!(fields(reused), vec!["request_id".to_string()]);
    assert!(answers[3].is_ok(), "{:?}", answers[3]);
    assert_eq!(
        stored(&t).await,
        vec![
            row("a", "vpc-1", "vpc-2", "169.254.0.1"),
            row("c", "vpc-3", "vpc-4", "169.254.0.1"),
        ]
    );
    // Judged in the batch, not left to the unique index (whose violation would send
    // every create of the batch through a transaction of its own).
    assert_eq!(writers(&t).await, 1, "one transaction");
    // And a batch after it: the retry is answered from Postgres, still the same.
    let again = api
        .create_as_one_batch(vec![create("a", "vpc-1", "vpc-2", "req-1")])
        .await;
    assert_eq!(again[0].as_ref().expect("the first answer"), first);
}

#[tokio::test]
async fn a_create_whose_caller_went_away_before_the_commit_is_not_stored_and_the_others_are() {
    let t = TestPeerd::start().await;
    for (vpc, subnet) in [
        ("vpc-1", "10.1.0.1/24"),
        ("vpc-2", "10.2.0.1/24"),
        ("vpc-3", "10.3.0.1/24"),
        ("vpc-4", "10.4.0.1/24"),
    ] {
        create_vpc(&t.nb, vpc, &[subnet]);
    }
    let api = api(&t).await;
    // The batch's insert waits behind the test's lock on `peerings` (reads go on).
    let mut holder = sqlx::PgConnection::connect(&t.db.url)
        .await
        .expect("connect");
    let held = park::hold_peerings_table(&mut holder).await;
    let gone = CancellationToken::new();
    let a_gone = gone.clone();
    let batch = tokio::spawn(async move {
        api.create_as_one_batch_with(vec![
            (create("a", "vpc-1", "vpc-2", ""), a_gone),
            (create("b", "vpc-3", "vpc-4", ""), CancellationToken::new()),
        ])
        .await
    });
    park::wait_for_waiter(&t.db.url, "INSERT INTO peerings").await;
    // a's caller goes away (its deadline passed) while the batch's insert waits.
    gone.cancel();
    held.rollback().await.expect("release");
    let answers = batch.await.expect("batch");
    assert!(answers[0].is_err(), "a's caller is gone: {:?}", answers[0]);
    assert!(answers[1].is_ok(), "{:?}", answers[1]);
    assert_eq!(
        stored(&t).await,
        vec![row("b", "vpc-3", "vpc-4", "169.254.0.1")]
    );
}
