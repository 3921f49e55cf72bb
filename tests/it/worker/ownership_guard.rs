//! "ovn-peerd never changes or deletes a row without `ovn-peerd:owner=ovn-peerd`", checked by
//! behaviour: rows of a peering whose owner mark an operator removed by hand stay exactly as
//! they were (read back with `ovn-nbctl`) through a new generation and the peering's deletion;
//! also when the mark goes after the worker's replica last looked (the guard in the
//! transaction, not only the planner's filter): a proxy makes the replica lag.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ovn_peerd::reconciler::{self, Reconciler};
use ovn_peerd::store::PeeringState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{create, delete, explicit, pool, record, store, two_vpcs};
use crate::support::nb::NbServer;
use crate::support::nbrows::NbRows;
use crate::support::peerd::Options;

/// Every column of one row, as `ovn-nbctl list` prints it.
fn row(nb: &NbServer, table: &str, uuid: &str) -> String {
    nb.nbctl(&["list", table, uuid])
}

#[tokio::test]
async fn rows_whose_owner_mark_was_removed_are_never_updated_or_deleted() {
    let t = two_vpcs(Options::default()).await;
    create(
        &t,
        explicit("p12", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    let s = store(&t.db.url);
    assert_eq!(record(&s, "p12").await.state, PeeringState::Active);

    // An operator takes over vpc-1's port and route: the owner mark goes, the rest stays.
    let rows = NbRows::read(&t.nb);
    let port = rows.owned_ports_of("vpc-1")[0].uuid.clone();
    let route = rows
        .routes_of("vpc-1")
        .iter()
        .find(|r| r.external_ids.contains_key("ovn-peerd:owner"))
        .expect("a route of ours in vpc-1")
        .uuid
        .clone();
    for (table, uuid) in [
        ("Logical_Router_Port", &port),
        ("Logical_Router_Static_Route", &route),
    ] {
        t.nb.nbctl(&["remove", table, uuid, "external_ids", "\"ovn-peerd:owner\""]);
    }
    let taken_port = row(&t.nb, "Logical_Router_Port", &port);
    let taken_route = row(&t.nb, "Logical_Router_Static_Route", &route);
    assert!(!taken_port.contains("ovn-peerd:owner"), "{taken_port}");
    let untouched = |when: &str| {
        assert_eq!(
            row(&t.nb, "Logical_Router_Port", &port),
            taken_port,
            "port changed {when}"
        );
        assert_eq!(
            row(&t.nb, "Logical_Router_Static_Route", &route),
            taken_route,
            "route changed {when}"
        );
    };

    // A new generation would update every row of the peering (markers): not these.
    sqlx::query("UPDATE peerings SET generation = generation + 1 WHERE name = 'p12'")
        .execute(&pool(&t.db.url).await)
        .await
        .unwrap();
    t.converge().await;
    untouched("by a new generation");
    let r = record(&s, "p12").await;
    assert_eq!(r.state, PeeringState::Failed, "{r:?}");
    assert!(r.state_message.contains("vpc-1-vpc-2"), "{r:?}");

    // Deleting the peering removes its rows: not these.
    delete(&t, "p12").await;
    t.converge().await;
    t.converge().await;
    untouched("by the peering's deletion");
    let after = NbRows::read(&t.nb);
    assert!(after.ports.contains_key(&port) && after.routes.contains_key(&route));
    assert_eq!(
        after.owned_count(),
        0,
        "the rows still marked as ours are gone"
    );
}

/// A TCP proxy to the NB server's unix socket that holds everything the server sends for
/// `delay` (order kept), so that the worker's replica lags behind NB by that much.
pub(super) struct LaggingNb {
    pub(super) remote: String,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LaggingNb {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LaggingNb {
    pub(super) async fn start(sock: std::path::PathBuf) -> LaggingNb {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let remote = format!("tcp:{}", listener.local_addr().unwrap());
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::UnixStream::connect(&sock).await else {
                    continue;
                };
                conns.spawn(relay(client, server, delay.clone()));
            }
        });
        LaggingNb {
            remote,
            delay_ms,
            task,
        }
    }

    pub(super) fn lag(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::UnixStream,
    delay: Arc<AtomicU64>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let down_read = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = tokio::time::Instant::now()
                        + Duration::from_millis(delay.load(Ordering::SeqCst));
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    while let Some((due, bytes)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if cw.write_all(&bytes).await.is_err() {
            break;
        }
    }
    up.abort();
    down_read.abort();
}

/// A worker whose NB replica comes through `nb` (driven by the test).
async fn lagging_worker(t: &crate::support::peerd::TestPeerd, nb: &LaggingNb) -> Reconciler {
    lagging_worker_with(t, nb, reconciler::MAX_ROWS_PER_TRANSACTION).await
}

/// [`lagging_worker`] with transactions of at most `max_rows` rows (whole peerings still).
pub(super) async fn lagging_worker_with(
    t: &crate::support::peerd::TestPeerd,
    nb: &LaggingNb,
    max_rows: usize,
) -> Reconciler {
    let client = ovn_peerd::ovsdb::Client::start(
        ovn_peerd::ovsdb::ClientConfig::new(&nb.remote, ovn_peerd::startup::NB_DATABASE)
            .unwrap()
            .with_owner_key(ovn_peerd::peering::PEERING_KEY),
    )
    .unwrap();
    client.wait_synced(Duration::from_secs(10)).await.unwrap();
    let store = store(&t.db.url);
    let deployment = store.deployment_get().await.expect("deployment id");
    let mut settings = reconciler::Settings::from_config(&t.config, deployment.id);
    settings.max_rows_per_transaction = max_rows;
    Reconciler::new(store, client, settings)
}

/// The race the planner cannot see: the owner mark goes after the worker's replica last
/// looked. Returns the peering's vpc-1 port uuid and its row as the operator left it.
async fn take_over_port_behind_the_workers_back(
    t: &crate::support::peerd::TestPeerd,
    nb: &LaggingNb,
) -> (String, String) {
    let port = NbRows::read(&t.nb).owned_ports_of("vpc-1")[0].uuid.clone();
    nb.lag(Duration::from_secs(3));
    t.nb.nbctl(&[
        "remove",
        "Logical_Router_Port",
        &port,
        "external_ids",
        "\"ovn-peerd:owner\"",
    ]);
    let taken = row(&t.nb, "Logical_Router_Port", &port);
    (port, taken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_planned_before_the_owner_mark_went_does_not_touch_the_row() {
    let t = two_vpcs(Options::default()).await;
    create(
        &t,
        explicit("p12", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    let nb = LaggingNb::start(t.nb.sock()).await;
    let worker = lagging_worker(&t, &nb).await;
    let (port, taken) = take_over_port_behind_the_workers_back(&t, &nb).await;
    // A new generation: the worker (its replica still showing the port as ours) updates the
    // port's markers. The update's ownership condition must make it a no-op on the server.
    sqlx::query("UPDATE peerings SET generation = generation + 1 WHERE name = 'p12'")
        .execute(&pool(&t.db.url).await)
        .await
        .unwrap();
    let outcome = worker.run_once().await.expect("pass");
    assert!(
        outcome.transactions > 0,
        "the worker planned no write: its replica was not stale ({outcome:?})"
    );
    assert_eq!(row(&t.nb, "Logical_Router_Port", &port), taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_planned_before_the_owner_mark_went_does_not_remove_the_row() {
    let t = two_vpcs(Options::default()).await;
    create(
        &t,
        explicit("p12", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    t.converge().await;
    let nb = LaggingNb::start(t.nb.sock()).await;
    let worker = lagging_worker(&t, &nb).await;
    let (port, taken) = take_over_port_behind_the_workers_back(&t, &nb).await;
    delete(&t, "p12").await;
    // The stale plan's delete is refused by its guard (the transaction fails with the
    // `wait`'s "timed out", a pass error to retry), or, had the replica caught up first,
    // planned without it; either way the worker tried to write.
    match worker.run_once().await {
        Ok(outcome) => assert!(
            outcome.transactions > 0,
            "the worker planned no write: its replica was not stale ({outcome:?})"
        ),
        Err(e) => assert!(
            format!("{e:?}").contains("where"),
            "the pass failed, but not on the ownership guard: {e:?}"
        ),
    }
    assert!(
        NbRows::read(&t.nb).ports.contains_key(&port),
        "the port the operator took over was deleted"
    );
    assert_eq!(row(&t.nb, "Logical_Router_Port", &port), taken);
}

/// One peering whose delete guard fails (its row was taken over behind the worker's back)
/// does not hold back the other peerings written in the same batch: they are written one by
/// one, and the guarded one waits for the replica to catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delete_guard_holds_back_only_its_own_peering() {
    let t = two_vpcs(Options::default()).await;
    crate::support::vpc::create_vpc(&t.nb, "vpc-3", &["10.3.0.1/24"]);
    crate::support::vpc::create_vpc(&t.nb, "vpc-4", &["10.4.0.1/24"]);
    create(
        &t,
        explicit("p12", "vpc-1", "vpc-2", "169.254.0.1/30", "169.254.0.2/30"),
    )
    .await;
    create(
        &t,
        explicit("p34", "vpc-3", "vpc-4", "169.254.0.5/30", "169.254.0.6/30"),
    )
    .await;
    t.converge().await;
    let nb = LaggingNb::start(t.nb.sock()).await;
    let worker = lagging_worker(&t, &nb).await;
    let (port, taken) = take_over_port_behind_the_workers_back(&t, &nb).await;
    delete(&t, "p12").await;
    delete(&t, "p34").await;
    let outcome = worker
        .run_once()
        .await
        .expect("a guard miss is no pass failure");
    assert!(outcome.incomplete > 0, "p12 reported written: {outcome:?}");
    let rows = NbRows::read(&t.nb);
    assert!(
        rows.owned_ports_of("vpc-3").is_empty() && rows.owned_ports_of("vpc-4").is_empty(),
        "p34's rows were held back by p12's guard"
    );
    assert_eq!(row(&t.nb, "Logical_Router_Port", &port), taken);
}
