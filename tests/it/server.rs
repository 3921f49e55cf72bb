//! The server's own duties: health that follows Postgres, reflection,
//! graceful shutdown.

use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::nb::NbServer;
use crate::support::peerd::{test_config, Options, TestPeerd};
use crate::support::pg::{PgCluster, TestDb};
use crate::support::process::DieWithParent;

async fn status(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> ServingStatus {
    match client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
    {
        Ok(r) => r.into_inner().status(),
        // A service is registered by its watcher's first probe, a moment after start.
        Err(e) if e.code() == tonic::Code::NotFound => ServingStatus::ServiceUnknown,
        Err(e) => panic!("health check failed: {e:?}"),
    }
}

pub(crate) async fn wait_status(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
    want: ServingStatus,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = status(client, service).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service:?} stayed {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_follows_postgres_without_a_restart() {
    let mut cluster = PgCluster::start();
    let db = TestDb::create_in(&cluster.admin_url()).await;
    let nb = NbServer::start();
    let config = test_config(&db.url, &nb.remote(), &Options::default());
    let peerd = TestPeerd::start_on(db, nb, config).await;
    let mut health = HealthClient::new(peerd.channel().await);
    wait_status(&mut health, "", ServingStatus::Serving).await;
    wait_status(
        &mut health,
        "ovnpeerd.v1.PeeringService",
        ServingStatus::Serving,
    )
    .await;
    wait_status(
        &mut health,
        "ovnpeerd.v1.OvnNorthbound",
        ServingStatus::Serving,
    )
    .await;

    cluster.kill();
    wait_status(&mut health, "", ServingStatus::NotServing).await;
    wait_status(
        &mut health,
        "ovnpeerd.v1.PeeringService",
        ServingStatus::NotServing,
    )
    .await;
    // Meanwhile the API says UNAVAILABLE (clients retry), without driver text.
    let mut api = peerd.client().await;
    let down = api
        .get_peering(ovn_peerd::proto::v1::GetPeeringRequest { name: "p".into() })
        .await
        .unwrap_err();
    assert_eq!(down.code(), tonic::Code::Unavailable, "{down:?}");
    assert_eq!(down.message(), "the database is unavailable, retry later");
    // With a stable reason and when to retry (issue 13).
    {
        use tonic_types::StatusExt;
        let details = down.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("DATABASE_UNAVAILABLE", "ovnpeerd")
        );
        let retry = details.retry_info().expect("RetryInfo on UNAVAILABLE");
        assert!(retry.retry_delay.is_some(), "{retry:?}");
    }

    cluster.restart();
    wait_status(&mut health, "", ServingStatus::Serving).await;
    // And the API works again on the same process.
    api.list_peerings(ovn_peerd::proto::v1::ListPeeringsRequest::default())
        .await
        .expect("list after postgres came back");
}

#[tokio::test]
async fn health_reports_the_northbound_connection() {
    let mut peerd = TestPeerd::start().await;
    let mut health = HealthClient::new(peerd.channel().await);
    wait_status(
        &mut health,
        "ovnpeerd.v1.OvnNorthbound",
        ServingStatus::Serving,
    )
    .await;
    peerd.nb.kill9();
    wait_status(
        &mut health,
        "ovnpeerd.v1.OvnNorthbound",
        ServingStatus::NotServing,
    )
    .await;
    peerd.nb.restart();
    wait_status(
        &mut health,
        "ovnpeerd.v1.OvnNorthbound",
        ServingStatus::Serving,
    )
    .await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_and_stops_listening() {
    let mut peerd = TestPeerd::start().await;
    let addr = peerd.addr;
    peerd.stop().await.expect("run returns Ok on shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn the_binary_exits_zero_on_sigterm_and_serves_reflection() {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    let port = crate::support::pg::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ovn-peerd"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            "",
        ])
        .env("DATABASE_URL", &db.url)
        .env("OVN_NB_DB", nb.remote())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .die_with_parent()
        .spawn()
        .expect("spawn ovn-peerd");
    let guard = crate::support::process::KillOnDrop(child.id());
    crate::support::pg::wait_until("ovn-peerd to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .expect("ovn-peerd did not listen");

    // Reflection: the services are listed with no proto file at hand.
    if let Some(grpcurl) = crate::support::process::grpcurl() {
        let out = std::process::Command::new(grpcurl)
            .args(["-plaintext", &format!("127.0.0.1:{port}"), "list"])
            .output()
            .expect("run grpcurl");
        let listed = String::from_utf8_lossy(&out.stdout);
        // grpcurl picks v1 or v1alpha reflection (both are served) by its version.
        for service in [
            "ovnpeerd.v1.PeeringService",
            "grpc.health.v1.Health",
            "ServerReflection",
        ] {
            assert!(listed.contains(service), "{service} not in {listed}");
        }
    } else {
        eprintln!("grpcurl not installed (scripts/install-deps installs it): reflection listing not checked");
    }

    // SIGTERM: exit 0.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    std::mem::forget(guard);
    assert!(exit.success(), "exit status {exit:?}");
}
