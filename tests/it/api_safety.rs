//! Issue 10, the API half: refusals that keep a working peering working.
//! Port names that cannot collide, ECMP groups refused (at create time and by
//! the worker later), serialised creates on one VPC, request_id semantics and
//! the string checks on every RPC; each against real Postgres and ovsdb-server.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::{
    peering, CreatePeeringRequest, DeletePeeringRequest, GetPeeringRequest, ListPeeringsRequest,
    ListRoutesRequest, Peering, PeeringRoute,
};
use ovn_peerd::store::Store;
use tokio::sync::Barrier;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::peerd::TestPeerd;
use crate::support::vpc::{add_subnet, create_vpc};

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

/// (field, description) of every violation in a refusal's details.
fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    let details = status.get_error_details();
    let mut out = Vec::new();
    if let Some(br) = details.bad_request() {
        out.extend(
            br.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone())),
        );
    }
    if let Some(pf) = details.precondition_failure() {
        out.extend(
            pf.violations
                .iter()
                .map(|v| (v.subject.clone(), v.description.clone())),
        );
    }
    out
}

/// Asserts the code, and a violation on `field` whose description has every one of `parts`.
#[track_caller]
fn assert_refusal<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    field: &str,
    parts: &[&str],
) {
    let status = result.expect_err("expected a refusal");
    assert_eq!(status.code(), code, "{status:?}");
    let v = violations(&status);
    let hit = v
        .iter()
        .any(|(f, d)| f == field && parts.iter().all(|p| d.contains(p)));
    assert!(hit, "no violation on {field:?} with {parts:?} in {v:?}");
}

async fn stored(t: &TestPeerd) -> Vec<String> {
    let store = Store::connect_lazy(&t.db.url).unwrap();
    let all = store.peering_list(None, 1000, None).await.unwrap();
    all.into_iter().map(|r| r.name).collect()
}

/// The uuid of the one static route with this prefix and nexthop.
fn route_uuid(t: &TestPeerd, prefix: &str, nexthop: &str) -> String {
    let out = t.nb.nbctl(&[
        "--bare",
        "--columns=_uuid",
        "find",
        "Logical_Router_Static_Route",
        &format!("ip_prefix=\"{prefix}\""),
        &format!("nexthop=\"{nexthop}\""),
    ]);
    let uuid = out.trim().to_string();
    assert!(!uuid.is_empty() && !uuid.contains('\n'), "{out:?}");
    uuid
}

async fn get(c: &mut PeeringServiceClient<Channel>, name: &str) -> Peering {
    c.get_peering(GetPeeringRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn port_name_held_by_another_peering_is_refused() {
    // "a-b" + "c" and "a" + "b-c" both want a port named "a-b-c".
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "a-b", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "c", &["10.2.0.1/24"]);
    create_vpc(&t.nb, "a", &["10.3.0.1/24"]);
    create_vpc(&t.nb, "b-c", &["10.4.0.1/24"]);
    let mut c = t.client().await;
    c.create_peering(create(peering("p1", "a-b", "c")))
        .await
        .expect("first holder");
    for validate_only in [true, false] {
        let r = c
            .create_peering(CreatePeeringRequest {
                validate_only,
                ..create(peering("p2", "a", "b-c"))
            })
            .await;
        assert_refusal(
            r,
            Code::FailedPrecondition,
            "peering.local_vpc",
            &["\"a-b-c\"", "peering \"p1\""],
        );
    }
    assert_eq!(stored(&t).await, ["p1"]);
    // The worker leaves p1's port alone.
    t.converge().await;
    assert_eq!(get(&mut c, "p1").await.state, peering::State::Active as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_wanting_one_port_name_store_one() {
    // Ten groups of two creates on four distinct VPCs ("gN-b" + "c", "gN" + "b-c"): no VPC
    // lock is shared, so only Postgres's unique port names can keep one of each pair out.
    const GROUPS: usize = 10;
    let t = TestPeerd::start().await;
    for g in 0..GROUPS {
        for vpc in [format!("g{g}-b"), "c".into(), format!("g{g}"), "b-c".into()] {
            let vpc = if vpc == "c" || vpc == "b-c" {
                format!("{vpc}{g}")
            } else {
                vpc
            };
            create_vpc(&t.nb, &vpc, &[]);
        }
    }
    let barrier = Arc::new(Barrier::new(2 * GROUPS));
    let mut tasks = Vec::new();
    for g in 0..GROUPS {
        // Both want the port "g{g}-b-c{g}".
        for (name, local, remote) in [
            (format!("x{g}"), format!("g{g}-b"), format!("c{g}")),
            (format!("y{g}"), format!("g{g}"), format!("b-c{g}")),
        ] {
            let mut c = t.client().await;
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                c.create_peering(create(peering(&name, &local, &remote)))
                    .await
            }));
        }
    }
    for task in tasks {
        if let Err(e) = task.await.unwrap() {
            assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        }
    }
    let names = stored(&t).await;
    for g in 0..GROUPS {
        let held = names
            .iter()
            .filter(|n| **n == format!("x{g}") || **n == format!("y{g}"))
            .count();
        assert_eq!(held, 1, "group {g}: {names:?}");
    }
}

#[tokio::test]
async fn port_name_held_by_a_foreign_nb_port_is_refused() {
    // Kube-OVN names vpc-1's port to its subnet "vpc-2" like our port to VPC vpc-2.
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    add_subnet(&t.nb, "vpc-1", "vpc-1-vpc-2", "10.9.0.1/24");
    let mut c = t.client().await;
    for validate_only in [true, false] {
        let r = c
            .create_peering(CreatePeeringRequest {
                validate_only,
                ..create(peering("p1", "vpc-1", "vpc-2"))
            })
            .await;
        assert_refusal(
            r,
            Code::FailedPrecondition,
            "peering.local_vpc",
            &[
                "port \"vpc-1-vpc-2\"",
                "router \"vpc-1\"",
                "not owned by ovn-peerd",
            ],
        );
    }
    assert!(t.store_is_empty().await);
}

#[tokio::test]
async fn route_that_would_form_an_ecmp_group_is_refused() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    // A stale route to vpc-2's subnet, e.g. the survivor's half of an old peering.
    t.nb.nbctl(&["lr-route-add", "vpc-1", "10.2.0.0/24", "10.1.0.254"]);
    let uuid = route_uuid(&t, "10.2.0.0/24", "10.1.0.254");
    let mut c = t.client().await;
    for validate_only in [true, false] {
        let r = c
            .create_peering(CreatePeeringRequest {
                validate_only,
                ..create(peering("p1", "vpc-1", "vpc-2"))
            })
            .await;
        assert_refusal(
            r,
            Code::FailedPrecondition,
            "peering.local_routes",
            &["ECMP", "10.2.0.0/24", "10.1.0.254", &uuid, "\"vpc-1\""],
        );
    }
    assert!(t.store_is_empty().await);
}

#[tokio::test]
async fn worker_fails_a_peering_when_an_ecmp_route_appears_and_recovers() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    let mut c = t.client().await;
    c.create_peering(create(peering("p1", "vpc-1", "vpc-2")))
        .await
        .unwrap();
    t.converge().await;
    assert_eq!(get(&mut c, "p1").await.state, peering::State::Active as i32);

    t.nb.nbctl(&[
        "--ecmp",
        "lr-route-add",
        "vpc-1",
        "10.2.0.0/24",
        "10.1.0.254",
    ]);
    let uuid = route_uuid(&t, "10.2.0.0/24", "10.1.0.254");
    t.converge().await;
    let p = get(&mut c, "p1").await;
    assert_eq!(p.state, peering::State::Failed as i32, "{p:?}");
    for part in [
        "ECMP",
        "10.1.0.254",
        uuid.as_str(),
        "not owned by ovn-peerd",
    ] {
        assert!(p.state_message.contains(part), "{part}: {p:?}");
    }

    t.nb.nbctl(&["lr-route-del", "vpc-1", "10.2.0.0/24", "10.1.0.254"]);
    t.converge().await;
    let p = get(&mut c, "p1").await;
    assert_eq!(p.state, peering::State::Active as i32, "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_conflicting_creates_on_one_hub_store_exactly_one() {
    // Twenty spokes with the same subnet: the hub can route it to one of them only.
    const SPOKES: usize = 20;
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "hub", &["10.0.0.1/24"]);
    for i in 0..SPOKES {
        create_vpc(&t.nb, &format!("spoke-{i}"), &["10.50.0.1/24"]);
    }
    let barrier = Arc::new(Barrier::new(SPOKES));
    let mut tasks = Vec::new();
    for i in 0..SPOKES {
        let mut c = t.client().await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            c.create_peering(create(peering(
                &format!("p{i}"),
                "hub",
                &format!("spoke-{i}"),
            )))
            .await
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                let v = violations(&e);
                assert!(
                    v.iter()
                        .any(|(f, d)| f == "peering.local_routes" && d.contains("10.50.0.0/24")),
                    "{v:?}"
                );
            }
        }
    }
    assert_eq!(created, 1);
    assert_eq!(stored(&t).await.len(), 1);
}

#[tokio::test]
async fn request_id_reused_with_another_request_is_refused() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    create_vpc(&t.nb, "vpc-3", &["10.3.0.1/24"]);
    let mut c = t.client().await;
    let first = CreatePeeringRequest {
        request_id: "req-1".into(),
        ..create(peering("p1", "vpc-1", "vpc-2"))
    };
    c.create_peering(first.clone()).await.unwrap();
    for other in [
        peering("p2", "vpc-1", "vpc-3"),
        peering("p1", "vpc-2", "vpc-3"),
    ] {
        let r = c
            .create_peering(CreatePeeringRequest {
                request_id: "req-1".into(),
                ..create(other)
            })
            .await;
        assert_refusal(
            r,
            Code::InvalidArgument,
            "request_id",
            // Not the peering's name: it may be another tenant's (see update.rs).
            &["another request"],
        );
    }
    // The same request with its routes in another order is the same request.
    let routes = |cidrs: &[&str]| {
        cidrs
            .iter()
            .map(|c| PeeringRoute {
                cidr: c.to_string(),
                policy: 0,
            })
            .collect::<Vec<_>>()
    };
    let with_routes = |order: &[&str]| CreatePeeringRequest {
        request_id: "req-2".into(),
        ..create(Peering {
            local_routes: routes(order),
            ..peering("p3", "vpc-2", "vpc-3")
        })
    };
    let a = c
        .create_peering(with_routes(&["10.3.0.0/25", "10.3.0.128/25"]))
        .await
        .unwrap()
        .into_inner();
    let b = c
        .create_peering(with_routes(&["10.3.0.128/25", "10.3.0.0/25"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a, b);
    assert_eq!(stored(&t).await, ["p1", "p3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_request_all_get_the_first_result() {
    const CALLS: usize = 12;
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    let barrier = Arc::new(Barrier::new(CALLS));
    let mut tasks = Vec::new();
    for _ in 0..CALLS {
        let mut c = t.client().await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            c.create_peering(CreatePeeringRequest {
                request_id: "retry-1".into(),
                ..create(peering("p1", "vpc-1", "vpc-2"))
            })
            .await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        let answer = task
            .await
            .unwrap()
            .expect("every retry gets the first result");
        answers.push(answer.into_inner());
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(stored(&t).await, ["p1"]);
}

#[tokio::test]
async fn control_characters_and_lengths_are_refused_on_every_rpc() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    let mut c = t.client().await;
    let bad = "p\0x".to_string();
    let nul = ["NUL"];
    let r = c.get_peering(GetPeeringRequest { name: bad.clone() }).await;
    assert_refusal(r, Code::InvalidArgument, "name", &nul);
    let r = c
        .delete_peering(DeletePeeringRequest {
            name: bad.clone(),
            allow_missing: true,
            ..Default::default()
        })
        .await;
    assert_refusal(r, Code::InvalidArgument, "name", &nul);
    let r = c
        .get_peering(GetPeeringRequest {
            name: "p".repeat(64),
        })
        .await;
    assert_refusal(r, Code::InvalidArgument, "name", &["63"]);
    let r = c
        .list_peerings(ListPeeringsRequest {
            vpc: bad.clone(),
            ..Default::default()
        })
        .await;
    assert_refusal(r, Code::InvalidArgument, "vpc", &nul);
    let r = c
        .list_peerings(ListPeeringsRequest {
            page_token: "\u{7}".into(),
            ..Default::default()
        })
        .await;
    assert_refusal(r, Code::InvalidArgument, "page_token", &nul);
    // A forged token whose cursor hides a NUL.
    let forged = URL_SAFE_NO_PAD.encode(br#"{"f":"","k":"p\u0000"}"#);
    let r = c
        .list_peerings(ListPeeringsRequest {
            page_token: forged,
            ..Default::default()
        })
        .await;
    assert_refusal(r, Code::InvalidArgument, "page_token", &["page token"]);
    let r = c
        .list_routes(ListRoutesRequest {
            vpc: "vpc-1\0".into(),
            ..Default::default()
        })
        .await;
    assert_refusal(r, Code::InvalidArgument, "vpc", &nul);
    let r = c
        .list_routes(ListRoutesRequest {
            vpc: "vpc-1".into(),
            page_token: "x".repeat(5000),
            ..Default::default()
        })
        .await;
    assert_refusal(r, Code::InvalidArgument, "page_token", &["longer than"]);
    let r = c
        .create_peering(CreatePeeringRequest {
            request_id: "r\0".into(),
            ..create(peering("p1", "vpc-1", "vpc-2"))
        })
        .await;
    assert_refusal(r, Code::InvalidArgument, "request_id", &nul);
    let r = c
        .create_peering(create(Peering {
            local_connect_ip: "1".repeat(10_000),
            remote_connect_ip: "169.254.0.2/30".into(),
            ..peering("p1", "vpc-1", "vpc-2")
        }))
        .await;
    assert_refusal(
        r,
        Code::InvalidArgument,
        "peering.local_connect_ip",
        &["longer than"],
    );
    let r = c
        .create_peering(create(Peering {
            remote_routes: vec![PeeringRoute {
                cidr: "10.1.0.0/24\u{1b}".into(),
                policy: 0,
            }],
            ..peering("p1", "vpc-1", "vpc-2")
        }))
        .await;
    assert_refusal(
        r,
        Code::InvalidArgument,
        "peering.remote_routes[0].cidr",
        &nul,
    );
    let r = c
        .create_peering(create(peering("p1", "vpc-1\0", "vpc-2")))
        .await;
    assert_refusal(r, Code::InvalidArgument, "peering.local_vpc", &["control"]);
    assert!(t.store_is_empty().await);
}

/// ListRoutes' page tokens are bound to the listing: a well-formed token of another VPC's
/// listing, or one whose cursor this listing never writes, is refused on `page_token` (and
/// not read as "start over" or "past the end").
#[tokio::test]
async fn list_routes_refuses_another_listings_token_and_a_cursor_it_never_wrote() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    let mut c = t.client().await;
    c.create_peering(create(peering("p1", "vpc-1", "vpc-2")))
        .await
        .unwrap();
    // Converged: the listing pages by keyset (the read that judges wanted routes has its own
    // check of the cursor, run when NB lacks a wanted route).
    t.converge().await;
    let token = |f: &str, k: &str| {
        URL_SAFE_NO_PAD.encode(serde_json::json!({ "f": f, "k": k }).to_string())
    };
    let list = |page_token: String| ListRoutesRequest {
        vpc: "vpc-1".into(),
        page_size: 1,
        page_token,
    };
    // A cursor of the right shape, of vpc-2's listing.
    let r = c.list_routes(list(token("vpc-2", "0\0p1\0x"))).await;
    assert_refusal(r, Code::InvalidArgument, "page_token", &["another filter"]);
    for cursor in ["", "junk", "0\0p1", "2\0x", "1\0a\0b"] {
        let r = c.list_routes(list(token("vpc-1", cursor))).await;
        assert_refusal(r, Code::InvalidArgument, "page_token", &["page token"]);
    }
    // The same listing's own shape is served.
    c.list_routes(list(token("vpc-1", "0\0p1\0x")))
        .await
        .expect("a cursor this listing writes");
}
