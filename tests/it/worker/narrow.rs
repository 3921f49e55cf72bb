//! Narrow passes at a hub (issue 14): a pass woken for one peering judges again only the
//! peerings whose verdict that peering can change (a link, a route or a port name overlapping
//! its own in a VPC they share), not every peering of its VPCs, and still reaches the verdicts
//! a full pass reaches: the older of two conflicting peerings wins, whichever one changed.
//!
//! Below a hub (fewer than `FULL_READ_BELOW` peerings per VPC and side) a narrow pass reads
//! every peering of its VPCs and asks NB nothing for a probe, as CreatePeering does.
//!
//! The worker does not run in the background here: each test drives the pass a Postgres
//! notification would start ([`Reconciler::run_for`]) and reads what it judged.

use ovn_peerd::reconciler::Reconciler;
use ovn_peerd::store::PeeringState;

use super::{insert_sql, pool, record, store};
use crate::support::nbrows::NbRows;
use crate::support::peerd::{Options, TestPeerd};
use crate::support::vpc::create_vpc;

const SPOKES: usize = 8;

/// `hub` (10.0.0.0/24) peered with `s1`..`s8` (`sK`: 10.K.1.0/24) as `h1`..`h8`, converged;
/// a hub for the worker's reads (the bound lowered to its 8 spokes): passes over it ask the
/// conflict probe.
async fn hub() -> TestPeerd {
    let mut t = TestPeerd::start_with(Options::default()).await;
    t.config.full_read_below = SPOKES;
    create_vpc(&t.nb, "hub", &["10.0.0.1/24"]);
    let pool = pool(&t.db.url).await;
    for k in 1..=SPOKES {
        let spoke = format!("s{k}");
        create_vpc(&t.nb, &spoke, &[&format!("10.{k}.1.1/24")]);
        let (l, r) = (4 * k + 1, 4 * k + 2);
        let (l, r) = (format!("169.254.0.{l}/30"), format!("169.254.0.{r}/30"));
        insert_sql(&pool, &format!("h{k}"), "hub", &spoke, &l, &r).await;
    }
    let outcome = t.converge().await;
    assert_eq!((outcome.active, outcome.failed.len()), (SPOKES, 0));
    t
}

/// A new VPC `vpc` (one subnet, `gateway`) and its peering `name` with the hub, stored as
/// created `age_secs` ago: as a restore, or another replica's create racing ours, could.
async fn peer_with_hub(t: &TestPeerd, name: &str, vpc: &str, gateway: &str, age_secs: i64) {
    create_vpc(&t.nb, vpc, &[gateway]);
    sqlx::query(
        "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4, create_time) \
         VALUES ($1, 'hub', $2, '169.254.1.1/30', '169.254.1.2/30', \
                 now() - make_interval(secs => $3))",
    )
    .bind(name)
    .bind(vpc)
    .bind(age_secs as f64)
    .execute(&pool(&t.db.url).await)
    .await
    .expect("insert");
}

/// State of each spoke's peering, `h1`..`h8`.
async fn spoke_states(t: &TestPeerd) -> Vec<PeeringState> {
    let s = store(&t.db.url);
    let mut out = Vec::new();
    for k in 1..=SPOKES {
        out.push(record(&s, &format!("h{k}")).await.state);
    }
    out
}

fn failed_names(o: &ovn_peerd::reconciler::PassOutcome) -> Vec<&str> {
    o.failed.keys().map(String::as_str).collect()
}

/// The hard case for narrowing: a peering stored as older than a converged spoke, whose
/// automatic route in the hub (x's 10.3.0.0/16) overlaps that spoke's (s3's 10.3.1.0/24). The
/// pass woken for it must judge h3 again and fail it, naming the older one, which wins and is
/// installed; h3's rows are frozen as they are. The other spokes are not judged at all.
/// Deleting the older one then brings h3 back, again in a narrow pass.
#[tokio::test]
async fn a_new_peering_older_than_a_converged_spoke_fails_that_spoke_and_wins() {
    let t = hub().await;
    peer_with_hub(&t, "old", "x", "10.3.0.1/16", 3600).await;
    let worker: Reconciler = t.reconciler().await;

    let narrow = worker.run_for(&["old"]).await.expect("narrow pass");
    assert_eq!(failed_names(&narrow), ["h3"], "{narrow:?}");
    assert!(narrow.failed["h3"].contains("\"old\""), "{narrow:?}");
    assert_eq!(narrow.peerings, 2, "only old and h3 judged: {narrow:?}");
    let s = store(&t.db.url);
    assert_eq!(record(&s, "old").await.state, PeeringState::Active);
    let mut want = vec![PeeringState::Active; SPOKES];
    want[2] = PeeringState::Failed;
    assert_eq!(spoke_states(&t).await, want);
    let hub_routes = NbRows::read(&t.nb).owned_routes_of("hub");
    for route in [
        ("10.3.0.0/16", "169.254.1.2"),
        ("10.3.1.0/24", "169.254.0.14"),
    ] {
        let route = (route.0.into(), route.1.into(), "dst-ip".into());
        assert!(hub_routes.contains(&route), "{route:?} in {hub_routes:?}");
    }

    // A full pass judges everyone: the same verdicts, nothing to write.
    let full = worker.run_once().await.expect("full pass");
    assert_eq!(failed_names(&full), ["h3"], "{full:?}");
    assert_eq!((full.active, full.rows_written), (SPOKES, 0), "{full:?}");

    // The older one goes: the pass woken for its tombstone brings h3 back.
    super::delete(&t, "old").await;
    let narrow = worker.run_for(&["old"]).await.expect("narrow pass");
    assert_eq!(failed_names(&narrow), Vec::<&str>::new(), "{narrow:?}");
    assert_eq!(narrow.peerings, 2, "only old and h3 judged: {narrow:?}");
    assert_eq!(spoke_states(&t).await, vec![PeeringState::Active; SPOKES]);
    assert!(NbRows::read(&t.nb)
        .owned_routes_of("hub")
        .iter()
        .all(|r| r.0 != "10.3.0.0/16"));
}

/// The usual case: a newer peering whose route in the hub (y's 10.5.0.0/16) overlaps an older
/// spoke's (s5's 10.5.1.0/24) fails, naming it, and installs nothing; the spoke, judged again,
/// stays ACTIVE with its rows; no other spoke is judged.
#[tokio::test]
async fn a_newer_peering_conflicting_with_an_older_spoke_fails_and_the_spoke_stays() {
    let t = hub().await;
    peer_with_hub(&t, "new", "y", "10.5.0.1/16", 0).await;
    let worker = t.reconciler().await;
    let before = NbRows::read(&t.nb).owned_routes_of("hub");

    let narrow = worker.run_for(&["new"]).await.expect("narrow pass");
    assert_eq!(failed_names(&narrow), ["new"], "{narrow:?}");
    assert!(narrow.failed["new"].contains("\"h5\""), "{narrow:?}");
    assert_eq!(narrow.peerings, 2, "only new and h5 judged: {narrow:?}");
    assert_eq!(narrow.rows_written, 0, "{narrow:?}");
    assert_eq!(spoke_states(&t).await, vec![PeeringState::Active; SPOKES]);
    assert_eq!(NbRows::read(&t.nb).owned_routes_of("hub"), before);

    let full = worker.run_once().await.expect("full pass");
    assert_eq!(failed_names(&full), ["new"], "{full:?}");
    assert_eq!((full.active, full.rows_written), (SPOKES, 0), "{full:?}");
}

/// A narrow pass over one new peering at a hub reads by probe only the peerings that can take
/// part in its rules. One of them shares nothing with it in Postgres: h3, whose stored link
/// moved (its pass has not run) while its port in the hub still holds the old link, which the
/// new peering's link overlaps. That port is h3's, not a foreign port in the way (the rules'
/// verdict with every peering read): the new peering is ACTIVE, judged alone.
#[tokio::test]
async fn a_new_peering_over_a_stale_port_of_a_spoke_is_judged_with_that_spoke() {
    let t = hub().await;
    let pool = pool(&t.db.url).await;
    sqlx::query(
        "UPDATE peerings SET local_v4 = '169.254.2.1/30', remote_v4 = '169.254.2.2/30' \
         WHERE name = 'h3'",
    )
    .execute(&pool)
    .await
    .expect("move h3's link");
    create_vpc(&t.nb, "z", &["10.30.1.1/24"]);
    insert_sql(
        &pool,
        "new",
        "hub",
        "z",
        "169.254.0.13/30",
        "169.254.0.14/30",
    )
    .await;
    let worker = t.reconciler().await;

    let narrow = worker.run_for(&["new"]).await.expect("narrow pass");
    assert_eq!(failed_names(&narrow), Vec::<&str>::new(), "{narrow:?}");
    assert_eq!(narrow.peerings, 1, "only new judged: {narrow:?}");
    assert_eq!(
        record(&store(&t.db.url), "new").await.state,
        PeeringState::Active
    );
}

/// Below the bound a narrow pass reads every peering of its VPCs at once and never asks the
/// conflict probe (whose NB question walks every router and port for each new NB state): with
/// the probe's SQL function gone, the pass still converges a new peering. The same pass with
/// every VPC a hub (bound 0) needs the probe, and fails without it (so the test sees which
/// read was taken).
#[tokio::test]
async fn below_a_hub_a_narrow_pass_reads_all_and_asks_no_probe() {
    let mut t = TestPeerd::start_with(Options::default()).await;
    let pool = pool(&t.db.url).await;
    create_vpc(&t.nb, "a", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "b", &["10.2.0.1/24"]);
    create_vpc(&t.nb, "c", &["10.3.0.1/24"]);
    insert_sql(&pool, "ab", "a", "b", "169.254.0.1/30", "169.254.0.2/30").await;
    insert_sql(&pool, "ac", "a", "c", "169.254.0.5/30", "169.254.0.6/30").await;
    sqlx::query("DROP FUNCTION peerings_conflicting")
        .execute(&pool)
        .await
        .expect("drop the probe's function");

    t.config.full_read_below = ovn_peerd::store::FULL_READ_BELOW;
    let narrow = t.reconciler().await.run_for(&["ab"]).await;
    let narrow = narrow.expect("a narrow pass below the bound asks no probe");
    assert_eq!((narrow.peerings, narrow.active), (1, 1), "{narrow:?}");
    assert_eq!(
        record(&store(&t.db.url), "ab").await.state,
        PeeringState::Active
    );

    t.config.full_read_below = 0;
    let probed = t.reconciler().await.run_for(&["ac"]).await;
    // The pass fails on the dropped function itself, not on anything else.
    assert!(
        probed.is_err() && format!("{probed:?}").contains("peerings_conflicting"),
        "at a hub the pass asks the probe: {probed:?}"
    );
}
