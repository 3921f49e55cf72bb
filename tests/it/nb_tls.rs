//! ovn-peerd against an NB served over `pssl:` (certificates from `ovs-pki`): a peering made
//! through the API lands in NB, read back by `ovn-nbctl` over ssl; with a wrong CA the NB
//! health is NOT_SERVING until the files are replaced on disk, then SERVING without a restart.

use std::path::Path;

use ovn_peerd::config::Config;
use ovn_peerd::proto::v1::{peering, CreatePeeringRequest, GetPeeringRequest, Peering};
use ovn_peerd_test_support::pki::{other_pki, pki, Pki};
use ovn_peerd_test_support::wait_until;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::server::wait_status;
use crate::support::nb::NbServer;
use crate::support::peerd::{test_config, Options, TestPeerd};
use crate::support::pg::TestDb;

const T: std::time::Duration = std::time::Duration::from_secs(20);

/// A test configuration for `nb`'s `ssl:` remote with `pki`'s client files copied into `dir`.
fn ssl_config(db: &TestDb, nb: &NbServer, dir: &Path, pki: &Pki) -> Config {
    let (key, cert, ca) = pki.install_client_files(dir);
    Config {
        ovn_nb_private_key: Some(key),
        ovn_nb_certificate: Some(cert),
        ovn_nb_ca_cert: Some(ca),
        ..test_config(&db.url, &nb.ssl_remote(), &Options::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peering_over_ssl_lands_in_nb() {
    let nb = NbServer::start_ssl(pki());
    for (vpc, gw, mac) in [
        ("vpc-1", "10.1.0.1/24", "0e:00:00:00:01:01"),
        ("vpc-2", "10.2.0.1/24", "0e:00:00:00:02:01"),
    ] {
        nb.nbctl_ssl(&["lr-add", vpc]);
        nb.nbctl_ssl(&["lrp-add", vpc, &format!("{vpc}-s0"), mac, gw]);
    }
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ssl_config(&db, &nb, dir.path(), pki());
    let t = TestPeerd::start_on(db, nb, config).await;
    let mut c = t.client().await;
    c.create_peering(CreatePeeringRequest {
        peering: Some(Peering {
            name: "p1".into(),
            local_vpc: "vpc-1".into(),
            remote_vpc: "vpc-2".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let outcome = t.converge().await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    let got = c
        .get_peering(GetPeeringRequest { name: "p1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, peering::State::Active as i32, "{got:?}");

    // Read back independently, by ovn-nbctl over ssl.
    let peer =
        t.nb.nbctl_ssl(&["get", "Logical_Router_Port", "vpc-1-vpc-2", "peer"]);
    assert_eq!(peer.trim(), "vpc-2-vpc-1");
    let routes = t.nb.nbctl_ssl(&["lr-route-list", "vpc-2"]);
    assert!(routes.contains("10.1.0.0/24"), "{routes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nb_health_is_not_serving_with_a_wrong_ca_until_the_files_are_fixed() {
    let nb = NbServer::start_ssl(pki());
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ssl_config(&db, &nb, dir.path(), pki());
    std::fs::copy(
        other_pki().ca_cert(),
        config.ovn_nb_ca_cert.as_ref().unwrap(),
    )
    .unwrap();
    let t = TestPeerd::start_unsynced(db, nb, config).await;
    let mut health = HealthClient::new(t.channel().await);
    let nb_service = "ovnpeerd.v1.OvnNorthbound";
    // NOT_SERVING is also the status before the first connection: first see the server
    // report that we refused its certificate, so the status below follows that refusal.
    wait_until("the server to log our refusal", T, || {
        std::fs::read_to_string(t.nb.log())
            .unwrap_or_default()
            .contains("alert unknown ca")
    })
    .unwrap();
    wait_status(&mut health, nb_service, ServingStatus::NotServing).await;
    // The API itself (Postgres) is fine: only the NB is not.
    wait_status(
        &mut health,
        "ovnpeerd.v1.PeeringService",
        ServingStatus::Serving,
    )
    .await;

    pki().install_client_files(dir.path());
    wait_status(&mut health, nb_service, ServingStatus::Serving).await;
}

#[tokio::test]
async fn ssl_without_its_files_is_a_startup_error_naming_the_flag() {
    let db = TestDb::create().await;
    let config = test_config(&db.url, "ssl:127.0.0.1:6641", &Options::default());
    let err = match ovn_peerd::startup::Application::build(config).await {
        Ok(_) => panic!("started with ssl: and no key, certificate or CA"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("--ovn-nb-private-key") && err.contains("OVN_NB_PRIVATE_KEY"),
        "{err}"
    );
}
