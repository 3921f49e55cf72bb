//! The client's configuration, its public state and events, and the state shared by the
//! reconnect loop (`client`), the per-connection handshake (`handshake`) and the reader task's
//! handlers. Holds data only: both `client` and `handshake` depend on it, never the reverse.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::cache::{NbCache, RowChange};
use super::connection::Connection;
use super::error::Error;
use super::remote::Remote;
use super::tls::TlsFiles;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Tried in order, round-robin (a cluster's members).
    pub remotes: Vec<Remote>,
    pub database: String,
    /// Inactivity probe (OVS default 5 s); `None` disables it.
    pub probe_interval: Option<Duration>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Use a clustered server only while it is the leader (ovsdb-cs "leader-only").
    pub leader_only: bool,
    /// `external_ids` key to index rows by (e.g. `ovn-peerd:peering`).
    pub owner_key: Option<String>,
    /// TCP connect and, for `ssl:`, the TLS handshake.
    pub connect_timeout: Duration,
    /// Schema check + `_Server` check + initial dump.
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
    Changed(Arc<Vec<RowChange>>),
    /// The cache was rebuilt from the server: re-read everything.
    Resynced,
    Disconnected,
}

pub(super) struct Shared {
    pub(super) config: ClientConfig,
    pub(super) state: watch::Sender<ConnectionState>,
    pub(super) cache: RwLock<NbCache>,
    pub(super) version: watch::Sender<u64>,
    pub(super) events: broadcast::Sender<CacheEvent>,
    /// The synced connection `transact` sends on; `None` between connections.
    pub(super) connection: Mutex<Option<Connection>>,
    pub(super) last_txn_id: Mutex<Option<String>>,
    pub(super) max_index: AtomicU64,
    pub(super) cancel: CancellationToken,
}
