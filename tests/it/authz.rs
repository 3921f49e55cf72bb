//! Authorization with a policy of two tenants and an admin, over mTLS with certificates made at
//! test time: one test per rule, each asserting the code and the message, and the policy
//! file re-read (and a broken one refused) without a restart.

use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::{
    CreatePeeringRequest, DeletePeeringRequest, DiagnosePeeringRequest, GetPeeringRequest,
    ListPeeringsRequest, ListRoutesRequest, Peering,
};
use tonic::transport::Channel;
use tonic::Code;

use crate::support::certs::{tls_channel, write_atomically, Issued, TestCa};
use crate::support::nb::NbServer;
use crate::support::peerd::{test_config, Options, TestPeerd};
use crate::support::pg::TestDb;
use crate::support::vpc::create_vpc;

pub(crate) const ADMIN: &str = "spiffe://example.org/ns/ops/sa/netops";
pub(crate) const TEAM_A: &str = "spiffe://example.org/ns/team-a/sa/orchestrator";
pub(crate) const TEAM_B: &str = "spiffe://example.org/ns/team-b/sa/orchestrator";
/// A third tenant, owning none of the VPCs the tests peer.
pub(crate) const TEAM_D: &str = "spiffe://example.org/ns/team-d/sa/orchestrator";
const STRANGER: &str = "spiffe://example.org/ns/team-c/sa/orchestrator";

fn policy(extra_team_a_identity: &str) -> String {
    format!(
        r#"admins = ["{ADMIN}"]

[[tenants]]
name = "team-a"
identities = ["{TEAM_A}"{extra_team_a_identity}]
vpcs = ["team-a-*"]

[[tenants]]
name = "team-b"
identities = ["{TEAM_B}"]
vpcs = ["team-b-*"]

[[tenants]]
name = "team-d"
identities = ["{TEAM_D}"]
vpcs = ["team-d-*"]
"#
    )
}

/// ovn-peerd with the policy, VPCs team-a-1, team-a-2, team-b-1, team-b-2 and other-1
/// (subnets 10.1.0.0/24 to 10.5.0.0/24, in that order).
pub(crate) struct Setup {
    pub t: TestPeerd,
    server_ca: TestCa,
    clients: TestCa,
    policy_file: std::path::PathBuf,
}

impl Setup {
    pub async fn start() -> Setup {
        Self::start_with(|_| {}).await
    }

    /// With the test configuration changed by `tweak` (worker off, unless it turns it on).
    pub async fn start_with(tweak: impl FnOnce(&mut ovn_peerd::config::Config)) -> Setup {
        let server_ca = TestCa::new("server");
        let server = server_ca.server("server", "ovn-peerd");
        let clients = TestCa::new("clients");
        let policy_file = clients.dir.path().join("policy.toml");
        std::fs::write(&policy_file, policy("")).unwrap();
        let db = TestDb::create().await;
        let nb = NbServer::start();
        let mut config = test_config(&db.url, &nb.remote(), &Options::default());
        config.tls_cert = Some(server.cert.clone());
        config.tls_key = Some(server.key.clone());
        config.tls_client_ca = Some(clients.cert_path());
        config.authz_policy = Some(policy_file.clone());
        tweak(&mut config);
        let t = TestPeerd::start_on(db, nb, config).await;
        for (i, vpc) in ["team-a-1", "team-a-2", "team-b-1", "team-b-2", "other-1"]
            .iter()
            .enumerate()
        {
            create_vpc(&t.nb, vpc, &[&format!("10.{}.0.1/24", i + 1)]);
        }
        Setup {
            t,
            server_ca,
            clients,
            policy_file,
        }
    }

    pub async fn client(&self, identity: &str) -> PeeringServiceClient<Channel> {
        let file = identity.rsplit('/').nth(2).unwrap_or("c").to_string();
        let cert: Issued = self.clients.client(&file, identity);
        let channel = tls_channel(self.t.addr, &self.server_ca.cert_pem, Some(&cert))
            .await
            .expect("mTLS connect");
        PeeringServiceClient::new(channel)
    }

    /// A peering made by the admin (who may make any).
    async fn admin_creates(&self, name: &str, local: &str, remote: &str) {
        self.client(ADMIN)
            .await
            .create_peering(create(name, local, remote))
            .await
            .unwrap_or_else(|e| panic!("admin creates {name}: {e:?}"));
    }
}

pub(crate) fn create(name: &str, local: &str, remote: &str) -> CreatePeeringRequest {
    CreatePeeringRequest {
        peering: Some(Peering {
            name: name.into(),
            local_vpc: local.into(),
            remote_vpc: remote.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[track_caller]
pub(crate) fn assert_denied<T: std::fmt::Debug>(r: Result<T, tonic::Status>, needles: &[&str]) {
    let status = r.expect_err("expected PERMISSION_DENIED");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    for n in needles {
        assert!(
            status.message().contains(n),
            "{n:?} not in {:?}",
            status.message()
        );
    }
}

#[tokio::test]
async fn an_unknown_identity_is_denied() {
    let s = Setup::start().await;
    let mut c = s.client(STRANGER).await;
    assert_denied(
        c.list_peerings(ListPeeringsRequest::default()).await,
        &[STRANGER, "neither an admin nor an identity of any tenant"],
    );
    assert_denied(
        c.create_peering(create("p", "team-a-1", "team-a-2")).await,
        &[STRANGER],
    );
    assert!(s.t.store_is_empty().await);
}

#[tokio::test]
async fn a_tenant_creates_and_deletes_peerings_of_its_own_vpcs() {
    let s = Setup::start().await;
    let mut a = s.client(TEAM_A).await;
    let p = a
        .create_peering(create("a-internal", "team-a-1", "team-a-2"))
        .await
        .expect("same-tenant create")
        .into_inner();
    assert_eq!(p.local_vpc, "team-a-1");
    a.delete_peering(DeletePeeringRequest {
        name: "a-internal".into(),
        ..Default::default()
    })
    .await
    .expect("delete of its own peering");
}

#[tokio::test]
async fn a_tenant_cannot_create_from_a_vpc_it_does_not_own() {
    let s = Setup::start().await;
    let mut a = s.client(TEAM_A).await;
    assert_denied(
        a.create_peering(create("p", "team-b-1", "team-a-1")).await,
        &["tenant \"team-a\"", "local_vpc \"team-b-1\""],
    );
    assert_denied(
        a.create_peering(create("p", "team-a-1", "other-1")).await,
        &["remote_vpc \"other-1\"", "nor of any other tenant"],
    );
    assert!(s.t.store_is_empty().await);
}

#[tokio::test]
async fn a_tenant_reads_only_peerings_of_its_vpcs() {
    let s = Setup::start().await;
    s.admin_creates("a-b", "team-a-1", "team-b-1").await;
    s.admin_creates("b-only", "team-b-1", "team-b-2").await;
    s.admin_creates("a-only", "team-a-1", "team-a-2").await;
    let mut a = s.client(TEAM_A).await;
    let mut b = s.client(TEAM_B).await;
    // Both sides of a peering see it.
    for c in [&mut a, &mut b] {
        c.get_peering(GetPeeringRequest { name: "a-b".into() })
            .await
            .expect("a side sees the peering");
    }
    assert_denied(
        a.get_peering(GetPeeringRequest {
            name: "b-only".into(),
        })
        .await,
        &[
            "tenant \"team-a\"",
            "peering \"b-only\"",
            "local_vpc \"team-b-1\"",
            "remote_vpc \"team-b-2\"",
        ],
    );
    // DiagnosePeering is authorized as GetPeering.
    let diagnose = |name: &str| DiagnosePeeringRequest { name: name.into() };
    // Each side sees its own VPC's findings in full, the other VPC's withheld.
    for (c, own, other) in [
        (&mut a, "team-a-1", "team-b-1"),
        (&mut b, "team-b-1", "team-a-1"),
    ] {
        let findings = c
            .diagnose_peering(diagnose("a-b"))
            .await
            .expect("a side diagnoses the peering")
            .into_inner()
            .findings;
        let of = |vpc: &'static str| findings.iter().filter(move |f| f.message.starts_with(vpc));
        assert!(of(own).any(|f| !f.nb_rows.is_empty()), "{findings:#?}");
        assert!(of(other).count() > 0, "{findings:#?}");
        assert!(
            of(other).all(|f| f.nb_rows.is_empty() && f.message.contains("withheld")),
            "{findings:#?}"
        );
    }
    assert_denied(
        a.diagnose_peering(diagnose("b-only")).await,
        &["tenant \"team-a\"", "peering \"b-only\""],
    );
}

#[tokio::test]
async fn a_tenants_listing_holds_only_its_peerings() {
    let s = Setup::start().await;
    s.admin_creates("a-b", "team-a-1", "team-b-1").await;
    s.admin_creates("b-only", "team-b-1", "team-b-2").await;
    s.admin_creates("a-only", "team-a-1", "team-a-2").await;
    let names = |r: tonic::Response<ovn_peerd::proto::v1::ListPeeringsResponse>| {
        r.into_inner()
            .peerings
            .into_iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
    };
    let mut a = s.client(TEAM_A).await;
    let listed = names(
        a.list_peerings(ListPeeringsRequest::default())
            .await
            .unwrap(),
    );
    assert_eq!(listed, ["a-b", "a-only"]);
    // Paged one by one, the filter holds across pages.
    let first = a
        .list_peerings(ListPeeringsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.peerings[0].name, "a-b");
    let second = a
        .list_peerings(ListPeeringsRequest {
            page_size: 1,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.peerings[0].name, "a-only");
    assert_denied(
        a.list_peerings(ListPeeringsRequest {
            vpc: "team-b-2".into(),
            ..Default::default()
        })
        .await,
        &["tenant \"team-a\"", "vpc \"team-b-2\""],
    );
    let mut admin = s.client(ADMIN).await;
    let all = names(
        admin
            .list_peerings(ListPeeringsRequest::default())
            .await
            .unwrap(),
    );
    assert_eq!(all, ["a-b", "a-only", "b-only"]);
}

#[tokio::test]
async fn a_tenant_lists_routes_only_of_its_vpcs() {
    let s = Setup::start().await;
    s.admin_creates("a-b", "team-a-1", "team-b-1").await;
    let mut a = s.client(TEAM_A).await;
    let routes = a
        .list_routes(ListRoutesRequest {
            vpc: "team-a-1".into(),
            ..Default::default()
        })
        .await
        .expect("routes of its own VPC")
        .into_inner();
    assert!(!routes.routes.is_empty());
    assert_denied(
        a.list_routes(ListRoutesRequest {
            vpc: "team-b-1".into(),
            ..Default::default()
        })
        .await,
        &["tenant \"team-a\"", "vpc \"team-b-1\""],
    );
}

#[tokio::test]
async fn a_tenant_cannot_delete_a_peering_whose_local_vpc_is_not_its_own() {
    let s = Setup::start().await;
    // team-b's peering towards team-a: team-a sees it but may not delete it.
    s.admin_creates("b-a", "team-b-1", "team-a-1").await;
    let mut a = s.client(TEAM_A).await;
    assert_denied(
        a.delete_peering(DeletePeeringRequest {
            name: "b-a".into(),
            ..Default::default()
        })
        .await,
        &[
            "tenant \"team-a\"",
            "peering \"b-a\"",
            "local_vpc \"team-b-1\"",
        ],
    );
    let p = a
        .get_peering(GetPeeringRequest { name: "b-a".into() })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        p.state,
        ovn_peerd::proto::v1::peering::State::Deleting as i32
    );
    s.client(TEAM_B)
        .await
        .delete_peering(DeletePeeringRequest {
            name: "b-a".into(),
            ..Default::default()
        })
        .await
        .expect("its owner deletes it");
}

#[tokio::test]
async fn an_admin_may_do_everything() {
    let s = Setup::start().await;
    let mut admin = s.client(ADMIN).await;
    let x = admin
        .create_peering(create("x", "team-a-1", "team-b-1"))
        .await
        .expect("cross-tenant by an admin")
        .into_inner();
    // An admin's create needs no acceptance: straight to convergence.
    assert_eq!(
        x.state,
        ovn_peerd::proto::v1::peering::State::Pending as i32,
        "{x:?}"
    );
    admin
        .create_peering(create("y", "other-1", "team-b-2"))
        .await
        .expect("VPCs of no tenant");
    admin
        .list_routes(ListRoutesRequest {
            vpc: "team-b-1".into(),
            ..Default::default()
        })
        .await
        .expect("any VPC's routes");
    admin
        .delete_peering(DeletePeeringRequest {
            name: "x".into(),
            ..Default::default()
        })
        .await
        .expect("any delete");
}

#[tokio::test]
async fn the_policy_file_is_reread_and_a_broken_one_keeps_the_last_good() {
    let s = Setup::start().await;
    let mut stranger = s.client(STRANGER).await;
    assert_denied(
        stranger.list_peerings(ListPeeringsRequest::default()).await,
        &[STRANGER],
    );
    // The stranger joins team-a: no restart, the same connection.
    write_atomically(&s.policy_file, &policy(&format!(", \"{STRANGER}\"")));
    stranger
        .create_peering(create("joined", "team-a-1", "team-a-2"))
        .await
        .expect("allowed under the new policy");
    // A policy that does not parse is refused; the last good one stays.
    write_atomically(&s.policy_file, "admins = [\"unterminated");
    stranger
        .get_peering(GetPeeringRequest {
            name: "joined".into(),
        })
        .await
        .expect("the last good policy still applies");
    assert_denied(
        stranger
            .create_peering(create("p2", "team-b-1", "team-b-2"))
            .await,
        &["tenant \"team-a\""],
    );
}

#[tokio::test]
async fn a_tenant_watches_only_the_peerings_of_its_vpcs() {
    use ovn_peerd::proto::v1::watch_peerings_response::EventType;
    use ovn_peerd::proto::v1::WatchPeeringsRequest;
    let s = Setup::start().await;
    s.admin_creates("a", "team-a-1", "team-a-2").await;
    s.admin_creates("b", "team-b-1", "team-b-2").await;
    s.admin_creates("x", "other-1", "team-a-1").await;
    let mut a = s.client(TEAM_A).await;
    let mut stream = a
        .watch_peerings(WatchPeeringsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut stream).await, (EventType::Added, "a".into()));
    assert_eq!(next(&mut stream).await, (EventType::Added, "x".into()));
    assert_eq!(next(&mut stream).await.0, EventType::Synced);
    s.admin_creates("b2", "team-b-2", "other-1").await;
    s.admin_creates("a2", "team-a-2", "other-1").await;
    assert_eq!(
        next(&mut stream).await,
        (EventType::Added, "a2".into()),
        "b2 touches none of team-a's VPCs"
    );

    assert_denied(
        a.watch_peerings(WatchPeeringsRequest {
            vpc: "team-b-1".into(),
            ..Default::default()
        })
        .await,
        &["team-a", "team-b-1"],
    );
}

/// The next event of a watch as (type, peering name).
async fn next(
    stream: &mut tonic::Streaming<ovn_peerd::proto::v1::WatchPeeringsResponse>,
) -> (
    ovn_peerd::proto::v1::watch_peerings_response::EventType,
    String,
) {
    let hang = std::time::Duration::from_secs(60);
    let e = tokio::time::timeout(hang, stream.message())
        .await
        .expect("an event within the hang guard")
        .expect("no error")
        .expect("the stream goes on");
    (e.r#type(), e.peering.map(|p| p.name).unwrap_or_default())
}
