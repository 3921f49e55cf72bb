//! Hand edits in NB, made by someone else while ovn-peerd runs (issue 14, target 8): each is
//! placed on the routers it touched and repaired by a narrow pass over their peerings, never
//! by a full pass. The edits whose rows go (a route deleted, a router deleted with its ports)
//! are placed only by what the rows were before the update (`ovsdb::changes`).

use std::time::Duration;

use ovn_peerd::store::PeeringState;

use super::{insert_sql, pool, store, wait_state};
use crate::metrics::Scrape;
use crate::support::nb::NbServer;
use crate::support::nbrows::NbRows;
use crate::support::peerd_process::PeerdProcess;
use crate::support::pg::{free_port, TestDb};
use crate::support::vpc::create_vpc;

const PROMPT: Duration = Duration::from_secs(30);

/// Passes of `scope` ("full" or "narrow") counted so far.
fn passes(metrics_port: u16, scope: &str) -> f64 {
    Scrape::get(metrics_port)
        .and_then(|s| {
            s.value(
                "ovn_peerd_reconciler_passes_total",
                &[("result", "ok"), ("scope", scope)],
            )
        })
        .unwrap_or(0.0)
}

/// Waits until `cond` holds of NB as `ovn-nbctl` reads it.
fn wait_nb(nb: &NbServer, what: &str, cond: impl Fn(&NbRows) -> bool) {
    ovn_peerd_test_support::wait_until(what, PROMPT, || cond(&NbRows::read(nb)))
        .unwrap_or_else(|e| panic!("{e}: {:?}", NbRows::read(nb)));
}

#[tokio::test]
async fn hand_edits_that_delete_or_move_rows_are_repaired_without_a_full_pass() {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    create_vpc(&nb, "vpc-1", &["10.1.0.1/24"]);
    create_vpc(&nb, "vpc-2", &["10.2.0.1/24"]);
    create_vpc(&nb, "vpc-3", &["10.3.0.1/24"]);
    create_vpc(&nb, "vpc-4", &["10.4.0.1/24"]);
    create_vpc(&nb, "other", &["10.9.0.1/24"]);
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let _peerd =
        PeerdProcess::start_with_args(&db.url, &nb.remote(), &["--metrics-listen", &metrics_addr]);
    let pg = pool(&db.url).await;
    let s = store(&db.url);
    let link = ("169.254.0.1/30", "169.254.0.2/30");
    insert_sql(&pg, "p", "vpc-1", "vpc-2", link.0, link.1).await;
    insert_sql(&pg, "q", "vpc-3", "vpc-4", link.0, link.1).await;
    wait_state(&s, "p", PeeringState::Active, PROMPT).await;
    wait_state(&s, "q", PeeringState::Active, PROMPT).await;
    ovn_peerd_test_support::wait_until("the first full pass counted", PROMPT, || {
        passes(metrics_port, "full") >= 1.0
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let full = passes(metrics_port, "full");
    let routes_to = |rows: &NbRows, vpc: &str, prefix: &str| {
        rows.owned_routes_of(vpc)
            .iter()
            .any(|(p, _, _)| p == prefix)
    };

    // Our route on vpc-1 deleted by hand (its router's mutation, the route collected): back.
    nb.nbctl(&["lr-route-del", "vpc-1"]);
    wait_nb(&nb, "vpc-1's route back", |rows| {
        routes_to(rows, "vpc-1", "10.2.0.0/24")
    });

    // A subnet port moved from `other` to vpc-2 in one transaction (two routers changed, the
    // port unchanged): vpc-1 routes to it through p; moved back: that route goes.
    let subnet = NbRows::read(&nb).ports_of("other")[0].uuid.clone();
    let mv = |from: &str, to: &str| {
        nb.nbctl(&[
            "remove",
            "Logical_Router",
            from,
            "ports",
            &subnet,
            "--",
            "add",
            "Logical_Router",
            to,
            "ports",
            &subnet,
        ]);
    };
    mv("other", "vpc-2");
    wait_nb(&nb, "vpc-1 routes to the moved subnet", |rows| {
        routes_to(rows, "vpc-1", "10.9.0.0/24")
    });
    mv("vpc-2", "other");
    wait_nb(&nb, "vpc-1's route to the subnet moved away gone", |rows| {
        !routes_to(rows, "vpc-1", "10.9.0.0/24") && routes_to(rows, "vpc-1", "10.2.0.0/24")
    });

    // vpc-4 deleted with its ports and routes: q fails, its half on vpc-3 goes.
    nb.nbctl(&["lr-del", "vpc-4"]);
    wait_state(&s, "q", PeeringState::Failed, PROMPT).await;
    wait_nb(&nb, "q's half on vpc-3 removed", |rows| {
        rows.owned_ports_of("vpc-3").is_empty() && rows.owned_routes_of("vpc-3").is_empty()
    });

    // Passes run one after the other: once this repair shows, every earlier pass is counted.
    nb.nbctl(&["lr-route-del", "vpc-1"]);
    wait_nb(&nb, "vpc-1's route back again", |rows| {
        routes_to(rows, "vpc-1", "10.2.0.0/24")
    });
    assert_eq!(
        passes(metrics_port, "full"),
        full,
        "a hand edit asked for a full pass"
    );
    assert_eq!(
        NbRows::read(&nb).owned_ports_of("vpc-1").len(),
        1,
        "p untouched"
    );
}
