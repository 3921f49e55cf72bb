//! The worker against a 3-server NB Raft cluster: the leader is killed while a bulk of
//! peerings is being written; the worker follows the new leader and converges with no
//! duplicate row (a transaction whose reply was lost is re-planned from the replica, never
//! blindly repeated). The worker writes at most 80 rows per transaction here, so the bulk
//! takes about 15 of them and the kill lands between two.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use ovn_peerd::reconciler::{self, Reconciler};
use tokio_util::sync::CancellationToken;

use super::{eventually, pool, store};
use crate::support::nb::NbCluster;
use crate::support::peerd::{Options, TestPeerd};

const N: usize = 150;

/// Hub (10.0.0.0/16) and N spokes, in one `ovn-nbctl` call against the cluster.
fn hub_and_spokes(cluster: &NbCluster) {
    let mut args: Vec<String> = vec![
        "lr-add".into(),
        "hub".into(),
        "--".into(),
        "lrp-add".into(),
        "hub".into(),
        "hub-s0".into(),
        "0a:00:00:00:00:01".into(),
        "10.0.0.1/16".into(),
    ];
    for i in 0..N {
        let vpc = format!("spoke-{i}");
        args.extend([
            "--".into(),
            "lr-add".into(),
            vpc.clone(),
            "--".into(),
            "lrp-add".into(),
            vpc.clone(),
            format!("{vpc}-s0"),
            format!("0a:00:00:01:{:02x}:{:02x}", i / 256, i % 256),
            format!("10.{}.{}.1/24", 100 + i / 256, i % 256),
        ]);
    }
    cluster.nbctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Rows of ours in `table`: (peering, the row's identity), duplicates kept.
fn owned(cluster: &NbCluster, table: &str, identity: &str) -> Vec<(String, String)> {
    let out = cluster.nbctl(&[
        "--format=json",
        "--data=json",
        &format!("--columns={identity},external_ids"),
        "list",
        table,
    ]);
    let v: Value = serde_json::from_str(&out).expect("ovn-nbctl json");
    let mut rows = Vec::new();
    for r in v["data"].as_array().unwrap() {
        let r = r.as_array().unwrap();
        let ids: BTreeMap<String, String> = r[r.len() - 1][1]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| {
                (
                    kv[0].as_str().unwrap().to_string(),
                    kv[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        if ids.get("ovn-peerd:owner").map(String::as_str) != Some("ovn-peerd") {
            continue;
        }
        let identity: Vec<String> = r[..r.len() - 1].iter().map(Value::to_string).collect();
        rows.push((
            ids.get("ovn-peerd:peering").cloned().unwrap_or_default(),
            identity.join(" "),
        ));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_converges_through_a_raft_cluster_when_the_leader_dies_mid_bulk() {
    let mut cluster = NbCluster::start(3);
    hub_and_spokes(&cluster);
    let t = TestPeerd::start_against(&cluster.remotes(), Options::default()).await;
    // The worker with small NB transactions, so that the bulk takes many of them.
    let deployment = ovn_peerd::store::Store::connect_lazy(&t.db.url)
        .unwrap()
        .deployment_get()
        .await
        .expect("deployment id");
    let mut settings = reconciler::Settings::from_config(&t.config, deployment.id);
    // One peering per NB transaction: the bulk takes ~N commits, so the window
    // in which some but not all are written stays open under a loaded machine.
    settings.max_rows_per_transaction = 4;
    let nb = ovn_peerd::ovsdb::Client::start(
        ovn_peerd::ovsdb::ClientConfig::new(&cluster.remotes(), ovn_peerd::startup::NB_DATABASE)
            .unwrap()
            .with_owner_key(ovn_peerd::peering::PEERING_KEY),
    )
    .unwrap();
    nb.wait_synced(Duration::from_secs(20)).await.unwrap();
    let worker = Reconciler::new(store(&t.db.url), nb, settings);
    let stop = CancellationToken::new();
    let _stop_worker = stop.clone().drop_guard();
    tokio::spawn(async move { worker.run(stop).await });
    let pool = pool(&t.db.url).await;
    // The bulk: N peerings in one transaction, written by the worker in several NB batches.
    let mut tx = pool.begin().await.unwrap();
    for i in 0..N {
        let base = i * 4;
        sqlx::query(
            "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4) \
             VALUES ($1, 'hub', $2, $3::inet, $4::inet)",
        )
        .bind(format!("p{i}"))
        .bind(format!("spoke-{i}"))
        .bind(format!("169.254.{}.{}/30", base / 256, base % 256 + 1))
        .bind(format!("169.254.{}.{}/30", base / 256, base % 256 + 2))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    // Mid-bulk: some peerings' ports are in NB, not all.
    let leader = cluster.leader();
    let written = eventually(
        "some but not all peerings written to NB",
        Duration::from_secs(60),
        || {
            let cluster = &cluster;
            async move {
                let peerings: BTreeSet<String> = owned(cluster, "Logical_Router_Port", "name")
                    .into_iter()
                    .map(|(p, _)| p)
                    .collect();
                (!peerings.is_empty() && peerings.len() < N).then_some(peerings.len())
            }
        },
    )
    .await;
    cluster.kill9(leader);
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);
    eprintln!(
        "leader {leader} killed with {written} of {N} peerings in NB; new leader {new_leader}"
    );

    eventually("all peerings active", Duration::from_secs(120), || {
        let pool = pool.clone();
        async move {
            let active: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM peerings WHERE state = 'active' \
                 AND observed_generation = generation",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (active == N as i64).then_some(())
        }
    })
    .await;
    // Exactly the rows of N peerings: 2 ports and 2 routes each, no duplicate.
    let ports = owned(&cluster, "Logical_Router_Port", "name");
    let routes = owned(
        &cluster,
        "Logical_Router_Static_Route",
        "ip_prefix,nexthop,policy,route_table",
    );
    let distinct_ports: BTreeSet<&(String, String)> = ports.iter().collect();
    let distinct_routes: BTreeSet<&(String, String)> = routes.iter().collect();
    assert_eq!(ports.len(), 2 * N, "ports of ours");
    assert_eq!(distinct_ports.len(), 2 * N, "duplicate ports");
    assert_eq!(routes.len(), 2 * N, "routes of ours");
    assert_eq!(distinct_routes.len(), 2 * N, "duplicate routes");
    let peerings: BTreeSet<&str> = ports.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(peerings.len(), N);
    // And nothing left to do.
    let outcome = t.converge().await;
    assert_eq!((outcome.rows_written, outcome.transactions), (0, 0));
}
