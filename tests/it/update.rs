//! UpdatePeering, labels and etags against a real server, Postgres and NB (issue 13): routes
//! changed in place (validate_only, refusals as in create), generation bumped by a route
//! change and not by labels, the etag's check-and-set on update and delete, the etag moved by
//! the worker's status writes, request_id retries, and ErrorInfo on errors. The worker is
//! driven by the test (`converge`), so every state is observed, not raced.

use std::collections::HashMap;

use ovn_peerd::proto::v1::peering::State;
use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::proto::v1::{
    CreatePeeringRequest, DeletePeeringRequest, GetPeeringRequest, Peering, PeeringRoute,
    RoutePolicy, UpdatePeeringRequest,
};
use prost_types::FieldMask;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::nbrows::NbRows;
use crate::support::peerd::TestPeerd;
use crate::support::vpc::create_vpc;

fn routes(cidrs: &[&str]) -> Vec<PeeringRoute> {
    cidrs
        .iter()
        .map(|c| PeeringRoute {
            cidr: c.to_string(),
            policy: RoutePolicy::DstIp as i32,
        })
        .collect()
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

/// vpc-1 (10.1.0.0/24) and vpc-2 (10.2.0.0/24) peered as "p1" with an explicit link and
/// `local_routes` into vpc-1, converged (ACTIVE at generation 1).
async fn peered(local_routes: &[&str]) -> (TestPeerd, PeeringServiceClient<Channel>, Peering) {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    let mut c = t.client().await;
    c.create_peering(CreatePeeringRequest {
        peering: Some(Peering {
            name: "p1".into(),
            local_vpc: "vpc-1".into(),
            remote_vpc: "vpc-2".into(),
            local_connect_ip: "169.254.0.1/30".into(),
            remote_connect_ip: "169.254.0.2/30".into(),
            local_routes: routes(local_routes),
            labels: HashMap::from([("tenant".into(), "team-a".into())]),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("create");
    let outcome = t.converge().await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    let p = get(&mut c).await;
    assert_eq!(p.state, State::Active as i32, "{p:?}");
    assert_eq!(p.generation, 1);
    (t, c, p)
}

async fn get(c: &mut PeeringServiceClient<Channel>) -> Peering {
    c.get_peering(GetPeeringRequest { name: "p1".into() })
        .await
        .expect("get")
        .into_inner()
}

fn update(p: Peering, paths: &[&str]) -> UpdatePeeringRequest {
    UpdatePeeringRequest {
        peering: Some(p),
        update_mask: mask(paths),
        ..Default::default()
    }
}

fn with_local_routes(p: &Peering, cidrs: &[&str]) -> Peering {
    Peering {
        local_routes: routes(cidrs),
        ..p.clone()
    }
}

/// Our routes on vpc-1 as NB holds them: (prefix, row uuid).
fn nb_routes(t: &TestPeerd) -> Vec<(String, String)> {
    let rows = NbRows::read(&t.nb);
    let mut v: Vec<(String, String)> = rows
        .routes_of("vpc-1")
        .into_iter()
        .filter(|r| r.external_ids.contains_key("ovn-peerd:owner"))
        .map(|r| (r.ip_prefix.clone(), r.uuid.clone()))
        .collect();
    v.sort();
    v
}

fn prefixes(routes: &[(String, String)]) -> Vec<&str> {
    routes.iter().map(|(p, _)| p.as_str()).collect()
}

#[track_caller]
fn assert_reason(status: &tonic::Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo: {status:?}"));
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "ovnpeerd");
}

#[track_caller]
fn assert_field(status: &tonic::Status, field: &str) {
    let details = status.get_error_details();
    let mut fields: Vec<String> = Vec::new();
    if let Some(br) = details.bad_request() {
        fields.extend(br.field_violations.iter().map(|v| v.field.clone()));
    }
    if let Some(pf) = details.precondition_failure() {
        fields.extend(pf.violations.iter().map(|v| v.subject.clone()));
    }
    assert!(
        fields.iter().any(|f| f == field),
        "{field:?} not in {fields:?}: {status:?}"
    );
}

#[tokio::test]
async fn validate_only_route_update_changes_nothing() {
    let (t, mut c, before) = peered(&["10.2.0.0/16"]).await;
    let nb_before = nb_routes(&t);
    let preview = c
        .update_peering(UpdatePeeringRequest {
            validate_only: true,
            ..update(
                with_local_routes(&before, &["10.2.0.0/17", "10.2.128.0/17"]),
                &["local_routes"],
            )
        })
        .await
        .expect("validate_only")
        .into_inner();
    assert_eq!(
        preview.local_routes,
        routes(&["10.2.0.0/17", "10.2.128.0/17"])
    );
    assert_eq!(preview.generation, 2, "what the update would make it");
    let after = get(&mut c).await;
    assert_eq!(
        after, before,
        "validate_only stored nothing (etag included)"
    );
    let outcome = t.converge().await;
    assert_eq!(outcome.rows_written, 0, "{outcome:?}");
    assert_eq!(nb_routes(&t), nb_before);
}

#[tokio::test]
async fn route_update_is_refused_as_a_create_would_be_and_changes_nothing() {
    let (t, mut c, before) = peered(&["10.2.0.0/16"]).await;
    // A foreign route to a prefix we would add: an ECMP group, refused as in create.
    t.nb.nbctl(&["lr-route-add", "vpc-1", "10.3.0.0/24", "10.1.0.254"]);
    let cases: Vec<(UpdatePeeringRequest, Code, &str, &str)> = vec![
        (
            update(
                with_local_routes(&before, &["10.2.0.0/16"]),
                &["local_routes", "local_vpc"],
            ),
            Code::InvalidArgument,
            "update_mask.paths[1]",
            "FIELD_INVALID",
        ),
        (
            update(
                with_local_routes(&before, &["10.1.0.0/16"]),
                &["local_routes"],
            ),
            Code::FailedPrecondition,
            "peering.local_routes[0].cidr",
            "TOPOLOGY_CONFLICT",
        ),
        (
            update(
                with_local_routes(&before, &["10.2.0.0/16", "10.3.0.0/24"]),
                &["local_routes"],
            ),
            Code::FailedPrecondition,
            "peering.local_routes",
            "TOPOLOGY_CONFLICT",
        ),
        (
            update(
                with_local_routes(&before, &["10.2.0.1/16"]),
                &["local_routes"],
            ),
            Code::InvalidArgument,
            "peering.local_routes[0].cidr",
            "FIELD_INVALID",
        ),
        (
            update(
                Peering {
                    labels: HashMap::from([("Tenant".into(), "x".into())]),
                    ..before.clone()
                },
                &["labels"],
            ),
            Code::InvalidArgument,
            "peering.labels[Tenant]",
            "FIELD_INVALID",
        ),
    ];
    for (req, code, field, reason) in cases {
        for validate_only in [true, false] {
            let status = c
                .update_peering(UpdatePeeringRequest {
                    validate_only,
                    ..req.clone()
                })
                .await
                .expect_err("refused");
            assert_reason(&status, code, reason);
            assert_field(&status, field);
        }
    }
    assert_eq!(get(&mut c).await, before, "nothing changed");
    assert_eq!(prefixes(&nb_routes(&t)), ["10.2.0.0/16"]);
}

#[tokio::test]
async fn a_route_change_bumps_the_generation_and_keeps_the_routes_that_stay() {
    let (t, mut c, before) = peered(&["10.2.0.0/24"]).await;
    let kept = nb_routes(&t);
    // Labels only: no new generation, the worker has nothing to do, still ACTIVE.
    let labelled = c
        .update_peering(update(
            Peering {
                labels: HashMap::from([("owner".into(), "ctrl-7".into())]),
                ..before.clone()
            },
            &["labels"],
        ))
        .await
        .expect("labels")
        .into_inner();
    assert_eq!(
        labelled.labels,
        HashMap::from([("owner".into(), "ctrl-7".into())])
    );
    assert_eq!(labelled.generation, 1, "{labelled:?}");
    assert_eq!(labelled.state, State::Active as i32);
    assert_ne!(labelled.etag, before.etag);
    assert_eq!(t.converge().await.rows_written, 0);

    // Routes (an empty mask: every updatable field, labels included).
    let updated = c
        .update_peering(update(
            with_local_routes(&labelled, &["10.2.0.0/24", "10.2.1.0/24"]),
            &[],
        ))
        .await
        .expect("routes")
        .into_inner();
    assert_eq!(updated.generation, 2, "{updated:?}");
    assert_eq!(updated.state, State::Pending as i32);
    let outcome = t.converge().await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    let now = get(&mut c).await;
    assert_eq!(
        (now.state, now.observed_generation),
        (State::Active as i32, 2)
    );
    let after = nb_routes(&t);
    assert_eq!(prefixes(&after), ["10.2.0.0/24", "10.2.1.0/24"]);
    assert_eq!(after[0], kept[0], "the route that stays is the same NB row");
}

#[tokio::test]
async fn a_stale_etag_is_aborted_on_update_and_delete_and_changes_nothing() {
    let (t, mut c, first) = peered(&["10.2.0.0/16"]).await;
    let moved = c
        .update_peering(update(
            Peering {
                labels: HashMap::from([("tenant".into(), "team-b".into())]),
                ..first.clone()
            },
            &["labels"],
        ))
        .await
        .expect("update with the current etag")
        .into_inner();
    assert_ne!(moved.etag, first.etag);
    // `first.etag` is stale now.
    let stale = c
        .update_peering(update(
            with_local_routes(&first, &["10.2.0.0/17"]),
            &["local_routes"],
        ))
        .await
        .expect_err("stale etag");
    assert_reason(&stale, Code::Aborted, "ETAG_MISMATCH");
    let stale = c
        .delete_peering(DeletePeeringRequest {
            name: "p1".into(),
            etag: first.etag.clone(),
            ..Default::default()
        })
        .await
        .expect_err("stale etag");
    assert_reason(&stale, Code::Aborted, "ETAG_MISMATCH");
    assert_eq!(get(&mut c).await, moved, "nothing changed");
    assert_eq!(t.converge().await.rows_written, 0);

    let malformed = c
        .delete_peering(DeletePeeringRequest {
            name: "p1".into(),
            etag: "not-an-etag".into(),
            ..Default::default()
        })
        .await
        .expect_err("malformed etag");
    assert_reason(&malformed, Code::InvalidArgument, "FIELD_INVALID");
    assert_field(&malformed, "etag");

    let deleted = c
        .delete_peering(DeletePeeringRequest {
            name: "p1".into(),
            etag: moved.etag.clone(),
            ..Default::default()
        })
        .await
        .expect("delete with the current etag")
        .into_inner();
    assert_eq!(deleted.state, State::Deleting as i32);
    let deleting = c
        .update_peering(update(
            Peering {
                etag: String::new(),
                ..moved
            },
            &["labels"],
        ))
        .await
        .expect_err("being deleted");
    assert_reason(&deleting, Code::FailedPrecondition, "PEERING_DELETING");
}

#[tokio::test]
async fn the_etag_changes_when_the_worker_changes_the_status() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    let mut c = t.client().await;
    let created = c
        .create_peering(CreatePeeringRequest {
            peering: Some(Peering {
                name: "p1".into(),
                local_vpc: "vpc-1".into(),
                remote_vpc: "vpc-2".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.state, State::Pending as i32);
    assert!(!created.etag.is_empty());
    assert_eq!(get(&mut c).await.etag, created.etag, "reads do not move it");
    t.converge().await;
    let active = get(&mut c).await;
    assert_eq!(active.state, State::Active as i32);
    assert_ne!(active.etag, created.etag, "the status write moved the etag");
    // So an update based on the PENDING read is refused.
    let stale = c
        .update_peering(update(created, &["labels"]))
        .await
        .expect_err("stale");
    assert_reason(&stale, Code::Aborted, "ETAG_MISMATCH");
}

#[tokio::test]
async fn a_retried_update_is_answered_once_and_a_reused_request_id_refused() {
    let (t, mut c, before) = peered(&["10.2.0.0/16"]).await;
    let req = UpdatePeeringRequest {
        request_id: "upd-1".into(),
        ..update(
            with_local_routes(&before, &["10.2.0.0/17", "10.2.128.0/17"]),
            &["local_routes"],
        )
    };
    let first = c
        .update_peering(req.clone())
        .await
        .expect("first")
        .into_inner();
    assert_eq!(first.generation, 2);
    // The retry carries the etag the first attempt made stale: answered, not ABORTED, and
    // applied once.
    let again = c
        .update_peering(req.clone())
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again.generation, 2, "{again:?}");
    assert_eq!(again.etag, first.etag);
    let other = c
        .update_peering(UpdatePeeringRequest {
            peering: Some(with_local_routes(&first, &["10.2.0.0/16"])),
            ..req
        })
        .await
        .expect_err("another request with the same request_id");
    assert_reason(&other, Code::InvalidArgument, "REQUEST_ID_REUSED");
    assert_field(&other, "request_id");
    t.converge().await;
    assert_eq!(get(&mut c).await.observed_generation, 2);
}

#[tokio::test]
async fn errors_carry_error_info() {
    let (_t, mut c, _) = peered(&["10.2.0.0/16"]).await;
    let missing = c
        .get_peering(GetPeeringRequest {
            name: "nope".into(),
        })
        .await
        .expect_err("missing");
    assert_reason(&missing, Code::NotFound, "PEERING_NOT_FOUND");
    let missing = c
        .update_peering(update(
            Peering {
                name: "nope".into(),
                ..Default::default()
            },
            &["labels"],
        ))
        .await
        .expect_err("missing");
    assert_reason(&missing, Code::NotFound, "PEERING_NOT_FOUND");
    let taken = c
        .create_peering(CreatePeeringRequest {
            peering: Some(Peering {
                name: "p1".into(),
                local_vpc: "vpc-1".into(),
                remote_vpc: "vpc-2".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("taken");
    assert_reason(&taken, Code::AlreadyExists, "PEERING_ALREADY_EXISTS");
    let bad = c
        .get_peering(GetPeeringRequest { name: "".into() })
        .await
        .expect_err("empty name");
    assert_reason(&bad, Code::InvalidArgument, "FIELD_INVALID");
}

#[tokio::test]
async fn a_cross_tenant_requests_routes_stay_as_requested_until_accepted() {
    use crate::authz::{create, Setup, TEAM_A, TEAM_B};
    let s = Setup::start().await;
    let mut a = s.client(TEAM_A).await;
    let request = a
        .create_peering(create("a-b", "team-a-1", "team-b-1"))
        .await
        .expect("a request towards team-b")
        .into_inner();
    assert_eq!(
        request.state,
        State::PendingAcceptance as i32,
        "{request:?}"
    );
    // Its routes cannot change: team-b answers the request as it was made (a route change
    // must never turn a request into a peering the worker converges).
    let refused = a
        .update_peering(update(
            Peering {
                local_routes: routes(&["10.99.0.0/24"]),
                ..request.clone()
            },
            &["local_routes"],
        ))
        .await
        .expect_err("routes of a request");
    assert_reason(&refused, Code::FailedPrecondition, "PEERING_NOT_ACCEPTED");
    // Its labels can; it stays a request at its generation.
    let labelled = a
        .update_peering(update(
            Peering {
                labels: HashMap::from([("owner".into(), "ctrl".into())]),
                ..request.clone()
            },
            &["labels"],
        ))
        .await
        .expect("labels of a request")
        .into_inner();
    assert_eq!(
        (labelled.state, labelled.generation),
        (State::PendingAcceptance as i32, request.generation)
    );
    // A delete with the etag read before the label change is ABORTED; the request stays.
    let stale = a
        .delete_peering(DeletePeeringRequest {
            name: "a-b".into(),
            etag: request.etag.clone(),
            ..Default::default()
        })
        .await
        .expect_err("stale etag");
    assert_reason(&stale, Code::Aborted, "ETAG_MISMATCH");
    let mut b = s.client(TEAM_B).await;
    let seen = b
        .get_peering(GetPeeringRequest { name: "a-b".into() })
        .await
        .expect("team-b sees the request")
        .into_inner();
    assert_eq!(seen.local_routes, request.local_routes);
    assert_eq!(seen.state, State::PendingAcceptance as i32);
    s.t.converge().await;
    assert_eq!(NbRows::read(&s.t.nb).owned_count(), 0, "nothing in NB");
}

#[tokio::test]
async fn tenants_update_their_side_only() {
    use crate::authz::{assert_denied, create, Setup, TEAM_A, TEAM_B};
    use ovn_peerd::proto::v1::AcceptPeeringRequest;
    let s = Setup::start().await;
    let (mut a, mut b) = (s.client(TEAM_A).await, s.client(TEAM_B).await);
    a.create_peering(create("a-b", "team-a-1", "team-b-1"))
        .await
        .expect("a request towards team-b");
    let accepted = b
        .accept_peering(AcceptPeeringRequest {
            name: "a-b".into(),
            ..Default::default()
        })
        .await
        .expect("team-b accepts")
        .into_inner();
    let with = |local: &[&str], remote: &[&str]| Peering {
        local_routes: routes(local),
        remote_routes: routes(remote),
        etag: String::new(),
        ..accepted.clone()
    };
    // Routes into team-b's VPC are team-b's business; team-b is not the peering's local side.
    let r = a
        .update_peering(update(with(&[], &["10.77.0.0/24"]), &["remote_routes"]))
        .await;
    assert_denied(r, &["remote_routes", "team-b-1"]);
    let r = b
        .update_peering(update(with(&["10.78.0.0/24"], &[]), &["local_routes"]))
        .await;
    assert_denied(r, &["may not update", "team-a-1"]);
    // team-a changes what it installs in its own VPC.
    let mine = a
        .update_peering(update(with(&["10.78.0.0/24"], &[]), &["local_routes"]))
        .await
        .expect("team-a's own side")
        .into_inner();
    assert_eq!(mine.local_routes, routes(&["10.78.0.0/24"]));
    assert_eq!(mine.generation, accepted.generation + 1);
}

/// An update writes only to the peering it authorized: parked at the VPC locks (held by the
/// test) while team-a withdraws its request "x" and team-b makes another "x", it is ABORTED
/// and team-b's "x" keeps its labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_writes_only_to_the_peering_it_authorized() {
    use crate::authz::{create, Setup, TEAM_A, TEAM_B};
    use crate::support::park::wait_for_waiter;
    let s = Setup::start().await;
    let (mut a, mut b) = (s.client(TEAM_A).await, s.client(TEAM_B).await);
    let x = a
        .create_peering(create("x", "team-a-1", "team-b-1"))
        .await
        .expect("a request towards team-b")
        .into_inner();
    let store = ovn_peerd::store::Store::connect_lazy(&s.t.db.url).unwrap();
    let held = store
        .peering_create_begin(&["team-a-1", "team-b-1"], None)
        .await
        .unwrap();
    let labelled = Peering {
        labels: HashMap::from([("owner".into(), "team-a".into())]),
        etag: String::new(),
        ..x
    };
    let updating = tokio::spawn({
        let mut a = a.clone();
        async move { a.update_peering(update(labelled, &["labels"])).await }
    });
    wait_for_waiter(&s.t.db.url, "pg_advisory_xact_lock").await;
    a.delete_peering(DeletePeeringRequest {
        name: "x".into(),
        ..Default::default()
    })
    .await
    .expect("withdrawn");
    b.create_peering(create("x", "team-b-2", "team-a-2"))
        .await
        .expect("team-b's request, same name");
    drop(held);
    let status = updating
        .await
        .unwrap()
        .expect_err("not what was authorized");
    eprintln!("DEBUG {status:?}");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    let now = b
        .get_peering(GetPeeringRequest { name: "x".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.local_vpc, "team-b-2");
    assert!(now.labels.is_empty(), "{now:?}");
}

/// A request_id reused across tenants names nothing of the other tenant's, and replays
/// nothing before the caller is authorized for the peering.
#[tokio::test]
async fn a_reused_request_id_names_no_other_tenants_peering() {
    use crate::authz::{assert_denied, create, Setup, TEAM_A, TEAM_B};
    let s = Setup::start().await;
    let (mut a, mut b) = (s.client(TEAM_A).await, s.client(TEAM_B).await);
    // CreatePeering: team-b's request_id, reused by team-a.
    let secret = b
        .create_peering(CreatePeeringRequest {
            request_id: "rid-1".into(),
            ..create("bsecret", "team-b-1", "team-b-2")
        })
        .await
        .expect("team-b's own")
        .into_inner();
    let status = a
        .create_peering(CreatePeeringRequest {
            request_id: "rid-1".into(),
            ..create("mine", "team-a-1", "team-a-2")
        })
        .await
        .expect_err("reused");
    assert_reason(&status, Code::InvalidArgument, "REQUEST_ID_REUSED");
    assert!(!status.message().contains("bsecret"), "{status:?}");
    let mine = a
        .create_peering(create("mine", "team-a-1", "team-a-2"))
        .await
        .expect("team-a's own")
        .into_inner();
    // UpdatePeering: team-b's request_id, reused by team-a on its own peering.
    let relabel = |p: &Peering| UpdatePeeringRequest {
        request_id: "rid-2".into(),
        ..update(
            Peering {
                labels: HashMap::from([("k".into(), "v".into())]),
                etag: String::new(),
                ..p.clone()
            },
            &["labels"],
        )
    };
    b.update_peering(relabel(&secret))
        .await
        .expect("team-b relabels");
    let status = a.update_peering(relabel(&mine)).await.expect_err("reused");
    assert_reason(&status, Code::InvalidArgument, "REQUEST_ID_REUSED");
    assert!(!status.message().contains("bsecret"), "{status:?}");
    // The very same request by team-a is not a replay of team-b's: it is not team-a's.
    let r = a.update_peering(relabel(&secret)).await;
    assert_denied(r, &["may not update"]);
}

/// An empty mask or `*` changes remote_routes only when they differ: the local tenant may
/// send the whole peering back with its own changes.
#[tokio::test]
async fn a_full_mask_with_the_remote_routes_as_they_are_is_the_local_sides_update() {
    use crate::authz::{assert_denied, create, Setup, TEAM_A, TEAM_B};
    use ovn_peerd::proto::v1::AcceptPeeringRequest;
    let s = Setup::start().await;
    let (mut a, mut b) = (s.client(TEAM_A).await, s.client(TEAM_B).await);
    a.create_peering(create("a-b", "team-a-1", "team-b-1"))
        .await
        .expect("a request towards team-b");
    let accepted = b
        .accept_peering(AcceptPeeringRequest {
            name: "a-b".into(),
            ..Default::default()
        })
        .await
        .expect("team-b accepts")
        .into_inner();
    let whole = |remote: &[&str]| Peering {
        labels: HashMap::from([("owner".into(), "team-a".into())]),
        remote_routes: routes(remote),
        ..accepted.clone()
    };
    for paths in [&[][..], &["*"][..]] {
        let done = a
            .update_peering(update(
                Peering {
                    etag: String::new(),
                    ..whole(&[])
                },
                paths,
            ))
            .await
            .unwrap_or_else(|e| panic!("mask {paths:?}: {e:?}"))
            .into_inner();
        assert_eq!(done.labels.get("owner").map(String::as_str), Some("team-a"));
    }
    let r = a
        .update_peering(update(
            Peering {
                etag: String::new(),
                ..whole(&["10.77.0.0/24"])
            },
            &["*"],
        ))
        .await;
    assert_denied(r, &["remote_routes", "team-b-1"]);
}
