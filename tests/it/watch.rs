//! WatchPeerings against a real Postgres and NB: the initial list then changes, resume with
//! nothing missed or repeated, changes made through another replica, a stalled watcher ended
//! without holding anything up, retention, the `vpc` filter, the stream cap, shutdown.
//!
//! Reading a stream is waiting for an event, not polling; [`HANG`] only turns a stream that
//! never delivers into a failure instead of a hung test.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::watch_peerings_response::EventType;
use ovn_peerd::proto::v1::{
    peering, CreatePeeringRequest, DeletePeeringRequest, Peering, WatchPeeringsRequest,
    WatchPeeringsResponse,
};
use ovn_peerd::startup::Application;
use ovn_peerd::store::{ChangesPage, PeeringState, StatusUpdate, Store};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use ovn_peerd::config::WatchFlags;

use crate::support::nb::NbServer;
use crate::support::peerd::{test_config, Options, TestPeerd};
use crate::support::peerd_process::PeerdProcess;
use crate::support::pg::{free_port, wait_until, TestDb};
use crate::support::vpc::create_vpc;

/// How long a stream may stay silent before the test gives up on it (a hang guard).
pub(crate) const HANG: Duration = Duration::from_secs(60);

/// ovn-peerd with VPCs vpc-1 .. vpc-n (10.i.0.0/24 each).
pub(crate) async fn with_vpcs(t: TestPeerd, n: usize) -> TestPeerd {
    for i in 1..=n {
        create_vpc(&t.nb, &format!("vpc-{i}"), &[&format!("10.{i}.0.1/24")]);
    }
    t
}

/// ovn-peerd with WatchPeerings' flags set by `f`.
pub(crate) async fn start_with(f: impl FnOnce(&mut WatchFlags)) -> TestPeerd {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    let mut config = test_config(&db.url, &nb.remote(), &Options::default());
    f(&mut config.watch);
    TestPeerd::start_on(db, nb, config).await
}

pub(crate) async fn create(
    c: &mut PeeringServiceClient<Channel>,
    name: &str,
    local: &str,
    remote: &str,
) {
    c.create_peering(CreatePeeringRequest {
        peering: Some(Peering {
            name: name.into(),
            local_vpc: local.into(),
            remote_vpc: remote.into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
}

pub(crate) async fn watch(
    c: &mut PeeringServiceClient<Channel>,
    vpc: &str,
    resume_token: &str,
) -> Result<Streaming<WatchPeeringsResponse>, Status> {
    c.watch_peerings(WatchPeeringsRequest {
        vpc: vpc.into(),
        resume_token: resume_token.into(),
    })
    .await
    .map(|r| r.into_inner())
}

/// The next event, or the status the stream ended with.
pub(crate) async fn next(
    s: &mut Streaming<WatchPeeringsResponse>,
) -> Result<WatchPeeringsResponse, Status> {
    match tokio::time::timeout(HANG, s.message()).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => panic!("the stream ended without a status"),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("no event for {HANG:?}"),
    }
}

pub(crate) async fn event(s: &mut Streaming<WatchPeeringsResponse>) -> (EventType, String, i32) {
    let e = next(s).await.expect("an event");
    let kind = e.r#type();
    let p = e.peering.unwrap_or_default();
    (kind, p.name, p.state)
}

/// Reads the initial list up to SYNCED: the names listed and SYNCED's token.
pub(crate) async fn initial(s: &mut Streaming<WatchPeeringsResponse>) -> (Vec<String>, String) {
    let mut names = Vec::new();
    loop {
        let e = next(s).await.expect("an event");
        match e.r#type() {
            EventType::Added => {
                assert!(e.resume_token.is_empty(), "{e:?}");
                names.push(e.peering.unwrap().name);
            }
            EventType::Synced => {
                assert!(e.peering.is_none() && !e.resume_token.is_empty(), "{e:?}");
                return (names, e.resume_token);
            }
            other => panic!("{other:?} before SYNCED: {e:?}"),
        }
    }
}

#[tokio::test]
async fn from_scratch_the_list_then_synced_then_create_state_change_and_delete() {
    let t = with_vpcs(TestPeerd::start().await, 3).await;
    let mut c = t.client().await;
    create(&mut c, "p1", "vpc-1", "vpc-2").await;

    let mut s = watch(&mut c, "", "").await.unwrap();
    assert_eq!(initial(&mut s).await.0, ["p1"]);

    create(&mut c, "p2", "vpc-1", "vpc-3").await;
    let pending = peering::State::Pending as i32;
    let active = peering::State::Active as i32;
    assert_eq!(
        event(&mut s).await,
        (EventType::Added, "p2".into(), pending)
    );

    // The worker's status writes: both peerings become ACTIVE (in one pass, name order).
    t.converge().await;
    assert_eq!(
        event(&mut s).await,
        (EventType::Modified, "p1".into(), active)
    );
    assert_eq!(
        event(&mut s).await,
        (EventType::Modified, "p2".into(), active)
    );

    c.delete_peering(DeletePeeringRequest {
        name: "p2".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let deleting = peering::State::Deleting as i32;
    assert_eq!(
        event(&mut s).await,
        (EventType::Modified, "p2".into(), deleting)
    );
    // Gone once the worker removed its NB rows and the tombstone.
    t.converge().await;
    assert_eq!(
        event(&mut s).await,
        (EventType::Deleted, "p2".into(), deleting)
    );
}

#[tokio::test]
async fn the_vpc_filter_lists_and_streams_only_peerings_touching_it() {
    let t = with_vpcs(TestPeerd::start().await, 5).await;
    let mut c = t.client().await;
    create(&mut c, "p12", "vpc-1", "vpc-2").await;
    create(&mut c, "p23", "vpc-2", "vpc-3").await;
    create(&mut c, "p34", "vpc-3", "vpc-4").await;

    let mut s = watch(&mut c, "vpc-3", "").await.unwrap();
    assert_eq!(initial(&mut s).await.0, ["p23", "p34"]);
    create(&mut c, "p14", "vpc-1", "vpc-4").await;
    create(&mut c, "p35", "vpc-5", "vpc-3").await;
    assert_eq!(event(&mut s).await.1, "p35", "p14 does not touch vpc-3");

    let bad = watch(&mut c, "vpc\0", "").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("vpc"), "{bad:?}");
}

/// Writes `n` status changes, one statement each, with unique messages `w{writer}-{i}` on
/// the writer's own peering (the worker's own statement), and counts them in `done`.
async fn status_writer(
    store: Store,
    writer: usize,
    n: usize,
    done: tokio::sync::watch::Sender<usize>,
) {
    for i in 0..n {
        let update = StatusUpdate {
            name: format!("w{writer}"),
            generation: 1,
            state: if i % 2 == 0 {
                PeeringState::Failed
            } else {
                PeeringState::Pending
            },
            message: format!("w{writer}-{i}"),
        };
        assert_eq!(store.peering_statuses_set(&[update]).await.unwrap(), 1);
        done.send_modify(|d| *d += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_watch_misses_and_repeats_nothing_across_1000_changes() {
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 250;
    let t = with_vpcs(TestPeerd::start().await, WRITERS + 1).await;
    let mut c = t.client().await;
    for w in 0..WRITERS {
        create(&mut c, &format!("w{w}"), "vpc-1", &format!("vpc-{}", w + 2)).await;
    }
    let mut s = watch(&mut c, "", "").await.unwrap();
    let (_, mut token) = initial(&mut s).await;

    let store = Store::connect_lazy(&t.db.url).unwrap();
    let (done_tx, mut done) = tokio::sync::watch::channel(0usize);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(status_writer(store.clone(), w, PER_WRITER, done_tx.clone())))
        .collect();
    drop(done_tx);

    // Read a few events, disconnect, let the writers go on, resume with the last token.
    let mut seen: Vec<String> = Vec::new();
    let mut tokens = HashSet::new();
    let mut disconnects = 0;
    while seen.len() < WRITERS * PER_WRITER {
        let batch = 37 + 91 * disconnects % 113;
        for _ in 0..batch {
            let e = next(&mut s).await.expect("an event");
            assert_eq!(e.r#type(), EventType::Modified, "{e:?}");
            assert!(tokens.insert(e.resume_token.clone()), "token repeated");
            seen.push(e.peering.unwrap().state_message);
            token = e.resume_token;
            if seen.len() == WRITERS * PER_WRITER {
                break;
            }
        }
        drop(s);
        disconnects += 1;
        // Changes commit while nobody watches (unless the writers are done).
        let target = (*done.borrow() + 25).min(WRITERS * PER_WRITER);
        done.wait_for(|d| *d >= target).await.unwrap();
        s = watch(&mut c, "", &token).await.unwrap();
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(disconnects >= 5, "{disconnects}");

    // Exactly once each, and each writer's in the order it wrote them.
    let mut by_writer: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for m in &seen {
        let (w, i) = m[1..].split_once('-').unwrap();
        by_writer
            .entry(w.parse().unwrap())
            .or_default()
            .push(i.parse().unwrap());
    }
    for w in 0..WRITERS {
        let got = by_writer.remove(&w).unwrap_or_default();
        assert_eq!(got, (0..PER_WRITER).collect::<Vec<_>>(), "writer {w}");
    }
}

/// The path "every stream of the replica gone → its reader forgets the ring → changes
/// commit → a resume from a token older than them", taken on purpose (not by timing): the
/// changes commit only once the replica's open-stream gauge reads 0 (a stream is no longer
/// a watcher before it is no longer counted). The resume misses and repeats nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_after_every_stream_closed_misses_and_repeats_nothing() {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    create_vpc(&nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&nb, "vpc-2", &["10.2.0.1/24"]);
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    // No worker: the only changes are the test's.
    let peerd = PeerdProcess::start_with_args(
        &db.url,
        &nb.remote(),
        &["--metrics-listen", &metrics, "--worker", "false"],
    );
    let mut c = PeeringServiceClient::connect(format!("http://127.0.0.1:{}", peerd.port))
        .await
        .unwrap();
    create(&mut c, "w", "vpc-1", "vpc-2").await;
    let store = Store::connect_lazy(&db.url).unwrap();
    let set = |message: String| {
        let store = store.clone();
        async move {
            let update = StatusUpdate {
                name: "w".into(),
                generation: 1,
                state: PeeringState::Failed,
                message,
            };
            assert_eq!(store.peering_statuses_set(&[update]).await.unwrap(), 1);
        }
    };
    let modified = |e: WatchPeeringsResponse| {
        assert_eq!(e.r#type(), EventType::Modified, "{e:?}");
        (e.peering.unwrap().state_message, e.resume_token)
    };
    let streams = || {
        crate::metrics::Scrape::get(metrics_port)
            .and_then(|s| s.value("ovn_peerd_watch_streams", &[]))
    };

    let mut s = watch(&mut c, "", "").await.unwrap();
    let (names, _) = initial(&mut s).await;
    assert_eq!(names, ["w"]);
    set("before".into()).await;
    let (message, token) = modified(next(&mut s).await.unwrap());
    assert_eq!(message, "before");
    drop(s);
    wait_until(
        "no stream open on the replica",
        Duration::from_secs(30),
        || streams() == Some(0.0),
    )
    .unwrap();

    const WHILE_NONE: usize = 20;
    for i in 0..WHILE_NONE {
        set(format!("none-{i}")).await;
    }
    let mut s = watch(&mut c, "", &token).await.unwrap();
    for i in 0..WHILE_NONE {
        assert_eq!(modified(next(&mut s).await.unwrap()).0, format!("none-{i}"));
    }
    // Nothing repeated after them: the next event is the next change.
    set("after".into()).await;
    assert_eq!(modified(next(&mut s).await.unwrap()).0, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_another_replica_reaches_watchers_on_both() {
    let t = with_vpcs(TestPeerd::start().await, 3).await;
    let mut config = t.config.clone();
    config.worker = false;
    let other = Application::build(config).await.expect("build replica");
    other
        .nb()
        .wait_synced(Duration::from_secs(10))
        .await
        .unwrap();
    let other_addr = other.local_addr();
    let stop = CancellationToken::new();
    let running = tokio::spawn(other.run(stop.clone()));
    let mut b = PeeringServiceClient::connect(format!("http://{other_addr}"))
        .await
        .unwrap();
    let mut a = t.client().await;

    let mut on_a = watch(&mut a, "", "").await.unwrap();
    let mut on_b = watch(&mut b, "", "").await.unwrap();
    initial(&mut on_a).await;
    initial(&mut on_b).await;
    create(&mut b, "via-b", "vpc-1", "vpc-2").await;
    assert_eq!(event(&mut on_a).await.1, "via-b");
    assert_eq!(event(&mut on_b).await.1, "via-b");
    create(&mut a, "via-a", "vpc-1", "vpc-3").await;
    assert_eq!(event(&mut on_b).await.1, "via-a");
    assert_eq!(event(&mut on_a).await.1, "via-a");

    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_is_ended_with_a_status_and_holds_nothing_up() {
    const ROUNDS: usize = 30;
    // A small buffer, so that a few hundred changes leave the stalled watcher behind.
    let t = with_vpcs(start_with(|w| w.buffer = 8).await, ROUNDS + 1).await;
    let mut c = t.client().await;
    for w in 0..10 {
        create(
            &mut c,
            &format!("w{w}"),
            &format!("vpc-{}", w + 1),
            "vpc-31",
        )
        .await;
    }

    // A client that reads little at a time (a 1 KiB HTTP/2 window), and then not at all.
    let channel = Endpoint::from_shared(format!("http://{}", t.addr))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut stalled_client = PeeringServiceClient::new(channel);
    let mut stalled = watch(&mut stalled_client, "", "").await.unwrap();
    initial(&mut stalled).await;

    // Creates and status writes go on while it does not read: every one completes.
    let store = Store::connect_lazy(&t.db.url).unwrap();
    for r in 0..ROUNDS {
        let updates: Vec<StatusUpdate> = (0..10)
            .map(|w| StatusUpdate {
                name: format!("w{w}"),
                generation: 1,
                state: PeeringState::Failed,
                message: format!("round {r}"),
            })
            .collect();
        assert_eq!(store.peering_statuses_set(&updates).await.unwrap(), 10);
    }
    for r in 10..ROUNDS {
        create(
            &mut c,
            &format!("c{r}"),
            &format!("vpc-{}", r + 1),
            "vpc-31",
        )
        .await;
    }
    create(&mut c, "last", "vpc-1", "vpc-2").await;

    // It reads again: what was in flight, then the status telling it how to go on.
    let mut last_token = String::new();
    let status = loop {
        match next(&mut stalled).await {
            Ok(e) => {
                let name = e.peering.as_ref().map(|p| p.name.clone()).unwrap();
                assert_ne!(name, "last", "the stalled watcher was never ended");
                last_token = e.resume_token;
            }
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("resume_token"), "{status:?}");

    // And resuming with its last token gets the rest, up to the last create.
    let mut resumed = watch(&mut c, "", &last_token).await.unwrap();
    while event(&mut resumed).await.1 != "last" {}
}

#[tokio::test]
async fn a_token_older_than_retention_is_out_of_range_and_a_bad_one_invalid() {
    let t = with_vpcs(TestPeerd::start().await, 3).await;
    let mut c = t.client().await;
    let mut s = watch(&mut c, "", "").await.unwrap();
    let (_, token) = initial(&mut s).await;
    create(&mut c, "p1", "vpc-1", "vpc-2").await;
    create(&mut c, "p2", "vpc-1", "vpc-3").await;
    let (_, _, _) = event(&mut s).await;

    // Retention keeps the last change only: the token's next change is gone.
    let store = Store::connect_lazy(&t.db.url).unwrap();
    assert!(
        store
            .peering_changes_prune(Duration::from_secs(3600), 1)
            .await
            .unwrap()
            >= 1
    );
    let err = watch(&mut c, "", &token).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(
        err.message().contains("re-watch without a token"),
        "{err:?}"
    );

    // The latest token is still good.
    let latest = next(&mut s).await.unwrap().resume_token;
    watch(&mut c, "", &latest).await.unwrap();

    for bad in ["not a token", "eyJ2IjoxfQ"] {
        let err = watch(&mut c, "", bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("resume_token"), "{err:?}");
    }
}

/// The log read (one statement, no transaction): a position below the horizon is `Pruned`
/// whether changes follow it or not, the head is an empty page, not `Pruned`.
#[tokio::test]
async fn a_log_read_below_the_horizon_is_pruned_also_when_changes_follow() {
    let t = with_vpcs(TestPeerd::start().await, 4).await;
    let mut c = t.client().await;
    for (name, remote) in [("p1", "vpc-2"), ("p2", "vpc-3"), ("p3", "vpc-4")] {
        create(&mut c, name, "vpc-1", remote).await;
    }
    let store = Store::connect_lazy(&t.db.url).unwrap();
    store
        .peering_changes_prune(Duration::from_secs(3600), 1)
        .await
        .unwrap();
    let at = store.peering_changes_position().await.unwrap();
    assert!(at.pruned_through >= 2, "{at:?}");

    // Changes follow the position (at least the last one, kept), yet it is below the horizon.
    let below = at.pruned_through - 1;
    assert_eq!(
        store.peering_changes_after(below, 500).await.unwrap(),
        ChangesPage::Pruned {
            through: at.pruned_through
        }
    );
    // From the horizon on: the changes kept (the worker may have added some since).
    match store
        .peering_changes_after(at.pruned_through, 500)
        .await
        .unwrap()
    {
        ChangesPage::Changes(changes) => {
            assert_eq!(changes.first().map(|c| c.seq), Some(at.pruned_through + 1));
        }
        other => panic!("expected the changes after the horizon, got {other:?}"),
    }
    // At the head (or past it): nothing yet, not pruned.
    let head = store.peering_changes_position().await.unwrap().head;
    match store.peering_changes_after(head, 500).await.unwrap() {
        ChangesPage::Changes(changes) => assert!(changes.iter().all(|c| c.seq > head)),
        other => panic!("expected no changes yet, got {other:?}"),
    }
}

#[tokio::test]
async fn streams_beyond_the_cap_are_resource_exhausted_and_shutdown_ends_them() {
    let mut t = start_with(|w| w.max_streams = 1).await;
    let mut c = t.client().await;
    let mut first = watch(&mut c, "", "").await.unwrap();
    initial(&mut first).await;
    let err = watch(&mut c, "", "").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // A graceful stop does not wait for open streams: they end, telling how to go on.
    tokio::time::timeout(HANG, t.stop())
        .await
        .expect("the stop waited for the open stream")
        .unwrap();
    let end = next(&mut first).await.unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(end.message().contains("resume_token"), "{end:?}");
}

/// The log's order is commit order: a change whose log row was written first (T1, its
/// deferred trigger fired early with SET CONSTRAINTS) but which commits after another (T2)
/// is still delivered: T2's commit waits for T1's (the log's advisory lock), instead of
/// moving the readers past T1's position before T1 is visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_logged_first_but_committed_last_is_not_skipped() {
    let t = with_vpcs(TestPeerd::start().await, 3).await;
    let mut c = t.client().await;
    create(&mut c, "p1", "vpc-1", "vpc-2").await;
    create(&mut c, "p2", "vpc-1", "vpc-3").await;
    let mut s = watch(&mut c, "", "").await.unwrap();
    initial(&mut s).await;

    let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    let mut t1 = pool.begin().await.unwrap();
    sqlx::query("UPDATE peerings SET state_message = 't1' WHERE name = 'p1'")
        .execute(&mut *t1)
        .await
        .unwrap();
    sqlx::query("SET CONSTRAINTS ALL IMMEDIATE")
        .execute(&mut *t1)
        .await
        .unwrap();
    let t2 = tokio::spawn({
        let pool = pool.clone();
        async move {
            sqlx::query("UPDATE peerings SET state_message = 't2' WHERE name = 'p2'")
                .execute(&pool)
                .await
                .unwrap();
        }
    });
    // T2 either committed already (what the lock prevents) or waits for the log's lock.
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        wait_until("T2 committed or waiting for T1", HANG, || {
            t2.is_finished()
                || handle.block_on(async {
                    sqlx::query_scalar::<_, i64>(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                         AND NOT granted AND classid = 7106407 AND database = \
                         (SELECT oid FROM pg_database WHERE datname = current_database())",
                    )
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                        > 0
                })
        })
    })
    .unwrap();
    t1.commit().await.unwrap();
    t2.await.unwrap();
    let mut got = vec![event(&mut s).await.1, event(&mut s).await.1];
    got.sort();
    assert_eq!(got, ["p1", "p2"]);
}

/// The initial list and the changes after SYNCED meet exactly while writes go on: for each
/// peering, the first change after the list is the one right after the state listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_list_and_the_changes_after_it_meet_with_no_gap_and_no_overlap() {
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 200;
    let t = with_vpcs(TestPeerd::start().await, WRITERS + 1).await;
    let mut c = t.client().await;
    for w in 0..WRITERS {
        create(&mut c, &format!("w{w}"), "vpc-1", &format!("vpc-{}", w + 2)).await;
    }
    let store = Store::connect_lazy(&t.db.url).unwrap();
    let (done_tx, mut done) = tokio::sync::watch::channel(0usize);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(status_writer(store.clone(), w, PER_WRITER, done_tx.clone())))
        .collect();
    drop(done_tx);

    // The step a message names: "w1-7" is 7; the created peering's empty message is -1.
    let step = |m: &str| -> i64 { m.split_once('-').map_or(-1, |(_, i)| i.parse().unwrap()) };
    let mut lists = 0;
    while *done.borrow() < WRITERS * PER_WRITER && lists < 20 {
        let mut s = watch(&mut c, "", "").await.unwrap();
        let mut at: BTreeMap<String, i64> = BTreeMap::new();
        loop {
            let e = next(&mut s).await.unwrap();
            match e.peering {
                Some(p) => {
                    at.insert(p.name, step(&p.state_message));
                }
                None => break,
            }
        }
        // A few changes after the list: each continues its peering's sequence by one. (Up to
        // one change per writer may be committed but not counted yet.)
        let target = *done.borrow() + 8 + WRITERS;
        if target > WRITERS * PER_WRITER {
            break;
        }
        done.wait_for(|d| *d >= target).await.unwrap();
        for _ in 0..8 {
            let p = next(&mut s).await.unwrap().peering.unwrap();
            let was = at.get_mut(&p.name).unwrap();
            assert_eq!(step(&p.state_message), *was + 1, "{}", p.name);
            *was += 1;
        }
        lists += 1;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(lists >= 3, "{lists}");
}
