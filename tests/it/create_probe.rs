//! At a hub CreatePeering reads only the stored peerings that can take part in the rules for a
//! create (`ConflictQuery`, `CreateTx::list_for_batch_probe`), not every peering of its VPCs:
//! each test here is a conflict found only through one of the probe's ways to a neighbour that
//! shares neither the create's name, port names nor VPC pair. The API here counts every VPC as
//! a hub (`set_full_read_below_for_tests(0)`), so that these small VPCs take the probe; the
//! last tests check the switch between the full read of a small VPC and the probe.

use ovn_peerd::api::{ApiError, PeeringApi};
use ovn_peerd::peering::RefusalKind;
use ovn_peerd::proto::v1::{CreatePeeringRequest, Peering, PeeringRoute};
use ovn_peerd::store::Store;
use ovn_peerd_test_support::wait_until_async;
use std::time::Duration;

use crate::support::peerd::TestPeerd;
use crate::support::vpc::create_vpc;

fn create(name: &str, local: &str, remote: &str) -> CreatePeeringRequest {
    CreatePeeringRequest {
        peering: Some(Peering {
            name: name.into(),
            local_vpc: local.into(),
            remote_vpc: remote.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A second API over the test's Postgres and NB (the served one is not reachable in-process),
/// asking the probe for every batch.
async fn api(t: &TestPeerd) -> PeeringApi {
    api_reading_whole_below(t, 0).await
}

/// As [`api`], a VPC counting as a hub from `n` peerings on (on either side).
async fn api_reading_whole_below(t: &TestPeerd, n: usize) -> PeeringApi {
    let store = Store::connect_lazy(&t.db.url).expect("store");
    let api = PeeringApi::new(
        store,
        t.nb_client.clone(),
        ovn_peerd::startup::api_settings(&t.config),
    );
    api.set_full_read_below_for_tests(n);
    api
}

async fn one(api: &PeeringApi, req: CreatePeeringRequest) -> Result<Peering, ApiError> {
    api.create_as_one_batch(vec![req]).await.remove(0)
}

/// The refusal's (field, description) pairs; a rule's refusal is FAILED_PRECONDITION.
fn violations(r: Result<Peering, ApiError>) -> Vec<(String, String)> {
    match r {
        Err(ApiError::Refused(r)) => {
            assert_eq!(r.kind, RefusalKind::FailedPrecondition, "{r:?}");
            r.violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        }
        other => panic!("not a refusal: {other:?}"),
    }
}

/// A new spoke whose subnet overlaps another spoke's: the hub would route the overlap to
/// both. The other spoke's peering is found through NB (the VPCs with a subnet overlapping
/// the new spoke's networks, then that pair with the hub).
#[tokio::test]
async fn a_spoke_overlapping_another_spokes_subnet_is_refused() {
    spoke_overlapping_another_spokes_subnet(0).await;
}

/// The same below the hub bound: the hub's peerings are all read (no NB question).
#[tokio::test]
async fn a_spoke_overlapping_another_spokes_subnet_is_refused_by_the_full_read() {
    spoke_overlapping_another_spokes_subnet(ovn_peerd::api::FULL_READ_BELOW).await;
}

/// hub–s1 and hub–s3, then hub–x with x's subnet around s3's: refused, naming h3 alone.
async fn spoke_overlapping_another_spokes_subnet(full_read_below: usize) {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "hub", &["10.0.0.1/24"]);
    create_vpc(&t.nb, "s1", &["10.1.1.1/24"]);
    create_vpc(&t.nb, "s3", &["10.3.1.1/24"]);
    create_vpc(&t.nb, "x", &["10.3.0.1/16"]);
    let api = api_reading_whole_below(&t, full_read_below).await;
    for (name, spoke) in [("h1", "s1"), ("h3", "s3")] {
        one(&api, create(name, "hub", spoke)).await.expect(name);
    }
    // Its link given: an allocated one could take h3's link on the hub, and the links'
    // constraint would then send it to the one-at-a-time path, which reads everything.
    let mut hx = create("hx", "hub", "x");
    let p = hx.peering.as_mut().unwrap();
    p.local_connect_ip = "169.254.1.1/30".into();
    p.remote_connect_ip = "169.254.1.2/30".into();
    let refused = violations(one(&api, hx).await);
    assert!(
        refused
            .iter()
            .any(|(f, d)| f == "peering.local_routes" && d.contains("peering \"h3\"")),
        "{refused:?}"
    );
    assert!(
        !refused.iter().any(|(_, d)| d.contains("\"h1\"")),
        "{refused:?}"
    );
}

/// A hub's explicit route that covers a new spoke's subnet: the hub would route that subnet
/// two ways. The peering holding the route is read whole (explicit routes are few and no index
/// reaches into them).
#[tokio::test]
async fn a_spoke_inside_an_explicit_route_of_the_hub_is_refused() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "hub", &["10.0.0.1/24"]);
    create_vpc(&t.nb, "s1", &["10.1.1.1/24"]);
    create_vpc(&t.nb, "s9", &["10.9.1.1/24"]);
    let api = api(&t).await;
    let mut wide = create("h1", "hub", "s1");
    wide.peering.as_mut().unwrap().local_routes = vec![PeeringRoute {
        cidr: "10.9.0.0/16".into(),
        ..Default::default()
    }];
    one(&api, wide).await.expect("h1 with an explicit route");
    let refused = violations(one(&api, create("h9", "hub", "s9")).await);
    assert!(
        refused
            .iter()
            .any(|(f, d)| f == "peering.local_routes" && d.contains("peering \"h1\"")),
        "{refused:?}"
    );
}

/// Links are allocated at a hub without reading its peerings: every link of the VPCs is read
/// apart, so a batch of new spokes avoids the links of the spokes before it and commits as
/// one transaction (no constraint failure, no fallback to one create at a time).
#[tokio::test]
async fn links_allocated_at_a_hub_avoid_the_links_of_peerings_not_read() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "hub", &["10.0.0.1/24"]);
    for k in 1..=4 {
        create_vpc(&t.nb, &format!("s{k}"), &[&format!("10.{k}.1.1/24")]);
    }
    let api = api(&t).await;
    one(&api, create("h1", "hub", "s1")).await.expect("h1");
    one(&api, create("h2", "hub", "s2")).await.expect("h2");
    let made = api
        .create_as_one_batch(vec![create("h3", "hub", "s3"), create("h4", "hub", "s4")])
        .await;
    assert!(made.iter().all(Result::is_ok), "{made:?}");
    let pool = sqlx::PgPool::connect(&t.db.url).await.expect("connect");
    let links: Vec<(String, String, String)> =
        sqlx::query_as("SELECT name, host(local_v4), xmin::text FROM peerings ORDER BY name")
            .fetch_all(&pool)
            .await
            .expect("peerings");
    let hosts: std::collections::BTreeSet<&str> = links.iter().map(|l| l.1.as_str()).collect();
    assert_eq!(hosts.len(), 4, "{links:?}");
    // h3 and h4 in one transaction: the batch's insert did not hit the links' constraint.
    assert_eq!(links[2].2, links[3].2, "{links:?}");
}

/// The probe's VPC pairs are matched whatever the database's collation: in `en_US`
/// `least('core-hub', 'core2')` is `'core2'` (the '-' is ignored at the first level) while
/// byte order puts `core-hub` first. The stored hub–core2 peering must still be read when
/// judging hub–lab, lab's subnet inside core2's: else the hub would route part of core2's
/// traffic to lab.
#[tokio::test]
async fn a_vpc_pair_is_found_in_an_en_us_database() {
    let t = TestPeerd::start_en_us().await;
    create_vpc(&t.nb, "core-hub", &["10.0.0.1/24"]);
    create_vpc(&t.nb, "core2", &["10.2.0.1/16"]);
    create_vpc(&t.nb, "lab", &["10.2.5.1/24"]);
    let api = api(&t).await;
    one(&api, create("q", "core-hub", "core2"))
        .await
        .expect("q");
    let refused = violations(one(&api, create("p", "core-hub", "lab")).await);
    assert!(
        refused.iter().any(|(_, d)| d.contains("peering \"q\"")),
        "{refused:?}"
    );
}

/// A VPC with as many peerings as the bound (on one side) is a hub: the read of every
/// peering of the batch's VPCs stops at the bound (here 2 of the hub's 3, by name: h1 and
/// h2), and the create is judged against the probe's read instead, which finds h3. (Its link
/// given, so that no constraint sends it to the one-at-a-time path, which reads everything.)
#[tokio::test]
async fn a_vpc_at_the_bound_is_judged_through_the_probe() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "hub", &["10.0.0.1/24"]);
    for k in 1..=3 {
        create_vpc(&t.nb, &format!("s{k}"), &[&format!("10.{k}.1.1/24")]);
    }
    create_vpc(&t.nb, "x", &["10.3.0.1/16"]);
    let api = api_reading_whole_below(&t, 2).await;
    for k in 1..=3 {
        let name = format!("h{k}");
        one(&api, create(&name, "hub", &format!("s{k}")))
            .await
            .expect(&name);
    }
    let mut hx = create("hx", "x", "hub");
    let p = hx.peering.as_mut().unwrap();
    p.local_connect_ip = "169.254.1.1/30".into();
    p.remote_connect_ip = "169.254.1.2/30".into();
    let refused = violations(one(&api, hx).await);
    assert!(
        refused.iter().any(|(_, d)| d.contains("peering \"h3\"")),
        "{refused:?}"
    );
}

/// A subnet changed on a router after the probe's index of NB subnets was made is seen: the
/// index follows NB by the rows that changed, a port's networks among them (s1's subnet moves
/// inside x's, so the hub's route to s1 and its route to x would be ambiguous; only the new
/// subnet finds s1, hence h1).
#[tokio::test]
async fn a_subnet_changed_after_an_earlier_probe_is_seen() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "hub", &["10.0.0.1/24"]);
    create_vpc(&t.nb, "s1", &["10.1.1.1/24"]);
    create_vpc(&t.nb, "x", &["10.9.0.1/16"]);
    let api = api(&t).await;
    one(&api, create("h1", "hub", "s1")).await.expect("h1");
    t.nb.nbctl(&[
        "set",
        "Logical_Router_Port",
        "s1-s0",
        "networks=\"10.9.1.1/24\"",
    ]);
    wait_until_async(
        "the replica to see s1's new subnet",
        Duration::from_secs(10),
        || async {
            t.nb_client
                .cache()
                .port_by_name("s1-s0")
                .is_some_and(|p| *p.networks == ["10.9.1.1/24"])
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut hx = create("hx", "hub", "x");
    let p = hx.peering.as_mut().unwrap();
    p.local_connect_ip = "169.254.1.1/30".into();
    p.remote_connect_ip = "169.254.1.2/30".into();
    let refused = violations(one(&api, hx).await);
    assert!(
        refused.iter().any(|(_, d)| d.contains("peering \"h1\"")),
        "{refused:?}"
    );
}

/// Many small VPCs together: a batch whose full read would pass `FULL_READ_ROWS` (1,024) rows
/// asks the probe instead, as at a hub, though none of its VPCs is one. With the probe's SQL
/// function gone, a batch under the budget is still stored (it read all, asked no probe) and
/// one over it fails (it asked the probe).
#[tokio::test]
async fn a_batch_whose_full_read_passes_the_row_budget_asks_the_probe() {
    let t = TestPeerd::start().await;
    let api = api_reading_whole_below(&t, ovn_peerd::api::FULL_READ_BELOW).await;
    let pool = sqlx::PgPool::connect(&t.db.url).await.expect("pool");
    // v0..v29, each the local VPC of 50 stored peerings: 1,500 rows, no VPC a hub.
    for i in 0..30 {
        create_vpc(&t.nb, &format!("v{i}"), &[&format!("10.{i}.0.1/24")]);
    }
    sqlx::query(
        "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4) \
         SELECT format('p%s-%s', i, k), format('v%s', i), format('w%s-%s', i, k), \
                format('169.254.%s.1/30', k)::inet, format('169.254.%s.2/30', k)::inet \
         FROM generate_series(0, 29) AS i, generate_series(1, 50) AS k",
    )
    .execute(&pool)
    .await
    .expect("stored peerings");
    sqlx::query("DROP FUNCTION peerings_conflicting")
        .execute(&pool)
        .await
        .expect("drop the probe's function");
    let pair = |j: usize| {
        create(
            &format!("c{j}"),
            &format!("v{}", 2 * j),
            &format!("v{}", 2 * j + 1),
        )
    };

    // v0..v3: 200 rows, read whole.
    for answer in api.create_as_one_batch((0..2).map(pair).collect()).await {
        answer.expect("under the budget: the full read, no probe");
    }
    // v4..v29: 1,300 rows, over the budget: the probe.
    for answer in api.create_as_one_batch((2..15).map(pair).collect()).await {
        // Refused on the dropped function itself, not on anything else.
        assert!(
            answer.is_err() && format!("{answer:?}").contains("peerings_conflicting"),
            "over the budget the batch asks the probe: {answer:?}"
        );
    }
}
