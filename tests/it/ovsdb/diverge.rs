//! Divergence detection, as ovsdb-idl does it: an update that inserts a row the replica already
//! holds, or modifies or deletes one it does not, means the replica missed or doubled an update.
//! The client must drop its `last_txn_id` and start over from a full dump, not absorb it.
//! Provoked with a fake server (a real one never sends such updates).

use ovn_peerd::ovsdb::jsonrpc::Message;
use tokio::sync::mpsc;

use super::malformed::{client_for, fake, last_error, Conn};
use super::*;

const HELD: &str = "11111111-1111-1111-1111-111111111111";
const NOT_HELD: &str = "22222222-2222-2222-2222-222222222222";
const ZERO_TXN: &str = "00000000-0000-0000-0000-000000000000";

/// Serves a handshake with `monitor_cond_since` (a dump holding router `HELD`, txn `t1`). On
/// the first connection it then sends `bad` in an `update3` (txn `t2`); on later ones it reports
/// the `last_txn_id` the client asked from and never answers that monitor request.
async fn serve(i: usize, mut c: Conn, bad: Value, seen: mpsc::UnboundedSender<Value>) {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(crate::support::nb::NB_SCHEMA).unwrap())
            .unwrap();
    while let Some(m) = c.recv().await {
        let Message::Request { method, params, id } = m else {
            continue;
        };
        match method.as_str() {
            "get_schema" => {
                c.send(json!({"id": id, "result": schema, "error": null}))
                    .await
            }
            "monitor" if params[0] == "_Server" => {
                c.send(json!({"id": id, "error": null, "result":
                {"Database": {Uuid::new_v4().to_string(): {"new": {"name": DB,
                    "model": "standalone", "connected": true, "leader": true,
                    "index": ["set", []]}}}}}))
                    .await
            }
            "monitor_cond_since" if i == 0 => {
                let dump = json!({"Logical_Router": {HELD: {"initial": {"name": "fake"}}}});
                c.send(json!({"id": id, "error": null, "result": [false, "t1", dump]}))
                    .await;
                c.send(json!({"id": null, "method": "update3",
                    "params": [params[1], "t2", bad]}))
                    .await;
            }
            "monitor_cond_since" => {
                let _ = seen.send(params[3].clone());
            }
            "echo" => {
                c.send(json!({"id": id, "result": params, "error": null}))
                    .await
            }
            _ => {
                c.send(json!({"id": id, "result": null, "error": "unknown method"}))
                    .await
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_updates_force_a_full_dump() {
    let cases = [
        (
            "insert of a row already held",
            json!({"Logical_Router": {HELD: {"insert": {"name": "again"}}}}),
        ),
        (
            "delete of a row not held",
            json!({"Logical_Router": {NOT_HELD: {"delete": null}}}),
        ),
        (
            "modify of a row not held",
            json!({"Logical_Router": {NOT_HELD: {"modify": {"name": "x"}}}}),
        ),
    ];
    for (what, bad) in cases {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let f = fake(move |i, c| serve(i, c, bad.clone(), tx.clone())).await;
        let client = client_for(&f.remote);
        // The client reconnects on its own and asks for everything (not "since t2").
        let last = tokio::time::timeout(T, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: absorbed, no new session"))
            .unwrap();
        assert_eq!(last, json!(ZERO_TXN), "{what}");
        let err = last_error(&client);
        assert!(
            err.contains("diverged") && err.contains(what),
            "{what}: {err}"
        );
    }
}
