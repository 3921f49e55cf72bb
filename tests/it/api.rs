//! The gRPC API against a real server, a real Postgres and a real NB:
//! every rule's refusal with its code and the field it names.

use std::collections::BTreeSet;

use ipnet::IpNet;
use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::{
    peering, CreatePeeringRequest, DeletePeeringRequest, GetPeeringRequest, ListPeeringsRequest,
    ListRoutesRequest, Peering, PeeringRoute, RoutePolicy,
};
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::peerd::TestPeerd;
use crate::support::vpc::create_vpc;

fn peering(name: &str, local: &str, remote: &str) -> Peering {
    Peering {
        name: name.into(),
        local_vpc: local.into(),
        remote_vpc: remote.into(),
        ..Default::default()
    }
}

fn create(p: Peering) -> CreatePeeringRequest {
    CreatePeeringRequest {
        peering: Some(p),
        ..Default::default()
    }
}

/// The fields a refusal names, from its BadRequest or PreconditionFailure details.
fn fields(status: &tonic::Status) -> Vec<String> {
    let details = status.get_error_details();
    let mut out: Vec<String> = Vec::new();
    if let Some(br) = details.bad_request() {
        out.extend(br.field_violations.iter().map(|v| v.field.clone()));
    }
    if let Some(pf) = details.precondition_failure() {
        out.extend(pf.violations.iter().map(|v| v.subject.clone()));
    }
    out
}

#[track_caller]
fn assert_refused(
    result: Result<tonic::Response<Peering>, tonic::Status>,
    code: Code,
    field: &str,
) {
    let status = result.expect_err("expected a refusal");
    assert_eq!(status.code(), code, "{status:?}");
    let f = fields(&status);
    assert!(
        f.iter().any(|x| x == field),
        "expected field {field:?} in {f:?}: {status:?}"
    );
}

/// Two custom VPCs with one subnet each.
async fn two_vpcs() -> TestPeerd {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    t
}

fn explicit(name: &str, local: &str, remote: &str, lip: &str, rip: &str) -> Peering {
    Peering {
        local_connect_ip: lip.into(),
        remote_connect_ip: rip.into(),
        ..peering(name, local, remote)
    }
}

#[tokio::test]
async fn create_get_list_converge_delete() {
    let t = two_vpcs().await;
    let mut c = t.client().await;
    let p = c
        .create_peering(create(explicit(
            "p1",
            "vpc-1",
            "vpc-2",
            "169.254.0.1/30",
            "169.254.0.2/30",
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.state, peering::State::Pending as i32);
    assert_eq!(p.generation, 1);
    assert_eq!(p.observed_generation, 0);
    assert!(p.create_time.is_some());

    let outcome = t.converge().await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    let got = c
        .get_peering(GetPeeringRequest { name: "p1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, peering::State::Active as i32, "{got:?}");
    assert_eq!(got.observed_generation, 1);

    let list = c
        .list_peerings(ListPeeringsRequest {
            vpc: "vpc-2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.peerings.len(), 1);

    let del = c
        .delete_peering(DeletePeeringRequest {
            name: "p1".into(),
            allow_missing: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(del.state, peering::State::Deleting as i32);
    assert_eq!(del.generation, 2);
    t.converge().await;
    let gone = c.get_peering(GetPeeringRequest { name: "p1".into() }).await;
    assert_eq!(gone.unwrap_err().code(), Code::NotFound);
}

/// One generated test per INVALID_ARGUMENT rule: (test, peering, field).
macro_rules! invalid_argument_tests {
    ($($test:ident: $peering:expr => $field:expr;)*) => {$(
        #[tokio::test]
        async fn $test() {
            let t = two_vpcs().await;
            let result = t.client().await.create_peering(create($peering)).await;
            assert_refused(result, Code::InvalidArgument, $field);
            assert!(t.store_is_empty().await, "a refused request stored nothing");
        }
    )*};
}

fn with_routes(mut p: Peering, local: &[&str]) -> Peering {
    p.local_routes = local
        .iter()
        .map(|c| PeeringRoute {
            cidr: c.to_string(),
            policy: RoutePolicy::DstIp as i32,
        })
        .collect();
    p
}

invalid_argument_tests! {
    refuses_malformed_name: peering("Not_A_Label", "vpc-1", "vpc-2") => "peering.name";
    refuses_empty_name: peering("", "vpc-1", "vpc-2") => "peering.name";
    refuses_too_long_name: peering(&"a".repeat(64), "vpc-1", "vpc-2") => "peering.name";
    refuses_malformed_address: explicit("p", "vpc-1", "vpc-2", "169.254.0.x/30", "169.254.0.2/30") => "peering.local_connect_ip";
    refuses_address_without_prefix: explicit("p", "vpc-1", "vpc-2", "169.254.0.1", "169.254.0.2/30") => "peering.local_connect_ip";
    refuses_route_with_host_bits: with_routes(explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"), &["10.2.0.1/24"]) => "peering.local_routes[0].cidr";
    refuses_malformed_route: with_routes(peering("p", "vpc-1", "vpc-2"), &["ten/8"]) => "peering.local_routes[0].cidr";
    refuses_one_connect_address_only: explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "") => "peering.remote_connect_ip";
    refuses_connect_addresses_in_different_subnets: explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.5/30") => "peering.remote_connect_ip";
    refuses_equal_connect_addresses: explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.1/30") => "peering.remote_connect_ip";
    refuses_network_address: explicit("p", "vpc-1", "vpc-2", "169.254.0.0/30", "169.254.0.2/30") => "peering.local_connect_ip";
    refuses_broadcast_address: explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.3/30") => "peering.remote_connect_ip";
    refuses_mixed_families: explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "fd00::2/126") => "peering.remote_connect_ip";
    refuses_self_peering: peering("p", "vpc-1", "vpc-1") => "peering.remote_vpc";
    refuses_oversized_vpc_name: peering("p", &"v".repeat(300), "vpc-2") => "peering.local_vpc";
    refuses_too_many_routes: with_routes(peering("p", "vpc-1", "vpc-2"), &(0..300).map(|i| format!("10.{}.{}.0/24", 100 + i / 256, i % 256)).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>()) => "peering.local_routes";
}

#[tokio::test]
async fn refuses_a_missing_peering_message() {
    let t = two_vpcs().await;
    let status = t
        .client()
        .await
        .create_peering(CreatePeeringRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(fields(&status), vec!["peering".to_string()]);
}

#[tokio::test]
async fn refuses_a_vpc_without_router() {
    let t = two_vpcs().await;
    let r = t
        .client()
        .await
        .create_peering(create(peering("p", "vpc-1", "vpc-9")))
        .await;
    assert_refused(r, Code::FailedPrecondition, "peering.remote_vpc");
}

#[tokio::test]
async fn refuses_a_protected_vpc() {
    let t = two_vpcs().await;
    create_vpc(&t.nb, "ovn-cluster", &["10.16.0.1/16"]);
    let r = t
        .client()
        .await
        .create_peering(create(peering("p", "ovn-cluster", "vpc-2")))
        .await;
    assert_refused(r, Code::FailedPrecondition, "peering.local_vpc");
}

#[tokio::test]
async fn refuses_overlapping_subnets() {
    let t = two_vpcs().await;
    create_vpc(&t.nb, "vpc-3", &["10.1.0.129/25"]);
    let r = t
        .client()
        .await
        .create_peering(create(peering("p", "vpc-1", "vpc-3")))
        .await;
    assert_refused(r, Code::FailedPrecondition, "peering.remote_vpc");
}

#[tokio::test]
async fn refuses_a_connect_subnet_overlapping_a_subnet() {
    let t = two_vpcs().await;
    let r = t
        .client()
        .await
        .create_peering(create(explicit(
            "p",
            "vpc-1",
            "vpc-2",
            "10.2.0.201/30",
            "10.2.0.202/30",
        )))
        .await;
    let status = r.expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let f = fields(&status);
    assert!(f.iter().any(|x| x.ends_with("_connect_ip")), "{f:?}");
}

#[tokio::test]
async fn refuses_a_link_overlapping_another_link_of_either_vpc() {
    let t = two_vpcs().await;
    create_vpc(&t.nb, "vpc-3", &["10.3.0.1/24"]);
    let mut c = t.client().await;
    c.create_peering(create(explicit(
        "a",
        "vpc-1",
        "vpc-2",
        "169.254.0.1/30",
        "169.254.0.2/30",
    )))
    .await
    .unwrap();
    let r = c
        .create_peering(create(explicit(
            "b",
            "vpc-1",
            "vpc-3",
            "169.254.0.1/29",
            "169.254.0.3/29",
        )))
        .await;
    let status = r.expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        fields(&status).iter().any(|x| x.ends_with("_connect_ip")),
        "{status:?}"
    );
}

#[tokio::test]
async fn links_are_reused_by_peerings_that_share_no_vpc_and_allocated_lowest_first() {
    // Links are unique per router: VPCs 3 and 4 share nothing with 1 and 2, so they may use
    // the same link, explicit or allocated; a peering of a VPC that holds a link gets the
    // lowest link free on both of its routers.
    let t = two_vpcs().await;
    for i in 3..=6 {
        create_vpc(&t.nb, &format!("vpc-{i}"), &[&format!("10.{i}.0.1/24")]);
    }
    let mut c = t.client().await;
    let made = |p: Peering| {
        let mut c = c.clone();
        async move {
            let name = p.name.clone();
            let r = c.create_peering(create(p)).await;
            let p = r.unwrap_or_else(|e| panic!("{name}: {e:?}")).into_inner();
            (p.local_connect_ip, p.remote_connect_ip)
        }
    };
    let link = ("169.254.0.1/30".to_string(), "169.254.0.2/30".to_string());
    let a = made(explicit("a", "vpc-1", "vpc-2", &link.0, &link.1)).await;
    let b = made(explicit("b", "vpc-3", "vpc-4", &link.0, &link.1)).await;
    assert_eq!((a, b), (link.clone(), link.clone()));
    assert_eq!(made(peering("c", "vpc-5", "vpc-6")).await, link);
    // vpc-1 and vpc-5 each hold 169.254.0.0/30: the next one.
    assert_eq!(
        made(peering("d", "vpc-1", "vpc-5")).await,
        ("169.254.0.5/30".to_string(), "169.254.0.6/30".to_string())
    );
    // vpc-4 holds .0/30, vpc-2 holds .0/30: .4/30 is free on both.
    assert_eq!(
        made(peering("e", "vpc-4", "vpc-2")).await,
        ("169.254.0.5/30".to_string(), "169.254.0.6/30".to_string())
    );
    // An explicit link on a router that already holds it is refused, naming the field.
    let r = c
        .create_peering(create(explicit("f", "vpc-3", "vpc-6", &link.0, &link.1)))
        .await;
    assert_refused(r, Code::FailedPrecondition, "peering.local_connect_ip");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM peerings")
        .fetch_one(&stored_pool(&t).await)
        .await
        .unwrap();
    assert_eq!(stored, 5);
}

#[tokio::test]
async fn a_link_local_link_is_reused_only_by_peerings_that_share_no_vpc() {
    // fe80:: means something only on its own port pair: unrelated pairs may use the same one,
    // two ports of one VPC may not; the same rule as every other link.
    let t = two_vpcs().await;
    for (vpc, subnet) in [("vpc-3", "10.3.0.1/24"), ("vpc-4", "10.4.0.1/24")] {
        create_vpc(&t.nb, vpc, &[subnet]);
    }
    create_vpc(&t.nb, "vpc-5", &["10.5.0.1/24"]);
    let mut c = t.client().await;
    let link = ("fe80::a:1/64", "fe80::a:2/64");
    for (name, local, remote) in [("a", "vpc-1", "vpc-2"), ("b", "vpc-3", "vpc-4")] {
        c.create_peering(create(explicit(name, local, remote, link.0, link.1)))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    let r = c
        .create_peering(create(explicit("c", "vpc-1", "vpc-5", link.0, link.1)))
        .await;
    assert_refused(r, Code::FailedPrecondition, "peering.local_connect_ip");
    // Other IPv6 links follow the same rule.
    let v6 = ("fd00:a9fe::1/126", "fd00:a9fe::2/126");
    let r = c
        .create_peering(create(explicit("d", "vpc-5", "vpc-2", v6.0, v6.1)))
        .await;
    assert!(r.is_ok(), "{r:?}");
    let r = c
        .create_peering(create(explicit("e", "vpc-1", "vpc-3", v6.0, v6.1)))
        .await;
    assert!(r.is_ok(), "{r:?}");
    let r = c
        .create_peering(create(explicit("f", "vpc-4", "vpc-5", v6.0, v6.1)))
        .await;
    assert_refused(r, Code::FailedPrecondition, "peering.remote_connect_ip");
}

#[tokio::test]
async fn refuses_a_peer_whose_subnets_overlap_another_peer_of_the_same_vpc() {
    let t = two_vpcs().await;
    create_vpc(&t.nb, "vpc-3", &["10.2.0.1/24"]); // same subnet as vpc-2
    let mut c = t.client().await;
    c.create_peering(create(peering("a", "vpc-1", "vpc-2")))
        .await
        .unwrap();
    let r = c
        .create_peering(create(peering("b", "vpc-1", "vpc-3")))
        .await;
    let status = r.expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(!fields(&status).is_empty(), "{status:?}");
}

#[tokio::test]
async fn refuses_an_explicit_route_overlapping_the_vpcs_own_subnets() {
    let t = two_vpcs().await;
    let r = t
        .client()
        .await
        .create_peering(create(with_routes(
            peering("p", "vpc-1", "vpc-2"),
            &["10.1.0.0/16"],
        )))
        .await;
    assert_refused(r, Code::FailedPrecondition, "peering.local_routes[0].cidr");
}

#[tokio::test]
async fn refuses_a_taken_name_and_a_peered_pair_in_either_direction() {
    let t = two_vpcs().await;
    create_vpc(&t.nb, "vpc-3", &["10.3.0.1/24"]);
    let mut c = t.client().await;
    c.create_peering(create(peering("a", "vpc-1", "vpc-2")))
        .await
        .unwrap();
    let r = c
        .create_peering(create(peering("a", "vpc-1", "vpc-3")))
        .await;
    assert_refused(r, Code::AlreadyExists, "peering.name");
    let r = c
        .create_peering(create(peering("b", "vpc-2", "vpc-1")))
        .await;
    assert_refused(r, Code::AlreadyExists, "peering.remote_vpc");
    // Still refused while the first one is being deleted.
    c.delete_peering(DeletePeeringRequest {
        name: "a".into(),
        allow_missing: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let r = c
        .create_peering(create(peering("b", "vpc-1", "vpc-2")))
        .await;
    assert_refused(r, Code::AlreadyExists, "peering.remote_vpc");
}

#[tokio::test]
async fn not_found_and_allow_missing() {
    let t = two_vpcs().await;
    let mut c = t.client().await;
    let r = c
        .get_peering(GetPeeringRequest {
            name: "nope".into(),
        })
        .await;
    assert_eq!(r.unwrap_err().code(), Code::NotFound);
    let r = c
        .delete_peering(DeletePeeringRequest {
            name: "nope".into(),
            allow_missing: false,
            ..Default::default()
        })
        .await;
    assert_eq!(r.unwrap_err().code(), Code::NotFound);
    c.delete_peering(DeletePeeringRequest {
        name: "nope".into(),
        allow_missing: true,
        ..Default::default()
    })
    .await
    .expect("allow_missing");
}

#[tokio::test]
async fn the_same_request_id_twice_gives_one_peering_and_the_same_answer() {
    let t = two_vpcs().await;
    let mut c = t.client().await;
    let req = CreatePeeringRequest {
        peering: Some(peering("p", "vpc-1", "vpc-2")),
        request_id: "8d3c5f0e-req-1".into(),
        validate_only: false,
    };
    let first = c.create_peering(req.clone()).await.unwrap().into_inner();
    let second = c.create_peering(req).await.unwrap().into_inner();
    assert_eq!(first, second);
    let list = c
        .list_peerings(ListPeeringsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.peerings.len(), 1);
}

#[tokio::test]
async fn validate_only_stores_nothing() {
    let t = two_vpcs().await;
    let mut c = t.client().await;
    let preview = c
        .create_peering(CreatePeeringRequest {
            peering: Some(peering("p", "vpc-1", "vpc-2")),
            request_id: String::new(),
            validate_only: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !preview.local_connect_ip.is_empty(),
        "the allocated link is shown"
    );
    assert!(t.store_is_empty().await);
    // And a bad request is still refused.
    let r = c
        .create_peering(CreatePeeringRequest {
            peering: Some(peering("p", "vpc-1", "vpc-404")),
            request_id: String::new(),
            validate_only: true,
        })
        .await;
    assert_refused(r, Code::FailedPrecondition, "peering.remote_vpc");
}

/// Spawns `n` clients on the multi-threaded runtime, each waiting on one barrier before it
/// sends its request, so the requests really overlap.
async fn all_at_once<T, F, Fut>(t: &TestPeerd, n: usize, call: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, PeeringServiceClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let c = t.client().await;
        let barrier = barrier.clone();
        let fut = call(i, c);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            fut.await
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

async fn stored_pool(t: &TestPeerd) -> sqlx::PgPool {
    sqlx::PgPool::connect(&t.db.url).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_creates_of_one_pair_give_exactly_one_peering() {
    let t = two_vpcs().await;
    let replies = all_at_once(&t, 50, |i, mut c| async move {
        c.create_peering(create(peering(&format!("p{i}"), "vpc-1", "vpc-2")))
            .await
            .map(|r| r.into_inner().name)
            .map_err(|s| s.code())
    })
    .await;
    let mut ok = Vec::new();
    for r in replies {
        match r {
            Ok(name) => ok.push(name),
            Err(code) => assert_eq!(code, Code::AlreadyExists),
        }
    }
    assert_eq!(ok.len(), 1, "{ok:?}");
    // What Postgres holds, not only what the replies say.
    let stored: Vec<(String, String, String)> =
        sqlx::query_as("SELECT name, local_vpc, remote_vpc FROM peerings")
            .fetch_all(&stored_pool(&t).await)
            .await
            .unwrap();
    assert_eq!(
        stored,
        vec![(ok[0].clone(), "vpc-1".to_string(), "vpc-2".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_automatic_links_never_overlap_on_a_router() {
    // 10 spokes of one hub (every link on the hub distinct) and 54 disjoint pairs (each free
    // to take the pool's first link), all at once: as many calls as --max-in-flight admits
    // by default. (Creates on one hub wait for its lock, each holding a database
    // connection: many more of them at once is overload, refused or UNAVAILABLE.)
    let t = TestPeerd::start().await;
    let mut args: Vec<String> = Vec::new();
    for i in 0..119 {
        if i > 0 {
            args.push("--".into());
        }
        args.extend(["lr-add".into(), format!("r{i}")]);
    }
    t.nb.nbctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let replies = all_at_once(&t, 64, |i, mut c| async move {
        let (local, remote) = if i < 10 {
            ("r0".to_string(), format!("r{}", i + 1))
        } else {
            (format!("r{}", 2 * i - 9), format!("r{}", 2 * i - 8))
        };
        c.create_peering(create(peering(&format!("p{i:03}"), &local, &remote)))
            .await
            .map(|r| r.into_inner())
    })
    .await;
    let mut replied: BTreeSet<(String, IpNet)> = BTreeSet::new();
    for r in replies {
        let p = r.expect("create");
        let addr: IpNet = p.local_connect_ip.parse().unwrap();
        replied.insert((p.name, addr.trunc()));
    }
    // What Postgres stored: 64 rows, each link as replied.
    let stored: Vec<(String, String, String)> =
        sqlx::query_as("SELECT name, local_v4::text, remote_v4::text FROM peerings ORDER BY name")
            .fetch_all(&stored_pool(&t).await)
            .await
            .unwrap();
    assert_eq!(stored.len(), 64);
    let mut links: BTreeSet<(String, IpNet)> = BTreeSet::new();
    for (name, l, r) in &stored {
        let (l, r): (IpNet, IpNet) = (l.parse().unwrap(), r.parse().unwrap());
        assert_eq!(l.trunc(), r.trunc(), "both ends of {l} on one link");
        links.insert((name.clone(), l.trunc()));
    }
    assert_eq!(links, replied);
    let hub: Vec<IpNet> = links.iter().take(10).map(|(_, l)| *l).collect();
    for (i, a) in hub.iter().enumerate() {
        for b in &hub[i + 1..] {
            assert!(
                !a.contains(&b.network()) && !b.contains(&a.network()),
                "{a} overlaps {b} on the hub"
            );
        }
    }
    let first: IpNet = "169.254.0.0/30".parse().unwrap();
    assert!(links.iter().skip(20).all(|(_, l)| *l == first), "{links:?}");
}

#[tokio::test]
async fn pages_are_stable_while_rows_are_added_and_bad_tokens_refused() {
    let t = TestPeerd::start().await;
    let mut args: Vec<String> = Vec::new();
    for i in 0..40 {
        if i > 0 {
            args.push("--".into());
        }
        args.extend(["lr-add".into(), format!("r{i:02}")]);
    }
    t.nb.nbctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut c = t.client().await;
    for i in 0..10 {
        c.create_peering(create(peering(
            &format!("p{:02}", 2 * i),
            &format!("r{:02}", 2 * i),
            &format!("r{:02}", 2 * i + 1),
        )))
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut added = 10;
    loop {
        let page = c
            .list_peerings(ListPeeringsRequest {
                page_size: 3,
                page_token: token.clone(),
                vpc: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.peerings.iter().map(|p| p.name.clone()));
        // Add a row between pages, sorting after everything seen so far.
        if added < 14 {
            c.create_peering(create(peering(
                &format!("z{added}"),
                &format!("r{:02}", 2 * added),
                &format!("r{:02}", 2 * added + 1),
            )))
            .await
            .unwrap();
            added += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "no repeats, in order");
    for i in 0..10 {
        assert!(seen.contains(&format!("p{:02}", 2 * i)), "{seen:?}");
    }
    let bad = c
        .list_peerings(ListPeeringsRequest {
            page_size: 3,
            page_token: "garbage".into(),
            vpc: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(fields(&bad), vec!["page_token".to_string()]);
}

#[tokio::test]
async fn list_routes_shows_nb_routes_and_wanted_ones() {
    let t = two_vpcs().await;
    // A route nobody at ovn-peerd owns.
    t.nb.nbctl(&["lr-route-add", "vpc-1", "192.168.0.0/16", "10.1.0.254"]);
    let mut c = t.client().await;
    c.create_peering(create(explicit(
        "p",
        "vpc-1",
        "vpc-2",
        "169.254.0.1/30",
        "169.254.0.2/30",
    )))
    .await
    .unwrap();
    let before = c
        .list_routes(ListRoutesRequest {
            vpc: "vpc-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .routes;
    assert_eq!(before.len(), 2, "{before:?}");
    let foreign = before.iter().find(|r| r.cidr == "192.168.0.0/16").unwrap();
    assert!(foreign.installed && foreign.peering.is_empty());
    assert!(foreign.output_port.is_empty(), "{foreign:?}");
    let wanted = before.iter().find(|r| r.cidr == "10.2.0.0/24").unwrap();
    assert!(!wanted.installed);
    assert_eq!(wanted.peering, "p");
    assert_eq!(wanted.nexthop, "169.254.0.2");
    assert_eq!(wanted.output_port, "vpc-1-vpc-2");

    t.converge().await;
    let after = c
        .list_routes(ListRoutesRequest {
            vpc: "vpc-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .routes;
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().all(|r| r.installed), "{after:?}");
    let ours = after.iter().find(|r| r.peering == "p").unwrap();
    assert_eq!(ours.output_port, "vpc-1-vpc-2", "{after:?}");

    // Cleared by hand: installed without a port, and wanted (in place) with it.
    let uuid = t.nb.nbctl(&[
        "--bare",
        "--columns=_uuid",
        "find",
        "Logical_Router_Static_Route",
        "ip_prefix=\"10.2.0.0/24\"",
    ]);
    t.nb.nbctl(&[
        "clear",
        "Logical_Router_Static_Route",
        uuid.trim(),
        "output_port",
    ]);
    let drifted = c
        .list_routes(ListRoutesRequest {
            vpc: "vpc-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .routes;
    let ours: Vec<(bool, &str)> = drifted
        .iter()
        .filter(|r| r.peering == "p")
        .map(|r| (r.installed, r.output_port.as_str()))
        .collect();
    assert_eq!(
        ours,
        vec![(true, ""), (false, "vpc-1-vpc-2")],
        "{drifted:?}"
    );

    let missing = c
        .list_routes(ListRoutesRequest {
            vpc: "vpc-404".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

/// Every route of `vpc`, listed in pages of `size`: (cidr, peering, installed), in order.
async fn list_all_routes(
    c: &mut ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient<
        tonic::transport::Channel,
    >,
    vpc: &str,
    size: i32,
) -> Vec<(String, String, bool)> {
    let (mut out, mut token) = (Vec::new(), String::new());
    for _ in 0..100 {
        let page = c
            .list_routes(ListRoutesRequest {
                vpc: vpc.into(),
                page_size: size,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.routes.len() <= size as usize);
        out.extend(
            page.routes
                .into_iter()
                .map(|r| (r.cidr, r.peering, r.installed)),
        );
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
    panic!("{vpc}: more than 100 pages of {size}: paging does not end");
}

/// A hub's routes in small pages are its routes in one page: each once, in one order (by
/// peering, then the foreign ones), and a peering that fails the rules (judged only when its routes reach a page) wants nothing.
#[tokio::test]
async fn list_routes_of_a_hub_pages_judged_peerings() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "hub", &["10.0.0.1/24"]);
    t.nb.nbctl(&["lr-route-add", "hub", "10.3.0.0/24", "10.0.0.254"]);
    let mut c = t.client().await;
    for k in 1..=6 {
        let spoke = format!("s{k}");
        create_vpc(&t.nb, &spoke, &[&format!("10.{k}.1.1/24")]);
        c.create_peering(create(peering(&format!("h{k}"), "hub", &spoke)))
            .await
            .unwrap();
    }
    // s4 now overlaps the hub: h4 fails the rules and wants nothing.
    t.nb.nbctl(&[
        "lrp-add",
        "s4",
        "s4-x",
        "0a:00:00:00:00:44",
        "10.0.0.129/25",
    ]);
    let whole = list_all_routes(&mut c, "hub", 100).await;
    let want: Vec<(String, String, bool)> = [
        ("10.1.1.0/24", "h1", false),
        ("10.2.1.0/24", "h2", false),
        ("10.3.1.0/24", "h3", false),
        ("10.5.1.0/24", "h5", false),
        ("10.6.1.0/24", "h6", false),
        ("10.3.0.0/24", "", true),
    ]
    .iter()
    .map(|(a, b, i)| (a.to_string(), b.to_string(), *i))
    .collect();
    assert_eq!(whole, want);
    for size in [1, 2, 4] {
        assert_eq!(
            list_all_routes(&mut c, "hub", size).await,
            want,
            "pages of {size}"
        );
    }

    t.converge().await;
    let installed = list_all_routes(&mut c, "hub", 100).await;
    assert!(installed.iter().all(|r| r.2), "{installed:?}");
    assert_eq!(installed.len(), 6, "{installed:?}");
    assert_eq!(list_all_routes(&mut c, "hub", 2).await, installed);
}

/// One VPC name limit: a name CreatePeering accepts is one ListRoutes accepts, and one byte
/// more is refused by both, naming the field.
#[tokio::test]
async fn create_and_list_routes_share_one_vpc_name_limit() {
    use ovn_peerd::peering::MAX_VPC_LEN;
    let t = two_vpcs().await;
    let mut c = t.client().await;
    let (longest, too_long) = ("v".repeat(MAX_VPC_LEN), "v".repeat(MAX_VPC_LEN + 1));
    assert_refused(
        c.create_peering(create(peering("p", &too_long, "vpc-2")))
            .await,
        Code::InvalidArgument,
        "peering.local_vpc",
    );
    // The longest name passes validation: what stops it is that no such router exists.
    let status = c
        .create_peering(create(peering("p", &longest, "vpc-2")))
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::InvalidArgument, "{status:?}");
    let routes = |vpc: &str| ListRoutesRequest {
        vpc: vpc.into(),
        ..Default::default()
    };
    let refused = c.list_routes(routes(&too_long)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(fields(&refused), ["vpc"]);
    let missing = c.list_routes(routes(&longest)).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
}

#[tokio::test]
async fn nb_outage_is_unavailable_for_creates() {
    let mut t = two_vpcs().await;
    t.nb.kill9();
    let mut c = t.client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = c
            .create_peering(create(peering("p", "vpc-1", "vpc-2")))
            .await;
        match r {
            Err(s) if s.code() == Code::Unavailable => break,
            other => assert!(std::time::Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Reads from Postgres still work.
    c.list_peerings(ListPeeringsRequest::default())
        .await
        .unwrap();
}
