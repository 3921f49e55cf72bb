//! A restart of the real binary over converged peerings (issue 14, targets 5 and 6): the
//! first full pass compares every peering with NB in place and rewrites none of the rows NB
//! already holds exactly; it repairs the one row changed by hand while ovn-peerd was down;
//! and a peering created as soon as the restarted process serves reaches NB after that one
//! full pass, not behind a second one.
//!
//! The process's `/metrics` counts the passes and the rows written; `ovn-nbctl` shows the
//! rows (their UUIDs and columns) before and after.

use std::io::{Read, Write};
use std::time::Duration;

use ovn_peerd::proto::v1::peering::State;
use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::{CreatePeeringRequest, GetPeeringRequest, Peering};
use tonic::transport::Channel;

use crate::support::nb::NbServer;
use crate::support::nbrows::NbRows;
use crate::support::peerd_process::PeerdProcess;
use crate::support::pg::{free_port, TestDb};
use crate::support::process::wait_until;
use crate::support::vpc::create_vpc;

const WAIT: Duration = Duration::from_secs(60);

fn peering(name: &str, local: &str, remote: &str) -> Peering {
    Peering {
        name: name.into(),
        local_vpc: local.into(),
        remote_vpc: remote.into(),
        ..Default::default()
    }
}

async fn client(p: &PeerdProcess) -> PeeringServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", p.port))
        .unwrap()
        .connect()
        .await
        .expect("connect to ovn-peerd");
    PeeringServiceClient::new(channel)
}

async fn active(c: &mut PeeringServiceClient<Channel>, name: &str) -> bool {
    let got = c
        .get_peering(GetPeeringRequest { name: name.into() })
        .await
        .expect("get")
        .into_inner();
    got.state == State::Active as i32
}

/// The sum of a counter's samples whose labels contain every one of `labels`, from
/// `/metrics` (HTTP/1.0: a plain body); `None` while it does not answer.
fn counter(port: u16, name: &str, labels: &[&str]) -> Option<f64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (_, body) = raw.split_once("\r\n\r\n")?;
    Some(
        body.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum(),
    )
}

#[tokio::test]
async fn a_restart_rewrites_nothing_repairs_drift_and_a_new_peering_waits_for_one_full_pass() {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    for i in 1..=10 {
        create_vpc(&nb, &format!("vpc-{i}"), &[&format!("10.{i}.0.1/24")]);
    }
    let old = ["p1", "p2", "p3", "p4"];
    {
        let first = PeerdProcess::start(&db.url, &nb.remote());
        let mut c = client(&first).await;
        for (k, name) in old.iter().enumerate() {
            let (l, r) = (2 * k + 1, 2 * k + 2);
            c.create_peering(CreatePeeringRequest {
                peering: Some(peering(name, &format!("vpc-{l}"), &format!("vpc-{r}"))),
                ..Default::default()
            })
            .await
            .expect("create");
        }
        for name in old {
            ovn_peerd_test_support::wait_until_async(&format!("{name} ACTIVE"), WAIT, || {
                let mut c = c.clone();
                async move { active(&mut c, name).await }
            })
            .await
            .unwrap();
        }
    } // stopped (SIGKILL: a crash is the harder restart)

    // While it is down, someone disables one of p3's ports by hand.
    nb.nbctl(&["set", "logical_router_port", "vpc-5-vpc-6", "enabled=false"]);
    let before = NbRows::read(&nb);
    assert_eq!(
        before.owned_count(),
        16,
        "4 peerings, 2 ports and 2 routes each"
    );

    let metrics = free_port();
    let second = PeerdProcess::start_with_args(
        &db.url,
        &nb.remote(),
        &["--metrics-listen", &format!("127.0.0.1:{metrics}")],
    );
    let c = client(&second).await;
    // As soon as it takes creates (its NB replica in sync).
    ovn_peerd_test_support::wait_until_async("CreatePeering after the restart", WAIT, || {
        let mut c = c.clone();
        async move {
            c.create_peering(CreatePeeringRequest {
                peering: Some(peering("new", "vpc-9", "vpc-10")),
                ..Default::default()
            })
            .await
            .is_ok()
        }
    })
    .await
    .unwrap();
    ovn_peerd_test_support::wait_until_async("the new peering ACTIVE", WAIT, || {
        let mut c = c.clone();
        async move { active(&mut c, "new").await }
    })
    .await
    .unwrap();
    wait_until("p3's port enabled again", WAIT, || {
        NbRows::read(&nb).owned_count() == 20
            && nb
                .nbctl(&["get", "logical_router_port", "vpc-5-vpc-6", "enabled"])
                .trim()
                == "[]"
    })
    .unwrap();

    // NB: every row of the old peerings is the same row (same UUID) with the same columns;
    // only the new peering's four rows were added.
    let after = NbRows::read(&nb);
    for (uuid, port) in &before.ports {
        assert_eq!(after.ports.get(uuid), Some(port), "port {}", port.name);
    }
    for (uuid, route) in &before.routes {
        assert_eq!(
            after.routes.get(uuid),
            Some(route),
            "route {}",
            route.ip_prefix
        );
    }
    assert_eq!(after.owned_count(), before.owned_count() + 4);
    // What the worker wrote: the new peering's 2 ports and 2 routes, and the repair of one
    // port's `enabled` (an update); nothing else.
    let rows = |kind: &str| counter(metrics, "ovn_peerd_nb_rows_written_total", &[kind]);
    wait_until("the worker's row counters", WAIT, || rows("").is_some()).unwrap();
    assert_eq!(rows("kind=\"port_insert\""), Some(2.0));
    assert_eq!(rows("kind=\"route_insert\""), Some(2.0));
    assert_eq!(rows("kind=\"port_update\""), Some(1.0));
    assert_eq!(
        rows("kind=\"route_update\"").unwrap_or(0.0) + rows("_delete\"").unwrap_or(0.0),
        0.0,
        "no route updated, no row deleted"
    );
    // One full pass (the start-up's), then the new peering's own narrow pass.
    let full = counter(
        metrics,
        "ovn_peerd_reconciler_passes_total",
        &["scope=\"full\""],
    );
    assert_eq!(full, Some(1.0), "full passes since the restart");
}
