//! Pipelined NB transactions (issue 14): the worker sends a pass's transactions without
//! waiting for each reply (`src/reconciler/write.rs`). A transaction that fails in the middle
//! of the pipeline must leave NB right and lose nothing: the ones sent behind it are settled
//! from their own replies (their peerings ACTIVE, their rows in NB), even when the failure
//! stops the pass, and a fence lost mid-pipeline lets none of them land. That they really are
//! on the wire together is shown without timing: a transient failure of the second one stops
//! the pass, yet the third and fourth, built from the replica before the second's reply
//! could show anything, commit. Real `ovsdb-server`, rows read with `ovn-nbctl`.

use std::time::Duration;

use uuid::Uuid;

use ovn_peerd::ovsdb::{Client, Datum, Operation, OvsdbErrorKind, TransactError};
use ovn_peerd::reconciler::{self, PassError, Reconciler};
use ovn_peerd::store::PeeringState;
use tokio_util::sync::CancellationToken;

use super::ownership_guard::LaggingNb;
use super::{create, eventually, explicit, record, store, two_vpcs, wait_state};
use crate::support::nbrows::NbRows;
use crate::support::peerd::{Options, TestPeerd};
use crate::support::vpc::create_vpc;

/// Four disjoint peerings p12, p34, p56, p78 (vpc-1 … vpc-8) created through the API; no
/// worker has run.
async fn four_peerings() -> TestPeerd {
    let t = two_vpcs(Options::default()).await;
    for i in 3..=8 {
        create_vpc(&t.nb, &format!("vpc-{i}"), &[&format!("10.{i}.0.1/24")]);
    }
    for (k, (a, b)) in [(1, 2), (3, 4), (5, 6), (7, 8)].into_iter().enumerate() {
        let base = k * 4;
        create(
            &t,
            explicit(
                &format!("p{a}{b}"),
                &format!("vpc-{a}"),
                &format!("vpc-{b}"),
                &format!("169.254.0.{}/30", base + 1),
                &format!("169.254.0.{}/30", base + 2),
            ),
        )
        .await;
    }
    t
}

/// A worker over NB at `remote` whose transactions hold one peering each (8 rows), so a pass
/// over the four peerings is four transactions, all on the wire at once; and its NB client.
async fn one_peering_per_transaction(t: &TestPeerd, remote: &str) -> (Reconciler, Client) {
    let nb = ovn_peerd::ovsdb::Client::start(
        ovn_peerd::ovsdb::ClientConfig::new(remote, ovn_peerd::startup::NB_DATABASE)
            .unwrap()
            .with_owner_key(ovn_peerd::peering::PEERING_KEY),
    )
    .unwrap();
    nb.wait_synced(Duration::from_secs(10)).await.unwrap();
    let store = store(&t.db.url);
    let deployment = store.deployment_get().await.expect("deployment id");
    let mut settings = reconciler::Settings::from_config(&t.config, deployment.id);
    settings.max_rows_per_transaction = 8;
    // No periodic full pass while a test drives the worker's loop.
    settings.resync_interval = Duration::from_secs(3600);
    (Reconciler::new(store, nb.clone(), settings), nb)
}

/// The second of four pipelined transactions is refused by NB (a port of that name was added
/// by hand after the worker's replica last looked): only its peering fails, naming why; the
/// two sent behind it and the one before it are written and ACTIVE, and the hand-made port is
/// left as it was. Once the operator removes it, the peering converges. (This holds with one
/// transaction in flight at a time too; the overlap itself is shown by the transient failure
/// below.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transaction_mid_pipeline_fails_only_its_peering() {
    let t = four_peerings().await;
    let nb = LaggingNb::start(t.nb.sock()).await;
    let (worker, _) = one_peering_per_transaction(&t, &nb.remote).await;
    nb.lag(Duration::from_secs(5));
    t.nb.nbctl(&[
        "lrp-add",
        "vpc-3",
        "vpc-3-vpc-4",
        "0a:00:00:00:00:34",
        "192.0.2.1/24",
    ]);
    let hand_made = t.nb.nbctl(&["list", "Logical_Router_Port", "vpc-3-vpc-4"]);

    let outcome = worker
        .run_once()
        .await
        .expect("a refusal is no pass failure");

    let s = store(&t.db.url);
    for name in ["p12", "p56", "p78"] {
        let p = record(&s, name).await;
        assert_eq!(
            (p.state, p.state_message.as_str()),
            (PeeringState::Active, ""),
            "{name}"
        );
    }
    let p34 = record(&s, "p34").await;
    assert_eq!(p34.state, PeeringState::Failed);
    assert!(
        p34.state_message.contains("refused"),
        "{}",
        p34.state_message
    );
    assert_eq!(outcome.transactions, 4, "{outcome:?}");
    let rows = NbRows::read(&t.nb);
    for vpc in ["vpc-1", "vpc-2", "vpc-5", "vpc-6", "vpc-7", "vpc-8"] {
        assert_eq!(rows.owned_ports_of(vpc).len(), 1, "{vpc}: {rows:?}");
    }
    assert!(rows.owned_ports_of("vpc-3").is_empty() && rows.owned_ports_of("vpc-4").is_empty());
    assert_eq!(
        t.nb.nbctl(&["list", "Logical_Router_Port", "vpc-3-vpc-4"]),
        hand_made
    );

    // The operator removes the port: once the worker's replica has seen that (what the relay
    // still holds arrives first), a pass writes p34.
    nb.lag(Duration::ZERO);
    t.nb.nbctl(&["lrp-del", "vpc-3-vpc-4"]);
    eventually(
        "p34 written once the hand-made port is gone",
        Duration::from_secs(20),
        || async {
            worker.run_once().await.expect("pass");
            (record(&s, "p34").await.state == PeeringState::Active).then_some(())
        },
    )
    .await;
    let rows = NbRows::read(&t.nb);
    assert_eq!(rows.owned_ports_of("vpc-3").len(), 1);
    assert_eq!(rows.owned_ports_of("vpc-4").len(), 1);
}

/// A holder whose fence was superseded sends four transactions at once: every one of them
/// fails on its own fence `wait`, so none lands, and no peering is reported on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_lost_before_a_pipeline_lets_none_of_its_transactions_land() {
    let t = four_peerings().await;
    let (a, a_nb) = one_peering_per_transaction(&t, &t.config.ovn_nb_db).await;
    let shutdown = CancellationToken::new();
    let lock_a = a.take_writer_lock(&shutdown).await.expect("lock for A");
    let id = a.deployment_id();
    // Another replica took over (as in `fencing.rs`, its epoch written into NB) while A still
    // believes it holds the lock.
    let key = ovn_peerd::reconciler::fence::epoch_key(id);
    let epoch = a.writer_epoch().expect("A holds an epoch");
    t.nb.nbctl(&[
        "set",
        "NB_Global",
        ".",
        &format!("external_ids:\"{key}\"=\"{}\"", epoch + 1),
    ]);

    let before = NbRows::read(&t.nb);
    let err = a.run_once().await.expect_err("A's pass must not land");
    assert!(matches!(err, PassError::Fenced), "{err:?}");
    // The pass stopped at the first reply; the server runs one session's requests in order,
    // so once a request sent after them on A's session is answered, it has run all four.
    a_nb.transact(Vec::<Operation>::new())
        .await
        .expect("an empty transaction after the four");
    let after = NbRows::read(&t.nb);
    assert_eq!(format!("{after:?}"), format!("{before:?}"), "NB unchanged");
    assert_eq!(after.owned_count(), 0);
    let s = store(&t.db.url);
    for name in ["p12", "p34", "p56", "p78"] {
        let p = record(&s, name).await;
        assert_eq!(
            (p.state, p.state_message.as_str()),
            (PeeringState::Pending, ""),
            "{name}"
        );
    }
    drop(lock_a);
}

/// The uuid of the router port named `port` in NB.
fn port_uuid(t: &TestPeerd, port: &str) -> Uuid {
    let u = t.nb.nbctl(&[
        "--bare",
        "--columns=_uuid",
        "list",
        "Logical_Router_Port",
        port,
    ]);
    u.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{port}: {u:?}: {e}"))
}

/// The second of four pipelined transactions fails with a transient error ("duplicate uuid":
/// a row with the uuid it inserts was added behind the worker's replica) and stops the pass.
/// The two sent behind it were already on the wire and commit: their replies are awaited
/// before the pass returns, so their peerings are ACTIVE, never left PENDING. (With one
/// transaction in flight at a time they would not have been sent at all.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_mid_pipeline_still_settles_the_transactions_behind_it() {
    let t = four_peerings().await;
    let nb = LaggingNb::start(t.nb.sock()).await;
    let (worker, worker_nb) = one_peering_per_transaction(&t, &nb.remote).await;
    // Learn which uuid the worker gives p34's vpc-3 port (it depends on the port's name,
    // router and generation only), then take p34's ports away again.
    worker.run_for(&["p34"]).await.expect("p34 written");
    let taken = port_uuid(&t, "vpc-3-vpc-4");
    t.nb.nbctl(&["lrp-del", "vpc-3-vpc-4", "--", "lrp-del", "vpc-4-vpc-3"]);
    let raw = ovn_peerd::ovsdb::Client::start(
        ovn_peerd::ovsdb::ClientConfig::new(&t.config.ovn_nb_db, ovn_peerd::startup::NB_DATABASE)
            .unwrap(),
    )
    .unwrap();
    raw.wait_synced(Duration::from_secs(10)).await.unwrap();
    worker_nb
        .wait_for(Duration::from_secs(10), |c| c.port(taken).is_none())
        .await
        .expect("the worker's replica saw p34's ports go");

    // Someone else's row takes that uuid where the worker's replica cannot see it yet.
    nb.lag(Duration::from_secs(2));
    raw.transact(vec![
        Operation::Insert {
            table: "Logical_Router_Port".into(),
            row: [
                ("name".to_string(), Datum::from("decoy-port")),
                ("mac".to_string(), Datum::from("0a:00:00:00:00:99")),
                ("networks".to_string(), Datum::set(["192.0.2.9/24"])),
            ]
            .into(),
            uuid_name: None,
            uuid: Some(taken),
        },
        Operation::Insert {
            table: "Logical_Router".into(),
            row: [
                ("name".to_string(), Datum::from("decoy")),
                ("ports".to_string(), Datum::set([taken])),
            ]
            .into(),
            uuid_name: None,
            uuid: None,
        },
    ])
    .await
    .expect("the decoy rows");

    let err = worker
        .run_once()
        .await
        .expect_err("p34's transaction fails");
    match &err {
        PassError::Nb(TransactError::Operation { error, .. }) => {
            assert_eq!(error.kind, OvsdbErrorKind::DuplicateUuid, "{err:?}")
        }
        other => panic!("{other:?}"),
    }
    let s = store(&t.db.url);
    for name in ["p12", "p56", "p78"] {
        let p = record(&s, name).await;
        assert_eq!(
            (p.state, p.state_message.as_str()),
            (PeeringState::Active, ""),
            "{name}"
        );
    }
    assert_eq!(record(&s, "p34").await.state, PeeringState::Pending);
    let rows = NbRows::read(&t.nb);
    for vpc in ["vpc-1", "vpc-2", "vpc-5", "vpc-6", "vpc-7", "vpc-8"] {
        assert_eq!(rows.owned_ports_of(vpc).len(), 1, "{vpc}: {rows:?}");
    }
    assert!(rows.owned_ports_of("vpc-3").is_empty(), "{rows:?}");
}

/// Sum of the samples of `metric` whose labels include `label` in a Prometheus rendering.
fn sample(rendered: &str, metric: &str, label: &str) -> f64 {
    rendered
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The worker's loop repairs four peerings' ports removed by hand in four pipelined
/// transactions whose replies, and echoes, arrive 2.5 s after they were sent (longer than a
/// 2 s window counted from the send). It recognises its own echo: the narrow passes are the
/// repair and the one a later foreign change asks for, no more. Runs the loop on this test's
/// thread, whose metrics it records locally.
#[tokio::test]
async fn a_slow_pipelined_pass_is_not_woken_again_by_its_own_echo() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let passes = |scope: &str| {
        sample(
            &metrics.render(),
            "ovn_peerd_reconciler_passes_total",
            &format!("scope=\"{scope}\""),
        )
    };
    let t = four_peerings().await;
    let nb = LaggingNb::start(t.nb.sock()).await;
    let (worker, _) = one_peering_per_transaction(&t, &nb.remote).await;
    let s = store(&t.db.url);
    let stop = CancellationToken::new();
    let body = async {
        // The loop's first full pass writes the peerings (the listeners' requests for a full
        // pass fold into it when they start first, as they normally do).
        for name in ["p12", "p34", "p56", "p78"] {
            wait_state(&s, name, PeeringState::Active, Duration::from_secs(60)).await;
        }
        eventually(
            "the first full pass counted",
            Duration::from_secs(60),
            || async { (passes("full") >= 1.0).then_some(()) },
        )
        .await;
        let before = passes("narrow");

        // Slow replies; the eight ports removed by hand in one transaction.
        nb.lag(Duration::from_millis(2500));
        let mut del = Vec::new();
        for (a, b) in [(1, 2), (3, 4), (5, 6), (7, 8)] {
            for port in [format!("vpc-{a}-vpc-{b}"), format!("vpc-{b}-vpc-{a}")] {
                del.extend(["--".to_string(), "lrp-del".to_string(), port]);
            }
        }
        let del: Vec<&str> = del.iter().map(String::as_str).collect();
        t.nb.nbctl(&del);
        eventually(
            "the repair pass counted",
            Duration::from_secs(60),
            || async { (passes("narrow") > before).then_some(()) },
        )
        .await;
        let rows = NbRows::read(&t.nb);
        for vpc in 1..=8 {
            let vpc = format!("vpc-{vpc}");
            assert_eq!(rows.owned_ports_of(&vpc).len(), 1, "{vpc}: {rows:?}");
        }

        // A foreign change after it (a route of p12 disowned by hand) wakes a narrow pass
        // that fails p12; the listener sees it after every echo of the repair, and that pass
        // is counted before the gauges say one peering failed.
        let ours: Vec<String> = rows
            .routes_of("vpc-1")
            .into_iter()
            .filter(|r| r.external_ids.contains_key("ovn-peerd:owner"))
            .map(|r| r.uuid.clone())
            .collect();
        assert_eq!(ours.len(), 1, "{rows:?}");
        t.nb.nbctl(&[
            "remove",
            "Logical_Router_Static_Route",
            &ours[0],
            "external_ids",
            "\"ovn-peerd:owner\"",
        ]);
        wait_state(&s, "p12", PeeringState::Failed, Duration::from_secs(60)).await;
        eventually("the failed gauge at 1", Duration::from_secs(60), || async {
            let failed = sample(&metrics.render(), "ovn_peerd_peerings", "state=\"failed\"");
            (failed == 1.0).then_some(())
        })
        .await;
        // The repair (unless a late full pass took it in) and the disowned route: at most two.
        // Our own echo taken as foreign would be a third.
        let narrow = passes("narrow") - before;
        assert!(
            narrow <= 2.0,
            "{narrow} narrow passes: the repair and the disowned route only:\n{}",
            metrics.render()
        );
    };
    tokio::select! {
        _ = worker.run(stop.clone()) => panic!("the worker stopped"),
        _ = body => {}
    }
}
