//! A raw OVSDB connection for the bench, built on nothing of ovn-peerd's: a unix or TCP
//! socket, JSON-RPC 1.0 written by hand with `serde_json`, and one reader thread that parses
//! the server's back-to-back JSON values (`serde_json`'s stream deserializer), answers the
//! server's `echo`, hands replies to their callers and notifications to a callback.
//!
//! Both the independent NB monitor ([`super::monitor`]) and the baselines' writers use it, so
//! the bench's clock and its floor carry none of ovn-peerd's own parse or cache cost. The
//! reader runs on its own OS thread, so its CPU time can be read from `/proc` by thread id.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::oneshot;

/// How long a request may wait for its reply: the seed's transactions and the floor's one
/// transaction may take long on a loaded machine; nothing else waits here.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// A notification from the server (`update`, `update2`, ...): method and params.
pub type OnNotify = Box<dyn FnMut(&str, Value) + Send>;

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn connect(remote: &str) -> Stream {
        if let Some(path) = remote.strip_prefix("unix:") {
            Stream::Unix(UnixStream::connect(path).unwrap_or_else(|e| panic!("{remote}: {e}")))
        } else if let Some(addr) = remote.strip_prefix("tcp:") {
            let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{remote}: {e}"));
            s.set_nodelay(true).ok();
            Stream::Tcp(s)
        } else {
            panic!("raw OVSDB: unsupported remote {remote}")
        }
    }

    fn try_clone(&self) -> Stream {
        match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone().expect("clone socket")),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone().expect("clone socket")),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Value>>>;

struct Inner {
    writer: Mutex<Stream>,
    pending: Pending,
    next_id: AtomicU64,
    /// The reader thread's id (for its CPU time in `/proc/self/task/TID/stat`).
    reader_tid: AtomicU64,
}

impl Drop for Inner {
    /// The reader thread holds its own handle of the socket: shut the socket down so it ends.
    fn drop(&mut self) {
        if let Ok(w) = self.writer.get_mut() {
            w.shutdown();
        }
    }
}

/// One raw OVSDB connection; cloning shares it.
#[derive(Clone)]
pub struct RawConn {
    inner: Arc<Inner>,
}

/// An operation a [`RawConn::transact`] accepts: hand-written JSON, or (for the load
/// generators that already build them) one of ovn-peerd's `Operation`s in its wire form.
pub trait IntoOp {
    fn into_op(self) -> Value;
}

impl IntoOp for Value {
    fn into_op(self) -> Value {
        self
    }
}

impl IntoOp for ovn_peerd::ovsdb::Operation {
    fn into_op(self) -> Value {
        self.to_json()
    }
}

impl RawConn {
    /// Connects to `unix:PATH` or `tcp:IP:PORT`; `on_notify` sees every notification.
    pub fn connect(remote: &str, on_notify: Option<OnNotify>) -> RawConn {
        let stream = Stream::connect(remote);
        let reader = stream.try_clone();
        let inner = Arc::new(Inner {
            writer: Mutex::new(stream),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            reader_tid: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("raw-ovsdb".into())
            .spawn(move || read_loop(reader, weak, on_notify))
            .expect("reader thread");
        RawConn { inner }
    }

    /// Sends `method(params)` and waits for its result (panics on an error reply).
    pub async fn request(&self, method: &str, params: Value) -> Value {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().unwrap().insert(id, tx);
        let bytes = serde_json::to_vec(&json!({"method": method, "params": params, "id": id}))
            .expect("encode");
        self.inner
            .writer
            .lock()
            .unwrap()
            .write_all(&bytes)
            .expect("raw OVSDB write");
        let reply = tokio::time::timeout(REPLY_TIMEOUT, rx)
            .await
            .unwrap_or_else(|_| panic!("raw OVSDB: no reply to {method} in {REPLY_TIMEOUT:?}"))
            .unwrap_or_else(|_| panic!("raw OVSDB: connection closed before the {method} reply"));
        assert!(
            reply["error"].is_null(),
            "raw OVSDB: {method} failed: {}",
            reply["error"]
        );
        reply["result"].clone()
    }

    /// `transact` on `OVN_Northbound`; `Err` names the first failed operation (or the commit
    /// error, the extra element after the operations).
    pub async fn transact<O: IntoOp>(&self, ops: Vec<O>) -> Result<Vec<Value>, String> {
        let mut params = vec![json!("OVN_Northbound")];
        params.extend(ops.into_iter().map(IntoOp::into_op));
        let result = self.request("transact", Value::Array(params)).await;
        let items = result.as_array().cloned().unwrap_or_default();
        match items.iter().find(|r| !r["error"].is_null()) {
            Some(e) => Err(e.to_string()),
            None => Ok(items),
        }
    }

    /// CPU seconds the reader thread has used (parsing everything the server sent).
    pub fn reader_cpu_s(&self) -> f64 {
        let tid = self.inner.reader_tid.load(Ordering::Relaxed);
        if tid == 0 {
            return 0.0;
        }
        let stat =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state); utime is field 14, stime field 15.
        let ticks = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        (ticks(14) + ticks(15)) / hz
    }

    /// Closes the socket: the reader thread ends, pending requests fail.
    pub fn shutdown(&self) {
        self.inner.writer.lock().unwrap().shutdown();
    }
}

fn read_loop(stream: Stream, inner: std::sync::Weak<Inner>, mut on_notify: Option<OnNotify>) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u64;
    if let Some(i) = inner.upgrade() {
        i.reader_tid.store(tid, Ordering::Relaxed);
    }
    let reader = BufReader::with_capacity(1 << 18, stream);
    for msg in serde_json::Deserializer::from_reader(reader).into_iter::<Value>() {
        let Ok(mut msg) = msg else { return };
        let Some(inner) = inner.upgrade() else { return };
        match msg["method"].as_str() {
            Some("echo") => {
                let reply = json!({"result": msg["params"], "error": null, "id": msg["id"]});
                let bytes = serde_json::to_vec(&reply).expect("encode");
                if inner.writer.lock().unwrap().write_all(&bytes).is_err() {
                    return;
                }
            }
            Some(method) => {
                if let Some(f) = on_notify.as_mut() {
                    let method = method.to_string();
                    f(&method, msg["params"].take());
                }
            }
            None => {
                let Some(id) = msg["id"].as_u64() else {
                    continue;
                };
                if let Some(tx) = inner.pending.lock().unwrap().remove(&id) {
                    let _ = tx.send(msg);
                }
            }
        }
    }
}
