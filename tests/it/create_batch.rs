//! CreatePeering's group commit (`src/api/create_batch.rs`): the creates of one batch are
//! judged in arrival order, each seeing the earlier ones, and each gets its own answer.
//! The batches are made up by the test (`PeeringApi::create_as_one_batch`: as if they had
//! arrived while another batch ran), against the real Postgres and NB of a [`TestPeerd`];
//! every claim is checked in Postgres too, not only in the answers. A caller going away is
//! its cancelled token (what a passed deadline does to a CreatePeering call).

use ovn_peerd::api::{ApiError, PeeringApi, PARKED_BATCHES};
use ovn_peerd::peering::topology::port_names;
use ovn_peerd::proto::v1::{CreatePeeringRequest, Peering};
use ovn_peerd::store::{NewPeering, PeeringState, Store};

use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::support::park;
use crate::support::peerd::TestPeerd;
use crate::support::vpc::create_vpc;
use ovn_peerd_test_support::wait_until_async;

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
    PeeringApi::new(
        t.store(),
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
    vpcs(&t, 1..=4);
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
    vpcs(&t, 1..=4);
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

/// Routers `vpc-i` with the subnet `10.i.0.1/24`, for each `i` of `ids`.
fn vpcs(t: &TestPeerd, ids: std::ops::RangeInclusive<u32>) {
    for i in ids {
        create_vpc(&t.nb, &format!("vpc-{i}"), &[&format!("10.{i}.0.1/24")]);
    }
}

/// Runs `sql` in the test's database (triggers and hand-edited rows the tests need).
async fn sql(t: &TestPeerd, sql: &str) {
    let pool = sqlx::PgPool::connect(&t.db.url).await.expect("connect");
    sqlx::raw_sql(sql)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn a_create_whose_caller_went_away_before_the_insert_is_not_stored_and_the_others_are() {
    let t = TestPeerd::start().await;
    vpcs(&t, 1..=4);
    let api = api(&t).await;
    // The batch waits for its read: the test holds `peerings` against reads.
    let mut c = sqlx::PgConnection::connect(&t.db.url)
        .await
        .expect("connect");
    let mut held = c.begin().await.expect("begin");
    sqlx::query("LOCK TABLE peerings IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *held)
        .await
        .expect("lock peerings");
    let gone = CancellationToken::new();
    let a_gone = gone.clone();
    let batch = tokio::spawn(async move {
        api.create_as_one_batch_with(vec![
            (create("a", "vpc-1", "vpc-2", ""), a_gone),
            (create("b", "vpc-3", "vpc-4", ""), CancellationToken::new()),
            // a's pair the other way round: ALREADY_EXISTS if a were still judged.
            (create("c", "vpc-2", "vpc-1", ""), CancellationToken::new()),
        ])
        .await
    });
    // The batch's read (the `LATERAL` arms of `list_for_batch`), after its VPC locks.
    park::wait_for_waiter(&t.db.url, "LATERAL").await;
    // a's caller goes away (its deadline passed) before the batch could insert anything.
    gone.cancel();
    held.rollback().await.expect("release peerings");
    let answers = batch.await.expect("batch");
    assert!(answers[0].is_err(), "a's caller is gone: {:?}", answers[0]);
    assert!(answers[1].is_ok(), "{:?}", answers[1]);
    assert!(answers[2].is_ok(), "judged without a: {:?}", answers[2]);
    assert_eq!(
        stored(&t).await,
        vec![
            row("b", "vpc-3", "vpc-4", "169.254.0.1"),
            row("c", "vpc-2", "vpc-1", "169.254.0.1"),
        ]
    );
    assert_eq!(
        writers(&t).await,
        1,
        "one transaction, not rolled back and run again"
    );
}

#[tokio::test]
async fn a_caller_gone_during_the_insert_does_not_roll_the_batch_back() {
    // Rolling back and running again without it would let close deadlines livelock the
    // batches: its outcome is unknown to it, as with any call whose deadline passes.
    let t = TestPeerd::start().await;
    vpcs(&t, 1..=4);
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
            (create("a", "vpc-1", "vpc-2", "req-a"), a_gone),
            (create("b", "vpc-3", "vpc-4", ""), CancellationToken::new()),
        ])
        .await
    });
    park::wait_for_waiter(&t.db.url, "INSERT INTO peerings").await;
    gone.cancel();
    held.rollback().await.expect("release");
    let answers = batch.await.expect("batch");
    assert!(answers[1].is_ok(), "{:?}", answers[1]);
    assert_eq!(
        stored(&t).await,
        vec![
            row("a", "vpc-1", "vpc-2", "169.254.0.1"),
            row("b", "vpc-3", "vpc-4", "169.254.0.1"),
        ]
    );
    assert_eq!(writers(&t).await, 1, "one transaction");
}

#[tokio::test]
async fn a_batch_that_fails_gives_every_caller_the_same_error() {
    let t = TestPeerd::start().await;
    vpcs(&t, 1..=4);
    // Not a constraint: an error the batch cannot tell apart per create.
    sql(
        &t,
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           RAISE EXCEPTION 'boom'; END $$; \
         CREATE TRIGGER boom BEFORE INSERT ON peerings FOR EACH ROW EXECUTE FUNCTION boom();",
    )
    .await;
    let api = api(&t).await;
    let answers = api
        .create_as_one_batch(vec![
            create("a", "vpc-1", "vpc-2", ""),
            create("b", "vpc-3", "vpc-4", ""),
        ])
        .await;
    let errors: Vec<String> = answers
        .iter()
        .map(|a| match a {
            Err(e @ ApiError::Internal(_)) => e.to_string(),
            other => panic!("not INTERNAL: {other:?}"),
        })
        .collect();
    assert_eq!(errors[0], errors[1]);
    assert!(stored(&t).await.is_empty());
}

#[tokio::test]
async fn a_neighbour_that_does_not_decode_fails_only_the_creates_it_touches() {
    let t = TestPeerd::start().await;
    vpcs(&t, 1..=4);
    vpcs(&t, 5..=8);
    let api = api(&t).await;
    let made = api
        .create_as_one_batch(vec![
            create("bad-route", "vpc-5", "vpc-6", ""),
            create("bad-state", "vpc-7", "vpc-8", ""),
        ])
        .await;
    assert!(made.iter().all(Result::is_ok), "{made:?}");
    // Hand-edited rows: a route that is no prefix (the rules cannot read it), a state no
    // version knows (the row does not decode).
    for edit in [
        r#"UPDATE peerings SET local_routes = '[{"cidr": "nonsense", "policy": "dst-ip"}]'
             WHERE name = 'bad-route'"#,
        "ALTER TABLE peerings DROP CONSTRAINT peerings_state_check",
        "UPDATE peerings SET state = 'bogus' WHERE name = 'bad-state'",
    ] {
        sql(&t, edit).await;
    }
    let answers = api
        .create_as_one_batch(vec![
            create("x", "vpc-5", "vpc-1", ""),
            create("y", "vpc-2", "vpc-8", ""),
            create("z", "vpc-3", "vpc-4", ""),
        ])
        .await;
    for a in &answers[..2] {
        assert!(matches!(a, Err(ApiError::Internal(_))), "{a:?}");
    }
    assert!(answers[2].is_ok(), "{:?}", answers[2]);
    let names: Vec<String> = stored(&t).await.into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["bad-route", "bad-state", "z"]);
}

#[tokio::test]
async fn a_batch_that_loses_a_deadlock_is_run_one_create_at_a_time() {
    let t = TestPeerd::start().await;
    vpcs(&t, 1..=4);
    // The first insert of `b` fails as a deadlock victim does (a sequence is not rolled
    // back: the next try goes through).
    sql(
        &t,
        "CREATE SEQUENCE tries; \
         CREATE FUNCTION victim() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.name = 'b' AND nextval('tries') = 1 THEN \
             RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; \
           END IF; RETURN NEW; END $$; \
         CREATE TRIGGER victim BEFORE INSERT ON peerings FOR EACH ROW EXECUTE FUNCTION victim();",
    )
    .await;
    let api = api(&t).await;
    let answers = api
        .create_as_one_batch(vec![
            create("a", "vpc-1", "vpc-2", ""),
            create("b", "vpc-3", "vpc-4", ""),
        ])
        .await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(stored(&t).await.len(), 2);
    assert_eq!(writers(&t).await, 2, "one create at a time");
}

#[tokio::test]
async fn a_batch_inserts_its_rows_in_name_order() {
    // Two batches taking the same unique keys in opposite orders could deadlock.
    let t = TestPeerd::start().await;
    vpcs(&t, 1..=4);
    sql(
        &t,
        "CREATE TABLE insert_order (n serial, name text); \
         CREATE FUNCTION log_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO insert_order (name) VALUES (NEW.name); RETURN NEW; END $$; \
         CREATE TRIGGER log_insert BEFORE INSERT ON peerings FOR EACH ROW \
           EXECUTE FUNCTION log_insert();",
    )
    .await;
    let api = api(&t).await;
    let answers = api
        .create_as_one_batch(vec![
            create("zz", "vpc-1", "vpc-2", ""),
            create("aa", "vpc-3", "vpc-4", ""),
        ])
        .await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let pool = sqlx::PgPool::connect(&t.db.url).await.expect("connect");
    let order: Vec<String> = sqlx::query_scalar("SELECT name FROM insert_order ORDER BY n")
        .fetch_all(&pool)
        .await
        .expect("order");
    assert_eq!(order, ["aa", "zz"]);
}

fn linked(name: &str, local: &str, remote: &str) -> CreatePeeringRequest {
    let mut req = create(name, local, remote, "");
    let p = req.peering.as_mut().expect("peering");
    p.local_connect_ip = "169.254.9.1/30".into();
    p.remote_connect_ip = "169.254.9.2/30".into();
    req
}

#[tokio::test]
async fn a_given_link_held_by_a_pending_request_is_refused_while_judging() {
    // The topology rules do not see requests awaiting acceptance; their links are held all
    // the same. Left to the links' constraint, it would fail the batch's insert and send
    // every create of the batch through a transaction of its own.
    let t = TestPeerd::start().await;
    vpcs(&t, 1..=4);
    vpcs(&t, 5..=6);
    let api = api(&t).await;
    let made = api
        .create_as_one_batch(vec![linked("request", "vpc-1", "vpc-2")])
        .await;
    assert!(made[0].is_ok(), "{made:?}");
    // As a cross-tenant request stores it: awaiting the remote tenant, nothing in NB.
    sql(
        &t,
        "UPDATE peerings SET state = 'pending_acceptance' WHERE name = 'request'",
    )
    .await;
    let answers = api
        .create_as_one_batch(vec![
            create("y", "vpc-4", "vpc-2", ""),
            linked("x", "vpc-1", "vpc-3"),
            create("z", "vpc-5", "vpc-6", ""),
        ])
        .await;
    let refused = answers[1].as_ref().expect_err("x's link is the request's");
    assert_eq!(
        fields(refused),
        vec!["peering.local_connect_ip".to_string()]
    );
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    assert!(answers[2].is_ok(), "{:?}", answers[2]);
    let names: Vec<String> = stored(&t).await.into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["request", "y", "z"]);
    // The request's update, then the batch as one transaction.
    assert_eq!(writers(&t).await, 2, "y and z in one transaction");
}

#[tokio::test]
async fn creates_of_vpcs_locked_elsewhere_do_not_hold_back_unrelated_ones() {
    // The test holds the locks of two hubs as another replica's batch, an UpdatePeering or
    // an AcceptPeering would: this replica's batcher does not know of them. Creates on the
    // hubs must not take the turns (two hubs, two turns) nor stall the unrelated creates
    // batched with them: those are stored while the locks are held, the hubs' after.
    let t = TestPeerd::start().await;
    let names = [
        "vpc-1", "vpc-2", "vpc-11", "vpc-12", "vpc-13", "vpc-14", "vpc-31", "vpc-32", "vpc-33",
        "vpc-34", "vpc-35", "vpc-36",
    ];
    for (n, vpc) in names.iter().enumerate() {
        create_vpc(&t.nb, vpc, &[&format!("10.{}.0.1/24", n + 1)]);
    }
    let api = std::sync::Arc::new(api(&t).await);
    let locker = Store::connect_lazy(&t.db.url).expect("store");
    let held = locker
        .peering_create_begin(&["vpc-1", "vpc-2"], None)
        .await
        .expect("lock the hubs");
    let pool = sqlx::PgPool::connect(&t.db.url).await.expect("connect");
    let through_queue = |name: &str, local: &str, remote: &str| {
        let (a, req) = (api.clone(), create(name, local, remote, ""));
        tokio::spawn(async move { a.create_through_the_queue_for_tests(req).await })
    };
    // One create per hub, each in a batch of its own: both wait for their hub's lock...
    let h1 = through_queue("h1", "vpc-1", "vpc-11");
    let h2 = through_queue("h2", "vpc-2", "vpc-12");
    wait_until_async("both hubs' creates wait", park::HANG, || async {
        parked_batches(&pool).await == 2
    })
    .await
    .expect("parked");
    // ...and hold no turn: an unrelated create through the queue goes through.
    let u1 = through_queue("u1", "vpc-31", "vpc-32");
    wait_until_async("the unrelated create is answered", park::HANG, || async {
        u1.is_finished()
    })
    .await
    .expect("not held back by the hubs' locks");
    u1.await.expect("task").expect("u1 is stored");
    // In one batch with the hubs' creates, the unrelated ones are stored at once.
    let a = api.clone();
    let batch = tokio::spawn(async move {
        a.create_as_one_batch(vec![
            create("h3", "vpc-13", "vpc-1", ""),
            create("u2", "vpc-33", "vpc-34", ""),
            create("h4", "vpc-2", "vpc-14", ""),
            create("u3", "vpc-35", "vpc-36", ""),
        ])
        .await
    });
    wait_until_async(
        "the batch's unrelated creates are stored",
        park::HANG,
        || async {
            let names: Vec<String> = stored(&t).await.into_iter().map(|r| r.0).collect();
            names == ["u1", "u2", "u3"]
        },
    )
    .await
    .expect("the batch stored u2 and u3 with the hubs locked");
    assert!(!h1.is_finished() && !h2.is_finished() && !batch.is_finished());
    drop(held);
    h1.await.expect("task").expect("h1 is stored");
    h2.await.expect("task").expect("h2 is stored");
    for answer in batch.await.expect("batch") {
        answer.expect("stored");
    }
    let names: Vec<String> = stored(&t).await.into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["h1", "h2", "h3", "h4", "u1", "u2", "u3"]);
}

#[tokio::test]
async fn creates_that_leave_their_batch_at_one_busy_vpc_are_stored_together_once_it_is_free() {
    // vpc-1's lock is held elsewhere: the batch's two creates on vpc-1 leave it and go on as
    // one batch of their own that waits for the lock (one connection at the lock, one read,
    // one transaction: not a lone create each, which at a hub reads all its peerings each),
    // judged in arrival order (vpc-13 has vpc-11's subnet: h2 would give vpc-1 a second
    // route to it, refused by the rules once h1 is in view); the unrelated create is stored
    // at once.
    let t = TestPeerd::start().await;
    for (vpc, gw) in [
        ("vpc-1", "10.1.0.1/24"),
        ("vpc-11", "10.11.0.1/24"),
        ("vpc-12", "10.12.0.1/24"),
        ("vpc-13", "10.11.0.1/24"),
        ("vpc-31", "10.31.0.1/24"),
        ("vpc-32", "10.32.0.1/24"),
    ] {
        create_vpc(&t.nb, vpc, &[gw]);
    }
    let api = std::sync::Arc::new(api(&t).await);
    let locker = Store::connect_lazy(&t.db.url).expect("store");
    let held = locker
        .peering_create_begin(&["vpc-1"], None)
        .await
        .expect("lock vpc-1");
    let pool = sqlx::PgPool::connect(&t.db.url).await.expect("connect");
    let a = api.clone();
    let batch = tokio::spawn(async move {
        a.create_as_one_batch(vec![
            create("h1", "vpc-1", "vpc-11", ""),
            create("u1", "vpc-31", "vpc-32", ""),
            create("h2", "vpc-13", "vpc-1", ""),
            create("h3", "vpc-1", "vpc-12", ""),
        ])
        .await
    });
    wait_until_async(
        "u1 stored, the others waiting at one lock",
        park::HANG,
        || async {
            let names: Vec<String> = stored(&t).await.into_iter().map(|r| r.0).collect();
            names == ["u1"] && parked_batches(&pool).await == 1
        },
    )
    .await
    .expect("u1 stored while vpc-1 is locked; one session waits for it");
    drop(held);
    let answers = batch.await.expect("batch");
    assert!(answers[0].is_ok() && answers[3].is_ok(), "{answers:?}");
    let refused = answers[2].as_ref().expect_err("h2 overlaps h1 in vpc-1");
    assert!(
        fields(refused).iter().any(|f| f.ends_with("_routes")),
        "{refused:?}"
    );
    let names: Vec<String> = stored(&t).await.into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["h1", "h3", "u1"]);
    // u1's transaction, and one for h1 and h3.
    assert_eq!(writers(&t).await, 2, "h1 and h3 in one transaction");
}

#[tokio::test]
async fn at_most_parked_batches_wait_at_locks_held_elsewhere() {
    // One more busy VPC than there are places: the creates of each leave the batch, and all
    // but one batch of them wait at their lock in Postgres (a pool connection each); the
    // last waits for a place, holding no connection. All are stored once the locks go.
    let t = TestPeerd::start().await;
    let busy: Vec<String> = (1..=PARKED_BATCHES + 1)
        .map(|k| format!("hub-{k}"))
        .collect();
    for (k, hub) in busy.iter().enumerate() {
        create_vpc(&t.nb, hub, &[&format!("10.{}.0.1/24", k + 1)]);
        create_vpc(
            &t.nb,
            &format!("s-{k}"),
            &[&format!("10.{}.0.1/24", k + 101)],
        );
    }
    let api = std::sync::Arc::new(api(&t).await);
    let locker = Store::connect_lazy(&t.db.url).expect("store");
    let hubs: Vec<&str> = busy.iter().map(String::as_str).collect();
    let held = locker
        .peering_create_begin(&hubs, None)
        .await
        .expect("lock the hubs");
    let pool = sqlx::PgPool::connect(&t.db.url).await.expect("connect");
    let a = api.clone();
    let creates: Vec<CreatePeeringRequest> = busy
        .iter()
        .enumerate()
        .map(|(k, hub)| create(&format!("p{k}"), hub, &format!("s-{k}"), ""))
        .collect();
    let batch = tokio::spawn(async move { a.create_as_one_batch(creates).await });
    wait_until_async("the places are taken", park::HANG, || async {
        parked_batches(&pool).await == PARKED_BATCHES as i64
    })
    .await
    .expect("one session waits per place");
    // Still no more than the places, however long the locks are held: the wait above saw
    // them all taken, and nothing commits before the locks go.
    assert_eq!(parked_batches(&pool).await, PARKED_BATCHES as i64);
    assert!(!batch.is_finished());
    drop(held);
    for answer in batch.await.expect("batch") {
        answer.expect("stored");
    }
    assert_eq!(stored(&t).await.len(), PARKED_BATCHES + 1);
}

/// How many sessions wait for a VPC lock.
async fn parked_batches(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND wait_event_type = 'Lock' AND query ILIKE '%pg_advisory_xact_lock%'",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity")
}

#[tokio::test]
async fn a_batch_that_waited_for_a_vpc_lock_judges_what_its_holder_stored() {
    // A create reads under its VPCs' locks (vpc-1's being held, it leaves its batch and waits
    // for the lock in a batch of its own): what their holder committed while it waited is
    // what it is judged against. vpc-9 has vpc-2's subnet: once x (vpc-1 <-> vpc-2) is
    // stored, a peering of vpc-1 with vpc-9 is refused by the topology rules alone, which no
    // constraint repeats (x's link is not the one `a` is given).
    let t = TestPeerd::start().await;
    vpcs(&t, 1..=2);
    create_vpc(&t.nb, "vpc-9", &["10.2.0.1/24"]);
    let api = api(&t).await;
    let locker = Store::connect_lazy(&t.db.url).expect("store");
    let held = locker
        .peering_create_begin(&["vpc-1"], None)
        .await
        .expect("lock");
    let batch = tokio::spawn(async move {
        api.create_as_one_batch_with(vec![(
            create("a", "vpc-1", "vpc-9", ""),
            CancellationToken::new(),
        )])
        .await
    });
    park::wait_for_waiter(&t.db.url, "pg_advisory_xact_lock").await;
    let x = NewPeering {
        name: "x".into(),
        local_vpc: "vpc-1".into(),
        remote_vpc: "vpc-2".into(),
        // Not the link `a` would be given: no link constraint to fall back on.
        local_v4: Some("169.254.0.9/30".parse().unwrap()),
        remote_v4: Some("169.254.0.10/30".parse().unwrap()),
        local_v6: None,
        remote_v6: None,
        local_routes: vec![],
        remote_routes: vec![],
        request_id: None,
        labels: Default::default(),
        state: PeeringState::Pending,
        state_message: String::new(),
    };
    held.insert(&x, None, &port_names("vpc-1", "vpc-2"))
        .await
        .expect("x stored (commits, releasing vpc-1)");
    let answers = batch.await.expect("batch");
    let refused = answers[0]
        .as_ref()
        .expect_err("a overlaps x's remote subnet");
    assert!(fields(refused) == ["peering.local_routes"], "{refused:?}");
    assert_eq!(
        stored(&t).await,
        vec![row("x", "vpc-1", "vpc-2", "169.254.0.9")]
    );
}

#[tokio::test]
async fn creates_that_left_their_batch_wait_at_the_lock_until_their_latest_deadline() {
    // vpc-1's lock is held elsewhere; p1 and p2 leave their batch and wait for it as one
    // batch. p1's deadline comes first (its caller goes then, as a handler's timer does):
    // the batch still waits, until p2's, so p2 is stored once the lock is free.
    let t = TestPeerd::start().await;
    vpcs(&t, 1..=3);
    let api = std::sync::Arc::new(api(&t).await);
    let locker = Store::connect_lazy(&t.db.url).expect("store");
    let held = locker
        .peering_create_begin(&["vpc-1"], None)
        .await
        .expect("lock vpc-1");
    let pool = sqlx::PgPool::connect(&t.db.url).await.expect("connect");
    let now = std::time::Instant::now();
    let (d1, d2) = (
        now + std::time::Duration::from_secs(1),
        now + std::time::Duration::from_secs(600),
    );
    let (gone1, gone2) = (CancellationToken::new(), CancellationToken::new());
    let a = api.clone();
    let reqs = vec![
        (create("p1", "vpc-1", "vpc-2", ""), gone1.clone(), Some(d1)),
        (create("p2", "vpc-1", "vpc-3", ""), gone2, Some(d2)),
    ];
    let batch = tokio::spawn(async move { a.create_as_one_batch_until(reqs).await });
    // A clock condition, on purpose: what is tested is what happens after p1's deadline.
    wait_until_async("p1's deadline passed", park::HANG, || async {
        std::time::Instant::now() >= d1
    })
    .await
    .expect("time passes");
    gone1.cancel();
    assert_eq!(
        parked_batches(&pool).await,
        1,
        "the batch still waits for vpc-1 past p1's deadline"
    );
    drop(held);
    let answers = batch.await.expect("batch");
    assert!(answers[1].is_ok(), "{answers:?}");
    let names: Vec<String> = stored(&t).await.into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["p2"]);
}

#[tokio::test]
async fn a_batch_past_its_deadlines_at_a_lock_names_to_each_caller_only_its_own_vpcs() {
    // p1 and p2 (maybe two tenants) leave their batch for vpc-1's lock and wait together
    // until their deadlines: each answer names the VPCs of that create, not the other's.
    let t = TestPeerd::start().await;
    vpcs(&t, 1..=3);
    let api = api(&t).await;
    let locker = Store::connect_lazy(&t.db.url).expect("store");
    let _held = locker
        .peering_create_begin(&["vpc-1"], None)
        .await
        .expect("lock vpc-1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let answers = api
        .create_as_one_batch_until(vec![
            (
                create("p1", "vpc-1", "vpc-2", ""),
                CancellationToken::new(),
                Some(deadline),
            ),
            (
                create("p2", "vpc-3", "vpc-1", ""),
                CancellationToken::new(),
                Some(deadline),
            ),
        ])
        .await;
    let named: Vec<Vec<String>> = answers
        .into_iter()
        .map(|a| match a {
            Err(ApiError::LockBusy { vpcs, .. }) => vpcs,
            other => panic!("not a lock wait ended by the deadline: {other:?}"),
        })
        .collect();
    assert_eq!(named, [["vpc-1", "vpc-2"], ["vpc-1", "vpc-3"]]);
    assert!(stored(&t).await.is_empty());
}
