//! The public client: configuration, the reconnect loop (remote rotation, exponential backoff
//! with jitter and a cap), connection state, cache access, events and `transact`.
//!
//! Guarantees callers can rely on:
//! - `transact` returning `Ok` means the cache already reflects that transaction (for the
//!   monitored tables): the server sends the monitor update before the reply and the reader
//!   task applies it before completing the reply's waiter.
//! - While disconnected (or not yet synced) `transact` waits up to
//!   [`ClientConfig::wait_connected`] for a synced connection, then fails with
//!   [`TransactError::NotConnected`] without sending anything.
//! - A request sent on a connection that then died is [`TransactError::OutcomeUnknown`].
//! - After every (re)connection consumers get exactly one [`CacheEvent::Resynced`], never a
//!   stream of synthetic inserts/deletes; [`CacheEvent::Disconnected`] when a synced connection ends.
//! - [`Client::cache`] is an immutable snapshot ([`CacheSnapshot`]), taken in O(1) and held
//!   without any lock: a pass can work on one for seconds while the reader keeps applying
//!   updates and publishing newer snapshots. A snapshot holds whole updates only (every
//!   table of one update or none of it).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::cache::NbCache;
use super::connection::{CallError, CallResult, Connection, ConnectionConfig};
use super::error::{Error, OvsdbError, TransactError};
use super::handshake::Monitors;
use super::ops::{decode_transact_result, write_transact_params, Operation, OperationResult};
use super::remote::Remote;
use super::state::{CacheEvent, ClientConfig, ConnectionState, Shared};
use crate::backoff::Backoff;

/// Transactions of this many operations or more may keep the server silent for longer than
/// the inactivity probe allows (the worker's transactions of up to 200 new rows stay below it;
/// one of 200 removals does not, as a removal also sends a `wait` and its router's mutate, nor
/// does one peering with more routes than that): they are bounded by the transact timeout instead.
pub const PATIENT_TRANSACTION_OPS: usize = 256;

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

/// An immutable snapshot of the replica. Holding one blocks nobody; it only keeps the rows it
/// shares with newer snapshots alive (take a fresh one for each pass or request).
pub type CacheSnapshot = Arc<NbCache>;

/// About what one encoded NB operation takes (an insert of a port or route with its
/// `external_ids`): sizes the request's buffer so it is allocated once.
const ENCODED_OP_BYTES: usize = 320;

/// A transaction on the wire whose reply is still to come ([`Client::send_transaction`]);
/// `started` is when it was handed to the connection's writer.
#[must_use = "a sent transaction's reply says whether it committed"]
pub struct Sent {
    rx: oneshot::Receiver<CallResult>,
    started: Instant,
    timeout: Option<Duration>,
}

impl Sent {
    /// Waits for the reply and decodes it for `ops`, the operations that were sent. As with
    /// [`Client::transact`], `Ok` means the replica already reflects the transaction; a reply
    /// that does not come within the transact timeout (counted from the send) or a connection
    /// that ends first is [`TransactError::OutcomeUnknown`].
    pub async fn reply(self, ops: &[Operation]) -> Result<Vec<OperationResult>, TransactError> {
        let reply = match self.timeout {
            Some(t) => match tokio::time::timeout_at(self.started + t, self.rx).await {
                Ok(r) => r,
                Err(_) => {
                    let r = Err(TransactError::OutcomeUnknown(format!(
                        "no reply within {t:?}"
                    )));
                    record_transaction(self.started, &r);
                    return r;
                }
            },
            None => self.rx.await,
        };
        let r = match reply {
            Ok(Ok(v)) => decode_transact_result(ops, &v),
            Ok(Err(CallError::Rpc(e))) => Err(TransactError::Rejected(OvsdbError::from_json(&e))),
            Ok(Err(CallError::Closed(reason))) => Err(TransactError::OutcomeUnknown(reason)),
            Err(_) => Err(TransactError::OutcomeUnknown("connection ended".into())),
        };
        record_transaction(self.started, &r);
        r
    }
}

fn record_transaction(started: Instant, r: &Result<Vec<OperationResult>, TransactError>) {
    let outcome = match r {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    metrics::histogram!(crate::metrics::OVSDB_TRANSACTION_SECONDS, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

impl Client {
    /// Spawns the connection task and returns at once (needs a Tokio runtime).
    pub fn start(config: ClientConfig) -> Result<Client, Error> {
        if config.remotes.is_empty() {
            return Err(Error::NoRemotes);
        }
        if let Some(r) = config.remotes.iter().find(|r| r.is_ssl()) {
            if config.tls.is_none() {
                return Err(Error::TlsNotConfigured(r.to_string()));
            }
        }
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            replica: watch::channel(Arc::new(NbCache::new(config.owner_key.clone()))).0,
            state: watch::channel(ConnectionState::Connecting { last_error: None }).0,
            version: watch::channel(0).0,
            events: broadcast::channel(config.event_capacity.max(1)).0,
            connection: Mutex::new(None),
            last_txn_id: Mutex::new(None),
            index_guard: Mutex::default(),
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

    /// The replica's latest snapshot (check `state()` for whether it is synced).
    pub fn cache(&self) -> CacheSnapshot {
        self.shared.snapshot()
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
        // Both receivers exist before the first check and each check marks what it read as
        // seen, so a change between a check and the wait still wakes us.
        let mut version = self.version();
        let mut state = self.state();
        let wait = async {
            loop {
                version.borrow_and_update();
                let synced = state.borrow_and_update().is_synced();
                if synced && pred(&self.cache()) {
                    return Ok(());
                }
                if self.shared.cancel.is_cancelled() {
                    return Err(Error::Shutdown);
                }
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

    /// Runs one transaction against the configured database. One of
    /// [`PATIENT_TRANSACTION_OPS`] operations or more is sent as a patient request (see
    /// `Connection::send_patient`): the server's silence while it runs it is bounded by the
    /// transact timeout, not by the inactivity probe.
    pub async fn transact(
        &self,
        ops: impl AsRef<[Operation]>,
    ) -> Result<Vec<OperationResult>, TransactError> {
        let ops = ops.as_ref();
        let started = Instant::now();
        match self.send_transaction(ops).await {
            Ok(sent) => sent.reply(ops).await,
            Err(e) => {
                // What it cost the caller: the wait for a usable connection.
                let r = Err(e);
                record_transaction(started, &r);
                r
            }
        }
    }

    /// Sends one transaction and returns without waiting for its reply: the caller can send
    /// more behind it (a pipeline; the server runs one connection's transactions in the order
    /// sent) and collects each reply with [`Sent::reply`]. Waits like [`Client::transact`] for
    /// a synced connection; an error here means nothing was sent.
    pub async fn send_transaction(&self, ops: &[Operation]) -> Result<Sent, TransactError> {
        let database = self.shared.config.database.as_str();
        let deadline = Instant::now() + self.shared.config.wait_connected;
        // A large transaction can keep the server busy, and silent, for longer than the
        // probe allows on a loaded machine; a probe timeout would then cost a full re-dump
        // (a standalone server keeps no history). Its own timeout bounds the wait.
        let patient =
            ops.len() >= PATIENT_TRANSACTION_OPS && self.shared.config.transact_timeout.is_some();
        loop {
            let conn = self.synced_connection(deadline).await?;
            // Encoded once it has a connection to go on, straight to bytes (no JSON tree per
            // operation): that encoding is most of what a large transaction costs us.
            let write = |out: &mut Vec<u8>| write_transact_params(out, database, ops);
            match conn.send_encoded("transact", ops.len() * ENCODED_OP_BYTES, write, patient) {
                Ok(rx) => {
                    // The reply's deadline counts from the send, not from the wait for a
                    // connection before it.
                    return Ok(Sent {
                        rx,
                        started: Instant::now(),
                        timeout: self.shared.config.transact_timeout,
                    });
                }
                Err(_) => continue, // died before we sent: nothing sent, wait for the next one
            }
        }
    }

    async fn synced_connection(&self, deadline: Instant) -> Result<Connection, TransactError> {
        let mut state = self.state();
        loop {
            if self.shared.cancel.is_cancelled() {
                return Err(TransactError::Shutdown);
            }
            if state.borrow_and_update().is_synced() {
                let s = self
                    .shared
                    .connection
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

    /// Forgets the highest cluster index seen, so a server behind it is usable again. For an
    /// operator who restored the NB cluster from a backup (same cluster id, lower index); a
    /// rebuilt cluster (new id) resets the guard by itself. The reconnect loop's next attempt
    /// picks it up.
    pub fn reset_index_guard(&self) {
        self.shared
            .index_guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset();
        info!("index guard reset: any cluster index accepted again");
    }

    /// Stops the connection task (also happens when the last clone is dropped).
    pub fn shutdown(&self) {
        self.shared.cancel.cancel();
    }
}

struct CloseOnDrop(Connection);
impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close("client stopped");
    }
}

/// A connection that lasted this long counts as healthy: the backoff starts over.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// The reconnect loop: rotate through the remotes; after a full round of failures, back off.
/// The remotes are shuffled once (as ovsdb-cs does), so the clients of a cluster spread over
/// its servers instead of all trying the first one.
async fn run(shared: Arc<Shared>) {
    let mut remotes = shared.config.remotes.clone();
    remotes.shuffle(&mut rand::rng());
    let n = remotes.len();
    let mut idx = 0usize;
    let mut failures = 0usize;
    let mut backoff = Backoff::new(shared.config.backoff_initial, shared.config.backoff_max);
    while !shared.cancel.is_cancelled() {
        let remote = remotes[idx % n].clone();
        idx = idx.wrapping_add(1);
        shared.state.send_modify(|s| {
            if let ConnectionState::Connected { .. } = s {
                *s = ConnectionState::Connecting { last_error: None };
            }
        });
        let mut synced = false;
        let started = Instant::now();
        let err = tokio::select! {
            e = run_connection(&shared, &remote, &mut synced) => e,
            _ = shared.cancel.cancelled() => Error::Shutdown,
        };
        *shared.connection.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if matches!(err, Error::Shutdown) || shared.cancel.is_cancelled() {
            break;
        }
        super::handshake::distrust_after_panic(&shared, &err);
        let reason = reconnect_label(&err);
        metrics::counter!(crate::metrics::OVSDB_RECONNECTS_TOTAL, "reason" => reason).increment(1);
        if synced {
            warn!(%remote, error = %err, "connection ended; reconnecting");
            let _ = shared.events.send(CacheEvent::Disconnected);
        } else if reason == "tls" {
            // A configuration problem an operator must fix (CA, certificates, ptcp: server):
            // louder than a follower or a server still starting.
            warn!(%remote, error = %err, "cannot use server");
        } else {
            info!(%remote, error = %err, "cannot use server");
        }
        // Only a connection that lasted resets the backoff: a server that syncs
        // and then drops us at once must not make us reconnect in a tight loop.
        if synced && started.elapsed() >= STABLE_CONNECTION {
            failures = 0;
            backoff.reset();
        } else {
            failures += 1;
        }
        shared.state.send_replace(ConnectionState::Connecting {
            last_error: Some(format!("{remote}: {err}")),
        });
        if failures >= n {
            failures = 0;
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shared.cancel.cancelled() => break,
            }
        }
    }
    shared.state.send_replace(ConnectionState::Shutdown);
    let _ = shared.events.send(CacheEvent::Disconnected);
}

/// Runs one connection to its end; returns why it ended. `synced` is set once the cache was
/// trustworthy during this connection.
async fn run_connection(shared: &Arc<Shared>, remote: &Remote, synced: &mut bool) -> Error {
    let cfg = &shared.config;
    let stream =
        match tokio::time::timeout(cfg.connect_timeout, remote.connect(cfg.tls.as_ref())).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return e,
            Err(_) => return Error::Timeout(cfg.connect_timeout),
        };
    let (monitors, mut canceled) = Monitors::new();
    let conn_cfg = ConnectionConfig {
        // Zero disables the probe, as in OVS (not a probe on every idle moment).
        probe_interval: cfg.probe_interval.filter(|d| !d.is_zero()),
        max_message_len: cfg.max_message_len,
        max_silence: cfg.handshake_timeout,
    };
    let (conn, mut task) = Connection::start(stream, conn_cfg, monitors.handler(shared));
    // However this future ends, even dropped mid-handshake by the shutdown `select!` in `run`,
    // the connection closes: its reader and writer tasks end and the socket is closed.
    let _close = CloseOnDrop(conn.clone());
    let setup = monitors.handshake(shared, &conn, remote);
    let result = tokio::select! {
        // Bounded by the server's silence, not in total: a large dump streams, then is
        // parsed and applied, for as long as it takes.
        r = conn.while_alive(cfg.handshake_timeout, setup) => match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(silent) => Some(Error::Timeout(silent)),
        },
        _ = conn.closed() => None,
    };
    if let Some(e) = result {
        conn.close(&e.to_string());
        // A handler's panic, not what it did to the handshake, is why this ended.
        return match task.await {
            Ok(p @ Error::HandlerPanicked(_)) => p,
            _ => e,
        };
    }
    if !conn.is_closed() {
        *synced = true;
        info!(%remote, "connected and synced");
    }
    let cancel = shared.cancel.clone();
    let end = loop {
        tokio::select! {
            r = &mut task => break r.unwrap_or_else(|e| Error::ConnectionClosed(format!("reader task failed: {e}"))),
            _ = cancel.cancelled() => {
                conn.close("shutdown");
                break Error::Shutdown;
            }
            Some(id) = canceled.recv() => {
                // The database was converted (new schema): monitor it again on this connection.
                info!(%remote, monitor = %id, "monitor canceled by the server; monitoring again");
                shared.state.send_replace(ConnectionState::Connected {
                    remote: remote.clone(),
                    synced: false,
                });
                let again = monitors.restart(shared, &conn, remote, &id);
                let e = match conn.while_alive(cfg.handshake_timeout, again).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e,
                    Err(silent) => Error::Timeout(silent),
                };
                conn.close(&e.to_string());
                match (&mut task).await {
                    Ok(p @ Error::HandlerPanicked(_)) => break p,
                    _ => break e,
                }
            }
        }
    };
    *shared.connection.lock().unwrap_or_else(|e| e.into_inner()) = None;
    end
}

fn reconnect_label(e: &Error) -> &'static str {
    match e {
        Error::Io(_) | Error::ConnectionClosed(_) => "closed",
        Error::ProbeTimeout(_) => "probe_timeout",
        Error::Protocol(_) => "protocol",
        Error::Update(e) => e.kind.label(),
        Error::NotUsable(_) => "not_usable",
        Error::MissingColumn { .. } | Error::MissingTable(_) | Error::ColumnType { .. } => "schema",
        Error::Timeout(_) => "timeout",
        Error::HandlerPanicked(_) => "panic",
        Error::TlsConfig(_) | Error::TlsHandshake { .. } | Error::TlsNotConfigured(_) => "tls",
        _ => "other",
    }
}
