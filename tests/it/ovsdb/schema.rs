//! Schema compatibility: extra columns are fine; a missing column we need is a clear error.

use serde_json::Value;

use super::*;
use crate::support::nb::{NbServer, NB_SCHEMA};

fn edited_schema(dir: &std::path::Path, edit: impl FnOnce(&mut Value)) -> std::path::PathBuf {
    let mut s: Value = serde_json::from_str(&std::fs::read_to_string(NB_SCHEMA).unwrap()).unwrap();
    edit(&mut s);
    let p = dir.join("edited.ovsschema");
    std::fs::write(&p, serde_json::to_string(&s).unwrap()).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_column_is_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = edited_schema(tmp.path(), |s| {
        s["version"] = "7.99.0".into();
        s["tables"]["Logical_Router_Port"]["columns"]["status"] = serde_json::json!({"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}});
        s["tables"]["Logical_Router_Static_Route"]["columns"]["selection_fields"] =
            serde_json::json!({"type": {"key": "string", "min": 0, "max": "unlimited"}});
    });
    let srv = NbServer::with_schema(&schema);
    let client = connect(&srv.remote()).await;
    srv.nbctl(&["lr-add", "r"]);
    srv.nbctl(&["lrp-add", "r", "rp", "0a:00:00:00:00:01", "10.0.0.1/24"]);
    // ovn-nbctl does not know the extra column: write it with ovsdb-client.
    let txn = serde_json::json!([DB, {"op": "update", "table": "Logical_Router_Port",
        "where": [["name", "==", "rp"]], "row": {"status": ["map", [["x", "y"]]], "mac": "0a:00:00:00:00:02"}}]);
    let out = std::process::Command::new("ovsdb-client")
        .args(["transact", &srv.remote(), &txn.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_cache_matches(&client, |a| srv.nbctl(a)).await;
    assert!(client.cache().port_by_name("rp").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_column_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = edited_schema(tmp.path(), |s| {
        s["tables"]["Logical_Router_Port"]["columns"]
            .as_object_mut()
            .unwrap()
            .remove("mac");
    });
    let srv = NbServer::with_schema(&schema);
    let client = Client::start(config(&srv.remote())).unwrap();
    let err = client
        .wait_synced(std::time::Duration::from_secs(2))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Logical_Router_Port") && msg.contains("lacks column mac"),
        "{msg}"
    );
}
