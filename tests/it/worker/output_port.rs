//! Every route we install names its peer port in `output_port` (issue 16): a link-local
//! nexthop is ambiguous without it, since every OVN router port has its own fe80::/64 address.
//! The column is repaired like any other drift, and rows written before ovn-peerd set it are
//! updated in place (same row, so the route never leaves NB).

use std::collections::BTreeMap;
use std::time::Duration;

use ovn_peerd::store::PeeringState;

use super::{create, eventually, explicit, record, store, two_vpcs, wait_state};
use crate::support::nbrows::NbRows;
use crate::support::peerd::{Options, TestPeerd};
use crate::support::vpc::add_subnet;

const PROMPT: Duration = Duration::from_secs(10);

/// Our routes: uuid → router name.
fn our_routes(t: &TestPeerd) -> BTreeMap<String, String> {
    let rows = NbRows::read(&t.nb);
    let mut out = BTreeMap::new();
    for router in ["vpc-1", "vpc-2"] {
        for r in rows.routes_of(router) {
            if r.external_ids.contains_key("ovn-peerd:owner") {
                out.insert(r.uuid.clone(), router.to_string());
            }
        }
    }
    out
}

/// `output_port` of a route as `ovn-nbctl` shows it (`[]` when empty).
fn output_port(t: &TestPeerd, uuid: &str) -> String {
    t.nb.nbctl(&["get", "Logical_Router_Static_Route", uuid, "output_port"])
        .trim()
        .trim_matches('"')
        .to_string()
}

fn own_port(router: &str) -> &'static str {
    match router {
        "vpc-1" => "vpc-1-vpc-2",
        _ => "vpc-2-vpc-1",
    }
}

/// A dual-stack peering (IPv6 over fe80::), so both families' routes are covered.
fn dual_stack_link_local() -> ovn_peerd::proto::v1::Peering {
    explicit(
        "p",
        "vpc-1",
        "vpc-2",
        "169.254.0.1/30,fe80::a:1/64",
        "169.254.0.2/30,fe80::a:2/64",
    )
}

#[tokio::test]
async fn an_output_port_cleared_or_changed_by_hand_is_restored_on_the_same_row() {
    let t = two_vpcs(Options {
        worker: true,
        ..Options::default()
    })
    .await;
    add_subnet(&t.nb, "vpc-2", "vpc-2-s6", "fd02::1/64");
    add_subnet(&t.nb, "vpc-1", "vpc-1-s6", "fd01::1/64");
    create(&t, dual_stack_link_local()).await;
    let s = store(&t.db.url);
    wait_state(&s, "p", PeeringState::Active, PROMPT).await;
    let routes = our_routes(&t);
    assert_eq!(routes.len(), 4, "{routes:?}");
    for (uuid, router) in &routes {
        assert_eq!(output_port(&t, uuid), own_port(router), "{uuid}");
    }

    let (uuid, router) = routes.iter().next().unwrap();
    for change in [
        vec!["clear", "Logical_Router_Static_Route", uuid, "output_port"],
        vec![
            "set",
            "Logical_Router_Static_Route",
            uuid,
            "output_port=vpc-1-s6",
        ],
    ] {
        t.nb.nbctl(&change);
        eventually(
            &format!("output_port repaired after {change:?}"),
            PROMPT,
            || async { (output_port(&t, uuid) == own_port(router)).then_some(()) },
        )
        .await;
        // Repaired in place: the very same rows, nothing re-created.
        assert_eq!(our_routes(&t), routes);
        assert_eq!(record(&s, "p").await.state, PeeringState::Active);
    }
}

#[tokio::test]
async fn routes_written_without_output_port_are_updated_in_place() {
    let t = two_vpcs(Options::default()).await;
    add_subnet(&t.nb, "vpc-2", "vpc-2-s6", "fd02::1/64");
    add_subnet(&t.nb, "vpc-1", "vpc-1-s6", "fd01::1/64");
    create(&t, dual_stack_link_local()).await;
    t.converge().await;
    // NB as the previous version left it: the same rows, without output_port.
    let routes = our_routes(&t);
    assert_eq!(routes.len(), 4, "{routes:?}");
    for uuid in routes.keys() {
        t.nb.nbctl(&["clear", "Logical_Router_Static_Route", uuid, "output_port"]);
        assert_eq!(output_port(&t, uuid), "[]");
    }

    // The upgraded worker's first pass: one update per route, no delete, no insert.
    let first = t.reconciler().await.run_once().await.expect("pass");
    assert_eq!(first.rows_written, routes.len(), "{first:?}");
    assert!(first.failed.is_empty(), "{first:?}");
    assert_eq!(our_routes(&t), routes, "the same rows");
    for (uuid, router) in &routes {
        assert_eq!(output_port(&t, uuid), own_port(router), "{uuid}");
    }
    assert!(t.converge().await.is_idle());
}
