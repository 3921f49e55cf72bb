//! What happens on a connection once it is open: the handshake (schema check, `_Server` leader
//! check, NB monitor setup with method fallback) and the notification handler that keeps the
//! cache and the leader check current for as long as the connection lasts.
//!
//! Owns the per-connection protocol steps; the reconnect loop and the public API are in
//! `client`, the state both share in `state`.
//! Everything that touches the cache runs in the connection's reader task (notification handler
//! and reply hooks), so updates are applied exactly once, in the server's order, and always
//! before the reply to any later request (e.g. the `transact` that caused them) is delivered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::cache::{Types, UpdateError, UpdateFormat};
use super::connection::{CallError, Connection, NotificationHandler};
use super::error::{Error, OvsdbError, OvsdbErrorKind};
use super::jsonrpc::raw_to_value;
use super::model::Table;
use super::remote::Remote;
use super::schema::DatabaseSchema;
use super::state::{CacheEvent, ConnectionState, Shared};
use super::values::{Atom, Datum};

const NB_MONITOR_ID: &str = "nb";
const SERVER_MONITOR_ID: &str = "server";
const ZERO_TXN: &str = "00000000-0000-0000-0000-000000000000";

/// Per-connection monitor state shared by the reader task's handler and hooks.
struct MonitorState {
    format: UpdateFormat,
    nb_ready: bool,
    server_rows: HashMap<String, Value>,
    /// The next NB dump replaces a replica that stayed valid (the monitor was re-created on
    /// the same connection): consumers get the row changes, not a `Resynced`.
    in_place: bool,
}

/// The monitors of one connection: their state, read by the reader task's handlers.
pub(super) struct Monitors {
    state: Arc<Mutex<MonitorState>>,
    types: Arc<Mutex<Arc<Types>>>,
    canceled: mpsc::UnboundedSender<String>,
}

impl Monitors {
    /// Also returns the ids of monitors the server cancels (`monitor_canceled`: a schema
    /// conversion of the database, announced because we are `set_db_change_aware`).
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<String>) {
        let (canceled, rx) = mpsc::unbounded_channel();
        let m = Monitors {
            state: Arc::new(Mutex::new(MonitorState {
                format: UpdateFormat::V2,
                nb_ready: false,
                server_rows: HashMap::new(),
                in_place: false,
            })),
            types: Arc::default(),
            canceled,
        };
        (m, rx)
    }

    /// The reader task's notification handler: NB updates into the cache, `_Server` updates
    /// into the leader check.
    pub(super) fn handler(&self, shared: &Arc<Shared>) -> NotificationHandler {
        let (shared, state, types) = (shared.clone(), self.state.clone(), self.types.clone());
        let canceled = self.canceled.clone();
        Box::new(move |method: &str, params: &RawValue| {
            if method == "monitor_canceled" {
                let params = raw_to_value(params);
                let id = params.get(0).and_then(Value::as_str).unwrap_or_default();
                state.lock().unwrap_or_else(|e| e.into_inner()).nb_ready &= id != NB_MONITOR_ID;
                let _ = canceled.send(id.to_owned());
                return Ok(());
            }
            let types = types.lock().unwrap_or_else(|e| e.into_inner()).clone();
            on_notification(&shared, &state, &types, method, params)
        })
    }

    /// After a `monitor_canceled` (ovsdb-cs `ovsdb_cs_handle_monitor_canceled`): cancels the
    /// other monitor and runs the handshake again on the same connection. The replica stays
    /// and is compared with the new dump, so consumers see only what changed.
    pub(super) async fn restart(
        &self,
        shared: &Arc<Shared>,
        conn: &Connection,
        remote: &Remote,
        canceled: &str,
    ) -> Result<(), Error> {
        let other = if canceled == NB_MONITOR_ID {
            SERVER_MONITOR_ID
        } else {
            NB_MONITOR_ID
        };
        // An error only means it is gone already.
        let _ = conn.call("monitor_cancel", json!([other])).await;
        {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.nb_ready = false;
            s.server_rows.clear();
            s.in_place = true;
        }
        self.handshake(shared, conn, remote).await
    }

    /// Schema check, `_Server` check, then the NB monitor, whose reply installs the cache and
    /// marks the client synced.
    pub(super) async fn handshake(
        &self,
        shared: &Arc<Shared>,
        conn: &Connection,
        remote: &Remote,
    ) -> Result<(), Error> {
        let t = setup(shared, conn, remote, &self.state).await?;
        *self.types.lock().unwrap_or_else(|e| e.into_inner()) = t.clone();
        monitor_nb(shared, conn, remote, &self.state, t).await
    }
}

/// `_Server` check first (a follower, relay or stale server is left before anything else is
/// asked of it), then the schema check. Returns the column types of the tables we model.
async fn setup(
    shared: &Arc<Shared>,
    conn: &Connection,
    remote: &Remote,
    monitor: &Arc<Mutex<MonitorState>>,
) -> Result<Arc<Types>, Error> {
    let db = &shared.config.database;
    let params = json!(["_Server", SERVER_MONITOR_ID,
        {"Database": {"columns": ["name", "model", "connected", "leader", "index", "cid"]}}]);
    // Not the `schema` column (ovsdb-cs takes the schema from it): in a `monitor` (v1) update
    // every modify carries whole rows, so each commit, which moves `index`, would resend it.
    match conn.call("monitor", params).await {
        Ok(initial) => {
            let mut s = monitor.lock().unwrap_or_else(|e| e.into_inner());
            apply_server_update(&mut s.server_rows, &initial);
            check_server(shared, &s.server_rows)?;
            drop(s);
            // A schema conversion then cancels our monitors instead of closing the connection
            // (and so a full reconnect); the reply does not matter.
            let _ = conn.send("set_db_change_aware", json!([true]), None);
        }
        Err(CallError::Rpc(e))
            if OvsdbError::from_json(&e).kind == OvsdbErrorKind::UnknownDatabase =>
        {
            // Servers older than OVS 2.9 have no _Server database, and no clustering either:
            // standalone by definition.
            debug!(%remote, "no _Server database; treating as standalone");
        }
        // Any other error says nothing about the server's role: not usable, try the next one.
        Err(e) => return Err(rpc_error("monitor _Server", e)),
    }
    let schema = conn
        .call("get_schema", json!([db]))
        .await
        .map_err(|e| rpc_error("get_schema", e))?;
    let schema = DatabaseSchema::parse(&schema)?;
    let mut types = Types::new();
    for t in Table::ALL {
        types.insert(t, schema.check(t.name(), t.columns())?);
    }
    debug!(%remote, version = schema.version, "schema ok");
    Ok(Arc::new(types))
}

/// Our database's row in `_Server.Database`.
fn server_row<'a>(db: &str, rows: &'a HashMap<String, Value>) -> Option<&'a Value> {
    rows.values()
        .find(|r| r.get("name").and_then(Value::as_str) == Some(db))
}

/// Sets up the NB monitor (`monitor_cond_since` → `monitor_cond` → `monitor`); the reply hook
/// installs the cache and marks the client synced, in the reader task.
async fn monitor_nb(
    shared: &Arc<Shared>,
    conn: &Connection,
    remote: &Remote,
    monitor: &Arc<Mutex<MonitorState>>,
    types: Arc<Types>,
) -> Result<(), Error> {
    let db = &shared.config.database;
    let cols = |t: Table| t.columns().iter().map(|c| c.name).collect::<Vec<_>>();
    let cond_req: serde_json::Map<String, Value> = Table::ALL
        .iter()
        .map(|t| (t.name().to_owned(), json!([{"columns": cols(*t)}])))
        .collect();
    let v1_req: serde_json::Map<String, Value> = Table::ALL
        .iter()
        .map(|t| (t.name().to_owned(), json!({"columns": cols(*t)})))
        .collect();
    *shared.connection.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
    for method in ["monitor_cond_since", "monitor_cond", "monitor"] {
        let last = shared
            .last_txn_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let params = match method {
            "monitor_cond_since" => json!([
                db,
                NB_MONITOR_ID,
                cond_req,
                last.as_deref().unwrap_or(ZERO_TXN)
            ]),
            "monitor_cond" => json!([db, NB_MONITOR_ID, cond_req]),
            _ => json!([db, NB_MONITOR_ID, v1_req]),
        };
        let hook = {
            let (shared, monitor, types, remote) = (
                shared.clone(),
                monitor.clone(),
                types.clone(),
                remote.clone(),
            );
            let method = method.to_owned();
            let closed = conn.closed_token();
            Box::new(move |r: Result<&RawValue, &CallError>| match r {
                Ok(v) => install(&shared, &monitor, &types, &remote, &method, v, &closed),
                Err(_) => Ok(()),
            })
        };
        // The server sends the whole dump at once, after preparing it in silence.
        let rx = conn
            .send_patient(method, params, Some(hook))
            .map_err(|e| rpc_error(method, e))?;
        let reply = rx
            .await
            .unwrap_or_else(|_| Err(CallError::Closed("connection ended".into())));
        match reply {
            Ok(_) => {
                // The hook installed the dump, parsed straight from its bytes; what the
                // parse freed (and a replaced replica) goes back to the system, on a blocking
                // thread: trimming a large heap takes long and must not hold up anyone.
                tokio::task::spawn_blocking(|| {
                    crate::heap::release_freed_memory(crate::heap::After::Dump)
                });
                return Ok(());
            }
            Err(CallError::Rpc(e))
                if OvsdbError::from_json(&e).kind == OvsdbErrorKind::UnknownMethod =>
            {
                info!(%remote, method, "server does not support this monitor method; falling back");
            }
            Err(e) => return Err(rpc_error(method, e)),
        }
    }
    Err(Error::Protocol("server supports no monitor method".into()))
}

/// Installs a monitor reply into the cache (reader task, or the blocking job of a large reply).
/// `closed` is the connection's: once it is closed (handshake timeout, probe, leader change) or
/// the client shut down, the replica and txn id are still kept, but nobody is told "synced".
fn install(
    shared: &Shared,
    monitor: &Mutex<MonitorState>,
    types: &Types,
    remote: &Remote,
    method: &str,
    reply: &RawValue,
    closed: &CancellationToken,
) -> Result<(), Error> {
    let (found, txn, updates, format) = match method {
        "monitor_cond_since" => {
            // `[found, last_txn_id, table-updates]`; the updates stay raw text for the cache.
            let parsed: Result<(Value, Value, &RawValue), _> = serde_json::from_str(reply.get());
            let Ok((found, txn, updates)) = parsed else {
                // The first 200 characters (a byte cut could split a multi-byte character).
                let head: String = reply.get().chars().take(200).collect();
                return Err(Error::Protocol(format!(
                    "bad monitor_cond_since reply: {head}"
                )));
            };
            (
                found.as_bool().unwrap_or(false),
                txn.as_str().map(str::to_owned),
                updates,
                UpdateFormat::V2,
            )
        }
        "monitor_cond" => (false, None, reply, UpdateFormat::V2),
        _ => (false, None, reply, UpdateFormat::V1),
    };
    let in_place = std::mem::take(&mut monitor.lock().unwrap_or_else(|e| e.into_inner()).in_place);
    // Only a dump replaced in place is told as changes: what a row was before it (`changes`).
    let before = in_place.then(|| shared.snapshot());
    let applied = shared.update_replica(|cache| {
        if found {
            // The server sent only what changed since our last_txn_id: our cache stays.
            return cache.apply(types, format, updates.get());
        }
        // A fresh dump replaces the cache, published at once with all its rows.
        let mut fresh = cache.empty_like();
        fresh.apply(types, format, updates.get())?;
        let changes = if in_place {
            cache.changes_to(&fresh)
        } else {
            Vec::new()
        };
        *cache = fresh;
        Ok(changes)
    });
    let (changes, rows) = match applied {
        Ok(c) => c,
        Err(e) => return Err(distrust(shared, e)),
    };
    *shared.last_txn_id.lock().unwrap_or_else(|e| e.into_inner()) = txn;
    {
        let mut s = monitor.lock().unwrap_or_else(|e| e.into_inner());
        s.format = format;
        s.nb_ready = true;
    }
    info!(%remote, method, found, in_place, rows, "cache synced");
    metrics::gauge!(crate::metrics::OVSDB_CACHE_ROWS).set(rows as f64);
    shared.version.send_modify(|v| *v += 1);
    let live = || !closed.is_cancelled() && !shared.cancel.is_cancelled();
    if !live() {
        debug!(%remote, "connection ended while its monitor reply was installed; not synced");
        return Ok(());
    }
    // Event first: whoever subscribes after seeing `synced` must not get a stale Resynced.
    match before {
        Some(before) => shared.send_changes(&before, changes),
        None => {
            let _ = shared.events.send(CacheEvent::Resynced);
        }
    }
    // Checked again under the state's lock: the reconnect loop writes `Connecting` or
    // `Shutdown` only after the connection closed or the client was cancelled, so it is
    // never overwritten by this (possibly late) job.
    shared.state.send_if_modified(|s| {
        if !live() {
            return false;
        }
        *s = ConnectionState::Connected {
            remote: remote.clone(),
            synced: true,
        };
        true
    });
    Ok(())
}

fn on_notification(
    shared: &Shared,
    monitor: &Mutex<MonitorState>,
    types: &Types,
    method: &str,
    params: &RawValue,
) -> Result<(), Error> {
    // `[monitor id, (last txn id,) table-updates]`; the updates stay raw text for the cache.
    let p: Vec<&RawValue> = serde_json::from_str(params.get()).unwrap_or_default();
    let (id, txn, updates) = match (method, p.as_slice()) {
        ("update" | "update2", [id, u]) => (raw_to_value(id), None, *u),
        ("update3", [id, txn, u]) => (
            raw_to_value(id),
            raw_to_value(txn).as_str().map(str::to_owned),
            *u,
        ),
        _ => {
            debug!(method, "ignoring notification");
            return Ok(());
        }
    };
    let mut s = monitor.lock().unwrap_or_else(|e| e.into_inner());
    if id == SERVER_MONITOR_ID {
        apply_server_update(&mut s.server_rows, &raw_to_value(updates));
        return check_server(shared, &s.server_rows);
    }
    if id != NB_MONITOR_ID || !s.nb_ready {
        warn!(method, %id, "update for an unknown monitor");
        return Ok(());
    }
    let format = s.format;
    drop(s);
    // The snapshot the update applies to: what a row was before it (`changes`).
    let before = shared.snapshot();
    let (changes, rows) = shared
        .update_replica(|cache| cache.apply(types, format, updates.get()))
        .map_err(|e| distrust(shared, e))?;
    // Every update moves the count, not only a full sync.
    metrics::gauge!(crate::metrics::OVSDB_CACHE_ROWS).set(rows as f64);
    if let Some(t) = txn {
        *shared.last_txn_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }
    shared.version.send_modify(|v| *v += 1);
    shared.send_changes(&before, changes);
    Ok(())
}

/// The cache could not apply an update (the half-applied copy was never published): forget the
/// txn id so the next session starts from a full dump (ovsdb-cs `ovsdb_cs_flag_inconsistency`). The returned error
/// ends this connection.
fn distrust(shared: &Shared, e: UpdateError) -> Error {
    forget_txn(shared, e.kind.label(), &e);
    Error::Update(e)
}

/// A session that ended because handling a message panicked: the same update would come again
/// after our last txn id and panic again, forever. Forget the id so the next session starts
/// from a full dump, as after an update the cache could not apply.
pub(super) fn distrust_after_panic(shared: &Shared, ended: &Error) {
    if matches!(ended, Error::HandlerPanicked(_)) {
        forget_txn(shared, "panic", ended);
    }
}

fn forget_txn(shared: &Shared, reason: &'static str, e: &dyn std::fmt::Display) {
    *shared.last_txn_id.lock().unwrap_or_else(|e| e.into_inner()) = None;
    warn!(reason, error = %e, "replica cannot be trusted; reconnecting for a full dump");
    metrics::counter!(crate::metrics::OVSDB_RESYNCS_TOTAL, "reason" => reason).increment(1);
}

/// Applies a v1 `_Server.Database` update (full rows in "new").
fn apply_server_update(rows: &mut HashMap<String, Value>, updates: &Value) {
    let Some(table) = updates.get("Database").and_then(Value::as_object) else {
        return;
    };
    for (uuid, ru) in table {
        match ru.get("new") {
            Some(new) if !new.is_null() => {
                rows.insert(uuid.clone(), new.clone());
            }
            _ => {
                rows.remove(uuid);
            }
        }
    }
}

/// Whether this server may be used for our database (ovsdb-cs "leader-only" rules).
fn check_server(shared: &Shared, rows: &HashMap<String, Value>) -> Result<(), Error> {
    let db = &shared.config.database;
    let row = server_row(db, rows)
        .ok_or_else(|| Error::NotUsable(format!("server does not have database {db}")))?;
    let model = row
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("standalone");
    let flag = |k: &str| row.get(k).and_then(Value::as_bool).unwrap_or(false);
    match model {
        "clustered" => {
            if !flag("connected") {
                return Err(Error::NotUsable(
                    "server is not connected to its cluster".into(),
                ));
            }
            if shared.config.leader_only && !flag("leader") {
                return Err(Error::NotUsable("server is not the cluster leader".into()));
            }
        }
        "relay" => {
            if !flag("connected") {
                return Err(Error::NotUsable(
                    "relay server is not connected to its source".into(),
                ));
            }
            // A relay forwards writes to its source: never the leader itself.
            if shared.config.leader_only {
                return Err(Error::NotUsable(
                    "server is a relay, not the cluster leader (leader-only)".into(),
                ));
            }
            return Ok(());
        }
        _ => return Ok(()),
    }
    let first = |col: &str| match row.get(col).map(Datum::from_json) {
        Some(Ok(Datum::Set(a))) => a.into_iter().next(),
        _ => None,
    };
    let index = match first("index") {
        Some(Atom::Integer(i)) => u64::try_from(i).ok(),
        _ => None,
    };
    let cid = match first("cid") {
        Some(Atom::Uuid(u)) => Some(u.to_string()),
        _ => None,
    };
    if let Some(index) = index {
        let mut guard = shared.index_guard.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(seen) = guard.observe(cid.as_deref(), index) {
            return Err(Error::NotUsable(format!(
                "server's index {index} is behind one already seen ({seen}); if the cluster \
                 was restored from a backup, reset the guard (SIGHUP)"
            )));
        }
    }
    Ok(())
}

fn rpc_error(method: &str, e: CallError) -> Error {
    match e {
        CallError::Rpc(v) => Error::Rpc {
            method: method.to_owned(),
            error: OvsdbError::from_json(&v),
        },
        CallError::Closed(r) => Error::ConnectionClosed(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session that ended in a handler's panic leaves no txn id behind (the next session
    /// asks for a full dump instead of the delta that panicked); any other end keeps it.
    #[test]
    fn a_panic_forgets_the_txn_id_other_ends_keep_it() {
        let s = crate::ovsdb::state::tests::shared();
        let set = || *s.last_txn_id.lock().unwrap() = Some("t1".into());
        set();
        distrust_after_panic(&s, &Error::ConnectionClosed("end of stream".into()));
        assert_eq!(s.last_txn_id.lock().unwrap().as_deref(), Some("t1"));
        distrust_after_panic(&s, &Error::HandlerPanicked("boom".into()));
        assert_eq!(*s.last_txn_id.lock().unwrap(), None);
    }

    /// A monitor reply installed after its connection closed, or after shutdown, keeps the
    /// replica and txn id but publishes neither `Resynced` nor `Connected { synced }`.
    #[test]
    fn a_reply_installed_for_a_dead_connection_is_kept_but_not_announced() {
        let remote = Remote::parse("tcp:127.0.0.1:1").unwrap();
        let reply = RawValue::from_string(json!([false, "t9", {}]).to_string()).unwrap();
        let install_into = |s: &Shared, closed: &CancellationToken| {
            let (m, _) = Monitors::new();
            let r = install(
                s,
                &m.state,
                &Types::new(),
                &remote,
                "monitor_cond_since",
                &reply,
                closed,
            );
            r.unwrap();
        };
        let synced = |s: &Shared| {
            matches!(
                *s.state.borrow(),
                ConnectionState::Connected { synced: true, .. }
            )
        };
        for dead in ["closed", "shutdown"] {
            let s = crate::ovsdb::state::tests::shared();
            let mut events = s.events.subscribe();
            let closed = CancellationToken::new();
            match dead {
                "closed" => closed.cancel(),
                _ => s.cancel.cancel(),
            }
            install_into(&s, &closed);
            assert_eq!(
                s.last_txn_id.lock().unwrap().as_deref(),
                Some("t9"),
                "{dead}"
            );
            assert!(
                !synced(&s),
                "{dead}: synced published for a dead connection"
            );
            assert!(
                events.try_recv().is_err(),
                "{dead}: an event for a dead connection"
            );
        }
        let s = crate::ovsdb::state::tests::shared();
        let mut events = s.events.subscribe();
        install_into(&s, &CancellationToken::new());
        assert!(synced(&s));
        assert!(matches!(events.try_recv(), Ok(CacheEvent::Resynced)));
    }
}
