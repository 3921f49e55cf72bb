//! OVSDB client latency against a local ovsdb-server (run: `cargo bench --bench ovsdb_latency`).
//!
//! Measures a one-op `transact` round trip, monitor propagation (ovn-nbctl write → our cache;
//! our transact → a second client's cache), and `ovsdb-client transact` for comparison
//! (process spawn included). Starts and kills its own server in a temp dir (the `NbServer` of
//! `ovn-peerd-test-support`, shared with the integration tests).

use std::process::Command;
use std::time::{Duration, Instant};

use ovn_peerd::ovsdb::{Client, ClientConfig, Datum, Operation, Row};
use ovn_peerd_test_support::ovsdb::NbServer;

fn insert(name: &str) -> Operation {
    Operation::Insert {
        table: "Logical_Router".into(),
        row: Row::from([("name".to_string(), Datum::from(name))]),
        uuid_name: None,
        uuid: None,
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn row(label: &str, mut v: Vec<Duration>) {
    let n = v.len();
    let (p50, p99) = (pct(&mut v, 0.5), pct(&mut v, 0.99));
    println!(
        "{label:<52} {n:>5} {:>10.3} {:>10.3}",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let srv = NbServer::start();
    let config = ClientConfig::new(&srv.remote(), "OVN_Northbound").unwrap();
    let a = Client::start(config.clone()).unwrap();
    let b = Client::start(config).unwrap();
    a.wait_synced(Duration::from_secs(10)).await.unwrap();
    b.wait_synced(Duration::from_secs(10)).await.unwrap();

    for i in 0..50 {
        a.transact(vec![insert(&format!("warm{i}"))]).await.unwrap();
    }
    let mut rtt = Vec::new();
    for i in 0..1000 {
        let t = Instant::now();
        a.transact(vec![insert(&format!("rtt{i}"))]).await.unwrap();
        rtt.push(t.elapsed());
    }

    let mut to_b = Vec::new();
    for i in 0..300 {
        let name = format!("prop{i}");
        let t = Instant::now();
        a.transact(vec![insert(&name)]).await.unwrap();
        b.wait_for(Duration::from_secs(10), |c| {
            !c.router_by_name(&name).is_empty()
        })
        .await
        .unwrap();
        to_b.push(t.elapsed());
    }

    let (mut nbctl_seen, mut nbctl_proc) = (Vec::new(), Vec::new());
    for i in 0..100 {
        let name = format!("nbctl{i}");
        let t = Instant::now();
        let db = format!("--db={}", srv.remote());
        let st = tokio::task::spawn_blocking(move || {
            Command::new("ovn-nbctl")
                .args([db.as_str(), "lr-add", name.as_str()])
                .status()
        });
        let name = format!("nbctl{i}");
        a.wait_for(Duration::from_secs(10), |c| {
            !c.router_by_name(&name).is_empty()
        })
        .await
        .unwrap();
        nbctl_seen.push(t.elapsed());
        assert!(st.await.unwrap().unwrap().success());
        nbctl_proc.push(t.elapsed());
    }

    let mut client_proc = Vec::new();
    for i in 0..100 {
        let txn = format!(
            r#"["OVN_Northbound",{{"op":"insert","table":"Logical_Router","row":{{"name":"oc{i}"}}}}]"#
        );
        let t = Instant::now();
        let out = Command::new("ovsdb-client")
            .args(["transact", &srv.remote(), &txn])
            .output()
            .unwrap();
        assert!(out.status.success());
        client_proc.push(t.elapsed());
    }

    println!(
        "\n{:<52} {:>5} {:>10} {:>10}",
        "measurement (unix socket, 1 ovsdb-server)", "n", "p50 ms", "p99 ms"
    );
    row("ovn-peerd transact, 1 insert (round trip)", rtt);
    row("ovn-peerd transact -> 2nd client's cache has it", to_b);
    row("ovn-nbctl lr-add spawned -> our cache has it", nbctl_seen);
    row("ovn-nbctl lr-add process (spawn..exit)", nbctl_proc);
    row("ovsdb-client transact, 1 insert (spawn..exit)", client_proc);
    println!("rows in cache at the end: {}", a.cache().routers().count());
}
