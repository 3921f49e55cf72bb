//! WatchPeerings' limits and robustness: a tenant's initial list filtered by Postgres, the
//! per-caller stream cap, a watcher whose client never reads its initial list ended,
//! bookmarks keeping a quiet filtered stream's token inside retention, an undecodable
//! change-log row skipped, and streams' maximum age with an exact resume.

use std::time::Duration;

use base64::Engine;
use ovn_peerd::proto::v1::watch_peerings_response::EventType;
use ovn_peerd::store::Store;
use ovn_peerd::watch::{Hub, Listing, Start, WatchEnd, WatchSettings};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::support::peerd::TestPeerd;
use crate::support::pg::TestDb;
use crate::watch::{create, initial, next, start_with, watch, with_vpcs, HANG};
use ovn_peerd_test_support::wait_until_async;

/// Runs one SQL statement on `url` with `psql` (not through ovn-peerd); its output.
fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args(["-XtAq", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql {sql}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The log position a resume token names (tokens are base64 of `{"v":1,"d":..,"s":seq}`).
fn position(token: &str) -> i64 {
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .expect("a token is base64");
    let v: serde_json::Value = serde_json::from_slice(&json).expect("a token is JSON");
    v["s"].as_i64().expect("a token has a position")
}

#[tokio::test]
async fn a_tenants_initial_list_is_filtered_by_postgres() {
    let t = with_vpcs(TestPeerd::start().await, 4).await;
    let mut c = t.client().await;
    create(&mut c, "a", "vpc-1", "vpc-2").await;
    create(&mut c, "b", "vpc-3", "vpc-4").await;
    create(&mut c, "x", "vpc-4", "vpc-1").await;

    // The rows the snapshot query returns for a tenant owning vpc-1 (`LIKE` patterns, as
    // `Scope::like_patterns` makes them): never "b", which touches none of its VPCs.
    let store = Store::connect_lazy(&t.db.url).unwrap();
    let patterns = vec!["vpc-1".to_string()];
    let snapshot = store.peering_snapshot(None, Some(&patterns)).await.unwrap();
    let names: Vec<_> = snapshot.peerings.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "x"]);
    // With a vpc as well, both apply.
    let snapshot = store
        .peering_snapshot(Some("vpc-2"), Some(&patterns))
        .await
        .unwrap();
    assert_eq!(snapshot.peerings.len(), 1);
    // An admin's (no patterns) holds every row.
    assert_eq!(
        store
            .peering_snapshot(None, None)
            .await
            .unwrap()
            .peerings
            .len(),
        3
    );
}

#[tokio::test]
async fn a_caller_beyond_its_stream_cap_is_resource_exhausted_and_others_are_not_blocked() {
    let t = start_with(|w| w.max_streams_per_caller = 2).await;
    let mut c = t.client().await;
    let mut first = watch(&mut c, "", "").await.unwrap();
    initial(&mut first).await;
    let mut second = watch(&mut c, "", "").await.unwrap();
    initial(&mut second).await;
    let err = watch(&mut c, "", "").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("--watch-max-streams-per-caller"),
        "{err:?}"
    );

    // Closing one gives its slot back.
    drop(first);
    wait_until_async("a slot given back", HANG, || {
        let mut c = c.clone();
        async move { watch(&mut c, "", "").await.is_ok() }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_watcher_whose_client_never_reads_its_initial_list_is_ended() {
    // More rows than a watcher's channel holds (32), written straight into Postgres.
    let db = TestDb::create().await;
    let store = Store::connect_lazy(&db.url).unwrap();
    store.migrate().await.unwrap();
    psql(
        &db.url,
        "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4)
         SELECT 'p' || i, 'a' || i, 'b' || i,
                ('169.254.' || i || '.1/30')::inet, ('169.254.' || i || '.2/30')::inet
           FROM generate_series(1, 40) AS i",
    );
    let settings = WatchSettings {
        stall_timeout: Duration::from_secs(1),
        max_streams_per_caller: 1,
        ..WatchSettings::default()
    };
    let hub = Hub::new(
        store,
        uuid::Uuid::new_v4(),
        settings,
        CancellationToken::new(),
    );
    let slot = hub.stream_slot("client").unwrap();
    // Its events are never received: the watcher fills its channel during the initial list.
    let watcher = hub.watch(
        Start::Snapshot,
        Box::new(|_| true),
        Listing::default(),
        slot,
    );
    let end = tokio::time::timeout(HANG, watcher.end)
        .await
        .expect("the watcher was never ended")
        .expect("an end, not a client gone");
    assert!(matches!(end, WatchEnd::Stalled(_)), "{end:?}");
    assert!(end.to_string().contains("resume_token"), "{end}");
    // And its slot (and the caller's) is given back.
    wait_until_async("the stalled watcher's slot given back", HANG, || async {
        hub.stream_slot("client").is_ok()
    })
    .await
    .unwrap();
    drop(watcher.events);
}

#[tokio::test]
async fn a_quiet_filtered_watcher_gets_bookmarks_and_resumes_from_one_after_pruning() {
    let t = with_vpcs(
        start_with(|w| w.bookmark_interval = Duration::from_secs(1)).await,
        3,
    )
    .await;
    let mut c = t.client().await;
    let mut s = watch(&mut c, "vpc-1", "").await.unwrap();
    let (_, synced) = initial(&mut s).await;

    // Changes it does not show (and the worker's status writes of them).
    create(&mut c, "hidden", "vpc-2", "vpc-3").await;
    let bookmark = loop {
        let e = next(&mut s).await.unwrap();
        assert_eq!(e.r#type(), EventType::Bookmark, "{e:?}");
        assert!(e.peering.is_none(), "{e:?}");
        let head: i64 = psql(&t.db.url, "SELECT max(seq) FROM peering_changes")
            .parse()
            .unwrap();
        if position(&e.resume_token) == head {
            break e.resume_token;
        }
    };
    assert!(position(&bookmark) > position(&synced));

    // Retention prunes the hidden changes: SYNCED's token is now too old, the bookmark's not.
    let through = position(&bookmark);
    psql(
        &t.db.url,
        &format!(
            "DELETE FROM peering_changes WHERE seq <= {through};
             UPDATE peering_changes_horizon SET pruned_through = {through}"
        ),
    );
    let err = watch(&mut c, "vpc-1", &synced).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    let mut resumed = watch(&mut c, "vpc-1", &bookmark).await.unwrap();
    create(&mut c, "shown", "vpc-1", "vpc-2").await;
    let e = loop {
        let e = next(&mut resumed).await.unwrap();
        if e.r#type() != EventType::Bookmark {
            break e;
        }
    };
    assert_eq!(e.r#type(), EventType::Added, "{e:?}");
    assert_eq!(e.peering.unwrap().name, "shown");
}

#[tokio::test]
async fn an_undecodable_change_is_skipped_and_the_next_ones_are_delivered() {
    let t = with_vpcs(TestPeerd::start().await, 3).await;
    let mut c = t.client().await;
    let mut s = watch(&mut c, "", "").await.unwrap();
    initial(&mut s).await;
    create(&mut c, "p1", "vpc-1", "vpc-2").await;
    // A state this version does not know (a newer replica's, during a rolling upgrade).
    psql(
        &t.db.url,
        "INSERT INTO peering_changes (kind, peering)
         SELECT 'modified', jsonb_set(to_jsonb(p), '{state}', '\"hibernating\"')
           FROM peerings p WHERE name = 'p1'",
    );
    create(&mut c, "p2", "vpc-1", "vpc-3").await;
    loop {
        let e = next(&mut s).await.expect("an event");
        let p = e.peering.unwrap();
        assert_ne!(p.state, 0, "the undecodable change was delivered: {p:?}");
        if p.name == "p2" {
            break;
        }
    }
}

#[tokio::test]
async fn a_stream_ends_at_its_max_age_and_resumes_exactly() {
    let t = with_vpcs(start_with(|w| w.max_age = Duration::from_secs(1)).await, 3).await;
    let mut c = t.client().await;
    create(&mut c, "p1", "vpc-1", "vpc-2").await;
    let mut s = watch(&mut c, "", "").await.unwrap();
    let (names, mut last) = initial(&mut s).await;
    assert_eq!(names, ["p1"]);
    let status = loop {
        match next(&mut s).await {
            Ok(e) => last = e.resume_token,
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("--watch-max-age"), "{status:?}");
    assert!(status.message().contains("resume_token"), "{status:?}");

    // Changes made after the end: a resume gets exactly those after its token.
    create(&mut c, "p2", "vpc-1", "vpc-3").await;
    let mut resumed = watch(&mut c, "", &last).await.unwrap();
    loop {
        let e = next(&mut resumed)
            .await
            .expect("an event before the next end");
        assert!(
            position(&e.resume_token) > position(&last),
            "repeated: {e:?}"
        );
        last = e.resume_token.clone();
        if e.peering.as_ref().is_some_and(|p| p.name == "p2") {
            assert_eq!(e.r#type(), EventType::Added, "{e:?}");
            break;
        }
    }
}
