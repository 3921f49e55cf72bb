//! `/metrics` of the real binary tells the truth as peerings change state.
//!
//! The metrics recorder is process-wide, so ovn-peerd runs as a child process
//! ([`PeerdProcess`]) and `/metrics` is read over HTTP. Every figure is checked against
//! an independent source: Postgres for peerings by state, `ovn-nbctl` for the NB replica's
//! rows, and the calls this test made for the gRPC counters. If `promtool` is on `PATH`
//! the exposition is also linted with `promtool check metrics`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::{
    CreatePeeringRequest, DeletePeeringRequest, GetPeeringRequest, Peering,
};
use sqlx::PgPool;
use tonic::transport::Channel;

use crate::support::nb::NbServer;
use crate::support::peerd_process::PeerdProcess;
use crate::support::pg::{free_port, TestDb};
use crate::support::vpc::{add_subnet, create_vpc};

/// One scrape of `/metrics`.
pub(crate) struct Scrape {
    text: String,
}

impl Scrape {
    /// GET /metrics over HTTP/1.0 (a plain body, never chunked).
    pub(crate) fn get(port: u16) -> Option<Scrape> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200")
            .then(|| Scrape { text: body.into() })
            .or_else(|| panic!("GET /metrics: {head}"))
    }

    /// Every sample: (name, labels) → value.
    fn samples(&self) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("sample line");
                let value: f64 = value.parse().expect("sample value");
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                ((name.to_string(), labels), value)
            })
            .collect()
    }

    /// The value of the sample `name{labels}` (exactly these labels), if present.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples().get(&(name.to_string(), labels)).copied()
    }

    /// `ovn_peerd_peerings` by state (all four states must be present).
    fn peerings(&self) -> BTreeMap<String, i64> {
        ["pending", "active", "failed", "deleting"]
            .into_iter()
            .filter_map(|s| {
                let v = self.value("ovn_peerd_peerings", &[("state", s)])?;
                Some((s.to_string(), v as i64))
            })
            .collect()
    }

    /// Every value the `method` label takes.
    fn methods(&self) -> Vec<String> {
        let mut m: Vec<String> = self
            .samples()
            .into_keys()
            .filter_map(|(_, mut labels)| labels.remove("method"))
            .collect();
        m.sort();
        m.dedup();
        m
    }
}

/// `a="x",b="y"` (values without commas or escaped quotes: ours have none).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').expect("label");
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

/// Peerings by state as Postgres holds them, all four states present.
async fn stored_by_state(pool: &PgPool) -> BTreeMap<String, i64> {
    let mut m: BTreeMap<String, i64> = ["pending", "active", "failed", "deleting"]
        .into_iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM peerings GROUP BY state")
            .fetch_all(pool)
            .await
            .expect("count by state");
    m.extend(rows);
    m
}

/// Rows of the three tables the replica holds, read by `ovn-nbctl`.
fn nb_rows(nb: &NbServer) -> i64 {
    [
        "Logical_Router",
        "Logical_Router_Port",
        "Logical_Router_Static_Route",
    ]
    .into_iter()
    .map(|t| {
        nb.nbctl(&["--bare", "--columns=_uuid", "list", t])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count() as i64
    })
    .sum()
}

/// Polls the scrape until `check` holds (the worker publishes after its pass), or panics
/// with the last scrape.
async fn scrape_until(port: u16, what: &str, mut check: impl FnMut(&Scrape) -> bool) -> Scrape {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = Scrape::get(port);
        if let Some(s) = s.filter(|s| check(s)) {
            return s;
        }
        if std::time::Instant::now() > deadline {
            let last = Scrape::get(port).map(|s| s.text).unwrap_or_default();
            panic!("timed out waiting for {what}; last /metrics:\n{last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/metrics` matches Postgres' count of peerings by state and the NB replica's size.
async fn truthful(port: u16, pool: &PgPool, nb: &NbServer, want: [(&str, i64); 4]) -> Scrape {
    let want: BTreeMap<String, i64> = want.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    assert_eq!(stored_by_state(pool).await, want, "Postgres");
    let rows = nb_rows(nb);
    scrape_until(
        port,
        &format!("peerings {want:?}, {rows} cache rows"),
        |s| s.peerings() == want && s.value("ovn_peerd_ovsdb_cache_rows", &[]) == Some(rows as f64),
    )
    .await
}

async fn wait_stored(pool: &PgPool, want: [(&str, i64); 4]) {
    let want: BTreeMap<String, i64> = want.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stored_by_state(pool).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "peerings never {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A unary call on `path` with an empty message: a client that does not know our API.
async fn call_raw(channel: Channel, path: &'static str) -> tonic::Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let r: Result<tonic::Response<()>, tonic::Status> = grpc
        .unary(
            tonic::Request::new(()),
            http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await;
    r.expect_err("not one of our RPCs").code()
}

fn peering(name: &str, local: &str, remote: &str) -> Peering {
    Peering {
        name: name.into(),
        local_vpc: local.into(),
        remote_vpc: remote.into(),
        ..Default::default()
    }
}

/// The exposition passes `promtool check metrics`, when promtool is installed.
fn promtool_lint(text: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        // Straight to stderr: libtest captures eprintln! of a passing test, and a skip
        // must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: promtool is not on PATH; /metrics not linted (Debian: prometheus)"
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_follow_peerings_through_active_failed_and_deleted() {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    create_vpc(&nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&nb, "vpc-2", &["10.2.0.1/24"]);
    create_vpc(&nb, "vpc-3", &["10.3.0.1/24"]);
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let peerd =
        PeerdProcess::start_with_args(&db.url, &nb.remote(), &["--metrics-listen", &metrics_addr]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .expect("connect");
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", peerd.port))
        .unwrap()
        .connect()
        .await
        .expect("connect to ovn-peerd");
    let mut client = PeeringServiceClient::new(channel.clone());

    // Two peerings → ACTIVE.
    for (name, remote) in [("a", "vpc-2"), ("b", "vpc-3")] {
        client
            .create_peering(CreatePeeringRequest {
                peering: Some(peering(name, "vpc-1", remote)),
                ..Default::default()
            })
            .await
            .expect("create");
    }
    wait_stored(
        &pool,
        [
            ("pending", 0),
            ("active", 2),
            ("failed", 0),
            ("deleting", 0),
        ],
    )
    .await;
    truthful(
        metrics_port,
        &pool,
        &nb,
        [
            ("pending", 0),
            ("active", 2),
            ("failed", 0),
            ("deleting", 0),
        ],
    )
    .await;

    // b broken: vpc-3 gets a subnet inside vpc-1's → FAILED, a stays ACTIVE.
    add_subnet(&nb, "vpc-3", "vpc-3-s9", "10.1.0.129/25");
    wait_stored(
        &pool,
        [
            ("pending", 0),
            ("active", 1),
            ("failed", 1),
            ("deleting", 0),
        ],
    )
    .await;
    truthful(
        metrics_port,
        &pool,
        &nb,
        [
            ("pending", 0),
            ("active", 1),
            ("failed", 1),
            ("deleting", 0),
        ],
    )
    .await;

    // b deleted → gone from Postgres and from the gauge.
    client
        .delete_peering(DeletePeeringRequest {
            name: "b".into(),
            allow_missing: false,
            ..Default::default()
        })
        .await
        .expect("delete");
    wait_stored(
        &pool,
        [
            ("pending", 0),
            ("active", 1),
            ("failed", 0),
            ("deleting", 0),
        ],
    )
    .await;
    let rows_before_calls = nb_rows(&nb);

    // Calls with known outcomes: one refusal, and two paths that are not our RPCs.
    let missing = client
        .get_peering(GetPeeringRequest { name: "b".into() })
        .await
        .expect_err("b is gone");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    for junk in [
        "/ovnpeerd.v1.PeeringService/NoSuchMethod",
        "/junk.Service/Junk1",
    ] {
        assert_eq!(
            call_raw(channel.clone(), junk).await,
            tonic::Code::Unimplemented
        );
    }

    let s = truthful(
        metrics_port,
        &pool,
        &nb,
        [
            ("pending", 0),
            ("active", 1),
            ("failed", 0),
            ("deleting", 0),
        ],
    )
    .await;
    assert_eq!(nb_rows(&nb), rows_before_calls, "the calls changed nothing");
    let requests = |method: &str, code: &str| {
        s.value(
            "ovn_peerd_grpc_requests_total",
            &[("method", method), ("code", code)],
        )
    };
    let m = "/ovnpeerd.v1.PeeringService/";
    assert_eq!(requests(&format!("{m}CreatePeering"), "Ok"), Some(2.0));
    assert_eq!(requests(&format!("{m}DeletePeering"), "Ok"), Some(1.0));
    assert_eq!(requests(&format!("{m}GetPeering"), "NotFound"), Some(1.0));
    assert_eq!(requests("unknown", "Unimplemented"), Some(2.0));
    // The label set is bounded: only the RPCs called, and `unknown` for the rest.
    assert_eq!(
        s.methods(),
        vec![
            format!("{m}CreatePeering"),
            format!("{m}DeletePeering"),
            format!("{m}GetPeering"),
            "unknown".to_string(),
        ]
    );

    // One prefix and a HELP line for every metric exposed.
    let text = &s.text;
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(name.starts_with("ovn_peerd_"), "{name}");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
    for ((name, _), _) in s.samples() {
        assert!(name.starts_with("ovn_peerd_"), "{name}");
    }
    promtool_lint(text);
}

#[tokio::test]
async fn foreign_nb_changes_run_narrow_passes_and_drift_on_a_peered_router_is_repaired() {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    create_vpc(&nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&nb, "vpc-2", &["10.2.0.1/24"]);
    create_vpc(&nb, "other", &["10.9.0.1/24"]);
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let peerd =
        PeerdProcess::start_with_args(&db.url, &nb.remote(), &["--metrics-listen", &metrics_addr]);
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", peerd.port))
        .unwrap()
        .connect()
        .await
        .expect("connect to ovn-peerd");
    PeeringServiceClient::new(channel)
        .create_peering(CreatePeeringRequest {
            peering: Some(peering("p", "vpc-1", "vpc-2")),
            ..Default::default()
        })
        .await
        .expect("create");
    let passes = |s: &Scrape, scope: &str| {
        s.value(
            "ovn_peerd_reconciler_passes_total",
            &[("result", "ok"), ("scope", scope)],
        )
        .unwrap_or(0.0)
    };
    let before = scrape_until(metrics_port, "p active after a full pass", |s| {
        s.peerings().get("active") == Some(&1) && passes(s, "full") >= 1.0
    })
    .await;
    let full = passes(&before, "full");
    let narrow = passes(&before, "narrow");

    // Someone else changes another router: its options, a port, a route.
    for i in 0..10 {
        nb.nbctl(&[
            "set",
            "Logical_Router",
            "other",
            &format!("options:churn={i}"),
        ]);
    }
    add_subnet(&nb, "other", "other-s1", "10.9.1.1/24");
    nb.nbctl(&["lr-route-add", "other", "10.77.0.0/16", "10.9.0.254"]);
    // And disables our port on a peered router: that peering is judged again and repaired.
    nb.nbctl(&["set", "Logical_Router_Port", "vpc-1-vpc-2", "enabled=false"]);
    let enabled = || {
        nb.nbctl(&[
            "--bare",
            "--columns=enabled",
            "list",
            "Logical_Router_Port",
            "vpc-1-vpc-2",
        ])
    };
    ovn_peerd_test_support::wait_until("our port enabled again", Duration::from_secs(30), || {
        enabled().trim().is_empty()
    })
    .unwrap_or_else(|e| panic!("{e}: enabled={:?}", enabled()));
    // The repairing pass is counted once it ends; none of them was a full pass.
    let after = scrape_until(metrics_port, "the repairing pass counted", |s| {
        passes(s, "full") + passes(s, "narrow") > full + narrow
    })
    .await;
    assert_eq!(passes(&after, "full"), full, "{}", after.text);
    assert!(passes(&after, "narrow") > narrow, "{}", after.text);
}

/// The resident size must not stay at the largest transient for good: the heap is trimmed after
/// the NB dump is installed and after the worker's full pass (once the pass has dropped what it
/// held), each trim is timed, and `/metrics` tells what the heap holds, under either allocator
/// (jemalloc by default, glibc with `--no-default-features`).
#[tokio::test]
async fn the_heap_is_trimmed_after_the_dump_and_after_a_full_pass() {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    create_vpc(&nb, "vpc-1", &["10.1.0.1/24"]);
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let _peerd =
        PeerdProcess::start_with_args(&db.url, &nb.remote(), &["--metrics-listen", &metrics_addr]);
    let trims = |s: &Scrape, after: &str| {
        s.value("ovn_peerd_heap_trims_total", &[("after", after)])
            .unwrap_or(0.0)
    };
    let s = scrape_until(
        metrics_port,
        "a trim after the dump and one after a pass",
        |s| trims(s, "dump") >= 1.0 && trims(s, "pass") >= 1.0,
    )
    .await;
    let heap = |state| s.value("ovn_peerd_heap_bytes", &[("state", state)]);
    assert!(heap("in_use").is_some_and(|b| b > 0.0), "{}", s.text);
    // glibc tells what it keeps free; jemalloc what is resident.
    assert!(
        heap("free").is_some() || heap("resident").is_some_and(|b| b > 0.0),
        "{}",
        s.text
    );
    assert!(
        s.value("ovn_peerd_heap_trim_seconds_count", &[])
            .is_some_and(|n| n >= 2.0),
        "{}",
        s.text
    );
}
