//! Which servers the client writes through: never a relay under leader-only, never one whose
//! `_Server` check failed, `_Server` asked before anything else, remotes spread over clients.

use std::process::{Command, Stdio};

use ovn_peerd::ovsdb::jsonrpc::Message;
use ovn_peerd::ovsdb::{ConnectionState, Remote};
use ovn_peerd_test_support::process::Owned;
use ovn_peerd_test_support::wait_until;
use tokio::sync::mpsc;

use super::malformed::{client_for, fake, last_error, Conn};
use super::*;
use crate::support::nb::NbServer;

/// `ovsdb-server` relaying NB from `source`, serving `DIR/relay.sock`.
fn relay(dir: &std::path::Path, source: &str) -> (Owned, String) {
    let sock = dir.join("relay.sock");
    let mut cmd = Command::new("ovsdb-server");
    cmd.arg("-vconsole:off")
        .arg(format!("--log-file={}", dir.join("relay.log").display()))
        .arg(format!("--remote=punix:{}", sock.display()))
        .arg(format!("--unixctl={}", dir.join("relay.ctl").display()))
        .arg(format!("relay:{DB}:{source}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = Owned::spawn("ovsdb-server (relay)", &mut cmd);
    wait_until("relay socket", T, || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    })
    .unwrap();
    (server, format!("unix:{}", sock.display()))
}

fn synced_remote(client: &Client) -> Option<Remote> {
    match &*client.state().borrow() {
        ConnectionState::Connected {
            remote,
            synced: true,
        } => Some(remote.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_is_not_used_for_writing() {
    let nb = NbServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_remote) = relay(dir.path(), &nb.remote());

    // The relay alone: refused, whatever the number of tries.
    let only_relay = client_for(&relay_remote);
    wait_until("relay refused", T, || {
        last_error(&only_relay).contains("is a relay")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", last_error(&only_relay)));
    assert!(synced_remote(&only_relay).is_none());

    // The relay and its source: the client ends on the source, and writes there.
    let both = connect(&format!("{relay_remote},{}", nb.remote())).await;
    assert_eq!(
        synced_remote(&both),
        Some(Remote::parse(&nb.remote()).unwrap())
    );
    both.transact(vec![insert_router("via-source", None, None)])
        .await
        .unwrap();
    assert!(nb.nbctl(&["lr-list"]).contains("via-source"));
}

/// A fake server that answers `monitor _Server` with `server_error` (an error object, or null
/// for a standalone row) and serves the rest of a handshake; reports each connection's first
/// method, every `echo` the client sends, and `EOF` when the client closes the connection.
pub(super) async fn serve(mut c: Conn, server_error: Value, first: mpsc::UnboundedSender<String>) {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(crate::support::nb::NB_SCHEMA).unwrap())
            .unwrap();
    let mut n = 0;
    while let Some(m) = c.recv().await {
        let Message::Request { method, params, id } = m else {
            continue;
        };
        if n == 0 || method == "echo" {
            let _ = first.send(format!("{method} {}", params[0]));
        }
        n += 1;
        let reply = match method.as_str() {
            "monitor" if params[0] == "_Server" && !server_error.is_null() => {
                json!({"id": id, "result": null, "error": server_error})
            }
            "monitor" if params[0] == "_Server" => json!({"id": id, "error": null, "result":
                {"Database": {Uuid::new_v4().to_string(): {"new": {"name": DB,
                    "model": "standalone", "connected": true, "leader": true,
                    "index": ["set", []]}}}}}),
            "get_schema" => json!({"id": id, "result": schema, "error": null}),
            "monitor_cond_since" => json!({"id": id, "error": null,
                "result": [false, ZERO_UUID, {}]}),
            "echo" => json!({"id": id, "result": params, "error": null}),
            _ => json!({"id": id, "result": null, "error": "unknown method"}),
        };
        c.send(reply).await;
    }
    let _ = first.send("EOF".into());
}

const ZERO_UUID: &str = "00000000-0000-0000-0000-000000000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_check_comes_first_and_its_errors_are_not_standalone() {
    // An error other than "no _Server database": the server's role is unknown, not usable.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let f = fake(move |_, c| serve(c, json!({"error": "resources exhausted"}), tx.clone())).await;
    let client = client_for(&f.remote);
    let first = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
    assert_eq!(first, r#"monitor "_Server""#);
    wait_until("refused", T, || {
        last_error(&client).contains("monitor _Server")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", last_error(&client)));
    assert!(!client.state().borrow().is_synced());

    // A server without a _Server database (before OVS 2.9) is standalone, hence usable.
    let (tx, _rx) = mpsc::unbounded_channel();
    let f = fake(move |_, c| serve(c, json!({"error": "unknown database"}), tx.clone())).await;
    client_for(&f.remote).wait_synced(T).await.unwrap();
}

/// Each client starts at a random server of its list: 16 clients of two servers do not all
/// pick the first (probability 2^-15 by chance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remotes_are_shuffled_per_client() {
    let (a, b) = (NbServer::start(), NbServer::start());
    let remotes = format!("{},{}", a.remote(), b.remote());
    let mut on_a = 0;
    let mut clients = Vec::new();
    for _ in 0..16 {
        let c = connect(&remotes).await;
        if synced_remote(&c) == Some(Remote::parse(&a.remote()).unwrap()) {
            on_a += 1;
        }
        clients.push(c);
    }
    assert!(
        0 < on_a && on_a < 16,
        "{on_a} of 16 clients on the first server"
    );
}
