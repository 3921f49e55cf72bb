//! The independent NB monitor: its own OVSDB connection and cache (never ovn-peerd's), which
//! counts peer ports and static routes as their inserts arrive and notes when each peering's
//! rows were seen. Counting is incremental (per monitor update), so watching a 60,000-row
//! database costs the bench almost nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovn_peerd::ovsdb::{CacheEvent, ChangeKind, Client, NbCache, Table};
use ovn_peerd::peering::PEERING_KEY;
use tokio::sync::{broadcast, watch};

/// Counts of rows seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// `Logical_Router_Port` rows with `peer` set.
    pub peer_ports: usize,
    /// `Logical_Router_Static_Route` rows.
    pub routes: usize,
}

/// Rows of one ovn-peerd peering seen (by `external_ids:ovn-peerd:peering`), and when the
/// last of them arrived.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub rows: usize,
    pub last: Instant,
}

pub struct Monitor {
    pub client: Client,
    counts: watch::Receiver<Counts>,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    pub async fn start(remote: &str) -> Monitor {
        let client = super::nb::client(remote).await;
        let events = client.subscribe();
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let (tx, counts) = watch::channel(Counts::default());
        recount(&client.cache(), &tx, &seen);
        let task = tokio::spawn(follow(client.clone(), events, tx, seen.clone()));
        Monitor {
            client,
            counts,
            seen,
            task,
        }
    }

    pub fn counts(&self) -> Counts {
        *self.counts.borrow()
    }

    /// Waits until at least `peer_ports` peer ports and `routes` routes are seen; returns
    /// the moment the update completing them was applied.
    pub async fn wait_counts(
        &self,
        peer_ports: usize,
        routes: usize,
        timeout: Duration,
    ) -> Instant {
        let mut rx = self.counts.clone();
        let wait = async {
            rx.wait_for(|c| c.peer_ports >= peer_ports && c.routes >= routes)
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(())) => Instant::now(),
            _ => panic!(
                "the NB monitor saw {:?} after {timeout:?}, wanted {peer_ports} peer ports and {routes} routes",
                self.counts()
            ),
        }
    }

    /// When all `rows` rows of peering `name` were seen (waits up to `timeout`).
    pub async fn wait_peering(&self, name: &str, rows: usize, timeout: Duration) -> Instant {
        let mut rx = self.counts.clone();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.seen.lock().unwrap().get(name) {
                if s.rows >= rows {
                    return s.last;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "peering {name}: rows not seen within {timeout:?}"
            );
            let _ = tokio::time::timeout(left, rx.changed()).await;
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
        self.client.shutdown();
    }
}

fn recount(cache: &NbCache, tx: &watch::Sender<Counts>, seen: &Mutex<HashMap<String, Seen>>) {
    let now = Instant::now();
    let mut c = Counts::default();
    let mut s = seen.lock().unwrap();
    for p in cache.ports() {
        if p.peer.is_some() {
            c.peer_ports += 1;
        }
        if let Some(name) = p.external_ids.get(PEERING_KEY) {
            note(&mut s, name, now);
        }
    }
    for r in cache.static_routes() {
        c.routes += 1;
        if let Some(name) = r.external_ids.get(PEERING_KEY) {
            note(&mut s, name, now);
        }
    }
    tx.send_replace(c);
}

fn note(seen: &mut HashMap<String, Seen>, name: &str, now: Instant) {
    seen.entry(name.to_string())
        .and_modify(|s| {
            s.rows += 1;
            s.last = now;
        })
        .or_insert(Seen { rows: 1, last: now });
}

async fn follow(
    client: Client,
    mut events: broadcast::Receiver<CacheEvent>,
    tx: watch::Sender<Counts>,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
) {
    loop {
        match events.recv().await {
            Ok(CacheEvent::Changed(changes)) => {
                let now = Instant::now();
                let cache = client.cache();
                let mut c = *tx.borrow();
                let mut s = seen.lock().unwrap();
                for ch in changes.iter().filter(|ch| ch.kind == ChangeKind::Insert) {
                    match ch.table {
                        Table::LogicalRouterPort => {
                            if let Some(p) = cache.port(ch.uuid) {
                                if p.peer.is_some() {
                                    c.peer_ports += 1;
                                }
                                if let Some(name) = p.external_ids.get(PEERING_KEY) {
                                    note(&mut s, name, now);
                                }
                            }
                        }
                        Table::LogicalRouterStaticRoute => {
                            c.routes += 1;
                            if let Some(r) = cache.static_route(ch.uuid) {
                                if let Some(name) = r.external_ids.get(PEERING_KEY) {
                                    note(&mut s, name, now);
                                }
                            }
                        }
                        Table::LogicalRouter => {}
                    }
                }
                drop(s);
                drop(cache);
                tx.send_replace(c);
            }
            Ok(CacheEvent::Resynced) | Err(broadcast::error::RecvError::Lagged(_)) => {
                seen.lock().unwrap().clear();
                recount(&client.cache(), &tx, &seen);
            }
            Ok(CacheEvent::Disconnected) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
