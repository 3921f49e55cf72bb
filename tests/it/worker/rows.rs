//! The NB rows a peering produces, and that nothing else is written or touched.

use std::collections::{BTreeMap, BTreeSet};

use ovn_peerd::peering::desired::port_mac;
use ovn_peerd::peering::Side;
use ovn_peerd::proto::v1::{Peering, PeeringRoute, RoutePolicy};
use ovn_peerd::store::PeeringState;

use super::{create, delete, explicit, record, store, two_vpcs};
use crate::support::nbrows::{NbRows, PortRow};
use crate::support::peerd::Options;
use crate::support::vpc::{add_subnet, create_vpc};

fn ids(peering: &str, generation: i64, side: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("ovn-peerd:owner".into(), "ovn-peerd".into()),
        ("ovn-peerd:peering".into(), peering.into()),
        ("ovn-peerd:generation".into(), generation.to_string()),
        ("ovn-peerd:side".into(), side.into()),
    ])
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn route(prefix: &str, nexthop: &str, policy: &str) -> (String, String, String) {
    (prefix.into(), nexthop.into(), policy.into())
}

#[track_caller]
fn assert_port(
    rows: &NbRows,
    router: &str,
    name: &str,
    networks: &[&str],
    peer: &str,
    ids: BTreeMap<String, String>,
) -> PortRow {
    let ours = rows.owned_ports_of(router);
    assert_eq!(ours.len(), 1, "one port of ours on {router}: {ours:?}");
    let p = ours[0].clone();
    assert_eq!(p.name, name);
    assert_eq!(p.networks, set(networks), "{p:?}");
    assert_eq!(p.peer.as_deref(), Some(peer), "{p:?}");
    // Beside the markers, the id of the deployment that wrote it.
    let mut without_instance = p.external_ids.clone();
    let instance = without_instance.remove("ovn-peerd:instance");
    assert!(instance.is_some_and(|i| !i.is_empty()), "{p:?}");
    assert_eq!(without_instance, ids, "{p:?}");
    let first = u8::from_str_radix(&p.mac[..2], 16).expect("mac");
    assert_eq!(
        (first & 0x02, first & 0x01),
        (0x02, 0),
        "locally administered unicast: {}",
        p.mac
    );
    p
}

#[tokio::test]
async fn create_writes_exactly_the_specified_rows_and_delete_removes_only_ours() {
    let t = two_vpcs(Options::default()).await;
    // Someone else's rows on the same routers.
    t.nb.nbctl(&["lr-route-add", "vpc-1", "192.168.0.0/16", "10.1.0.254"]);
    t.nb.nbctl(&[
        "--policy=src-ip",
        "lr-route-add",
        "vpc-2",
        "10.2.0.128/25",
        "10.2.0.253",
    ]);
    t.nb.nbctl(&[
        "lrp-add",
        "vpc-1",
        "vpc-1-other",
        "0e:00:00:ff:00:01",
        "169.254.9.1/30",
        "peer=other-vpc-1",
    ]);
    let before = NbRows::read(&t.nb).foreign();

    create(
        &t,
        explicit("p1", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    let outcome = t.converge().await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    let s = store(&t.db.url);
    let rec = record(&s, "p1").await;
    assert_eq!(
        (rec.state, rec.observed_generation),
        (PeeringState::Active, 1)
    );

    let rows = NbRows::read(&t.nb);
    let l = assert_port(
        &rows,
        "vpc-1",
        "vpc-1-vpc-2",
        &["169.254.0.1/30"],
        "vpc-2-vpc-1",
        ids("p1", 1, "local"),
    );
    let r = assert_port(
        &rows,
        "vpc-2",
        "vpc-2-vpc-1",
        &["169.254.0.2/30"],
        "vpc-1-vpc-2",
        ids("p1", 1, "remote"),
    );
    assert_eq!(l.mac, port_mac("p1", Side::Local));
    assert_eq!(r.mac, port_mac("p1", Side::Remote));
    assert_ne!(l.mac, r.mac);
    // Routes to the other side's subnet (not to the foreign peer port's link), with the
    // explicit policy and our markers.
    assert_eq!(
        rows.owned_routes_of("vpc-1"),
        vec![route("10.2.0.0/24", "169.254.0.2", "dst-ip")]
    );
    assert_eq!(
        rows.owned_routes_of("vpc-2"),
        vec![route("10.1.0.0/24", "169.254.0.1", "dst-ip")]
    );
    // Every row carries this deployment's id.
    let deployment = s.deployment_get().await.unwrap().id.to_string();
    assert_eq!(l.external_ids["ovn-peerd:instance"], deployment);
    for r in rows
        .routes
        .values()
        .filter(|r| r.external_ids.contains_key("ovn-peerd:owner"))
    {
        let side = if r.nexthop == "169.254.0.2" {
            "local"
        } else {
            "remote"
        };
        let mut want = ids("p1", 1, side);
        want.insert("ovn-peerd:instance".into(), deployment.clone());
        assert_eq!(r.external_ids, want, "{r:?}");
        assert_eq!(r.route_table, "");
    }
    // No router option set (kube-ovn #6882: ARP learning must stay on).
    assert!(rows.router("vpc-1").options.is_empty());
    assert_eq!(rows.foreign(), before, "foreign rows untouched by create");

    delete(&t, "p1").await;
    t.converge().await;
    let rows = NbRows::read(&t.nb);
    assert_eq!(rows.owned_count(), 0, "{rows:?}");
    assert_eq!(rows.foreign(), before, "foreign rows untouched by delete");
    assert!(
        s.peering_get("p1").await.unwrap().is_none(),
        "tombstone gone"
    );
}

#[tokio::test]
async fn dual_stack_and_ipv6_peerings_have_rows_per_family() {
    let t = crate::support::peerd::TestPeerd::start().await;
    create_vpc(&t.nb, "vpc-1", &["10.1.0.1/24", "fd01::1/64"]);
    create_vpc(&t.nb, "vpc-2", &["10.2.0.1/24", "fd02::1/64"]);
    create_vpc(&t.nb, "vpc-3", &["fd03::1/64"]);
    create(
        &t,
        explicit(
            "ds",
            "vpc-1",
            "vpc-2",
            "169.254.0.1/30,fd00::1/126",
            "169.254.0.2/30,fd00::2/126",
        ),
    )
    .await;
    create(
        &t,
        Peering {
            local_routes: vec![PeeringRoute {
                cidr: "fd03::/64".into(),
                policy: RoutePolicy::SrcIp as i32,
            }],
            ..explicit("v6", "vpc-1", "vpc-3", "fd00::5/126", "fd00::6/126")
        },
    )
    .await;
    let outcome = t.converge().await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    assert_eq!(outcome.active, 2, "{outcome:?}");

    let rows = NbRows::read(&t.nb);
    let v1: BTreeMap<String, BTreeSet<String>> = rows
        .owned_ports_of("vpc-1")
        .into_iter()
        .map(|p| (p.name.clone(), p.networks.clone()))
        .collect();
    assert_eq!(
        v1,
        BTreeMap::from([
            (
                "vpc-1-vpc-2".to_string(),
                set(&["169.254.0.1/30", "fd00::1/126"])
            ),
            ("vpc-1-vpc-3".to_string(), set(&["fd00::5/126"])),
        ])
    );
    assert_port(
        &rows,
        "vpc-2",
        "vpc-2-vpc-1",
        &["169.254.0.2/30", "fd00::2/126"],
        "vpc-1-vpc-2",
        ids("ds", 1, "remote"),
    );
    assert_port(
        &rows,
        "vpc-3",
        "vpc-3-vpc-1",
        &["fd00::6/126"],
        "vpc-1-vpc-3",
        ids("v6", 1, "remote"),
    );
    assert_eq!(
        rows.owned_routes_of("vpc-1"),
        vec![
            route("10.2.0.0/24", "169.254.0.2", "dst-ip"),
            route("fd02::/64", "fd00::2", "dst-ip"),
            route("fd03::/64", "fd00::6", "src-ip"),
        ]
    );
    assert_eq!(
        rows.owned_routes_of("vpc-2"),
        vec![
            route("10.1.0.0/24", "169.254.0.1", "dst-ip"),
            route("fd01::/64", "fd00::1", "dst-ip"),
        ]
    );
    // An IPv6-only link carries only IPv6 routes: vpc-1's IPv4 subnet is not routed to vpc-3.
    assert_eq!(
        rows.owned_routes_of("vpc-3"),
        vec![route("fd01::/64", "fd00::5", "dst-ip")]
    );

    // And nothing to do the next time.
    let again = t.converge().await;
    assert_eq!(
        (again.rows_written, again.transactions),
        (0, 0),
        "{again:?}"
    );
}

#[tokio::test]
async fn automatic_routes_follow_the_other_vpcs_subnets() {
    let t = two_vpcs(Options::default()).await;
    create(
        &t,
        explicit("p", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    add_subnet(&t.nb, "vpc-2", "vpc-2-s1", "10.22.0.1/24");
    let outcome = t.converge().await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    assert_eq!(
        NbRows::read(&t.nb).owned_routes_of("vpc-1"),
        vec![
            route("10.2.0.0/24", "169.254.0.2", "dst-ip"),
            route("10.22.0.0/24", "169.254.0.2", "dst-ip"),
        ]
    );
    t.nb.nbctl(&["lrp-del", "vpc-2-s1"]);
    t.converge().await;
    assert_eq!(
        NbRows::read(&t.nb).owned_routes_of("vpc-1"),
        vec![route("10.2.0.0/24", "169.254.0.2", "dst-ip")]
    );
    assert_eq!(
        record(&store(&t.db.url), "p").await.state,
        PeeringState::Active
    );
}

#[tokio::test]
async fn a_converged_nb_gets_no_writes_from_a_fresh_worker() {
    let t = crate::support::peerd::TestPeerd::start().await;
    // A hub with twenty spokes, some dual-stack, some with explicit routes.
    create_vpc(&t.nb, "hub", &["10.0.0.1/16", "fd10::1/64"]);
    for i in 0..20 {
        let vpc = format!("spoke-{i}");
        create_vpc(
            &t.nb,
            &vpc,
            &[
                &format!("10.{}.0.1/24", 100 + i),
                &format!("fd20:{i}::1/64"),
            ],
        );
        let mut p = explicit(
            &format!("p{i}"),
            "hub",
            &vpc,
            &format!("169.254.{i}.1/30,fd00:0:0:{i}::1/126"),
            &format!("169.254.{i}.2/30,fd00:0:0:{i}::2/126"),
        );
        if i % 3 == 0 {
            p.remote_routes = vec![PeeringRoute {
                cidr: "10.0.0.0/17".into(),
                policy: RoutePolicy::DstIp as i32,
            }];
        }
        create(&t, p).await;
    }
    let first = t.converge().await;
    assert!(first.failed.is_empty(), "{first:?}");
    assert_eq!(first.active, 20);
    let rows = NbRows::read(&t.nb);
    assert!(rows.duplicate_routes().is_empty());

    // A second run and a fresh worker (a restart) read, compare and write nothing, not even
    // statuses.
    let statuses = super::pool(&t.db.url).await;
    let update_times = || async {
        sqlx::query_as::<_, (String, chrono::DateTime<chrono::Utc>)>(
            "SELECT name, update_time FROM peerings ORDER BY name",
        )
        .fetch_all(&statuses)
        .await
        .unwrap()
    };
    let before = update_times().await;
    for _ in 0..2 {
        let again = t.converge().await;
        assert_eq!(again.rows_written, 0, "{again:?}");
        assert_eq!(again.transactions, 0, "{again:?}");
        assert_eq!(again.active, 20);
    }
    let w = t.reconciler().await;
    let once = w.run_once().await.expect("pass");
    assert_eq!((once.rows_written, once.transactions), (0, 0), "{once:?}");
    let after = NbRows::read(&t.nb);
    assert_eq!(after.ports, rows.ports);
    assert_eq!(after.routes, rows.routes);
    assert_eq!(update_times().await, before);
}
