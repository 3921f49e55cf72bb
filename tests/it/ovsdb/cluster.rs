//! A three-server Raft cluster: the client follows the leader, and writes resume on the new
//! leader after the old one is killed.

use ovn_peerd::ovsdb::{ConnectionState, Remote, TransactError};

use super::*;
use crate::support::nb::NbCluster;

fn current_remote(client: &Client) -> Option<Remote> {
    match &*client.state().borrow() {
        ConnectionState::Connected {
            remote,
            synced: true,
        } => Some(remote.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_leader_across_a_leader_kill() {
    let mut cluster = NbCluster::start(3);
    let client = connect(&cluster.remotes()).await;
    let leader = cluster.leader();
    assert_eq!(
        current_remote(&client),
        Some(Remote::parse(&cluster.remote(leader)).unwrap())
    );
    client
        .transact(vec![insert_router("before", None, None)])
        .await
        .unwrap();

    cluster.kill9(leader);
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);
    // Writes resume: retry only NotConnected/OutcomeUnknown (the write is guarded by name).
    let deadline = tokio::time::Instant::now() + FAILOVER;
    loop {
        let exists = !client.cache().router_by_name("after").is_empty();
        if exists && client.state().borrow().is_synced() {
            break;
        }
        match client
            .transact(vec![insert_router("after", None, None)])
            .await
        {
            Ok(_) => break,
            Err(TransactError::NotConnected | TransactError::OutcomeUnknown(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes did not resume"
        );
    }
    client.wait_synced(T).await.unwrap();
    assert_eq!(
        current_remote(&client),
        Some(Remote::parse(&cluster.remote(new_leader)).unwrap())
    );
    assert_cache_matches(&client, |a| cluster.nbctl(a)).await;
    let c = client.cache();
    assert_eq!(c.router_by_name("before").len(), 1);
    assert_eq!(c.router_by_name("after").len(), 1);
}
