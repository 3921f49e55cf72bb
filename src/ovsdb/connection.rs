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
//! server prepares the reply in silence) holds our own probe off while its caller waits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

use super::error::Error;
use super::jsonrpc::{decode, encode, FrameDecoder, Message};
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
    /// is outstanding, an unanswered probe does not end the connection: the caller bounds
    /// the wait instead (the handshake timeout). Bytes arriving still count as activity.
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
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reason) = &p.closed {
                return Err(CallError::Closed(reason.clone()));
            }
            p.waiters.insert(id, Waiter { tx, hook, patient });
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

    /// Cancelled once the connection is closed; holds nothing of the connection alive.
    pub(super) fn closed_token(&self) -> CancellationToken {
        self.inner.closed.clone()
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
/// to the system (see [`release_freed_memory`]).
const TRIM_BYTES: usize = 1 << 20;

/// Returns the heap's free pages to the system. Decoding a large message (an initial dump of
/// 19 MB at 10,000 peerings) makes a JSON tree several times its size, freed once applied; glibc
/// keeps those pages, scattered between the replica's rows, for later use, so the process
/// would keep the dump's peak as its resident size for good (423 MB after a restart at 10,000
/// peerings where the replica needs a fraction). `malloc_trim` gives back every free page, not
/// only the heap's top. It walks the heap: milliseconds, once per large message. A reply is
/// handed to its caller, which frees it: the caller of a large one trims (the monitor's).
pub(super) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it takes the allocator's
    // locks itself and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A large message being handled on a blocking thread.
type Job = tokio::task::JoinHandle<Result<(), Error>>;

/// A message waiting for its turn (notifications and replies are handled in arrival order).
enum Queued {
    Decoded(Message),
    /// Large: decoded by the blocking job that handles it.
    Raw(Bytes),
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
                queue.push_back(Queued::Raw(frame));
                continue;
            }
            match decode(&frame) {
                Ok(Message::Request { method, params, id }) if method == "echo" => {
                    inner.reply(&id, params)
                }
                // Our probe's reply ("echo"): its arrival already counted as activity.
                Ok(Message::Response { id, .. }) if !id.is_u64() => {}
                Ok(m) => queue.push_back(Queued::Decoded(m)),
                Err(e) => return Error::Protocol(e.to_string()),
            }
        }
        // Handle what is queued, in order: small messages here, a large one on a blocking
        // thread (the rest of the queue waits for it).
        while job.is_none() {
            match queue.pop_front() {
                None => break,
                Some(Queued::Decoded(m)) => {
                    if let Err(e) = dispatch(m, inner, &mut lock(&handler)) {
                        return e;
                    }
                }
                Some(Queued::Raw(frame)) => {
                    let (inner, handler) = (inner.clone(), handler.clone());
                    *job = Some(tokio::task::spawn_blocking(move || {
                        let len = frame.len();
                        let m = decode(&frame).map_err(|e| Error::Protocol(e.to_string()));
                        // The raw bytes are not needed while the decoded message is applied.
                        drop(frame);
                        let handled = dispatch(m?, &inner, &mut lock(&handler));
                        if len >= TRIM_BYTES {
                            release_freed_memory();
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
                if probe_sent && inner.awaits_patiently() {
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

fn dispatch(msg: Message, inner: &Inner, handler: &mut NotificationHandler) -> Result<(), Error> {
    match msg {
        Message::Request { method, params, id } if method == "echo" => {
            // Only a large echo comes this way: it waited its turn (harmless).
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tokio::net::UnixStream;

    use super::*;

    const T: Duration = Duration::from_secs(10);

    async fn next_message(s: &mut UnixStream, dec: &mut FrameDecoder) -> Message {
        loop {
            if let Some(m) = dec.next_message().unwrap() {
                return m;
            }
            let n = tokio::time::timeout(T, s.read_buf(dec.buffer()))
                .await
                .expect("nothing from the client")
                .unwrap();
            assert!(n > 0, "the client closed the connection");
        }
    }

    /// The reader is biased toward reading: when the runtime was too busy to run it until
    /// after the probe's deadline, bytes that arrived meanwhile (the probe's reply) still count
    /// as activity, never as a probe timeout. Repeated: an unbiased `select!` picks either
    /// branch at random.
    #[tokio::test(flavor = "current_thread")]
    async fn a_reply_that_arrived_while_the_runtime_was_busy_is_not_a_probe_timeout() {
        for round in 0..20 {
            let (ours, mut server) = UnixStream::pair().unwrap();
            let (seen, mut notified) = mpsc::unbounded_channel();
            let handler: NotificationHandler = Box::new(move |_, _| {
                let _ = seen.send(());
                Ok(())
            });
            let cfg = ConnectionConfig {
                probe_interval: Some(Duration::from_millis(50)),
                max_message_len: 1 << 20,
            };
            let (conn, task) = Connection::start(Stream::Unix(ours), cfg, handler);
            let mut dec = FrameDecoder::new(1 << 20);
            match next_message(&mut server, &mut dec).await {
                Message::Request { method, .. } => assert_eq!(method, "echo"),
                m => panic!("{m:?}"),
            }
            server
                .write_all(br#"{"id":"echo","result":[],"error":null}{"method":"n","params":[],"id":null}"#)
                .await
                .unwrap();
            // The only runtime thread is busy past the probe's deadline: when the reader runs
            // again, the reply is there and the deadline has passed.
            std::thread::sleep(Duration::from_millis(150));
            // Either the notification behind the reply is handled, or the probe times out
            // (and closes the connection): one of them happens, no wait needs a bound.
            tokio::select! {
                biased;
                _ = conn.closed() => panic!("round {round}: probe timeout with the reply already arrived"),
                _ = notified.recv() => {}
            }
            conn.close("done");
            let _ = task.await;
        }
    }

    /// While a reply the server prepares in silence is outstanding (a monitor's initial dump:
    /// `ovsdb-server` reads nothing until it has sent it), unanswered probes do not end the
    /// connection; without one, the probe still does. The server stays silent for three probe
    /// intervals (it counts the probes: one per interval), twice what a probe allows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_silent_while_preparing_a_patient_reply_is_not_a_probe_timeout() {
        let cfg = ConnectionConfig {
            probe_interval: Some(Duration::from_millis(20)),
            max_message_len: 1 << 20,
        };
        let (ours, mut server) = UnixStream::pair().unwrap();
        let (conn, task) =
            Connection::start(Stream::Unix(ours), cfg.clone(), Box::new(|_, _| Ok(())));
        let reply = conn.send_patient("monitor_cond", json!([]), None).unwrap();
        let mut dec = FrameDecoder::new(1 << 20);
        let (mut id, mut probes) = (None, 0);
        while probes < 3 {
            match next_message(&mut server, &mut dec).await {
                Message::Request { method, id: i, .. } if method == "monitor_cond" => id = Some(i),
                Message::Request { method, .. } if method == "echo" => probes += 1,
                m => panic!("{m:?}"),
            }
        }
        let out = encode(&Message::Response {
            id: id.unwrap(),
            result: json!({}),
            error: Value::Null,
        });
        server.write_all(&out).await.unwrap();
        let r = tokio::time::timeout(T, reply).await.unwrap().unwrap();
        assert!(r.is_ok(), "{r:?}");
        conn.close("done");
        let _ = task.await;

        // Not patient: the same silence ends the connection on the probe.
        let (ours, _server) = UnixStream::pair().unwrap();
        let (conn, task) =
            Connection::start(Stream::Unix(ours), cfg.clone(), Box::new(|_, _| Ok(())));
        let reply = conn.send("transact", json!([]), None).unwrap();
        let r = tokio::time::timeout(T, reply).await.unwrap().unwrap();
        assert!(matches!(r, Err(CallError::Closed(_))), "{r:?}");
        let end = tokio::time::timeout(T, task).await.unwrap().unwrap();
        assert!(matches!(end, Error::ProbeTimeout(_)), "{end:?}");

        // Patient, but its caller gave up (dropped the receiver): the probe applies again.
        let (ours, _server) = UnixStream::pair().unwrap();
        let (_conn, task) = Connection::start(Stream::Unix(ours), cfg, Box::new(|_, _| Ok(())));
        drop(_conn.send_patient("transact", json!([]), None).unwrap());
        let end = tokio::time::timeout(T, task).await.unwrap().unwrap();
        assert!(matches!(end, Error::ProbeTimeout(_)), "{end:?}");
    }

    /// A large update is handled off the reader task: while its handler is still busy, the
    /// server's echo is answered, and the reply that came after the update waits for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echo_is_answered_while_a_large_update_is_handled_and_order_is_kept() {
        let (ours, mut server) = UnixStream::pair().unwrap();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let handled = Arc::new(AtomicBool::new(false));
        let h = handled.clone();
        let handler: NotificationHandler = Box::new(move |method, _| {
            assert_eq!(method, "update");
            // Busy until the test says so (a long apply), or for `T`: against a reader that
            // waits for its handler, the test then fails on the order, instead of hanging.
            let _ = released.recv_timeout(T);
            h.store(true, Ordering::SeqCst);
            Ok(())
        });
        let cfg = ConnectionConfig {
            probe_interval: None,
            max_message_len: 1 << 24,
        };
        let (conn, task) = Connection::start(Stream::Unix(ours), cfg, handler);
        let mut reply = conn.send("transact", json!(["db"]), None).unwrap();
        let big = json!({"method": "update", "id": null,
            "params": [null, {"pad": "x".repeat(4 * OFFLOAD_BYTES)}]});
        let mut out = serde_json::to_vec(&big).unwrap();
        out.extend(br#"{"id":1,"result":[],"error":null}"#);
        out.extend(br#"{"method":"echo","params":["alive?"],"id":"e1"}"#);
        server.write_all(&out).await.unwrap();

        let mut dec = FrameDecoder::new(1 << 24);
        loop {
            match next_message(&mut server, &mut dec).await {
                Message::Response { id, result, .. } if id == json!("e1") => {
                    assert_eq!(result, json!(["alive?"]));
                    break;
                }
                _ => {} // the client's own request
            }
        }
        assert!(
            !handled.load(Ordering::SeqCst),
            "echo answered only after the update"
        );
        assert!(
            reply.try_recv().is_err(),
            "a reply overtook the update before it"
        );
        release.send(()).unwrap();
        let r = tokio::time::timeout(T, &mut reply).await.unwrap().unwrap();
        assert!(r.is_ok(), "{r:?}");
        assert!(handled.load(Ordering::SeqCst));
        conn.close("done");
        tokio::time::timeout(T, task).await.unwrap().unwrap();
    }

    /// A large message's handler that panics ends the connection with `HandlerPanicked`, not
    /// an ordinary close: the reconnect loop must not resume after the same txn id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_large_handler_ends_the_connection_as_a_panic() {
        let (ours, mut server) = UnixStream::pair().unwrap();
        let handler: NotificationHandler = Box::new(|_, _| panic!("injected"));
        let cfg = ConnectionConfig {
            probe_interval: None,
            max_message_len: 1 << 24,
        };
        let (_conn, task) = Connection::start(Stream::Unix(ours), cfg, handler);
        let big = json!({"method": "update", "id": null,
            "params": [null, {"pad": "x".repeat(2 * OFFLOAD_BYTES)}]});
        server
            .write_all(&serde_json::to_vec(&big).unwrap())
            .await
            .unwrap();
        let err = tokio::time::timeout(T, task).await.unwrap().unwrap();
        assert!(matches!(err, Error::HandlerPanicked(_)), "{err:?}");
    }
}
