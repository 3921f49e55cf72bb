//! The independent NB monitor: its own raw OVSDB connection ([`super::raw`], none of
//! ovn-peerd's code), a `monitor_cond` of only the columns it needs (peer ports, by the
//! condition `peer != []`, with `peer` and `external_ids`; static routes with `external_ids`),
//! counting inserted rows straight from the `update2` frames and noting when each peering's
//! rows were seen. It keeps no replica: counting is incremental per frame, and the routers and
//! subnet ports of the seed are never sent to it, so watching a 100,000-peering database
//! costs the bench little (its reader thread's CPU time is [`Monitor::cpu_s`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovn_peerd::peering::PEERING_KEY;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::raw::RawConn;

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

struct State {
    counts: watch::Sender<Counts>,
    seen: Mutex<HashMap<String, Seen>>,
}

pub struct Monitor {
    /// A second raw connection for the phases' own NB writes (seed, foreign changes).
    pub client: RawConn,
    conn: RawConn,
    counts: watch::Receiver<Counts>,
    state: Arc<State>,
}

impl Monitor {
    pub async fn start(remote: &str) -> Monitor {
        let (tx, counts) = watch::channel(Counts::default());
        let state = Arc::new(State {
            counts: tx,
            seen: Mutex::new(HashMap::new()),
        });
        let on_update = {
            let state = state.clone();
            Box::new(move |method: &str, params: Value| {
                if method == "update2" {
                    state.apply(&params[1]);
                }
            })
        };
        let conn = RawConn::connect(remote, Some(on_update));
        let initial = conn
            .request(
                "monitor_cond",
                json!(["OVN_Northbound", "bench-monitor", {
                    "Logical_Router_Port": [{
                        "columns": ["peer", "external_ids"],
                        "where": [["peer", "!=", ["set", []]]],
                    }],
                    "Logical_Router_Static_Route": [{"columns": ["external_ids"]}],
                }]),
            )
            .await;
        state.apply(&initial);
        Monitor {
            client: super::nb::client(remote).await,
            conn,
            counts,
            state,
        }
    }

    pub fn counts(&self) -> Counts {
        *self.counts.borrow()
    }

    /// CPU seconds the monitor's reader thread has used so far.
    pub fn cpu_s(&self) -> f64 {
        self.conn.reader_cpu_s()
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
            if let Some(s) = self.state.seen.lock().unwrap().get(name) {
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
        self.conn.shutdown();
        self.client.shutdown();
    }
}

impl State {
    /// Counts the `initial`/`insert` rows of one `table-updates2` object.
    fn apply(&self, updates: &Value) {
        let now = Instant::now();
        // The seen lock also orders the counts' read-modify-write (reply vs. reader thread).
        let mut seen = self.seen.lock().unwrap();
        let mut c = *self.counts.borrow();
        for (table, peer_port) in [
            ("Logical_Router_Port", true),
            ("Logical_Router_Static_Route", false),
        ] {
            let Some(rows) = updates.get(table).and_then(Value::as_object) else {
                continue;
            };
            for change in rows.values() {
                let Some(row) = change.get("initial").or_else(|| change.get("insert")) else {
                    continue;
                };
                if peer_port {
                    // A 0..1 column with a value is the bare atom in `update2`.
                    if !row.get("peer").is_some_and(Value::is_string) {
                        continue;
                    }
                    c.peer_ports += 1;
                } else {
                    c.routes += 1;
                }
                if let Some(name) = peering_of(row) {
                    seen.entry(name.to_string())
                        .and_modify(|s| {
                            s.rows += 1;
                            s.last = now;
                        })
                        .or_insert(Seen { rows: 1, last: now });
                }
            }
        }
        drop(seen);
        self.counts.send_replace(c);
    }
}

/// `external_ids:ovn-peerd:peering` of a row: `["map", [[key, value], ...]]` on the wire.
fn peering_of(row: &Value) -> Option<&str> {
    let pairs = row.get("external_ids")?.get(1)?.as_array()?;
    pairs
        .iter()
        .find(|kv| kv[0] == PEERING_KEY)
        .and_then(|kv| kv[1].as_str())
}
