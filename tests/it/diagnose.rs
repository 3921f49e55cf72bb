//! DiagnosePeering against a real NB: a converged peering is all OK; each fault planted with
//! ovn-nbctl (the worker is not running, so nothing repairs it) is named by its check, with
//! the NB row at fault.

use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::{
    CreatePeeringRequest, DeletePeeringRequest, DiagnosePeeringRequest, Finding, Peering, Severity,
};
use tonic::transport::Channel;
use tonic::Code;

use crate::support::nb::NbServer;
use crate::support::ovn::{self, add_pod_port, echo_microflow, OvnCentral};
use crate::support::peerd::{Options, TestPeerd};
use crate::support::vpc::create_vpc;

/// vpc-1 (10.1.0.0/24) and vpc-2 (10.2.0.0/24) peered as "demo" over 169.254.0.0/30.
async fn peered(converge: bool) -> (TestPeerd, PeeringServiceClient<Channel>) {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    let c = create_demo(&t, converge).await;
    (t, c)
}

/// Creates the peering "demo" of vpc-1 and vpc-2 (and converges it).
async fn create_demo<N>(t: &TestPeerd<N>, converge: bool) -> PeeringServiceClient<Channel> {
    let mut c = t.client().await;
    c.create_peering(CreatePeeringRequest {
        peering: Some(Peering {
            name: "demo".into(),
            local_vpc: "vpc-1".into(),
            remote_vpc: "vpc-2".into(),
            local_connect_ip: "169.254.0.1/30".into(),
            remote_connect_ip: "169.254.0.2/30".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("create");
    if converge {
        let outcome = t.converge().await;
        assert!(outcome.failed.is_empty(), "{outcome:?}");
    }
    c
}

async fn diagnose(c: &mut PeeringServiceClient<Channel>) -> Vec<Finding> {
    c.diagnose_peering(DiagnosePeeringRequest {
        name: "demo".into(),
    })
    .await
    .expect("DiagnosePeering")
    .into_inner()
    .findings
}

fn not_ok(findings: &[Finding]) -> Vec<&Finding> {
    findings
        .iter()
        .filter(|f| f.severity != Severity::Ok as i32)
        .collect()
}

/// The uuid of the one row of `table` matching `conditions` (ovn-nbctl find syntax).
fn uuid(nb: &NbServer, table: &str, conditions: &[&str]) -> String {
    let mut args = vec!["--bare", "--columns=_uuid", "find", table];
    args.extend_from_slice(conditions);
    let out = nb.nbctl(&args);
    let u = out.trim().to_string();
    assert!(
        !u.is_empty() && !u.contains('\n'),
        "one {table} row: {out:?}"
    );
    u
}

/// The finding of `check` with `severity` whose message starts with `vpc`, naming `row`.
#[track_caller]
fn assert_found(findings: &[Finding], check: &str, severity: Severity, vpc: &str, row: &str) {
    let hit = findings
        .iter()
        .find(|f| f.check == check && f.severity == severity as i32 && f.message.starts_with(vpc));
    let Some(f) = hit else {
        panic!("no {severity:?} {check} for {vpc}: {:#?}", not_ok(findings));
    };
    assert!(
        f.nb_rows.iter().any(|r| r.contains(row)),
        "{row} not named by {f:#?}"
    );
}

#[tokio::test]
async fn a_converged_peering_is_all_ok_and_names_its_rows() {
    let (t, mut c) = peered(true).await;
    let findings = diagnose(&mut c).await;
    assert!(not_ok(&findings).is_empty(), "{findings:#?}");
    assert_eq!(findings.len(), 3 + 2 * 11, "{findings:#?}");
    let port = uuid(&t.nb, "Logical_Router_Port", &["name=vpc-1-vpc-2"]);
    assert_found(
        &findings,
        "peer_port_exists",
        Severity::Ok,
        "vpc-1",
        &format!("Logical_Router_Port {port} (vpc-1-vpc-2)"),
    );
    let route = uuid(
        &t.nb,
        "Logical_Router_Static_Route",
        &["ip_prefix=\"10.2.0.0/24\""],
    );
    assert_found(
        &findings,
        "routes_installed",
        Severity::Ok,
        "vpc-1",
        &format!("Logical_Router_Static_Route {route} (10.2.0.0/24 via 169.254.0.2)"),
    );
}

/// One test per fault: (test, the ovn-nbctl command that plants it, the check, its severity,
/// the side's VPC, and the row it must name as (table, find conditions)).
macro_rules! fault_tests {
    ($($test:ident: [$($arg:expr),*] => $check:expr, $sev:expr, $vpc:expr, ($table:expr, [$($cond:expr),*]);)*) => {$(
        #[tokio::test]
        async fn $test() {
            let (t, mut c) = peered(true).await;
            t.nb.nbctl(&[$($arg),*]);
            let row = uuid(&t.nb, $table, &[$($cond),*]);
            let findings = diagnose(&mut c).await;
            assert_found(&findings, $check, $sev, $vpc, &row);
        }
    )*};
}

fault_tests! {
    a_deleted_peer_port: ["lrp-del", "vpc-1-vpc-2"]
        => "peer_port_exists", Severity::Error, "vpc-1", ("Logical_Router", ["name=vpc-1"]);
    a_disabled_peer_port: ["lrp-set-enabled", "vpc-2-vpc-1", "disabled"]
        => "peer_port_enabled", Severity::Error, "vpc-2",
           ("Logical_Router_Port", ["name=vpc-2-vpc-1"]);
    changed_port_networks: ["set", "Logical_Router_Port", "vpc-1-vpc-2", "networks=\"169.254.9.1/30\""]
        => "peer_port_networks", Severity::Error, "vpc-1",
           ("Logical_Router_Port", ["name=vpc-1-vpc-2"]);
    a_deleted_route: ["lr-route-del", "vpc-1", "10.2.0.0/24"]
        => "routes_installed", Severity::Error, "vpc-1", ("Logical_Router", ["name=vpc-1"]);
    a_foreign_ecmp_route: ["--ecmp", "lr-route-add", "vpc-1", "10.2.0.0/24", "192.0.2.1"]
        => "ecmp_conflict", Severity::Error, "vpc-1",
           ("Logical_Router_Static_Route", ["nexthop=\"192.0.2.1\""]);
    a_more_specific_foreign_route: ["lr-route-add", "vpc-1", "10.2.0.128/25", "192.0.2.1"]
        => "more_specific_route", Severity::Error, "vpc-1",
           ("Logical_Router_Static_Route", ["ip_prefix=\"10.2.0.128/25\""]);
    a_reroute_policy: ["lr-policy-add", "vpc-1", "100", "ip4.dst == 10.2.0.0/16", "reroute", "192.0.2.1"]
        => "router_policy", Severity::Error, "vpc-1", ("Logical_Router_Policy", ["priority=100"]);
    an_unreadable_drop_policy: ["lr-policy-add", "vpc-2", "90", "ip4.dst == $as1", "drop"]
        => "router_policy", Severity::Warning, "vpc-2", ("Logical_Router_Policy", ["priority=90"]);
    a_src_ip_route_in_the_peer_vpc: ["--policy=src-ip", "lr-route-add", "vpc-2", "10.2.0.0/25", "192.0.2.1"]
        => "src_ip_route", Severity::Error, "vpc-2",
           ("Logical_Router_Static_Route", ["policy=src-ip"]);
    always_learn_from_arp_request_false: ["set", "Logical_Router", "vpc-2", "options:always_learn_from_arp_request=false"]
        => "router_options", Severity::Error, "vpc-2", ("Logical_Router", ["name=vpc-2"]);
    northd_behind: ["set", "NB_Global", ".", "nb_cfg=5"]
        => "northd_sync", Severity::Warning, "sb_cfg 0 < nb_cfg 5", ("NB_Global", []);
}

#[tokio::test]
async fn pending_failed_and_deleting_peerings_are_diagnosed_with_their_state() {
    // PENDING: nothing in NB yet.
    let (t, mut c) = peered(false).await;
    let findings = diagnose(&mut c).await;
    let state = &findings[0];
    assert_eq!(state.check, "peering_state");
    assert_eq!(state.severity, Severity::Warning as i32, "{state:?}");
    assert!(state.message.starts_with("PENDING"), "{state:?}");
    let router = uuid(&t.nb, "Logical_Router", &["name=vpc-2"]);
    assert_found(
        &findings,
        "peer_port_exists",
        Severity::Error,
        "vpc-2",
        &router,
    );
    assert_found(
        &findings,
        "routes_installed",
        Severity::Error,
        "vpc-2",
        &router,
    );

    // FAILED: a foreign ECMP route makes the worker fail it; the rows it wants are still checked.
    t.converge().await;
    t.nb.nbctl(&[
        "--ecmp",
        "lr-route-add",
        "vpc-1",
        "10.2.0.0/24",
        "192.0.2.1",
    ]);
    t.converge().await;
    let findings = diagnose(&mut c).await;
    assert_eq!(
        findings[0].severity,
        Severity::Error as i32,
        "{findings:#?}"
    );
    assert!(findings[0].message.starts_with("FAILED"), "{findings:#?}");
    assert_eq!(findings[1].check, "desired_rows");
    assert_eq!(
        findings[1].severity,
        Severity::Error as i32,
        "{findings:#?}"
    );
    let foreign = uuid(
        &t.nb,
        "Logical_Router_Static_Route",
        &["nexthop=\"192.0.2.1\""],
    );
    assert_found(
        &findings,
        "ecmp_conflict",
        Severity::Error,
        "vpc-1",
        &foreign,
    );

    // DELETING: marked, rows not removed yet.
    c.delete_peering(DeletePeeringRequest {
        name: "demo".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let findings = diagnose(&mut c).await;
    assert!(findings[0].message.starts_with("DELETING"), "{findings:#?}");
    assert_eq!(findings[0].severity, Severity::Warning as i32);
    assert_found(
        &findings,
        "ecmp_conflict",
        Severity::Error,
        "vpc-1",
        &foreign,
    );
}

#[tokio::test]
async fn a_deleted_router_leaves_its_side_with_one_finding() {
    let (t, mut c) = peered(true).await;
    t.nb.nbctl(&["lr-del", "vpc-2"]);
    let findings = diagnose(&mut c).await;
    let side: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.message.starts_with("vpc-2"))
        .collect();
    assert_eq!(side.len(), 1, "{findings:#?}");
    assert_eq!(side[0].check, "router_exists");
    assert_eq!(side[0].severity, Severity::Error as i32);
    assert!(
        side[0].message.contains("no OVN logical router"),
        "{side:?}"
    );
    // vpc-1 keeps its port and routes, which now lead nowhere: its peer is gone.
    let port = uuid(&t.nb, "Logical_Router_Port", &["name=vpc-1-vpc-2"]);
    assert_found(&findings, "peer_port_exists", Severity::Ok, "vpc-1", &port);
}

#[tokio::test]
async fn unknown_and_bad_names_are_refused() {
    let (_t, mut c) = peered(false).await;
    let e = c
        .diagnose_peering(DiagnosePeeringRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    for bad in ["", "a\0b"] {
        let e = c
            .diagnose_peering(DiagnosePeeringRequest { name: bad.into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("name"), "{e:?}");
    }
}

/// The findings agree with ovn-trace over ovn-northd's logical flows, which also checks the
/// OVN behaviour two checks rely on: a src-ip route longer than our route captures the
/// replies while one of the same length does not (OVN ranks dst-ip first on a tie), and a
/// reroute policy overrides our routes. And with a real ovn-northd, `northd_sync` is OK after
/// a `--wait=sb`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_agree_with_ovn_trace() {
    let central = OvnCentral::start();
    let v1 = ovn::create_vpc(&central, "vpc-1", "10.1.0.0/24", "10.1.0.1");
    let v2 = ovn::create_vpc(&central, "vpc-2", "10.2.0.0/24", "10.2.0.1");
    let (mac1, mac2) = ("0a:00:00:00:01:10", "0a:00:00:00:02:10");
    add_pod_port(&central, &v1, "pod-1", mac1, "10.1.0.10");
    add_pod_port(&central, &v2, "pod-2", mac2, "10.2.0.10");
    let t = TestPeerd::start_against(&central.nb_remote(), Options::default()).await;
    let mut c = create_demo(&t, true).await;
    let forward = || {
        let flow = echo_microflow("pod-1", mac1, &v1.router_mac, "10.1.0.10", "10.2.0.10");
        central.trace_reaches(&v1.switch, &flow, "pod-2")
    };
    let back = || {
        let flow = echo_microflow("pod-2", mac2, &v2.router_mac, "10.2.0.10", "10.1.0.10");
        central.trace_reaches(&v2.switch, &flow, "pod-1")
    };
    let plant = |args: &[&str]| {
        central.nbctl(args);
        central.sync_sb();
    };

    central.sync_sb();
    let findings = diagnose(&mut c).await;
    assert!(not_ok(&findings).is_empty(), "{findings:#?}");
    let northd = findings.iter().find(|f| f.check == "northd_sync").unwrap();
    assert!(!northd.message.contains("nb_cfg 0"), "{northd:?}");
    assert!(forward().0 && back().0, "the peering carries traffic");

    // A src-ip route as long as ours: ours still wins, and Diagnose says nothing.
    plant(&[
        "--policy=src-ip",
        "lr-route-add",
        "vpc-2",
        "10.2.0.0/24",
        "10.2.0.200",
    ]);
    let (reaches, trace) = back();
    assert!(reaches, "{trace}");
    let findings = diagnose(&mut c).await;
    assert!(not_ok(&findings).is_empty(), "{findings:#?}");

    // Longer than ours: it captures vpc-2's replies, and Diagnose names it.
    plant(&["--policy=src-ip", "lr-route-del", "vpc-2", "10.2.0.0/24"]);
    plant(&[
        "--policy=src-ip",
        "lr-route-add",
        "vpc-2",
        "10.2.0.0/25",
        "10.2.0.200",
    ]);
    let (reaches, trace) = back();
    assert!(!reaches, "{trace}");
    let row = ovn_uuid(&central, "Logical_Router_Static_Route", "policy=src-ip");
    assert_found(
        &diagnose(&mut c).await,
        "src_ip_route",
        Severity::Error,
        "vpc-2",
        &row,
    );
    plant(&["--policy=src-ip", "lr-route-del", "vpc-2", "10.2.0.0/25"]);
    assert!(back().0);

    // A reroute policy takes vpc-1's traffic to the peer elsewhere.
    plant(&[
        "lr-policy-add",
        "vpc-1",
        "100",
        "ip4.dst == 10.2.0.0/16",
        "reroute",
        "10.1.0.200",
    ]);
    let (reaches, trace) = forward();
    assert!(!reaches, "{trace}");
    let row = ovn_uuid(&central, "Logical_Router_Policy", "priority=100");
    assert_found(
        &diagnose(&mut c).await,
        "router_policy",
        Severity::Error,
        "vpc-1",
        &row,
    );
}

fn ovn_uuid(central: &OvnCentral, table: &str, condition: &str) -> String {
    let out = central.nbctl(["--bare", "--columns=_uuid", "find", table, condition]);
    out.trim().to_string()
}

#[tokio::test]
async fn a_cross_tenant_request_has_only_its_state_to_diagnose() {
    let s = crate::authz::Setup::start().await;
    let mut a = s.client(crate::authz::TEAM_A).await;
    a.create_peering(crate::authz::create("a-b", "team-a-1", "team-b-1"))
        .await
        .expect("a request towards team-b");
    s.t.converge().await;
    let findings = a
        .diagnose_peering(DiagnosePeeringRequest { name: "a-b".into() })
        .await
        .expect("DiagnosePeering")
        .into_inner()
        .findings;
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].check, "peering_state");
    assert_eq!(findings[0].severity, Severity::Warning as i32);
    assert!(
        findings[0].message.starts_with("PENDING_ACCEPTANCE"),
        "{findings:#?}"
    );
}
