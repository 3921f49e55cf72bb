//! The cross-tenant flow (issue 12) over mTLS with the test policy of `authz.rs`: a request
//! towards another tenant's VPC waits in STATE_PENDING_ACCEPTANCE with nothing in NB (checked
//! with `ovn-nbctl` after the worker ran), the remote tenant sees and accepts it (ACTIVE, rows
//! in NB) or rejects it; a request nobody answers expires; rejected and expired ones free the
//! pair and the link but keep their name; the requester cannot answer its own request, a third
//! tenant cannot see it, and an accept judges the peering again.

use std::collections::BTreeSet;
use std::time::Duration;

use ovn_peerd::proto::v1::peering::State;
use ovn_peerd::proto::v1::{
    AcceptPeeringRequest, CreatePeeringRequest, DeletePeeringRequest, GetPeeringRequest,
    ListPeeringsRequest, PeeringRoute, RejectPeeringRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::authz::{assert_denied, create, Setup, TEAM_A, TEAM_B, TEAM_D};
use crate::support::nbrows::NbRows;
use crate::support::pg::wait_until;

fn accept(name: &str) -> AcceptPeeringRequest {
    AcceptPeeringRequest {
        name: name.into(),
        ..Default::default()
    }
}

fn reject(name: &str) -> RejectPeeringRequest {
    RejectPeeringRequest {
        name: name.into(),
        ..Default::default()
    }
}

fn get(name: &str) -> GetPeeringRequest {
    GetPeeringRequest { name: name.into() }
}

fn delete(name: &str) -> DeletePeeringRequest {
    DeletePeeringRequest {
        name: name.into(),
        ..Default::default()
    }
}

/// A create with one fixed link, so that a second request can only reuse it if the first
/// one freed it.
fn linked(name: &str, local: &str, remote: &str) -> CreatePeeringRequest {
    let mut req = create(name, local, remote);
    let p = req.peering.as_mut().unwrap();
    p.local_connect_ip = "169.254.9.1/30".into();
    p.remote_connect_ip = "169.254.9.2/30".into();
    req
}

/// The peering's state as Postgres holds it, read with `psql` (not through ovn-peerd).
fn stored_state(s: &Setup, name: &str) -> String {
    psql(
        s,
        &format!("SELECT state FROM peerings WHERE name = '{name}'"),
    )
}

fn psql(s: &Setup, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([
            "-XtAq",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &s.t.db.url,
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql {sql}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Rows of this deployment in NB, as `ovn-nbctl` shows them.
fn ours_in_nb(s: &Setup) -> usize {
    NbRows::read(&s.t.nb).owned_count()
}

#[track_caller]
fn assert_state_refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, state: &str) {
    let status = r.expect_err("expected FAILED_PRECONDITION on state");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().starts_with("state: ") && status.message().contains(state),
        "{state} not named on `state` in {:?}",
        status.message()
    );
    let details = status.get_error_details();
    assert_eq!(
        details.error_info().map(|i| i.reason.as_str()),
        Some("NOT_AWAITING_ACCEPTANCE")
    );
}

#[tokio::test]
async fn a_cross_tenant_request_waits_for_the_remote_tenant_then_converges() {
    let s = Setup::start().await;
    let mut a = s.client(TEAM_A).await;
    let mut b = s.client(TEAM_B).await;
    let p = a
        .create_peering(create("a-b", "team-a-1", "team-b-1"))
        .await
        .expect("a request towards team-b")
        .into_inner();
    assert_eq!(p.state, State::PendingAcceptance as i32, "{p:?}");
    assert!(p.state_message.contains("tenant \"team-b\""), "{p:?}");

    // The worker leaves it alone: nothing in NB, still waiting.
    s.t.converge().await;
    assert_eq!(ours_in_nb(&s), 0, "a request writes nothing to NB");
    assert_eq!(stored_state(&s, "a-b"), "pending_acceptance");

    // The remote tenant sees it, by name and in its listing.
    let seen = b
        .get_peering(get("a-b"))
        .await
        .expect("b sees it")
        .into_inner();
    assert_eq!(seen.state, State::PendingAcceptance as i32);
    let listed = b
        .list_peerings(ListPeeringsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .peerings;
    assert_eq!(
        listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["a-b"]
    );

    // A third tenant neither sees nor answers it.
    let mut d = s.client(TEAM_D).await;
    assert_denied(
        d.get_peering(get("a-b")).await,
        &["tenant \"team-d\"", "may not see peering \"a-b\""],
    );
    let listed = d
        .list_peerings(ListPeeringsRequest::default())
        .await
        .unwrap();
    assert!(listed.into_inner().peerings.is_empty());
    assert_denied(
        d.accept_peering(accept("a-b")).await,
        &["tenant \"team-d\"", "may not see peering \"a-b\""],
    );

    // The requester cannot answer its own request.
    assert_denied(
        a.accept_peering(accept("a-b")).await,
        &[
            "tenant \"team-a\" may not accept peering \"a-b\"",
            "remote_vpc \"team-b-1\"",
            "the requester cannot accept its own",
        ],
    );
    assert_denied(
        a.reject_peering(reject("a-b")).await,
        &["tenant \"team-a\" may not reject peering \"a-b\""],
    );
    assert_eq!(stored_state(&s, "a-b"), "pending_acceptance");

    // Accepted: a new generation, on to convergence like any other.
    let accepted = b
        .accept_peering(accept("a-b"))
        .await
        .expect("team-b accepts")
        .into_inner();
    assert_eq!(accepted.state, State::Pending as i32, "{accepted:?}");
    assert_eq!(accepted.generation, 2);
    s.t.converge().await;
    let active = a.get_peering(get("a-b")).await.unwrap().into_inner();
    assert_eq!(active.state, State::Active as i32, "{active:?}");
    let nb = NbRows::read(&s.t.nb);
    assert_eq!(
        nb.owned_port_names(),
        BTreeSet::from(["team-a-1-team-b-1".into(), "team-b-1-team-a-1".into()])
    );
    assert_eq!(nb.owned_count(), 4, "two ports and a route each way");

    // Answered once: a second answer is refused, naming `state`.
    assert_state_refused(b.accept_peering(accept("a-b")).await, "STATE_ACTIVE");
    assert_state_refused(b.reject_peering(reject("a-b")).await, "STATE_ACTIVE");
}

#[tokio::test]
async fn a_rejected_request_writes_nothing_and_frees_the_pair_and_its_link() {
    let s = Setup::start().await;
    let mut a = s.client(TEAM_A).await;
    let mut b = s.client(TEAM_B).await;
    a.create_peering(linked("first", "team-a-1", "team-b-1"))
        .await
        .expect("a request");
    let r = b
        .reject_peering(reject("first"))
        .await
        .expect("team-b rejects")
        .into_inner();
    assert_eq!(r.state, State::Rejected as i32, "{r:?}");
    assert!(
        r.state_message.contains("rejected by tenant \"team-b\""),
        "{r:?}"
    );
    s.t.converge().await;
    assert_eq!(ours_in_nb(&s), 0, "a rejected request writes nothing");

    // Both sides still see it; nobody can answer it again.
    for c in [&mut a, &mut b] {
        let p = c.get_peering(get("first")).await.unwrap().into_inner();
        assert_eq!(p.state, State::Rejected as i32);
    }
    assert_state_refused(b.accept_peering(accept("first")).await, "STATE_REJECTED");

    // Its name stays taken, the pair and the link do not.
    let again = a
        .create_peering(linked("first", "team-a-1", "team-b-1"))
        .await
        .expect_err("the name is still taken");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    let second = a
        .create_peering(linked("second", "team-a-1", "team-b-1"))
        .await
        .expect("a new request for the pair, on the same link")
        .into_inner();
    assert_eq!(second.state, State::PendingAcceptance as i32);
    assert_eq!(second.local_connect_ip, "169.254.9.1/30");

    // The requester deletes its requests, rejected or open: gone at once.
    for name in ["first", "second"] {
        a.delete_peering(delete(name))
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e:?}"));
        let gone = a.get_peering(get(name)).await.expect_err("gone");
        assert_eq!(gone.code(), Code::NotFound, "{name}: {gone:?}");
    }
    s.t.converge().await;
    assert_eq!(ours_in_nb(&s), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_expires_and_frees_the_pair() {
    let s = Setup::start_with(|c| c.acceptance_ttl = Duration::from_secs(1)).await;
    let mut a = s.client(TEAM_A).await;
    let mut b = s.client(TEAM_B).await;
    a.create_peering(linked("late", "team-a-1", "team-b-1"))
        .await
        .expect("a request");
    wait_until("the request to expire", Duration::from_secs(30), || {
        stored_state(&s, "late") == "expired"
    })
    .unwrap();
    let p = b.get_peering(get("late")).await.unwrap().into_inner();
    assert_eq!(p.state, State::Expired as i32, "{p:?}");
    assert!(p.state_message.contains("acceptance TTL (1s)"), "{p:?}");
    assert_state_refused(b.accept_peering(accept("late")).await, "STATE_EXPIRED");
    s.t.converge().await;
    assert_eq!(ours_in_nb(&s), 0, "an expired request writes nothing");
    let next = a
        .create_peering(linked("next", "team-a-1", "team-b-1"))
        .await
        .expect("the pair and the link are free again")
        .into_inner();
    assert_eq!(next.state, State::PendingAcceptance as i32);
}

#[tokio::test]
async fn a_late_accept_is_refused_even_before_the_sweep() {
    let s = Setup::start().await;
    let mut a = s.client(TEAM_A).await;
    let mut b = s.client(TEAM_B).await;
    a.create_peering(create("late", "team-a-1", "team-b-1"))
        .await
        .expect("a request");
    // Made 8 days ago (the TTL is 7 days); the sweep sleeps until a week from its start.
    psql(
        &s,
        "UPDATE peerings SET create_time = now() - interval '8 days' WHERE name = 'late'",
    );
    assert_eq!(stored_state(&s, "late"), "pending_acceptance");
    assert_state_refused(b.accept_peering(accept("late")).await, "STATE_EXPIRED");
    assert_eq!(stored_state(&s, "late"), "expired");
    s.t.converge().await;
    assert_eq!(ours_in_nb(&s), 0);
}

#[tokio::test]
async fn an_accept_that_no_longer_fits_is_refused_and_changes_nothing() {
    let s = Setup::start().await;
    let mut a = s.client(TEAM_A).await;
    let mut b = s.client(TEAM_B).await;
    // Accepting installs the route to team-a-1's subnet 10.1.0.0/24 in team-b-1.
    a.create_peering(create("a-b", "team-a-1", "team-b-1"))
        .await
        .expect("a request");
    // Meanwhile team-b routes that prefix elsewhere: the request does not stand in its way.
    let mut own = create("b-b", "team-b-1", "team-b-2");
    own.peering.as_mut().unwrap().local_routes = vec![PeeringRoute {
        cidr: "10.1.0.0/24".into(),
        ..Default::default()
    }];
    b.create_peering(own).await.expect("team-b's own peering");

    let refused = b
        .accept_peering(accept("a-b"))
        .await
        .expect_err("judged again at accept time");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("10.1.0.0/24") && refused.message().contains("\"b-b\""),
        "{refused:?}"
    );
    assert_eq!(stored_state(&s, "a-b"), "pending_acceptance");

    // Once that peering is gone, the same accept goes through.
    b.delete_peering(delete("b-b")).await.unwrap();
    s.t.converge().await;
    let accepted = b
        .accept_peering(accept("a-b"))
        .await
        .expect("fits again")
        .into_inner();
    assert_eq!(accepted.state, State::Pending as i32);
}

/// An answer reaches only the request the caller was authorized for and reviewed. An accept
/// parked at the VPC locks (held by the test) while the requester deletes its request and
/// makes another under the same name (another VPC pair) is ABORTED, and the new request stays
/// unanswered; an accept or reject pinned to a stale etag is ABORTED and changes nothing; the
/// current etag is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_reaches_only_the_request_it_was_authorized_for() {
    use crate::support::park::wait_for_waiter;
    let s = Setup::start().await;
    let (mut a, mut b) = (s.client(TEAM_A).await, s.client(TEAM_B).await);
    a.create_peering(create("x", "team-a-1", "team-b-1"))
        .await
        .expect("a request towards team-b");
    let store = ovn_peerd::store::Store::connect_lazy(&s.t.db.url).unwrap();
    let held = store
        .peering_create_begin(&["team-a-1", "team-b-1"], None)
        .await
        .unwrap();
    let accepting = tokio::spawn({
        let mut b = b.clone();
        async move { b.accept_peering(accept("x")).await }
    });
    wait_for_waiter(&s.t.db.url, "pg_advisory_xact_lock").await;
    a.delete_peering(delete("x")).await.expect("withdrawn");
    let other = a
        .create_peering(create("x", "team-a-2", "team-b-2"))
        .await
        .expect("another request, same name")
        .into_inner();
    drop(held);
    let status = accepting
        .await
        .unwrap()
        .expect_err("not what was authorized");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(stored_state(&s, "x"), "pending_acceptance");

    // Pinned to the version reviewed.
    let stale = other.etag.clone();
    a.update_peering(ovn_peerd::proto::v1::UpdatePeeringRequest {
        peering: Some(ovn_peerd::proto::v1::Peering {
            labels: [("owner".to_string(), "ctrl".to_string())].into(),
            ..other.clone()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["labels".into()],
        }),
        ..Default::default()
    })
    .await
    .expect("the requester relabels its request");
    let pinned = |etag: &str| AcceptPeeringRequest {
        name: "x".into(),
        etag: etag.into(),
    };
    let status = b.accept_peering(pinned(&stale)).await.expect_err("stale");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    let status = b
        .reject_peering(RejectPeeringRequest {
            name: "x".into(),
            etag: stale,
        })
        .await
        .expect_err("stale");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(stored_state(&s, "x"), "pending_acceptance");
    let current = b.get_peering(get("x")).await.unwrap().into_inner().etag;
    let accepted = b
        .accept_peering(pinned(&current))
        .await
        .expect("the version reviewed")
        .into_inner();
    assert_eq!(accepted.state, State::Pending as i32, "{accepted:?}");
}
