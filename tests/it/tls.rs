//! The transport: secure by default (plaintext only on loopback unless `--allow-insecure`),
//! TLS, mTLS, certificate rotation without a restart, the plaintext health-only listener,
//! and grpcurl with `-cacert -cert -key` and reflection. Certificates are made at test time.

use std::net::SocketAddr;

use ovn_peerd::config::Config;
use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::ListPeeringsRequest;
use ovn_peerd::startup::Application;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::certs::{tls_channel, Issued, TestCa};
use crate::support::nb::NbServer;
use crate::support::peerd::{test_config, Options, TestPeerd};
use crate::support::pg::TestDb;

/// A config serving TLS with `server`, requiring client certificates of `client_ca` if given.
fn tls_config(db: &TestDb, nb: &NbServer, server: &Issued, client_ca: Option<&TestCa>) -> Config {
    let mut config = test_config(&db.url, &nb.remote(), &Options::default());
    config.tls_cert = Some(server.cert.clone());
    config.tls_key = Some(server.key.clone());
    config.tls_client_ca = client_ca.map(TestCa::cert_path);
    config
}

async fn start_tls(server: &Issued, client_ca: Option<&TestCa>) -> TestPeerd {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    let config = tls_config(&db, &nb, server, client_ca);
    TestPeerd::start_on(db, nb, config).await
}

/// ListPeerings over a channel that may not have connected: Ok, or why not.
async fn list(channel: Result<Channel, tonic::transport::Error>) -> Result<(), String> {
    let channel = channel.map_err(|e| format!("connect: {e:?}"))?;
    PeeringServiceClient::new(channel)
        .list_peerings(ListPeeringsRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("rpc: {s:?}"))
}

async fn plaintext(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
}

#[tokio::test]
async fn plaintext_on_a_non_loopback_address_needs_allow_insecure() {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    let mut config = test_config(&db.url, &nb.remote(), &Options::default());
    config.listen = "0.0.0.0:0".parse().unwrap();
    let err = match Application::build(config.clone()).await {
        Ok(_) => panic!("plaintext on 0.0.0.0 was accepted without --allow-insecure"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("refusing to serve plaintext gRPC on the non-loopback address 0.0.0.0:0")
            && err.contains("--allow-insecure"),
        "{err}"
    );
    config.allow_insecure = true;
    let t = TestPeerd::start_on(db, nb, config).await;
    let addr: SocketAddr = format!("127.0.0.1:{}", t.addr.port()).parse().unwrap();
    list(plaintext(addr).await)
        .await
        .expect("plaintext allowed");
}

#[tokio::test]
async fn tls_only_refuses_plaintext_clients() {
    let ca = TestCa::new("server");
    let server = ca.server("server", "ovn-peerd");
    let t = start_tls(&server, None).await;
    list(tls_channel(t.addr, &ca.cert_pem, None).await)
        .await
        .expect("a TLS client trusting the CA is served");
    let refused = list(plaintext(t.addr).await).await;
    assert!(refused.is_err(), "a plaintext client was served");
    // A client that does not trust the server's CA refuses it.
    let other = TestCa::new("other");
    assert!(list(tls_channel(t.addr, &other.cert_pem, None).await)
        .await
        .is_err());
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_of_the_client_ca() {
    let server_ca = TestCa::new("server");
    let server = server_ca.server("server", "ovn-peerd");
    let client_ca = TestCa::new("clients");
    let t = start_tls(&server, Some(&client_ca)).await;

    let ok = client_ca.client("ops", "spiffe://example.org/ns/ops/sa/netops");
    // No policy: any caller with a valid certificate is an admin.
    list(tls_channel(t.addr, &server_ca.cert_pem, Some(&ok)).await)
        .await
        .expect("a client certificate of the client CA is served");

    let none = list(tls_channel(t.addr, &server_ca.cert_pem, None).await).await;
    assert!(none.is_err(), "served without a client certificate");
    // Signed by another CA (here the server's): refused too.
    let foreign = server_ca.client("foreign", "spiffe://example.org/ns/ops/sa/netops");
    let foreign = list(tls_channel(t.addr, &server_ca.cert_pem, Some(&foreign)).await).await;
    assert!(foreign.is_err(), "served with a certificate of another CA");
}

#[tokio::test]
async fn the_server_certificate_rotates_without_a_restart() {
    let ca1 = TestCa::new("first");
    let server = ca1.server("server", "ovn-peerd");
    let t = start_tls(&server, None).await;
    let before = tls_channel(t.addr, &ca1.cert_pem, None).await.unwrap();
    list(Ok(before.clone()))
        .await
        .expect("served by the first certificate");

    // A new certificate from another CA, written over the same files.
    let ca2 = TestCa::new("second");
    let rotated = ca2.server("rotated", "ovn-peerd");
    crate::support::certs::write_atomically(&server.cert, &rotated.cert_pem);
    crate::support::certs::write_atomically(&server.key, &rotated.key_pem);

    list(tls_channel(t.addr, &ca2.cert_pem, None).await)
        .await
        .expect("a new connection gets the new certificate");
    assert!(
        list(tls_channel(t.addr, &ca1.cert_pem, None).await)
            .await
            .is_err(),
        "a new connection still got the old certificate"
    );
    // An established connection keeps its session.
    list(Ok(before)).await.expect("the old connection goes on");

    // A half-written rotation (a key that does not fit) keeps the last good pair.
    let stray = ca1.server("stray", "ovn-peerd");
    crate::support::certs::write_atomically(&server.key, &stray.key_pem);
    list(tls_channel(t.addr, &ca2.cert_pem, None).await)
        .await
        .expect("the last good certificate is still served");
}

#[tokio::test]
async fn health_is_served_without_client_certificates_on_the_health_listener() {
    let server_ca = TestCa::new("server");
    let server = server_ca.server("server", "ovn-peerd");
    let client_ca = TestCa::new("clients");
    let db = TestDb::create().await;
    let nb = NbServer::start();
    let mut config = tls_config(&db, &nb, &server, Some(&client_ca));
    config.health_listen = Some("127.0.0.1:0".parse().unwrap());
    let t = TestPeerd::start_on(db, nb, config).await;
    let health_addr = t.health_addr.expect("a health listener");

    let mut health = HealthClient::new(plaintext(health_addr).await.unwrap());
    crate::server::wait_status(&mut health, "", ServingStatus::Serving).await;
    // Only health: the API is not reachable there.
    let api = PeeringServiceClient::new(plaintext(health_addr).await.unwrap())
        .list_peerings(ListPeeringsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(api.code(), tonic::Code::Unimplemented, "{api:?}");
    // The main listener still wants a client certificate, for health too.
    let mut main_health = HealthClient::new(
        tls_channel(t.addr, &server_ca.cert_pem, None)
            .await
            .unwrap(),
    );
    assert!(main_health
        .check(HealthCheckRequest::default())
        .await
        .is_err());
}

#[tokio::test]
async fn grpcurl_with_cacert_cert_and_key_lists_by_reflection_and_calls() {
    let Some(grpcurl) = crate::support::process::grpcurl() else {
        eprintln!("grpcurl not installed (scripts/install-deps installs it): not checked");
        return;
    };
    let server_ca = TestCa::new("server");
    let server = server_ca.server("server", "ovn-peerd");
    let client_ca = TestCa::new("clients");
    let client = client_ca.client("ops", "spiffe://example.org/ns/ops/sa/netops");
    let t = start_tls(&server, Some(&client_ca)).await;
    let addr = format!("localhost:{}", t.addr.port());
    let tls_args: Vec<String> = vec![
        "-cacert".into(),
        server_ca.cert_path().display().to_string(),
        "-cert".into(),
        client.cert.display().to_string(),
        "-key".into(),
        client.key.display().to_string(),
    ];
    let run = move |extra: &[&str]| {
        let mut args = tls_args.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = std::process::Command::new(&grpcurl)
            .args(&args)
            .output()
            .expect("run grpcurl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let grpcurl_task = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            let listed = run(&[&addr, "list"]);
            let called = run(&["-d", "{}", &addr, "ovnpeerd.v1.PeeringService/ListPeerings"]);
            (listed, called)
        }
    });
    let ((ok, listed), (called_ok, called)) = grpcurl_task.await.unwrap();
    assert!(ok, "{listed}");
    for service in ["ovnpeerd.v1.PeeringService", "grpc.health.v1.Health"] {
        assert!(listed.contains(service), "{service} not in {listed}");
    }
    assert!(called_ok, "{called}");
}

#[tokio::test]
async fn scripts_certs_makes_what_the_readme_walkthrough_uses() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("openssl not installed: scripts/certs not checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/certs");
    let out = std::process::Command::new(script)
        .arg(dir.path())
        .output()
        .expect("run scripts/certs");
    assert!(out.status.success(), "{out:?}");
    let file = |name: &str| dir.path().join(name);
    let read = |name: &str| std::fs::read_to_string(file(name)).unwrap();
    let db = TestDb::create().await;
    let nb = NbServer::start();
    let mut config = test_config(&db.url, &nb.remote(), &Options::default());
    config.tls_cert = Some(file("server.pem"));
    config.tls_key = Some(file("server-key.pem"));
    config.tls_client_ca = Some(file("ca.pem"));
    config.authz_policy = Some(file("policy.toml"));
    let t = TestPeerd::start_on(db, nb, config).await;
    let client = |name: &str| Issued {
        cert_pem: read(&format!("{name}.pem")),
        key_pem: read(&format!("{name}-key.pem")),
        cert: file(&format!("{name}.pem")),
        key: file(&format!("{name}-key.pem")),
    };
    let ca = read("ca.pem");
    let mut team_a = PeeringServiceClient::new(
        tls_channel(t.addr, &ca, Some(&client("team-a")))
            .await
            .unwrap(),
    );
    let denied = team_a
        .list_peerings(ListPeeringsRequest {
            vpc: "team-b-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    list(tls_channel(t.addr, &ca, Some(&client("admin"))).await)
        .await
        .expect("the admin lists");
}
