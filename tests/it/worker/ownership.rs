//! Whose NB rows are whose (issue 10): two deployments on one NB leave each other alone; rows
//! of the previous version are adopted only by the deployment holding their peering; the
//! mass-deletion brake; tombstones wait only for rows the worker would delete.

use std::time::Duration;

use ovn_peerd::ovsdb::{Client, ClientConfig};
use ovn_peerd::proto::v1::{
    CreatePeeringRequest, DiagnosePeeringRequest, ListRoutesRequest, Severity,
};
use ovn_peerd::startup::{Application, NB_DATABASE};
use ovn_peerd::store::PeeringState;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt;

use super::{create, eventually, explicit, insert_sql, pool, store, wait_state};
use crate::support::nbrows::NbRows;
use crate::support::peerd::{Options, TestPeerd};
use crate::support::vpc::create_vpc;

const PROMPT: Duration = Duration::from_secs(10);
const INSTANCE: &str = "ovn-peerd:instance";

/// The `ovn-peerd:instance` of every row marked as ours on `router`.
fn instances_on(rows: &NbRows, router: &str) -> Vec<Option<String>> {
    let ports = rows
        .owned_ports_of(router)
        .into_iter()
        .map(|p| p.external_ids.get(INSTANCE).cloned());
    let routes = rows
        .routes_of(router)
        .into_iter()
        .filter(|r| r.external_ids.contains_key("ovn-peerd:owner"))
        .map(|r| r.external_ids.get(INSTANCE).cloned());
    ports.chain(routes).collect()
}

/// Every row marked as ours: uuid → external_ids.
fn owned_ids(rows: &NbRows) -> Vec<(String, std::collections::BTreeMap<String, String>)> {
    let ports = rows.ports.values().map(|p| (&p.uuid, &p.external_ids));
    let routes = rows.routes.values().map(|r| (&r.uuid, &r.external_ids));
    ports
        .chain(routes)
        .filter(|(_, ids)| ids.contains_key("ovn-peerd:owner"))
        .map(|(u, ids)| (u.clone(), ids.clone()))
        .collect()
}

#[tokio::test]
async fn two_deployments_on_one_nb_leave_each_other_alone() {
    // B: another database (another deployment id), same NB.
    let (a, b) = two_deployments(&[
        ("vpc-1", "10.1.0.1/24"),
        ("vpc-2", "10.2.0.1/24"),
        ("vpc-3", "10.3.0.1/24"),
        ("vpc-4", "10.4.0.1/24"),
    ])
    .await;
    create(
        &a,
        explicit("pa", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    create(
        &b,
        explicit("pb", "vpc-3", "vpc-4", "169.254.0.5/30", "169.254.0.6/30"),
    )
    .await;
    // B also wants A's pair (inserted as a restore would: B's API is not the point here).
    insert_sql(
        &pool(&b.db.url).await,
        "pb12",
        "vpc-1",
        "vpc-2",
        "169.254.0.9/30",
        "169.254.0.10/30",
    )
    .await;
    let (sa, sb) = (store(&a.db.url), store(&b.db.url));
    wait_state(&sa, "pa", PeeringState::Active, PROMPT).await;
    wait_state(&sb, "pb", PeeringState::Active, PROMPT).await;
    let blocked = wait_state(&sb, "pb12", PeeringState::Failed, PROMPT).await;
    let id_a = sa.deployment_get().await.unwrap().id.to_string();
    let id_b = sb.deployment_get().await.unwrap().id.to_string();
    assert_ne!(id_a, id_b);
    assert!(
        blocked.state_message.contains("\"vpc-1-vpc-2\"") && blocked.state_message.contains(&id_a),
        "names the row and its deployment: {blocked:?}"
    );

    // A second, independent NB monitor counts every change to the three tables.
    let monitor = Client::start(ClientConfig::new(&a.nb.remote(), NB_DATABASE).unwrap()).unwrap();
    monitor.wait_synced(PROMPT).await.unwrap();
    let before = NbRows::read(&a.nb);
    let version = *monitor.version().borrow();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        *monitor.version().borrow(),
        version,
        "NB changed while both deployments were converged"
    );
    let after = NbRows::read(&a.nb);
    assert_eq!(owned_ids(&after), owned_ids(&before));
    for (router, id) in [
        ("vpc-1", &id_a),
        ("vpc-2", &id_a),
        ("vpc-3", &id_b),
        ("vpc-4", &id_b),
    ] {
        assert_eq!(
            instances_on(&after, router),
            vec![Some(id.clone()); 2],
            "{router}: one port and one route, of its deployment"
        );
    }
    assert_eq!(
        sa.peering_get("pa").await.unwrap().unwrap().state,
        PeeringState::Active
    );
    assert_eq!(
        sb.peering_get("pb").await.unwrap().unwrap().state,
        PeeringState::Active
    );
    monitor.shutdown();
}

#[tokio::test]
async fn rows_of_the_previous_version_are_adopted_in_place_only_by_their_holder() {
    let a = TestPeerd::start().await;
    create_vpc(&a.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&a.nb, "vpc-2", &["10.2.0.1/24"]);
    create(
        &a,
        explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    a.converge().await;
    // NB as the version without instance ids left it.
    for (uuid, _) in owned_ids(&NbRows::read(&a.nb)) {
        let table = if NbRows::read(&a.nb).ports.contains_key(&uuid) {
            "Logical_Router_Port"
        } else {
            "Logical_Router_Static_Route"
        };
        a.nb.nbctl(&[
            "remove",
            table,
            &uuid,
            "external_ids",
            &format!("{INSTANCE:?}"),
        ]);
    }
    let old = owned_ids(&NbRows::read(&a.nb));
    assert_eq!(old.len(), 4);
    assert!(old.iter().all(|(_, ids)| !ids.contains_key(INSTANCE)));

    // Another deployment, holding no peering "p": neither deletes nor adopts them.
    let b = TestPeerd::start_against(&a.nb.remote(), Options::default()).await;
    let outcome = b.converge().await;
    assert_eq!(outcome.rows_written, 0, "{outcome:?}");
    assert_eq!(owned_ids(&NbRows::read(&a.nb)), old);

    // Their holder adopts them: one update each, the same rows.
    let outcome = a.reconciler().await.run_once().await.unwrap();
    assert_eq!(outcome.rows_written, 4, "{outcome:?}");
    assert_eq!(outcome.active, 1, "{outcome:?}");
    let id_a = store(&a.db.url)
        .deployment_get()
        .await
        .unwrap()
        .id
        .to_string();
    let adopted = owned_ids(&NbRows::read(&a.nb));
    let uuids = |v: &[(String, _)]| v.iter().map(|(u, _)| u.clone()).collect::<Vec<_>>();
    assert_eq!(uuids(&adopted), uuids(&old), "updated in place");
    assert!(adopted
        .iter()
        .all(|(_, ids)| ids.get(INSTANCE) == Some(&id_a)));
}

async fn health_status(addr: std::net::SocketAddr, service: &str) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status())
        .unwrap_or(ServingStatus::Unknown)
}

#[tokio::test]
async fn a_pass_that_would_delete_most_of_our_rows_does_not_without_the_flag() {
    let mut t = TestPeerd::start().await;
    create_vpc(&t.nb, "hub", &["10.100.0.1/24"]);
    for i in 1..=6u32 {
        let spoke = format!("vpc-{i}");
        create_vpc(&t.nb, &spoke, &[&format!("10.{i}.0.1/24")]);
        let (l, r) = (
            format!("169.254.0.{}/30", 4 * i + 1),
            format!("169.254.0.{}/30", 4 * i + 2),
        );
        create(&t, explicit(&format!("p{i}"), "hub", &spoke, &l, &r)).await;
    }
    t.converge().await;
    assert_eq!(NbRows::read(&t.nb).owned_count(), 24);

    // The database loses its peerings (a bad restore, a truncate): same deployment, NB full.
    sqlx::query("DELETE FROM peerings")
        .execute(&pool(&t.db.url).await)
        .await
        .unwrap();
    // A replica starts on it with the worker: its first pass is a full one.
    let mut config = t.config.clone();
    config.worker = true;
    let app = Application::build(config).await.expect("build");
    let addr = app.local_addr();
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone()));
    eventually("reconciler health NOT_SERVING", PROMPT, || async {
        (health_status(addr, "ovnpeerd.v1.Reconciler").await == ServingStatus::NotServing)
            .then_some(())
    })
    .await;
    assert_eq!(
        NbRows::read(&t.nb).owned_count(),
        24,
        "nothing deleted by the brake-held pass"
    );
    let outcome = t.reconciler().await.run_once().await.unwrap();
    assert_eq!(
        (outcome.rows_written, outcome.held_back),
        (0, 6),
        "{outcome:?}"
    );
    stop.cancel();
    running.await.unwrap().unwrap();

    // Started with --allow-mass-deletion, the same pass deletes them.
    t.config.allow_mass_deletion = true;
    let outcome = t.converge().await;
    assert_eq!(outcome.held_back, 0, "{outcome:?}");
    assert_eq!(NbRows::read(&t.nb).owned_count(), 0);
}

#[tokio::test]
async fn a_tombstone_does_not_wait_for_a_row_taken_over_by_hand() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24"]);
    create(
        &t,
        explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    // An operator takes one route over: the documented way is removing the owner mark.
    let rows = NbRows::read(&t.nb);
    let taken = rows
        .routes_of("vpc-1")
        .into_iter()
        .find(|r| r.external_ids.contains_key("ovn-peerd:owner"))
        .expect("our route on vpc-1")
        .clone();
    t.nb.nbctl(&[
        "remove",
        "Logical_Router_Static_Route",
        &taken.uuid,
        "external_ids",
        "\"ovn-peerd:owner\"",
    ]);
    super::delete(&t, "p").await;
    let outcome = t.reconciler().await.run_once().await.unwrap();
    assert_eq!(outcome.tombstones_removed, 1, "{outcome:?}");
    assert!(store(&t.db.url).peering_get("p").await.unwrap().is_none());
    let rows = NbRows::read(&t.nb);
    assert_eq!(rows.owned_count(), 0);
    let left = rows
        .routes
        .get(&taken.uuid)
        .expect("the taken-over route is left");
    assert_eq!(left.ip_prefix, taken.ip_prefix);
    assert!(rows.router("vpc-1").static_routes.contains(&taken.uuid));
}

#[tokio::test]
async fn a_peering_deleted_through_the_api_is_never_held_back_however_many_rows() {
    let t = TestPeerd::start().await;
    let nets = |i: u32| -> Vec<String> { (1..=6).map(|n| format!("10.{i}.{n}.1/24")).collect() };
    for (vpc, i) in [("vpc-1", 1), ("vpc-2", 2)] {
        let gws = nets(i);
        create_vpc(
            &t.nb,
            vpc,
            &gws.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    create(
        &t,
        explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    assert_eq!(NbRows::read(&t.nb).owned_count(), 14, "2 ports, 12 routes");
    super::delete(&t, "p").await;
    let worker = t.reconciler().await;
    let outcome = worker.run_once().await.unwrap();
    assert_eq!(
        (outcome.held_back, outcome.tombstones_removed),
        (0, 1),
        "{outcome:?}"
    );
    assert_eq!(
        *worker.mass_deletion_blocked().borrow(),
        None,
        "no brake, no alarm"
    );
    assert_eq!(NbRows::read(&t.nb).owned_count(), 0);
}

/// A peering name is no proof of ownership: deployment B's `p1` (hub to s2) must not take
/// deployment A's `p1` route on the hub (to s1, the same subnet) for its own, or it would
/// install an ECMP partner and split A's traffic.
#[tokio::test]
async fn another_deployments_route_of_the_same_peering_name_is_an_ecmp_conflict() {
    let (a, b) = two_deployments(&[
        ("hub", "10.0.0.1/24"),
        ("s1", "10.1.0.1/24"),
        ("s2", "10.1.0.1/24"),
    ])
    .await;
    create(
        &a,
        explicit("p1", "hub", "s1", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    let (sa, sb) = (store(&a.db.url), store(&b.db.url));
    wait_state(&sa, "p1", PeeringState::Active, PROMPT).await;
    let id_a = sa.deployment_get().await.unwrap().id.to_string();
    // B's CreatePeering refuses it up front...
    let status = b
        .client()
        .await
        .create_peering(CreatePeeringRequest {
            peering: Some(explicit(
                "p1",
                "hub",
                "s2",
                "169.254.0.5/30",
                "169.254.0.6/30",
            )),
            ..Default::default()
        })
        .await
        .expect_err("an ECMP partner of A's route");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    let subjects: Vec<String> = status
        .get_error_details()
        .precondition_failure()
        .map(|pf| pf.violations.iter().map(|v| v.subject.clone()).collect())
        .unwrap_or_default();
    assert_eq!(subjects, ["peering.local_routes"], "{status:?}");
    assert!(
        status.message().contains("ECMP") && status.message().contains(&id_a),
        "names the conflict and A's deployment: {status:?}"
    );
    // ...and B's worker refuses it when it gets in another way (a restore).
    insert_sql(
        &pool(&b.db.url).await,
        "p1",
        "hub",
        "s2",
        "169.254.0.5/30",
        "169.254.0.6/30",
    )
    .await;
    let refused = wait_state(&sb, "p1", PeeringState::Failed, PROMPT).await;
    assert!(
        refused.state_message.contains("ECMP") && refused.state_message.contains(&id_a),
        "names the conflict and A's deployment: {refused:?}"
    );
    let hub_routes: Vec<_> = NbRows::read(&a.nb)
        .routes_of("hub")
        .into_iter()
        .filter(|r| r.ip_prefix.starts_with("10.1.0."))
        .map(|r| r.external_ids.get(INSTANCE).cloned())
        .collect();
    assert_eq!(
        hub_routes,
        vec![Some(id_a.clone())],
        "A's hub route stays alone"
    );
    assert_eq!(
        sa.peering_get("p1").await.unwrap().unwrap().state,
        PeeringState::Active
    );
    // DiagnosePeering of B's p1 reads A's route as the rules do: not B's installed route
    // but the foreign route its own would join.
    let findings = unhealthy(&b).await;
    assert!(
        findings
            .iter()
            .any(|f| f.starts_with("ecmp_conflict: hub") && f.contains("via 169.254.0.2")),
        "{findings:?}"
    );
}

/// ListRoutes tells rows as the rules do: deployment B's `p1` route on the hub (to s2) is not
/// deployment A's `p1`'s, though it carries the same peering name; each deployment lists its
/// own route under `p1` and the other's as a foreign one (no peering).
#[tokio::test]
async fn list_routes_shows_another_deployments_route_of_the_same_peering_name_as_foreign() {
    let (a, b) = two_deployments(&[
        ("hub", "10.0.0.1/24"),
        ("s1", "10.1.0.1/24"),
        ("s2", "10.2.0.1/24"),
    ])
    .await;
    create(
        &a,
        explicit("p1", "hub", "s1", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    create(
        &b,
        explicit("p1", "hub", "s2", "169.254.0.5/30", "169.254.0.6/30"),
    )
    .await;
    wait_state(&store(&a.db.url), "p1", PeeringState::Active, PROMPT).await;
    wait_state(&store(&b.db.url), "p1", PeeringState::Active, PROMPT).await;
    let mine_and_foreign = |ours: &str, theirs: &str| {
        let mut v = vec![
            (ours.to_string(), "p1".to_string()),
            (theirs.to_string(), String::new()),
        ];
        v.sort();
        v
    };
    for page_size in [1000, 1] {
        assert_eq!(
            hub_routes(&a, page_size).await,
            mine_and_foreign("10.1.0.0/24", "10.2.0.0/24"),
            "A, page size {page_size}"
        );
        assert_eq!(
            hub_routes(&b, page_size).await,
            mine_and_foreign("10.2.0.0/24", "10.1.0.0/24"),
            "B, page size {page_size}"
        );
    }
}

/// The checks of DiagnosePeering of `p1` that are not OK: "check: message".
async fn unhealthy<N>(t: &TestPeerd<N>) -> Vec<String> {
    t.client()
        .await
        .diagnose_peering(DiagnosePeeringRequest { name: "p1".into() })
        .await
        .expect("diagnose")
        .into_inner()
        .findings
        .into_iter()
        .filter(|f| f.severity != Severity::Ok as i32)
        .map(|f| format!("{}: {}", f.check, f.message))
        .collect()
}

/// Every route ListRoutes lists for the hub, pages of `page_size`: (cidr, peering), sorted.
async fn hub_routes<N>(t: &TestPeerd<N>, page_size: i32) -> Vec<(String, String)> {
    let (mut routes, mut token) = (Vec::new(), String::new());
    loop {
        let page = t
            .client()
            .await
            .list_routes(ListRoutesRequest {
                vpc: "hub".into(),
                page_size,
                page_token: token,
            })
            .await
            .expect("list routes")
            .into_inner();
        routes.extend(page.routes.into_iter().map(|r| (r.cidr, r.peering)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    routes.sort();
    routes
}

/// Deployment A (worker on, its own NB) with `vpcs` (name, gateway address) made, and
/// deployment B: another database (another deployment id), same NB, worker on.
async fn two_deployments(vpcs: &[(&str, &str)]) -> (TestPeerd, TestPeerd<()>) {
    let a = TestPeerd::start_with(Options {
        worker: true,
        ..Options::default()
    })
    .await;
    for (vpc, gw) in vpcs {
        create_vpc(&a.nb, vpc, &[gw]);
    }
    let b = TestPeerd::start_against(
        &a.nb.remote(),
        Options {
            worker: true,
            ..Options::default()
        },
    )
    .await;
    (a, b)
}
