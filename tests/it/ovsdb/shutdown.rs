//! The client's lifecycle on a fake server: shutdown leaves no task and no socket behind, and a
//! probe interval of zero disables the inactivity probe (as in OVS).

use std::time::Duration;

use ovn_peerd::ovsdb::TransactError;
use tokio::sync::mpsc;

use super::leader::serve;
use super::malformed::{client_for, fake};
use super::*;

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

async fn until_eof(rx: &mut mpsc::UnboundedReceiver<String>) {
    loop {
        let m = tokio::time::timeout(T, rx.recv())
            .await
            .expect("the server never saw the connection close")
            .unwrap();
        if m == "EOF" {
            return;
        }
    }
}

/// `shutdown()` while a clone is still held: the server sees the connection close and every
/// task the client started ends. Repeated, because the shutdown races the connection task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_socket_and_ends_every_task() {
    let before = alive_tasks();
    let mut kept = Vec::new();
    for _ in 0..8 {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let f = fake(move |_, c| serve(c, Value::Null, tx.clone())).await;
        let client = client_for(&f.remote);
        client.wait_synced(T).await.unwrap();
        kept.push(client.clone());
        client.shutdown();
        until_eof(&mut rx).await;
        drop(f);
    }
    let deadline = tokio::time::Instant::now() + T;
    while alive_tasks() > before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} tasks left running (before: {before})",
            alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Probe interval zero: no echo from the client, and the connection stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_interval_zero_disables_the_probe() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let f = fake(move |_, c| serve(c, Value::Null, tx.clone())).await;
    let mut cfg = config(&f.remote);
    cfg.probe_interval = Some(Duration::ZERO);
    let client = Client::start(cfg).unwrap();
    client.wait_synced(T).await.unwrap();
    // Round trips through the client's reader: it went idle in between, several times.
    for _ in 0..5 {
        let r = client.transact(vec![Operation::Comment("x".into())]).await;
        assert!(matches!(r, Err(TransactError::Rejected(_))), "{r:?}");
    }
    let first = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
    assert!(first.starts_with("monitor"), "{first}");
    assert!(rx.try_recv().is_err(), "the client probed or reconnected");
    assert_eq!(f.accepts.load(std::sync::atomic::Ordering::SeqCst), 1);
}
