//! One JSON-RPC connection over one byte stream: a reader task, a writer task, request/response
//! correlation, answers to the server's `echo`, and the client-side inactivity probe.
//!
//! Owns nothing about OVSDB semantics. The reader task is the only one reading the socket and it
//! never waits on anyone but the socket (the server stops reading from clients that do not
//! drain their replies). Notifications and reply hooks run *inline in the reader task, in
//! arrival order*: that is what lets the client apply a monitor update before completing the
//! reply of the transaction that caused it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

use super::error::Error;
use super::jsonrpc::{encode, FrameDecoder, Message};
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
/// Runs in the reader task with the reply, before the caller sees it; an error closes the
/// connection (the caller then sees the reply, and the connection's end).
pub type ReplyHook = Box<dyn FnOnce(&CallResult) -> Result<(), Error> + Send>;
/// Runs in the reader task for each notification; an error closes the connection.
pub type NotificationHandler = Box<dyn FnMut(&str, Value) -> Result<(), Error> + Send>;

struct Waiter {
    tx: oneshot::Sender<CallResult>,
    hook: Option<ReplyHook>,
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
        });
        tokio::spawn(writer(wr, out_rx, inner.closed.clone()));
        let reader_inner = inner.clone();
        let task = tokio::spawn(async move {
            let err = reader(rd, config, handler, &reader_inner).await;
            reader_inner.shut(&err.to_string());
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
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reason) = &p.closed {
                return Err(CallError::Closed(reason.clone()));
            }
            p.waiters.insert(id, Waiter { tx, hook });
        }
        let msg = Message::Request {
            method: method.to_owned(),
            params,
            id: json!(id),
        };
        trace!(method, id, "send");
        if self.inner.out.send(encode(&msg)).is_err() {
            self.inner.shut("writer stopped");
        }
        Ok(rx)
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
}

impl Inner {
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
            let r = Err(CallError::Closed(reason.to_owned()));
            if let Some(h) = w.hook {
                let _ = h(&r);
            }
            let _ = w.tx.send(r);
        }
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

async fn reader(
    mut rd: tokio::io::ReadHalf<Stream>,
    config: ConnectionConfig,
    mut handler: NotificationHandler,
    inner: &Inner,
) -> Error {
    let mut dec = FrameDecoder::new(config.max_message_len);
    let probe = config.probe_interval;
    let far = Duration::from_secs(86400 * 365);
    let mut deadline = Instant::now() + probe.unwrap_or(far);
    let mut probe_sent = false;
    loop {
        loop {
            let msg = match dec.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return Error::Protocol(e.to_string()),
            };
            if let Err(e) = dispatch(msg, inner, &mut handler) {
                return e;
            }
        }
        // Biased: bytes that are already there count as activity even when the probe's
        // deadline passed meanwhile (a busy runtime must not turn into a probe timeout).
        tokio::select! {
            biased;
            n = rd.read_buf(dec.buffer()) => match n {
                Ok(0) => return Error::ConnectionClosed("end of stream".into()),
                Ok(_) => {
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
                if probe_sent {
                    return Error::ProbeTimeout(interval);
                }
                debug!("idle for {interval:?}: sending inactivity probe");
                let msg = Message::Request { method: "echo".into(), params: json!([]), id: json!("echo") };
                let _ = inner.out.send(encode(&msg));
                probe_sent = true;
                deadline = Instant::now() + interval;
            }
        }
    }
}

fn dispatch(msg: Message, inner: &Inner, handler: &mut NotificationHandler) -> Result<(), Error> {
    match msg {
        Message::Request { method, params, id } if method == "echo" => {
            inner.reply(&id, params);
            Ok(())
        }
        Message::Request { method, id, .. } => {
            warn!(method, "server sent a request we do not know");
            let msg = Message::Response {
                id,
                result: Value::Null,
                error: json!({"error": "unknown method", "details": method}),
            };
            let _ = inner.out.send(encode(&msg));
            Ok(())
        }
        Message::Notification { method, params } => handler(&method, params),
        Message::Response { id, result, error } => {
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
            let r = if error.is_null() {
                Ok(result)
            } else {
                Err(CallError::Rpc(error))
            };
            let hooked = match w.hook {
                Some(h) => h(&r),
                None => Ok(()),
            };
            let _ = w.tx.send(r);
            hooked
        }
    }
}
