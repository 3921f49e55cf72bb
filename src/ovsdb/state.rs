//! The client's configuration, its public state and events, and the state shared by the
//! reconnect loop (`client`), the per-connection handshake (`handshake`) and the reader task's
//! handlers. Holds data only: both `client` and `handshake` depend on it, never the reverse.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::cache::{NbCache, RowChange};
use super::changes::Changes;
use super::connection::Connection;
use super::error::Error;
use super::remote::Remote;
use super::tls::TlsFiles;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// A cluster's members: tried round-robin, in an order shuffled once per client.
    pub remotes: Vec<Remote>,
    pub database: String,
    /// Inactivity probe (OVS default 5 s); `None` or zero disables it (as in OVS).
    pub probe_interval: Option<Duration>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Use a clustered server only while it is the leader (ovsdb-cs "leader-only").
    pub leader_only: bool,
    /// `external_ids` key to index rows by (e.g. `ovn-peerd:peering`).
    pub owner_key: Option<String>,
    /// TCP connect and, for `ssl:`, the TLS handshake.
    pub connect_timeout: Duration,
    /// The longest the server may stay silent (no byte received, nothing being handled)
    /// during the handshake (schema check, `_Server` check, initial dump) or while a patient
    /// request waits; the handshake's total is not bounded while bytes stream.
    pub handshake_timeout: Duration,
    /// How long `transact` waits for a synced connection before `NotConnected` (zero: fail fast).
    pub wait_connected: Duration,
    /// No reply within this time is `OutcomeUnknown`; `None` waits for the connection to end.
    pub transact_timeout: Option<Duration>,
    pub max_message_len: usize,
    pub event_capacity: usize,
    /// Key, certificate and CA for `ssl:` remotes (required when there is one).
    pub tls: Option<TlsFiles>,
}

impl ClientConfig {
    /// Defaults for `remotes` in `ovn-nbctl --db` syntax and a database name.
    pub fn new(remotes: &str, database: &str) -> Result<Self, Error> {
        Ok(ClientConfig {
            remotes: Remote::parse_list(remotes)?,
            database: database.to_owned(),
            probe_interval: Some(Duration::from_secs(5)),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(8),
            leader_only: true,
            owner_key: None,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(60),
            wait_connected: Duration::from_secs(5),
            transact_timeout: Some(Duration::from_secs(60)),
            max_message_len: 1 << 30,
            event_capacity: 4096,
            tls: None,
        })
    }

    pub fn with_tls(mut self, tls: Option<TlsFiles>) -> Self {
        self.tls = tls;
        self
    }

    pub fn with_owner_key(mut self, key: &str) -> Self {
        self.owner_key = Some(key.to_owned());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Looking for a usable server; `last_error` says why the previous attempt failed.
    Connecting {
        last_error: Option<String>,
    },
    /// `synced`: the cache mirrors this server and transactions may be sent.
    Connected {
        remote: Remote,
        synced: bool,
    },
    Shutdown,
}

impl ConnectionState {
    pub fn is_synced(&self) -> bool {
        matches!(self, ConnectionState::Connected { synced: true, .. })
    }
}

#[derive(Debug, Clone)]
pub enum CacheEvent {
    /// An update's changes (at least one), with the names they touched before and after it.
    Changed(Arc<Changes>),
    /// The cache was rebuilt from the server: re-read everything.
    Resynced,
    Disconnected,
}

/// The "index went backwards" guard (ovsdb-cs `min_index`): a clustered server whose Raft
/// index is behind one we already saw holds older data than our replica (a stale follower, a
/// server restored from an older copy), so it is not used. A new cluster id means a new
/// cluster, whose indexes start over: the guard resets. An operator can reset it too
/// ([`crate::ovsdb::Client::reset_index_guard`], `SIGHUP`) after restoring a cluster from a
/// backup, which keeps the cluster id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct IndexGuard {
    cid: Option<String>,
    max_index: u64,
}

impl IndexGuard {
    /// Records a server's cluster id and index; `Err(seen)` if the index is behind `seen`.
    pub(super) fn observe(&mut self, cid: Option<&str>, index: u64) -> Result<(), u64> {
        if let Some(cid) = cid {
            if self.cid.as_deref() != Some(cid) {
                // A different cluster: indexes are not comparable.
                self.cid = Some(cid.to_owned());
                self.max_index = 0;
            }
        }
        if index < self.max_index {
            return Err(self.max_index);
        }
        self.max_index = index;
        Ok(())
    }

    pub(super) fn reset(&mut self) {
        *self = IndexGuard::default();
    }
}

pub(super) struct Shared {
    pub(super) config: ClientConfig,
    pub(super) state: watch::Sender<ConnectionState>,
    /// The replica: the latest published snapshot. Only the connection's reader replaces it
    /// (one update at a time, see [`Shared::update_replica`]); readers clone the `Arc`.
    pub(super) replica: watch::Sender<Arc<NbCache>>,
    pub(super) version: watch::Sender<u64>,
    pub(super) events: broadcast::Sender<CacheEvent>,
    /// The synced connection `transact` sends on; `None` between connections.
    pub(super) connection: Mutex<Option<Connection>>,
    pub(super) last_txn_id: Mutex<Option<String>>,
    pub(super) index_guard: Mutex<IndexGuard>,
    pub(super) cancel: CancellationToken,
}

impl Shared {
    /// The current snapshot (O(1): an `Arc` clone; the watch's lock is held only for that).
    pub(super) fn snapshot(&self) -> Arc<NbCache> {
        self.replica.borrow().clone()
    }

    /// Applies one update to a copy of the current snapshot (O(1) to make: persistent maps)
    /// and publishes the result only if `f` succeeds, so no reader ever sees half an update,
    /// across tables, nor one that failed halfway. Returns `f`'s value and the row count.
    /// Called only by the connection's reader (one update at a time, in the server's order).
    pub(super) fn update_replica<T, E>(
        &self,
        f: impl FnOnce(&mut NbCache) -> Result<T, E>,
    ) -> Result<(T, usize), E> {
        let mut next = NbCache::clone(&self.snapshot());
        let out = f(&mut next)?;
        let rows = next.len();
        self.replica.send_replace(Arc::new(next));
        Ok((out, rows))
    }

    /// Tells the listeners `rows`, the changes of the update just applied to `before`, each
    /// with the names its row had there; nothing when there are none or nobody listens.
    pub(super) fn send_changes(&self, before: &NbCache, rows: Vec<RowChange>) {
        if rows.is_empty() || self.events.receiver_count() == 0 {
            return;
        }
        let changes = Changes::read(before, rows);
        let _ = self.events.send(CacheEvent::Changed(Arc::new(changes)));
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ovsdb::cache::{Types, UpdateFormat};

    pub(in crate::ovsdb) fn shared() -> Shared {
        Shared {
            config: ClientConfig::new("tcp:127.0.0.1:1", "db").unwrap(),
            state: watch::channel(ConnectionState::Connecting { last_error: None }).0,
            replica: watch::channel(Arc::new(NbCache::new(None))).0,
            version: watch::channel(0).0,
            events: broadcast::channel(1).0,
            connection: Mutex::new(None),
            last_txn_id: Mutex::new(None),
            index_guard: Mutex::default(),
            cancel: CancellationToken::new(),
        }
    }

    /// A snapshot holds whole updates: one that fails halfway (its first table applied, its
    /// second malformed) is never published; one that succeeds is, while snapshots taken
    /// before it stay as they were.
    #[test]
    fn snapshots_never_show_half_an_update() {
        let s = shared();
        let types = Types::new();
        let router = uuid::Uuid::from_u128(1).to_string();
        let half = serde_json::json!({
            "Logical_Router": {&router: {"insert": {}}},
            "Logical_Router_Port": {"not-a-uuid": {"insert": {}}},
        });
        let r = s.update_replica(|c| c.apply(&types, UpdateFormat::V2, &half.to_string()));
        assert!(r.is_err());
        assert!(s.snapshot().is_empty(), "half an update was published");

        let before = s.snapshot();
        let whole = serde_json::json!({"Logical_Router": {&router: {"insert": {}}}});
        let (_, rows) = s
            .update_replica(|c| c.apply(&types, UpdateFormat::V2, &whole.to_string()))
            .unwrap();
        assert_eq!((rows, s.snapshot().len()), (1, 1));
        assert!(before.is_empty(), "an older snapshot changed");
    }

    #[test]
    fn index_guard_refuses_older_indexes_until_the_cluster_changes_or_a_reset() {
        let mut g = IndexGuard::default();
        assert_eq!(g.observe(Some("a"), 10), Ok(()));
        assert_eq!(g.observe(Some("a"), 12), Ok(()));
        assert_eq!(g.observe(Some("a"), 5), Err(12));
        assert_eq!(g.observe(None, 5), Err(12));
        // A rebuilt cluster (new id) starts over.
        assert_eq!(g.observe(Some("b"), 3), Ok(()));
        assert_eq!(g.observe(Some("b"), 2), Err(3));
        g.reset();
        assert_eq!(g.observe(Some("b"), 2), Ok(()));
    }
}
