//! kill -9 and restart on the same database: reconnect, resync to exactly the server's
//! contents with one `Resynced` event, and no duplicate writes.

use std::process::Command;

use ovn_peerd::ovsdb::{
    CacheEvent, ConnectionState, OperationResult, OvsdbErrorKind, TransactError,
};
use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::support::nb::NbServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_and_restart_resyncs_and_never_writes_twice() {
    let mut srv = NbServer::start();
    let client = connect(&srv.tcp_remote()).await;
    let u = Uuid::new_v4();
    let res = client
        .transact(vec![insert_router("explicit", Some(u), Some("p1"))])
        .await
        .unwrap();
    assert_eq!(res[0], OperationResult::Inserted(u));
    srv.nbctl(&["lr-add", "doomed"]);
    client
        .wait_for(T, |c| !c.router_by_name("doomed").is_empty())
        .await
        .unwrap();

    let mut events = client.subscribe();
    let mut state = client.state();
    srv.kill9();
    state.wait_for(|s| !s.is_synced()).await.unwrap();
    // While the server is down, change the database file behind the client's back.
    let db = srv.dir().join("nb.db");
    let txn = serde_json::json!(["OVN_Northbound",
        {"op": "delete", "table": "Logical_Router", "where": [["name", "==", "doomed"]]},
        {"op": "insert", "table": "Logical_Router", "row": {"name": "offline"}}]);
    let out = Command::new("ovsdb-tool")
        .args(["transact", db.to_str().unwrap(), &txn.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not connected: transact waits at most wait_connected, then NotConnected (nothing sent).
    let mut quick = config(&srv.tcp_remote());
    quick.wait_connected = std::time::Duration::from_millis(50);
    let down = ovn_peerd::ovsdb::Client::start(quick).unwrap();
    assert!(matches!(
        down.transact(vec![insert_router("never", None, None)])
            .await,
        Err(TransactError::NotConnected)
    ));
    drop(down);

    srv.restart();
    client.wait_synced(T).await.unwrap();
    assert_cache_matches(&client, |a| srv.nbctl(a)).await;
    {
        let c = client.cache();
        assert!(c.router_by_name("doomed").is_empty());
        assert_eq!(c.router_by_name("offline").len(), 1);
    }
    // Exactly: Disconnected, then one Resynced; no synthetic per-row events.
    assert!(matches!(
        events.recv().await.unwrap(),
        CacheEvent::Disconnected
    ));
    assert!(matches!(events.recv().await.unwrap(), CacheEvent::Resynced));
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
    assert!(matches!(
        &*client.state().borrow(),
        ConnectionState::Connected { synced: true, .. }
    ));

    // Retrying the explicit-uuid insert (as after an OutcomeUnknown) cannot duplicate the row.
    let err = client
        .transact(vec![insert_router("explicit", Some(u), Some("p1"))])
        .await
        .unwrap_err();
    match err {
        TransactError::Operation { index: 0, error } => {
            assert_eq!(error.kind, OvsdbErrorKind::DuplicateUuid);
            assert!(error.details.is_some());
        }
        other => panic!("{other:?}"),
    }
    let names = srv.nbctl(&[
        "--bare",
        "--columns=name",
        "find",
        "Logical_Router",
        "name=explicit",
    ]);
    assert_eq!(names.split_whitespace().count(), 1);
    assert_eq!(client.cache().router_by_name("explicit").len(), 1);
}
