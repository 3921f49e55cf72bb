//! Replica correctness against real `ovsdb-server`s: rows written by other clients (which
//! may omit columns the server then fills with schema defaults) end up in the cache exactly as
//! the server holds them.

use ovn_peerd::ovsdb::{CacheEvent, ChangeKind};
use ovn_peerd_test_support::ovsdb::{run, start_server};
use ovn_peerd_test_support::wait_until;

use super::malformed::last_error;
use super::*;
use crate::support::nb::NbServer;

/// `networks` is `min: 1`: a port inserted without it holds `[""]` on the server, and setting
/// it later arrives as a *diff* against that `[""]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_diff_on_a_schema_default_column_matches_the_server() {
    let srv = NbServer::start();
    let client = connect(&srv.remote()).await;
    let txn = json!([DB,
        {"op": "insert", "table": "Logical_Router_Port", "uuid-name": "p",
         "row": {"name": "lp", "mac": "0a:00:00:00:00:01"}},
        {"op": "insert", "table": "Logical_Router",
         "row": {"name": "r", "ports": ["named-uuid", "p"]}}]);
    run(
        "ovsdb-client",
        &["transact", &srv.remote(), &txn.to_string()],
    );
    client
        .wait_for(T, |c| c.port_by_name("lp").is_some())
        .await
        .unwrap();
    assert_eq!(*client.cache().port_by_name("lp").unwrap().networks, [""]);
    srv.nbctl(&[
        "set",
        "Logical_Router_Port",
        "lp",
        "networks=\"10.0.0.1/24\"",
    ]);
    client
        .wait_for(T, |c| *c.port_by_name("lp").unwrap().networks != [""])
        .await
        .unwrap();
    assert_cache_matches(&client, |a| srv.nbctl(a)).await;
    assert_eq!(
        *client.cache().port_by_name("lp").unwrap().networks,
        ["10.0.0.1/24"]
    );
}

/// A one-server Raft cluster of NB in `dir` (a new cluster id each time), serving `DIR/s.sock`.
fn one_server_cluster(dir: &std::path::Path) -> ovn_peerd_test_support::process::Owned {
    let db = dir.join("s.db");
    let _ = std::fs::remove_file(&db);
    let raft = format!("tcp:127.0.0.1:{}", ovn_peerd_test_support::free_port());
    run(
        "ovsdb-tool",
        &["create-cluster", db.to_str().unwrap(), NB_SCHEMA, &raft],
    );
    start_server(dir, "s", &[])
}

async fn add_routers(client: &Client, prefix: &str, n: usize) {
    for i in 0..n {
        client
            .transact(vec![insert_router(&format!("{prefix}{i}"), None, None)])
            .await
            .unwrap();
    }
}

fn names(c: &NbCache) -> Vec<String> {
    let mut v: Vec<String> = c.routers().map(|r| r.name.to_string()).collect();
    v.sort();
    v
}

/// The NB cluster is rebuilt from scratch (new cluster id, index starting over): the client
/// takes the new cluster without a restart, though its index is below the one it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilt_cluster_with_a_lower_index_is_used_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let remote = format!("unix:{}", dir.path().join("s.sock").display());
    let server = one_server_cluster(dir.path());
    let client = connect(&remote).await;
    add_routers(&client, "old", 10).await;
    drop(server);
    let _server = one_server_cluster(dir.path());
    let r = client.wait_for(T, |c| c.is_empty()).await;
    assert!(r.is_ok(), "not reconnected: {}", last_error(&client));
}

/// Restored from a backup, the cluster keeps its id but goes back in index: refused (it may
/// be a stale server) until the operator resets the guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_cluster_is_refused_until_the_index_guard_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (db, backup) = (dir.path().join("s.db"), dir.path().join("backup.db"));
    let remote = format!("unix:{}", dir.path().join("s.sock").display());
    let server = one_server_cluster(dir.path());
    let client = connect(&remote).await;
    add_routers(&client, "early", 1).await;
    drop(server);
    std::fs::copy(&db, &backup).unwrap();
    let server = start_server(dir.path(), "s", &[]);
    add_routers(&client, "late", 10).await;
    drop(server);
    std::fs::copy(&backup, &db).unwrap();
    let _server = start_server(dir.path(), "s", &[]);
    wait_until("refused as behind", T, || {
        last_error(&client).contains("behind")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", last_error(&client)));
    client.reset_index_guard();
    let r = client.wait_for(T, |c| names(c) == ["early0"]).await;
    assert!(r.is_ok(), "not reconnected: {}", last_error(&client));
}

/// `ovsdb-client convert` to a schema with one more column: the client follows on the same
/// connection (it is `set_db_change_aware`), and its consumers see neither a disconnection nor
/// a resync, only the rows that changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_upgrade_without_a_reconnect_or_a_resync() {
    let srv = NbServer::start();
    let client = connect(&srv.remote()).await;
    client
        .transact(vec![insert_router("before", None, None)])
        .await
        .unwrap();
    let (_dir, path, new_version) = next_schema(|schema| {
        schema["tables"]["Logical_Router"]["columns"]["peerd_test_extra"] =
            json!({"type": {"key": "string", "min": 0, "max": 1}});
    });
    let mut events = client.subscribe();
    run(
        "ovsdb-client",
        &["convert", &srv.remote(), path.to_str().unwrap()],
    );
    let got = run("ovsdb-client", &["get-schema-version", &srv.remote(), DB]);
    assert_eq!(got.trim(), new_version);
    srv.nbctl(&["lr-add", "after"]);
    client
        .wait_for(T, |c| c.router_by_name("after").len() == 1)
        .await
        .unwrap();
    assert_cache_matches(&client, |a| srv.nbctl(a)).await;
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(format!("{e:?}"));
    }
    assert!(
        !seen
            .iter()
            .any(|e| e.contains("Resynced") || e.contains("Disconnected")),
        "{seen:?}"
    );
}

/// NB's schema edited by `edit`, with the next version, written to a file (in the directory
/// returned with it): what `ovsdb-client convert` takes.
fn next_schema(edit: impl FnOnce(&mut Value)) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let mut schema: Value =
        serde_json::from_str(&std::fs::read_to_string(NB_SCHEMA).unwrap()).unwrap();
    edit(&mut schema);
    let version = schema["version"].as_str().unwrap().to_owned();
    let mut parts: Vec<u64> = version.split('.').map(|p| p.parse().unwrap()).collect();
    parts[2] += 1;
    let new_version = format!("{}.{}.{}", parts[0], parts[1], parts[2]);
    schema["version"] = json!(new_version);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nb-next.ovsschema");
    std::fs::write(&path, schema.to_string()).unwrap();
    (dir, path, new_version)
}

/// A conversion that deletes rows (routers no longer a root table: the server collects them,
/// and their ports with them) is followed by a dump that replaces the replica in place: its
/// changes still name what each row was before, the router that held a deleted port included
/// (only the replica before the dump knew it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_replaced_in_place_names_what_its_deleted_rows_were() {
    let srv = NbServer::start();
    let client = connect(&srv.remote()).await;
    srv.nbctl(&["lr-add", "gone"]);
    srv.nbctl(&[
        "lrp-add",
        "gone",
        "gone-p",
        "0a:00:00:00:00:01",
        "10.9.0.1/24",
    ]);
    client
        .wait_for(T, |c| c.port_by_name("gone-p").is_some())
        .await
        .unwrap();
    let cache = client.cache();
    let router = cache.router_by_name("gone")[0].uuid;
    let port = cache.port_by_name("gone-p").unwrap().uuid;
    let (_dir, path, _) = next_schema(|schema| {
        schema["tables"]["Logical_Router"]["isRoot"] = json!(false);
    });

    let mut events = client.subscribe();
    run(
        "ovsdb-client",
        &["convert", &srv.remote(), path.to_str().unwrap()],
    );
    let changes = loop {
        let event = tokio::time::timeout(T, events.recv())
            .await
            .expect("no event after the conversion")
            .unwrap();
        match event {
            CacheEvent::Changed(c) if c.iter().any(|(c, _)| c.uuid == port) => break c,
            CacheEvent::Changed(_) => {}
            other => panic!("{other:?}: the replica was not replaced in place"),
        }
    };
    let was = |uuid| {
        let (c, was) = changes.iter().find(|(c, _)| c.uuid == uuid).unwrap();
        assert_eq!(c.kind, ChangeKind::Delete);
        let routers: Vec<String> = was.routers.iter().map(|r| r.to_string()).collect();
        (routers, was.port.as_ref().map(|p| p.to_string()))
    };
    assert_eq!(was(router), (vec!["gone".to_owned()], None));
    assert_eq!(
        was(port),
        (vec!["gone".to_owned()], Some("gone-p".to_owned()))
    );
}
