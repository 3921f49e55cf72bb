//! Fake servers sending malformed input: garbage, a truncated reply, unknown methods, and a
//! connection dropped after a transaction was sent. Always an error and a reconnect; never a
//! panic or a hang.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ovn_peerd::ovsdb::jsonrpc::{FrameDecoder, Message};
use ovn_peerd::ovsdb::{ConnectionState, TransactError};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

pub(super) struct Fake {
    pub(super) remote: String,
    pub(super) accepts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) async fn fake<F, Fut>(script: F) -> Fake
where
    F: Fn(usize, Conn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote = format!("tcp:{}", l.local_addr().unwrap());
    let accepts = Arc::new(AtomicUsize::new(0));
    let n = accepts.clone();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let i = n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(script(
                i,
                Conn {
                    s,
                    dec: FrameDecoder::new(1 << 24),
                },
            ));
        }
    });
    Fake {
        remote,
        accepts,
        task,
    }
}

pub(super) struct Conn {
    s: TcpStream,
    dec: FrameDecoder,
}

impl Conn {
    pub(super) async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.dec.next_message().ok()? {
                return Some(m);
            }
            if self.s.read_buf(self.dec.buffer()).await.ok()? == 0 {
                return None;
            }
        }
    }
    pub(super) async fn send(&mut self, v: serde_json::Value) {
        let _ = self.s.write_all(v.to_string().as_bytes()).await;
    }
}

pub(super) fn client_for(remote: &str) -> Client {
    let mut c = config(remote);
    c.wait_connected = std::time::Duration::from_millis(100);
    Client::start(c).unwrap()
}

pub(super) async fn wait_accepts(f: &Fake, n: usize) {
    let deadline = tokio::time::Instant::now() + T;
    while f.accepts.load(Ordering::SeqCst) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client did not reconnect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

pub(super) fn last_error(c: &Client) -> String {
    match &*c.state().borrow() {
        ConnectionState::Connecting { last_error } => last_error.clone().unwrap_or_default(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_error_and_reconnect() {
    let f = fake(|_, mut c| async move {
        c.s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .ok();
        let mut sink = [0u8; 1024];
        while matches!(c.s.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    let client = client_for(&f.remote);
    wait_accepts(&f, 3).await;
    assert!(
        last_error(&client).contains("unexpected byte"),
        "{}",
        last_error(&client)
    );
    assert!(matches!(
        client.transact(vec![Operation::Comment("x".into())]).await,
        Err(TransactError::NotConnected)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_reply_then_close_errors_and_reconnects() {
    let f = fake(|_, mut c| async move {
        c.recv().await;
        c.s.write_all(br#"{"id":1,"result":{"name":"OVN_North"#)
            .await
            .ok();
    })
    .await;
    let client = client_for(&f.remote);
    wait_accepts(&f, 3).await;
    assert!(!client.state().borrow().is_synced());
    assert!(
        last_error(&client).contains("closed"),
        "{}",
        last_error(&client)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_is_answered_with_an_error_and_echo_is_answered() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let f = fake(move |_, mut c| {
        let tx = tx.clone();
        async move {
            c.send(json!({"method": "bogus", "params": [], "id": "x1"}))
                .await;
            c.send(json!({"method": "echo", "params": ["hi"], "id": "e1"}))
                .await;
            while let Some(m) = c.recv().await {
                match m {
                    // Every request of the handshake fails (the first is `monitor _Server`).
                    Message::Request { id, .. } => {
                        c.send(
                            json!({"id": id, "result": null, "error": {"error": "unknown method"}}),
                        )
                        .await;
                    }
                    Message::Response { id, result, error } => {
                        let _ = tx.send((id, result, error));
                    }
                    _ => {}
                }
            }
        }
    })
    .await;
    let client = client_for(&f.remote);
    // The handshake fails (no get_schema) and the client reconnects, so the fake's
    // two requests may be answered on several connections, in any order: collect
    // the first answer to each.
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 2 {
        let (id, result, error) = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
        seen.entry(id.to_string()).or_insert((result, error));
    }
    let echo = &seen[&json!("e1").to_string()];
    assert_eq!(echo.0, json!(["hi"]));
    let bogus = &seen[&json!("x1").to_string()];
    assert!(
        !bogus.1.is_null(),
        "unknown method answered without an error"
    );
    wait_accepts(&f, 2).await;
    assert!(
        last_error(&client).contains("monitor _Server"),
        "{}",
        last_error(&client)
    );
}

/// A minimal server (no monitor_cond_since, to exercise the fallback) that never answers
/// `echo` and drops the connection when it receives a `transact`.
async fn handshake_then_drop_on_transact(mut c: Conn) {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(crate::support::nb::NB_SCHEMA).unwrap())
            .unwrap();
    while let Some(m) = c.recv().await {
        let Message::Request { method, params, id } = m else {
            continue;
        };
        let reply = match method.as_str() {
            "get_schema" => json!({"id": id, "result": schema, "error": null}),
            "monitor" if params[0] == "_Server" => json!({"id": id, "error": null, "result":
                {"Database": {Uuid::new_v4().to_string(): {"new": {"name": DB,
                    "model": "standalone", "connected": true, "leader": true, "index": ["set", []]}}}}}),
            "monitor_cond_since" => json!({"id": id, "result": null, "error": "unknown method"}),
            "monitor_cond" => json!({"id": id, "error": null, "result": {"Logical_Router": {
                Uuid::new_v4().to_string(): {"initial": {"name": "fake"}}}}}),
            "transact" => return, // dropped after the request was sent
            "echo" => continue,   // a server that went silent: only the probe can tell
            _ => json!({"id": id, "result": null, "error": "unknown method"}),
        };
        c.send(reply).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_lost_after_send_is_outcome_unknown_then_reconnects() {
    let f = fake(|_, c| handshake_then_drop_on_transact(c)).await;
    let client = client_for(&f.remote);
    client.wait_synced(T).await.unwrap();
    assert_eq!(client.cache().router_by_name("fake").len(), 1);
    let err = client
        .transact(vec![insert_router("x", None, None)])
        .await
        .unwrap_err();
    assert!(matches!(err, TransactError::OutcomeUnknown(_)), "{err:?}");
    wait_accepts(&f, 2).await;
    client.wait_synced(T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_is_caught_by_the_inactivity_probe() {
    let f = fake(|_, c| handshake_then_drop_on_transact(c)).await;
    let mut cfg = config(&f.remote);
    cfg.probe_interval = Some(std::time::Duration::from_millis(100));
    let client = Client::start(cfg).unwrap();
    client.wait_synced(T).await.unwrap();
    let mut state = client.state();
    tokio::time::timeout(T, state.wait_for(|s| !s.is_synced()))
        .await
        .unwrap()
        .unwrap();
    assert!(
        last_error(&client).contains("inactivity probe"),
        "{}",
        last_error(&client)
    );
    wait_accepts(&f, 2).await;
}

/// A server whose `update2` notifications after a good initial dump are malformed, one way
/// per monitor request: a modify of a row it never sent, a value of the wrong type, a table
/// that is not an object. From the fourth monitor request on it behaves.
async fn bad_update_after_dump(mut c: Conn, monitors: Arc<AtomicUsize>) {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(crate::support::nb::NB_SCHEMA).unwrap())
            .unwrap();
    let good = "9b0a3ab5-5a4c-4b36-9fd8-0ad0a3d2a0a1";
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
            "monitor_cond" => {
                let n = monitors.fetch_add(1, Ordering::SeqCst);
                let mut dump = json!({"Logical_Router": {good: {"initial": {"name": "good"}}}});
                if n >= 3 {
                    dump["Logical_Router"][Uuid::new_v4().to_string()] =
                        json!({"initial": {"name": "after"}});
                }
                c.send(json!({"id": id, "error": null, "result": dump}))
                    .await;
                let bad = match n {
                    0 => {
                        json!({"Logical_Router": {Uuid::new_v4().to_string(): {"modify": {"name": "x"}}}})
                    }
                    1 => json!({"Logical_Router": {good: {"modify": {"name": 42}}}}),
                    2 => json!({"Logical_Router": "not an object"}),
                    _ => continue,
                };
                c.send(json!({"method": "update2", "params": [params[1], bad], "id": null}))
                    .await;
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
async fn a_malformed_update_on_a_live_connection_is_reported_and_resynced() {
    let monitors = Arc::new(AtomicUsize::new(0));
    let m = monitors.clone();
    let f = fake(move |_, c| bad_update_after_dump(c, m.clone())).await;
    let client = client_for(&f.remote);
    // Every state the client reports, in order.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<ConnectionState>::new()));
    let mut state = client.state();
    let log = seen.clone();
    let watcher = tokio::spawn(async move {
        loop {
            log.lock().unwrap().push(state.borrow_and_update().clone());
            if state.changed().await.is_err() {
                return;
            }
        }
    });
    client
        .wait_for(T, |c| {
            c.router_by_name("after").len() == 1 && c.router_by_name("good").len() == 1
        })
        .await
        .expect("synced with the well-formed dump in the end");
    watcher.abort();
    assert!(monitors.load(Ordering::SeqCst) >= 4);
    // The replica holds what the last dump said, nothing of the malformed updates.
    let names: Vec<String> = client
        .cache()
        .routers()
        .map(|r| r.name.to_string())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["after", "good"]);
    // Each malformed update was reported: the client left the synced state with an error.
    let seen = seen.lock().unwrap().clone();
    let errors: Vec<String> = seen
        .iter()
        .filter_map(|s| match s {
            ConnectionState::Connecting {
                last_error: Some(e),
            } => Some(e.clone()),
            _ => None,
        })
        .collect();
    let unsynced_after_synced = seen
        .windows(2)
        .filter(|w| w[0].is_synced() && !w[1].is_synced())
        .count();
    assert!(
        unsynced_after_synced >= 3,
        "left the synced state {unsynced_after_synced} times: {seen:?}"
    );
    assert!(!errors.is_empty(), "no error reported: {seen:?}");
}
