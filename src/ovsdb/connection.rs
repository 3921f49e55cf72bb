//! One JSON-RPC connection over one byte stream: a reader task, a writer task, request/response
//! correlation, answers to the server's `echo`, and the client-side inactivity probe.
//!
//! Owns nothing about OVSDB semantics. The reader task is the only one reading the socket and it
//! never waits on anyone but the socket (the server stops reading from clients that do not
//! drain their replies). Notifications and reply hooks run *strictly in arrival order*, each
//! finished before the next starts: that is what lets the client apply a monitor update before
//! completing the reply of the transaction that caused it. Small messages are handled in the
//! reader task; a large one (an initial dump, a re-dump, a big transaction's update) is decoded
//! and handled on a blocking thread while the reader task goes on reading the socket, queueing
//! what arrives behind it and answering the server's `echo` requests at once: the runtime's
//! workers keep serving and the session survives the server's inactivity probe however long
//! the update takes. A request sent "patient" (a monitor's dump, a large transaction: the
//! server prepares the reply in silence) holds our own probe off while its caller waits, up to
//! a cap on the silence.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

use super::error::Error;
use super::jsonrpc::{decode_incoming, encode, raw_to_value, FrameDecoder, Incoming, Message};
use super::remote::Stream;

/// Why a call got no result.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The server answered with an error object.
    Rpc(Value),
    /// The connection ended before the reply (the request may or may not have been processed).
    Closed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Rpc(e) => write!(f, "server error {e}"),
            CallError::Closed(r) => write!(f, "connection closed: {r}"),
        }
    }
}

pub type CallResult = Result<Value, CallError>;
/// Runs in the reader task with the reply's result as raw JSON text (to be parsed straight
/// into typed values: no `Value` tree), before the caller sees the reply; an error closes the
/// connection (the caller then sees the reply, and the connection's end). A hooked reply's
/// result goes to the hook only: its caller gets `Ok(Value::Null)` or the error.
pub type ReplyHook = Box<dyn FnOnce(Result<&RawValue, &CallError>) -> Result<(), Error> + Send>;
/// Runs in the reader task for each notification, with its method and raw `params`; an error
/// closes the connection.
pub type NotificationHandler = Box<dyn FnMut(&str, &RawValue) -> Result<(), Error> + Send>;

struct Waiter {
    tx: oneshot::Sender<CallResult>,
    hook: Option<ReplyHook>,
    /// The server may be silent while it prepares this reply (see [`Connection::send_patient`]).
    patient: bool,
}

#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, Waiter>,
    closed: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Send an `echo` after this much silence; give up after as much again. `None` disables.
    pub probe_interval: Option<Duration>,
    /// The longest silence (no byte received, no large message being handled) a patient
    /// request excuses: past it the probe ends the session however many patient requests are
    /// outstanding (a dead leader, retried with a new patient transaction after each timeout,
    /// must not keep the session for minutes).
    pub max_silence: Duration,
    pub max_message_len: usize,
}

/// A handle to a live connection (cheap to clone).
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    out: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    closed: CancellationToken,
    activity: Mutex<Activity>,
}

/// When the connection last showed life: a byte received, or a large message handled.
struct Activity {
    last: Instant,
    /// A large message is being handled on a blocking thread: our own work, not silence.
    handling: bool,
}

impl Connection {
    /// Starts the reader and writer tasks. The returned handle resolves with the reason the
    /// connection ended (it always ends with an error: EOF, I/O, framing, probe, or `close`).
    pub fn start(
        stream: Stream,
        config: ConnectionConfig,
        handler: NotificationHandler,
    ) -> (Connection, tokio::task::JoinHandle<Error>) {
        let (rd, wr) = tokio::io::split(stream);
        let (out, out_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            out,
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(1),
            closed: CancellationToken::new(),
            activity: Mutex::new(Activity {
                last: Instant::now(),
                handling: false,
            }),
        });
        tokio::spawn(writer(wr, out_rx, inner.closed.clone()));
        let reader_inner = inner.clone();
        let task = tokio::spawn(async move {
            let mut job = None;
            let err = reader(rd, config, handler, &reader_inner, &mut job).await;
            reader_inner.shut(&err.to_string());
            // A large message still being handled finishes before the task ends, so whoever
            // awaits the task (the reconnect loop, before the next connection's dump) never
            // races it. The socket is already released: the reader's half went with `reader`.
            if let Some(job) = job {
                let _ = job.await;
            }
            err
        });
        (Connection { inner }, task)
    }

    /// Sends a request; the receiver yields its result. `hook` runs in the reader task first.
    pub fn send(
        &self,
        method: &str,
        params: Value,
        hook: Option<ReplyHook>,
    ) -> Result<oneshot::Receiver<CallResult>, CallError> {
        self.send_with(method, params, hook, false)
    }

    /// [`Connection::send`] for a request whose reply the server may take long to prepare in
    /// silence: `ovsdb-server` builds a monitor's whole initial dump before it sends a byte
    /// (and reads nothing meanwhile, not even our probe's `echo`), which on a loaded machine
    /// at tens of thousands of rows takes longer than two probe intervals. While such a reply
    /// is outstanding, an unanswered probe does not end the connection until the server was
    /// silent for [`ConnectionConfig::max_silence`] (however many patient requests wait); the
    /// caller bounds its own wait. Bytes arriving still count as activity.
    pub fn send_patient(
        &self,
        method: &str,
        params: Value,
        hook: Option<ReplyHook>,
    ) -> Result<oneshot::Receiver<CallResult>, CallError> {
        self.send_with(method, params, hook, true)
    }

    fn send_with(
        &self,
        method: &str,
        params: Value,
        hook: Option<ReplyHook>,
        patient: bool,
    ) -> Result<oneshot::Receiver<CallResult>, CallError> {
        let (id, rx) = self.register(hook, patient)?;
        let msg = Message::Request {
            method: method.to_owned(),
            params,
            id: json!(id),
        };
        trace!(method, id, "send");
        self.push(encode(&msg));
        Ok(rx)
    }

    /// [`Connection::send`] (or [`Connection::send_patient`]) of a request whose `params`
    /// `write_params` writes as JSON straight into the request's bytes: no `Value` tree (a
    /// transaction of 2,000 rows is hundreds of KiB of JSON). `size_hint`: the expected
    /// length of the params, to allocate the message once.
    pub fn send_encoded(
        &self,
        method: &str,
        size_hint: usize,
        write_params: impl FnOnce(&mut Vec<u8>),
        patient: bool,
    ) -> Result<oneshot::Receiver<CallResult>, CallError> {
        let (id, rx) = self.register(None, patient)?;
        let mut msg = Vec::with_capacity(size_hint + method.len() + 48);
        msg.extend_from_slice(b"{\"id\":");
        msg.extend_from_slice(id.to_string().as_bytes());
        msg.extend_from_slice(b",\"method\":");
        serde_json::to_writer(&mut msg, method).expect("writing to a Vec cannot fail");
        msg.extend_from_slice(b",\"params\":");
        write_params(&mut msg);
        msg.push(b'}');
        trace!(method, id, bytes = msg.len(), "send");
        self.push(msg);
        Ok(rx)
    }

    /// A waiter for the next request id (fails once the connection is closed).
    fn register(
        &self,
        hook: Option<ReplyHook>,
        patient: bool,
    ) -> Result<(u64, oneshot::Receiver<CallResult>), CallError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = &p.closed {
            return Err(CallError::Closed(reason.clone()));
        }
        p.waiters.insert(id, Waiter { tx, hook, patient });
        Ok((id, rx))
    }

    /// Hands one encoded message to the writer task (in send order).
    fn push(&self, msg: Vec<u8>) {
        if self.inner.out.send(msg).is_err() {
            self.inner.shut("writer stopped");
        }
    }

    /// Sends a request and waits for its result.
    pub async fn call(&self, method: &str, params: Value) -> CallResult {
        let rx = self.send(method, params, None)?;
        rx.await
            .unwrap_or_else(|_| Err(CallError::Closed("connection ended".into())))
    }

    /// Ends the connection; pending calls fail with `CallError::Closed(reason)`.
    pub fn close(&self, reason: &str) {
        self.inner.shut(reason);
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// How long nothing has happened on the connection: no byte received and no large message
    /// being handled (zero while one is).
    pub fn silent_for(&self) -> Duration {
        self.inner.silent_for()
    }

    /// Runs `fut` while the connection shows life: it fails with the silence's length once
    /// nothing was received (nor handled) for `limit`, however long `fut` runs while bytes
    /// stream (a large dump's transfer, parse and apply are not bounded in total).
    pub async fn while_alive<F: std::future::Future>(
        &self,
        limit: Duration,
        fut: F,
    ) -> Result<F::Output, Duration> {
        tokio::pin!(fut);
        loop {
            let silent = self.silent_for();
            if silent >= limit {
                return Err(silent);
            }
            tokio::select! {
                out = &mut fut => return Ok(out),
                _ = tokio::time::sleep(limit - silent) => {}
            }
        }
    }

    /// Cancelled once the connection is closed; holds nothing of the connection alive.
    pub(super) fn closed_token(&self) -> CancellationToken {
        self.inner.closed.clone()
    }
}

impl Inner {
    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn heard(&self) {
        self.activity().last = Instant::now();
    }

    fn handling(&self, handling: bool) {
        let mut a = self.activity();
        a.last = Instant::now();
        a.handling = handling;
    }

    fn silent_for(&self) -> Duration {
        let a = self.activity();
        if a.handling {
            Duration::ZERO
        } else {
            a.last.elapsed()
        }
    }

    fn shut(&self, reason: &str) {
        let waiters = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.closed.is_none() {
                p.closed = Some(reason.to_owned());
            }
            std::mem::take(&mut p.waiters)
        };
        self.closed.cancel();
        for (_, w) in waiters {
            let e = CallError::Closed(reason.to_owned());
            if let Some(h) = w.hook {
                let _ = h(Err(&e));
            }
            let _ = w.tx.send(Err(e));
        }
    }

    /// Whether a reply the server may prepare in silence is outstanding and still awaited.
    fn awaits_patiently(&self) -> bool {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // A caller that gave up waiting (its timeout) no longer vouches for the silence.
        p.waiters.values().any(|w| w.patient && !w.tx.is_closed())
    }

    fn reply(&self, id: &Value, result: Value) {
        let msg = Message::Response {
            id: id.clone(),
            result,
            error: Value::Null,
        };
        let _ = self.out.send(encode(&msg));
    }
}

async fn writer(
    mut wr: tokio::io::WriteHalf<Stream>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    closed: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = closed.cancelled() => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                if let Err(e) = wr.write_all(&msg).await {
                    debug!(error = %e, "write failed");
                    closed.cancel();
                    break;
                }
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// Messages at least this large are decoded and handled on a blocking thread; smaller ones cost
/// less to handle in place than to hand over.
const OFFLOAD_BYTES: usize = 64 * 1024;

/// After handling a message at least this large, the memory its decoding freed is handed back
/// to the system ([`crate::heap::release_freed_memory_soon`]).
const TRIM_BYTES: usize = 1 << 20;

/// A large message being handled on a blocking thread.
type Job = tokio::task::JoinHandle<Result<(), Error>>;

/// A frame waiting for its turn (notifications and replies are handled in arrival order).
enum Queued {
    /// Small: handled in the reader task.
    Small(Bytes),
    /// Large: handled by a blocking job.
    Large(Bytes),
}

async fn reader(
    mut rd: tokio::io::ReadHalf<Stream>,
    config: ConnectionConfig,
    handler: NotificationHandler,
    inner: &Arc<Inner>,
    job: &mut Option<Job>,
) -> Error {
    let handler = Arc::new(Mutex::new(handler));
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut dec = FrameDecoder::new(config.max_message_len);
    let probe = config.probe_interval;
    let far = Duration::from_secs(86400 * 365);
    let mut deadline = Instant::now() + probe.unwrap_or(far);
    let mut probe_sent = false;
    loop {
        // Take out every complete message. Echo requests are answered here, at once, even
        // behind a large update still being handled: they ask whether we are alive, not
        // whether we are done.
        loop {
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Error::Protocol(e.to_string()),
            };
            if frame.len() >= OFFLOAD_BYTES {
                queue.push_back(Queued::Large(frame));
                continue;
            }
            match decode_incoming(&frame) {
                Ok(Incoming::Request { method, params, id }) if method == "echo" => {
                    inner.reply(&id, raw_to_value(params))
                }
                // Our probe's reply ("echo"): its arrival already counted as activity.
                Ok(Incoming::Response { id, .. }) if !id.is_u64() => {}
                Ok(_) => queue.push_back(Queued::Small(frame)),
                Err(e) => return Error::Protocol(e.to_string()),
            }
        }
        // Handle what is queued, in order: small messages here, a large one on a blocking
        // thread (the rest of the queue waits for it).
        while job.is_none() {
            match queue.pop_front() {
                None => break,
                Some(Queued::Small(frame)) => {
                    if let Err(e) = dispatch(&frame, inner, &mut lock(&handler)) {
                        return e;
                    }
                }
                Some(Queued::Large(frame)) => {
                    inner.handling(true);
                    let (inner, handler) = (inner.clone(), handler.clone());
                    *job = Some(tokio::task::spawn_blocking(move || {
                        // Parsed straight from the frame's bytes into typed rows: the frame is
                        // the only copy of the message held meanwhile.
                        let handled = dispatch(&frame, &inner, &mut lock(&handler));
                        if frame.len() >= TRIM_BYTES {
                            drop(frame);
                            // What applying it freed goes back to the system; the trim runs
                            // on its own blocking task, so what is queued behind does not wait.
                            crate::heap::release_freed_memory_soon(crate::heap::After::Update);
                        }
                        handled
                    }));
                }
            }
        }
        // Biased: a finished job is collected first (what queued behind it can go on), and
        // bytes that are already there count as activity even when the probe's deadline
        // passed meanwhile (a busy runtime must not turn into a probe timeout).
        tokio::select! {
            biased;
            r = async { job.as_mut().expect("guarded by the branch condition").await }, if job.is_some() => {
                *job = None;
                inner.handling(false);
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return e,
                    Err(e) if e.is_panic() => return Error::HandlerPanicked(e.to_string()),
                    Err(e) => return Error::ConnectionClosed(format!("message handler failed: {e}")),
                }
            }
            n = rd.read_buf(dec.buffer()) => match n {
                Ok(0) => return Error::ConnectionClosed("end of stream".into()),
                Ok(_) => {
                    inner.heard();
                    probe_sent = false;
                    deadline = Instant::now() + probe.unwrap_or(far);
                }
                Err(e) => return Error::Io(e),
            },
            _ = inner.closed.cancelled() => {
                let p = inner.pending.lock().unwrap_or_else(|e| e.into_inner());
                return Error::ConnectionClosed(p.closed.clone().unwrap_or_default());
            }
            _ = tokio::time::sleep_until(deadline) => {
                let interval = probe.unwrap_or(far);
                let silent = inner.silent_for();
                if probe_sent && silent >= config.max_silence {
                    // However many patient requests wait (a caller whose patient request
                    // timed out may retry with a new one): a server this silent is gone.
                    return Error::ProbeTimeout(silent);
                } else if probe_sent && inner.awaits_patiently() {
                    // The server is preparing a large reply and reads nothing until it is
                    // sent (our echo included): silence is expected, the caller's timeout
                    // bounds it. One more probe per interval, as when it is not silent.
                    debug!("no reply to the inactivity probe while a large reply is prepared: waiting");
                    let msg = Message::Request { method: "echo".into(), params: json!([]), id: json!("echo") };
                    let _ = inner.out.send(encode(&msg));
                } else if probe_sent {
                    return Error::ProbeTimeout(interval);
                } else {
                    debug!("idle for {interval:?}: sending inactivity probe");
                    let msg = Message::Request { method: "echo".into(), params: json!([]), id: json!("echo") };
                    let _ = inner.out.send(encode(&msg));
                    probe_sent = true;
                }
                deadline = Instant::now() + interval;
            }
        }
    }
}

fn lock(h: &Mutex<NotificationHandler>) -> std::sync::MutexGuard<'_, NotificationHandler> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

fn dispatch(frame: &[u8], inner: &Inner, handler: &mut NotificationHandler) -> Result<(), Error> {
    let msg = decode_incoming(frame).map_err(|e| Error::Protocol(e.to_string()))?;
    match msg {
        Incoming::Request { method, params, id } if method == "echo" => {
            // Only a large echo comes this way: it waited its turn (harmless).
            inner.reply(&id, raw_to_value(params));
            Ok(())
        }
        Incoming::Request { method, id, .. } => {
            warn!(%method, "server sent a request we do not know");
            let msg = Message::Response {
                id,
                result: Value::Null,
                error: json!({"error": "unknown method", "details": method}),
            };
            let _ = inner.out.send(encode(&msg));
            Ok(())
        }
        Incoming::Notification { method, params } => handler(&method, params),
        Incoming::Response { id, result } => {
            let Some(n) = id.as_u64() else {
                return Ok(()); // our probe's reply ("echo"): its arrival already counted
            };
            let waiter = inner
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .waiters
                .remove(&n);
            let Some(w) = waiter else {
                debug!(id = n, "reply to an unknown or abandoned request");
                return Ok(());
            };
            let result = result.map_err(CallError::Rpc);
            let (r, hooked) = match (w.hook, result) {
                (Some(h), Ok(raw)) => (Ok(Value::Null), h(Ok(raw))),
                (Some(h), Err(e)) => {
                    let hooked = h(Err(&e));
                    (Err(e), hooked)
                }
                (None, result) => (result.map(raw_to_value), Ok(())),
            };
            let _ = w.tx.send(r);
            hooked
        }
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
