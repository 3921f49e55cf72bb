//! The public client: configuration, the reconnect loop (remote rotation, exponential backoff
//! with jitter and a cap), connection state, cache access, events and `transact`.
//!
//! Guarantees callers can rely on:
//! - `transact` returning `Ok` means the cache already reflects that transaction (for the
//!   monitored tables): the server sends the monitor update before the reply and the reader
//!   task applies it before completing the reply's waiter.
//! - While disconnected (or not yet synced) `transact` waits up to
//!   [`ClientConfig::wait_connected`] for a synced session, then fails with
//!   [`TransactError::NotConnected`] without sending anything.
//! - A request sent on a session that then died is [`TransactError::OutcomeUnknown`].
//! - After every (re)connection consumers get exactly one [`CacheEvent::Resynced`], never a
//!   stream of synthetic inserts/deletes; [`CacheEvent::Disconnected`] when a synced session ends.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use rand::Rng;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::cache::{NbCache, RowChange};
use super::connection::{CallError, Connection};
use super::error::{Error, OvsdbError, TransactError};
use super::ops::{decode_transact_result, Operation, OperationResult};
use super::remote::Remote;
use super::session;

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
    pub connect_timeout: Duration,
    /// Schema check + `_Server` check + initial dump.
    pub handshake_timeout: Duration,
    /// How long `transact` waits for a synced session before `NotConnected` (zero: fail fast).
    pub wait_connected: Duration,
    /// No reply within this time is `OutcomeUnknown`; `None` waits for the session to end.
    pub transact_timeout: Option<Duration>,
    pub max_message_len: usize,
    pub event_capacity: usize,
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
        })
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
    pub(super) session: Mutex<Option<Connection>>,
    pub(super) last_txn_id: Mutex<Option<String>>,
    pub(super) max_index: AtomicU64,
    pub(super) cancel: CancellationToken,
}

struct StopOnDrop(CancellationToken);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// An OVSDB client with a replica of the NB tables we use. Cheap to clone; the connection
/// task stops when the last clone is dropped or on [`Client::shutdown`].
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

/// Read access to the cache. Keep it short-lived: the reader task waits for it to apply updates.
pub type CacheGuard<'a> = RwLockReadGuard<'a, NbCache>;

impl Client {
    /// Spawns the connection task and returns at once (needs a Tokio runtime).
    pub fn start(config: ClientConfig) -> Result<Client, Error> {
        if config.remotes.is_empty() {
            return Err(Error::NoRemotes);
        }
        if let Some(r) = config
            .remotes
            .iter()
            .find(|r| matches!(r, Remote::Ssl { .. }))
        {
            return Err(Error::SslNotSupported(r.to_string()));
        }
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            cache: RwLock::new(NbCache::new(config.owner_key.clone())),
            state: watch::channel(ConnectionState::Connecting { last_error: None }).0,
            version: watch::channel(0).0,
            events: broadcast::channel(config.event_capacity.max(1)).0,
            session: Mutex::new(None),
            last_txn_id: Mutex::new(None),
            max_index: AtomicU64::new(0),
            cancel: cancel.clone(),
            config,
        });
        let span = tracing::info_span!("ovsdb", db = %shared.config.database);
        tokio::spawn(run(shared.clone()).instrument(span));
        Ok(Client {
            shared,
            _stop: Arc::new(StopOnDrop(cancel)),
        })
    }

    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// Waits until the cache is trustworthy; the error carries the last connection error.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.state();
        let r = tokio::time::timeout(timeout, async {
            let s = rx
                .wait_for(|s| s.is_synced() || *s == ConnectionState::Shutdown)
                .await;
            s.map(|s| s.is_synced()).unwrap_or(false)
        })
        .await;
        match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Shutdown),
            Err(_) => Err(match &*rx.borrow() {
                ConnectionState::Connecting {
                    last_error: Some(e),
                } => Error::NotUsable(format!("not synced after {timeout:?}: {e}")),
                _ => Error::Timeout(timeout),
            }),
        }
    }

    /// Read access to the replica (check `state()` for whether it is synced).
    pub fn cache(&self) -> CacheGuard<'_> {
        self.shared.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Bumped after every applied update or resync.
    pub fn version(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }

    /// Waits until the cache is synced and `pred` holds on it.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&NbCache) -> bool,
    ) -> Result<(), Error> {
        let mut version = self.version();
        let wait = async {
            loop {
                if self.shared.state.borrow().is_synced() && pred(&self.cache()) {
                    return Ok(());
                }
                if self.shared.cancel.is_cancelled() {
                    return Err(Error::Shutdown);
                }
                let mut state = self.state();
                tokio::select! {
                    r = version.changed() => r.map_err(|_| Error::Shutdown)?,
                    r = state.changed() => r.map_err(|_| Error::Shutdown)?,
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    /// A `Lagged` receive error means events were dropped: treat it like `Resynced`.
    pub fn subscribe(&self) -> broadcast::Receiver<CacheEvent> {
        self.shared.events.subscribe()
    }

    /// Runs one transaction against the configured database.
    pub async fn transact(
        &self,
        ops: Vec<Operation>,
    ) -> Result<Vec<OperationResult>, TransactError> {
        let start = Instant::now();
        let r = self.transact_inner(&ops).await;
        let outcome = match &r {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        metrics::histogram!(crate::metrics::OVSDB_TRANSACTION_SECONDS, "outcome" => outcome)
            .record(start.elapsed().as_secs_f64());
        r
    }

    async fn transact_inner(
        &self,
        ops: &[Operation],
    ) -> Result<Vec<OperationResult>, TransactError> {
        let mut params = Vec::with_capacity(ops.len() + 1);
        params.push(Value::String(self.shared.config.database.clone()));
        params.extend(ops.iter().map(Operation::to_json));
        let params = Value::Array(params);
        let deadline = Instant::now() + self.shared.config.wait_connected;
        let rx = loop {
            let conn = self.synced_session(deadline).await?;
            match conn.send("transact", params.clone(), None) {
                Ok(rx) => break rx,
                Err(_) => continue, // died before we sent: nothing sent, wait for the next one
            }
        };
        let reply = match self.shared.config.transact_timeout {
            Some(t) => match tokio::time::timeout(t, rx).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(TransactError::OutcomeUnknown(format!(
                        "no reply within {t:?}"
                    )))
                }
            },
            None => rx.await,
        };
        match reply {
            Ok(Ok(v)) => decode_transact_result(ops, &v),
            Ok(Err(CallError::Rpc(e))) => Err(TransactError::Rejected(OvsdbError::from_json(&e))),
            Ok(Err(CallError::Closed(reason))) => Err(TransactError::OutcomeUnknown(reason)),
            Err(_) => Err(TransactError::OutcomeUnknown("session ended".into())),
        }
    }

    async fn synced_session(&self, deadline: Instant) -> Result<Connection, TransactError> {
        let mut state = self.state();
        loop {
            if self.shared.cancel.is_cancelled() {
                return Err(TransactError::Shutdown);
            }
            if state.borrow_and_update().is_synced() {
                let s = self
                    .shared
                    .session
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Some(conn) = s.filter(|c| !c.is_closed()) {
                    return Ok(conn);
                }
            }
            match tokio::time::timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(TransactError::Shutdown),
                Err(_) => return Err(TransactError::NotConnected),
            }
        }
    }

    /// Stops the connection task (also happens when the last clone is dropped).
    pub fn shutdown(&self) {
        self.shared.cancel.cancel();
    }
}

/// A session that lasted this long counts as healthy: the backoff starts over.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// The reconnect loop: rotate through the remotes; after a full round of failures, back off.
async fn run(shared: Arc<Shared>) {
    let n = shared.config.remotes.len();
    let mut idx = 0usize;
    let (mut failures, mut rounds) = (0usize, 0u32);
    while !shared.cancel.is_cancelled() {
        let remote = shared.config.remotes[idx % n].clone();
        idx = idx.wrapping_add(1);
        shared.state.send_modify(|s| {
            if let ConnectionState::Connected { .. } = s {
                *s = ConnectionState::Connecting { last_error: None };
            }
        });
        let mut synced = false;
        let started = Instant::now();
        let err = tokio::select! {
            e = session::run(&shared, &remote, &mut synced) => e,
            _ = shared.cancel.cancelled() => Error::Shutdown,
        };
        *shared.session.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if matches!(err, Error::Shutdown) || shared.cancel.is_cancelled() {
            break;
        }
        let reason = reconnect_label(&err);
        metrics::counter!(crate::metrics::OVSDB_RECONNECTS_TOTAL, "reason" => reason).increment(1);
        if synced {
            warn!(%remote, error = %err, "session ended; reconnecting");
            let _ = shared.events.send(CacheEvent::Disconnected);
        } else {
            info!(%remote, error = %err, "cannot use server");
        }
        // Only a session that lasted resets the backoff: a server that syncs
        // and then drops us at once must not make us reconnect in a tight loop.
        if synced && started.elapsed() >= STABLE_SESSION {
            (failures, rounds) = (0, 0);
        } else {
            failures += 1;
        }
        shared.state.send_replace(ConnectionState::Connecting {
            last_error: Some(format!("{remote}: {err}")),
        });
        if failures >= n {
            failures = 0;
            rounds = rounds.saturating_add(1);
            let delay = backoff(&shared.config, rounds);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shared.cancel.cancelled() => break,
            }
        }
    }
    shared.state.send_replace(ConnectionState::Shutdown);
    let _ = shared.events.send(CacheEvent::Disconnected);
}

/// Exponential backoff with a cap and ±50% jitter (round = 1, 2, ...).
fn backoff(cfg: &ClientConfig, round: u32) -> Duration {
    let exp = cfg
        .backoff_initial
        .saturating_mul(1u32 << round.saturating_sub(1).min(16));
    let capped = exp.min(cfg.backoff_max);
    capped.mul_f64(rand::rng().random_range(0.5..=1.0))
}

fn reconnect_label(e: &Error) -> &'static str {
    match e {
        Error::Io(_) | Error::ConnectionClosed(_) => "closed",
        Error::ProbeTimeout(_) => "probe_timeout",
        Error::Protocol(_) => "protocol",
        Error::NotUsable(_) => "not_usable",
        Error::MissingColumn { .. } | Error::MissingTable(_) | Error::ColumnType { .. } => "schema",
        Error::Timeout(_) => "timeout",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = ClientConfig::new("tcp:127.0.0.1:1", "db").unwrap();
        for round in 1..30 {
            let d = backoff(&cfg, round);
            assert!(d <= cfg.backoff_max, "{round} {d:?}");
            assert!(d >= cfg.backoff_initial / 2);
        }
        assert!(backoff(&cfg, 20) >= cfg.backoff_max / 2);
    }
}
