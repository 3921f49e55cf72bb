//! The client's lifecycle on a fake server: shutdown leaves no task and no socket behind, and a
//! probe interval of zero disables the inactivity probe (as in OVS).

use std::time::Duration;

use ovn_peerd::ovsdb::TransactError;
use tokio::sync::mpsc;

use super::leader::serve;
use super::malformed::{client_for, fake};
use super::*;
use crate::support::pg::wait_until;

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// This process's open TCP sockets whose remote end is `port` on 127.0.0.1: the socket inodes
/// behind `/proc/self/fd` matched against `/proc/net/tcp`.
fn sockets_to(port: u16) -> usize {
    let ours: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let remote = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[2] == remote && ours.contains(f[9]))
        .count()
}

/// `shutdown()` while a clone is still held: the server sees the connection close, no socket
/// to it is left in this process, and every task the client started ends. Repeated, because
/// the shutdown races the connection task. Every wait is bounded (`wait_until`), so a client
/// that keeps its connection fails here instead of hanging the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_socket_and_ends_every_task() {
    let before = alive_tasks();
    let mut kept = Vec::new();
    for _ in 0..8 {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let f = fake(move |_, c| serve(c, Value::Null, tx.clone())).await;
        let port: u16 = f.remote.rsplit(':').next().unwrap().parse().unwrap();
        let client = client_for(&f.remote);
        client.wait_synced(T).await.unwrap();
        assert_eq!(sockets_to(port), 1, "the client's connection, counted");
        kept.push(client.clone());
        client.shutdown();
        wait_until("the server sees the connection close", T, || {
            std::iter::from_fn(|| rx.try_recv().ok()).any(|m| m == "EOF")
        })
        .unwrap();
        wait_until("no socket to the server left", T, || sockets_to(port) == 0).unwrap();
        drop(f);
    }
    let left = wait_until("every task the clients started ends", T, || {
        alive_tasks() <= before
    });
    assert!(
        left.is_ok(),
        "{} tasks left (before: {before})",
        alive_tasks()
    );
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
