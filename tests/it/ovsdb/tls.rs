//! `ssl:` remotes against real `ovsdb-server`s serving `pssl:` with certificates made by
//! `ovs-pki`: a Raft cluster followed across a leader kill, and the failures an operator
//! meets (wrong CA, expired server certificate, missing file, plaintext server), each a clear
//! error, the fixable ones recovered without a restart once fixed on disk.

use std::path::Path;

use ovn_peerd::ovsdb::{ConnectionState, TlsFiles, TransactError};
use ovn_peerd_test_support::pki::{expired_server_pki, other_pki, pki, Pki};

use super::*;
use crate::support::nb::{NbCluster, NbServer};

/// The client files of `pki`, copied into `dir` (so a test can replace them).
fn files_in(dir: &Path, pki: &Pki) -> TlsFiles {
    let (private_key, certificate, ca_cert) = pki.install_client_files(dir);
    TlsFiles {
        private_key,
        certificate,
        ca_cert,
    }
}

fn ssl_config(remotes: &str, files: TlsFiles) -> ClientConfig {
    config(remotes).with_tls(Some(files))
}

/// The client's last connection error, once it has one.
async fn last_error(client: &Client) -> String {
    let mut state = client.state();
    let s = tokio::time::timeout(
        T,
        state.wait_for(|s| {
            matches!(
                s,
                ConnectionState::Connecting {
                    last_error: Some(_)
                }
            )
        }),
    )
    .await
    .expect("no connection error within the timeout")
    .unwrap()
    .clone();
    match s {
        ConnectionState::Connecting {
            last_error: Some(e),
        } => e,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_refused_then_recovers_when_the_files_are_replaced() {
    let nb = NbServer::start_ssl(pki());
    let dir = tempfile::tempdir().unwrap();
    // Our own certificate is one the server accepts; only the CA we check the server's
    // against is wrong.
    let files = files_in(dir.path(), pki());
    std::fs::copy(other_pki().ca_cert(), &files.ca_cert).unwrap();
    let client = Client::start(ssl_config(&nb.ssl_remote(), files)).unwrap();
    let err = last_error(&client).await;
    assert!(
        err.contains(&nb.ssl_remote())
            && err.contains("not signed by the CA certificate")
            && err.contains("UnknownIssuer"),
        "{err}"
    );
    // It keeps trying (backoff), and stays unsynced while the files are wrong.
    assert!(!client.state().borrow().is_synced());

    // Rotation on disk: the next attempt reads the new files; no restart.
    files_in(dir.path(), pki());
    client.wait_synced(T).await.unwrap();
    client
        .transact(vec![insert_router("over-tls", None, None)])
        .await
        .unwrap();
    assert!(nb
        .nbctl_ssl(&["--bare", "--columns=name", "list", "Logical_Router"])
        .contains("over-tls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused() {
    let nb = NbServer::start_ssl(expired_server_pki());
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(ssl_config(&nb.ssl_remote(), files_in(dir.path(), pki()))).unwrap();
    let err = last_error(&client).await;
    assert!(
        err.contains("certificate expired") && err.contains("outside its validity period"),
        "{err}"
    );
    assert!(!client.state().borrow().is_synced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_is_named_then_picked_up_when_it_appears() {
    let nb = NbServer::start_ssl(pki());
    let dir = tempfile::tempdir().unwrap();
    let files = files_in(dir.path(), pki());
    std::fs::remove_file(&files.ca_cert).unwrap();
    let client = Client::start(ssl_config(&nb.ssl_remote(), files.clone())).unwrap();
    let err = last_error(&client).await;
    assert!(
        err.contains("cannot load CA certificate") && err.contains(files.ca_cert.to_str().unwrap()),
        "{err}"
    );
    std::fs::copy(pki().ca_cert(), &files.ca_cert).unwrap();
    client.wait_synced(T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_server_on_an_ssl_remote_is_refused() {
    let nb = NbServer::start();
    // The plain TCP port, named as ssl:.
    let remote = nb.tcp_remote().replacen("tcp:", "ssl:", 1);
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(ssl_config(&remote, files_in(dir.path(), pki()))).unwrap();
    let err = last_error(&client).await;
    assert!(
        err.contains(&remote) && err.contains("TLS handshake failed") && err.contains("plaintext"),
        "{err}"
    );
    // Never synced, however long it keeps retrying.
    let r = client.wait_synced(std::time::Duration::from_secs(2)).await;
    assert!(r.is_err(), "synced to a plaintext server over ssl:");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_leader_of_an_ssl_cluster_across_a_leader_kill() {
    let mut cluster = NbCluster::start_ssl(3, pki());
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(ssl_config(
        &cluster.ssl_remotes(),
        files_in(dir.path(), pki()),
    ))
    .unwrap();
    client.wait_synced(T).await.unwrap();
    let leader = cluster.leader();
    let on = |client: &Client| match &*client.state().borrow() {
        ConnectionState::Connected {
            remote,
            synced: true,
        } => Some(remote.to_string()),
        _ => None,
    };
    assert_eq!(on(&client), Some(cluster.ssl_remote(leader)));
    client
        .transact(vec![insert_router("before", None, None)])
        .await
        .unwrap();

    cluster.kill9(leader);
    let new_leader = cluster.leader();
    let deadline = tokio::time::Instant::now() + FAILOVER;
    while client.cache().router_by_name("after").is_empty() {
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
    assert_eq!(on(&client), Some(cluster.ssl_remote(new_leader)));
    assert_cache_matches(&client, |a| cluster.nbctl(a)).await;
    let c = client.cache();
    assert_eq!(c.router_by_name("before").len(), 1);
    assert_eq!(c.router_by_name("after").len(), 1);
}
