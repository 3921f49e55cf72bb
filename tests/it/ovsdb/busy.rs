//! A replica that never makes anyone wait (issue 11): while a reader holds a snapshot of the
//! service's replica and burns a core on it (what a pass at thousands of peerings does) and NB
//! updates arrive, the gRPC API keeps answering and the NB server's inactivity probes keep
//! being answered: the session stays up.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovn_peerd::ovsdb::CacheEvent;
use ovn_peerd::proto::v1::{CreatePeeringRequest, GetPeeringRequest, ListRoutesRequest, Peering};
use ovn_peerd_test_support::ovsdb::run;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::T;
use crate::support::nb::NbServer;
use crate::support::peerd::{test_config, Options, TestPeerd};
use crate::support::pg::{free_port, wait_until, TestDb};
use crate::support::vpc::create_vpc;

/// The longest the hog runs: past the waits below, so a design that makes calls or echoes wait
/// for the hog fails them (late), instead of hanging.
const HOG_MAX: Duration = Duration::from_secs(45);

/// The server's replies from us to its own echo requests, as its jsonrpc debug log shows them.
fn echoes_answered(nb: &NbServer) -> usize {
    std::fs::read_to_string(nb.log())
        .unwrap_or_default()
        .matches(r#"received reply, result=[], id="echo""#)
        .count()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_echoes_are_answered_while_a_pass_holds_the_replica() {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    create_vpc(&nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&nb, "vpc-2", &["10.2.0.1/24"]);
    // A remote the server probes after 2 s of silence and drops 2 s after an unanswered probe.
    let port = free_port();
    nb.nbctl(&["init"]);
    nb.nbctl(&[
        "set-connection",
        &format!("ptcp:{port}:127.0.0.1"),
        "--",
        "set",
        "connection",
        ".",
        "inactivity_probe=2000",
    ]);
    let ctl = nb.ctl().to_str().unwrap().to_owned();
    run(
        "ovs-appctl",
        &[
            "-t",
            &ctl,
            "ovsdb-server/add-remote",
            "db:OVN_Northbound,NB_Global,connections",
        ],
    );
    wait_until("the probed remote listens", T, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .unwrap();
    let config = test_config(
        &db.url,
        &format!("tcp:127.0.0.1:{port}"),
        &Options::default(),
    );
    let peerd = TestPeerd::start_on(db, nb, config).await;
    let mut api = peerd.client().await;
    api.create_peering(CreatePeeringRequest {
        peering: Some(Peering {
            name: "p".into(),
            local_vpc: "vpc-1".into(),
            remote_vpc: "vpc-2".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    peerd.converge().await;

    let nb_client = peerd.nb_client.clone();
    let mut events = nb_client.subscribe();
    run("ovs-appctl", &["-t", &ctl, "vlog/set", "jsonrpc:file:dbg"]);
    let echoes_before = echoes_answered(&peerd.nb);

    // The hog: a snapshot held and a core burnt on it, on a thread of its own, as a pass does.
    let stop = Arc::new(AtomicBool::new(false));
    let hogging = Arc::new(AtomicBool::new(true));
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let hog = {
        let (stop, hogging, client) = (stop.clone(), hogging.clone(), nb_client.clone());
        std::thread::spawn(move || {
            let snapshot = client.cache();
            held_tx.send(snapshot.len()).unwrap();
            let end = Instant::now() + HOG_MAX;
            let mut spins = 0u64;
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                spins = spins.wrapping_add(std::hint::black_box(snapshot.len()) as u64);
            }
            hogging.store(false, Ordering::SeqCst);
            spins
        })
    };
    let rows_held = held_rx.recv().unwrap();
    assert!(rows_held > 0);
    // An update arrives while the snapshot is held.
    peerd.nb.nbctl(&["lr-add", "noise"]);

    // Calls, one after another, until told to stop; each notes whether the hog still ran.
    let done = Arc::new(AtomicBool::new(false));
    let calls = {
        let (done, hogging) = (done.clone(), hogging.clone());
        let mut health = HealthClient::new(peerd.channel().await);
        let mut api = api.clone();
        tokio::spawn(async move {
            let (mut latencies, mut late) = (Vec::new(), 0);
            while !done.load(Ordering::SeqCst) {
                for call in 0..3 {
                    let t0 = Instant::now();
                    match call {
                        0 => drop(
                            api.get_peering(GetPeeringRequest { name: "p".into() })
                                .await
                                .expect("GetPeering"),
                        ),
                        1 => drop(
                            api.list_routes(ListRoutesRequest {
                                vpc: "vpc-1".into(),
                                ..Default::default()
                            })
                            .await
                            .expect("ListRoutes"),
                        ),
                        _ => drop(
                            health
                                .check(HealthCheckRequest::default())
                                .await
                                .expect("health"),
                        ),
                    }
                    latencies.push(t0.elapsed());
                    if !hogging.load(Ordering::SeqCst) {
                        late += 1;
                    }
                }
            }
            (latencies, late)
        })
    };

    // The server probes us at least twice while the snapshot is held: each probe answered.
    let echoed = wait_until("two server echoes answered during the hog", T, || {
        echoes_answered(&peerd.nb) >= echoes_before + 2
    });
    done.store(true, Ordering::SeqCst);
    let (mut latencies, late) = calls.await.unwrap();
    let still_hogging = hogging.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    hog.join().unwrap();

    latencies.sort();
    println!(
        "{} calls (GetPeering, ListRoutes, health) while a snapshot of {rows_held} rows was \
         held and a core burnt on it: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    echoed.unwrap();
    assert!(
        still_hogging,
        "the calls or the echoes waited for the hog to end"
    );
    assert_eq!(late, 0, "calls that completed only after the hog ended");
    assert!(latencies.len() >= 3, "no call completed");
    // The session stayed up: no reconnect, no re-dump; and the update was applied meanwhile.
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, CacheEvent::Disconnected | CacheEvent::Resynced),
            "the NB session dropped: {e:?}"
        );
    }
    let log = std::fs::read_to_string(peerd.nb.log()).unwrap_or_default();
    assert!(!log.contains("no response to inactivity probe"), "{log}");
    assert_eq!(nb_client.cache().router_by_name("noise").len(), 1);
}
