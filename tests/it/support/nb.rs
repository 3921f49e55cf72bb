//! Throwaway NB `ovsdb-server`s: one standalone server per test, or a three-member Raft cluster.
//!
//! Each fixture owns a fresh temp dir and its server processes (started without `--detach`, so
//! we hold the pid) and kills them by pid on drop, even when the test panicked.
#![allow(dead_code)] // shared by several test modules; not all use every helper

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
const START_TIMEOUT: Duration = Duration::from_secs(20);

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd} {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

pub use super::process::free_port;

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill(); // SIGKILL, by pid
        let _ = c.wait();
    }
}

fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A standalone NB server on a unix socket and a loopback TCP port.
pub struct NbServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
}

impl NbServer {
    /// A fresh server with the installed NB schema.
    pub fn start() -> Self {
        Self::with_schema(NB_SCHEMA)
    }

    /// A fresh server with another schema file (e.g. one with an extra or missing column).
    pub fn with_schema(schema: impl AsRef<Path>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nb-")
            .tempdir()
            .expect("tempdir");
        let db = dir.path().join("nb.db");
        run(
            "ovsdb-tool",
            &["create", path_str(&db), path_str(schema.as_ref())],
        );
        let mut s = NbServer {
            dir,
            child: None,
            port: 0,
        };
        s.spawn();
        s
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("nb.sock")
    }
    pub fn ctl(&self) -> PathBuf {
        self.dir.path().join("nb.ctl")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("nb.log")
    }
    /// `unix:DIR/nb.sock`.
    pub fn remote(&self) -> String {
        format!("unix:{}", self.sock().display())
    }
    /// `tcp:127.0.0.1:PORT` (the same port across restarts).
    pub fn tcp_remote(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.port)
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs `ovn-nbctl --db=<unix remote> ARGS`; panics with stderr on failure.
    pub fn nbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.remote());
        let mut all = vec![db.as_str(), "--timeout=10"];
        all.extend_from_slice(args);
        run("ovn-nbctl", &all)
    }

    /// `kill -9` the server (the database file stays).
    pub fn kill9(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the server again on the same database file, socket and TCP port.
    pub fn restart(&mut self) {
        kill(&mut self.child);
        self.spawn();
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let log_len = std::fs::metadata(self.log()).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(self.sock());
        let child = Command::new("ovsdb-server")
            .arg(format!("--pidfile={}", d.join("nb.pid").display()))
            .arg(format!("--log-file={}", self.log().display()))
            .arg(format!("--remote=punix:{}", self.sock().display()))
            .arg(format!("--remote=ptcp:{}:127.0.0.1", self.port))
            .arg(format!("--unixctl={}", self.ctl().display()))
            .arg(d.join("nb.db"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ovsdb-server");
        self.child = Some(child);
        let log = self.log();
        let port = poll("ovsdb-server to listen", START_TIMEOUT, || {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "ovsdb-server exited with {st}: {}",
                    read_from(&log, log_len)
                );
            }
            let port = if self.port != 0 {
                self.port // a restart: same port, which ovsdb-server does not log
            } else {
                read_from(&log, log_len)
                    .lines()
                    .filter_map(|l| l.split("listening on port ").nth(1))
                    .find_map(|p| p.trim().parse::<u16>().ok())?
            };
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            std::os::unix::net::UnixStream::connect(self.sock()).ok()?;
            Some(port)
        });
        self.port = port;
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s.get(offset as usize..).unwrap_or("").to_owned()
}

impl Drop for NbServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

struct Member {
    raft_port: u16,
    child: Option<Child>,
}

/// A Raft cluster of NB servers on unix sockets (Raft itself on loopback TCP).
pub struct NbCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

impl NbCluster {
    pub fn start(n: usize) -> Self {
        assert!(n >= 1);
        let dir = tempfile::Builder::new()
            .prefix("nbc-")
            .tempdir()
            .expect("tempdir");
        let mut c = NbCluster {
            dir,
            members: Vec::new(),
        };
        for i in 0..n {
            let raft_port = free_port();
            let db = c.db(i);
            let addr = format!("tcp:127.0.0.1:{raft_port}");
            if i == 0 {
                run(
                    "ovsdb-tool",
                    &["create-cluster", path_str(&db), NB_SCHEMA, &addr],
                );
            } else {
                let first = format!("tcp:127.0.0.1:{}", c.members[0].raft_port);
                run(
                    "ovsdb-tool",
                    &[
                        "join-cluster",
                        path_str(&db),
                        "OVN_Northbound",
                        &addr,
                        &first,
                    ],
                );
            }
            c.members.push(Member {
                raft_port,
                child: None,
            });
        }
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            poll("cluster membership", START_TIMEOUT, || {
                c.status(i).contains("Status: cluster member").then_some(())
            });
        }
        c.leader();
        c
    }

    fn db(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("s{i}.db"))
    }
    pub fn sock(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("s{i}.sock"))
    }
    fn ctl(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("s{i}.ctl"))
    }
    pub fn len(&self) -> usize {
        self.members.len()
    }
    pub fn remote(&self, i: usize) -> String {
        format!("unix:{}", self.sock(i).display())
    }
    /// All members, comma-separated (`--db` syntax).
    pub fn remotes(&self) -> String {
        (0..self.len())
            .map(|i| self.remote(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `cluster/status` of member `i` ("" if it does not answer).
    pub fn status(&self, i: usize) -> String {
        Command::new("ovs-appctl")
            .args([
                "-T",
                "2",
                "-t",
                path_str(&self.ctl(i)),
                "cluster/status",
                "OVN_Northbound",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Waits for a live member to report itself leader and returns its index.
    pub fn leader(&self) -> usize {
        poll("a cluster leader", START_TIMEOUT, || {
            (0..self.len()).find(|&i| {
                self.members[i].child.is_some() && self.status(i).contains("Role: leader")
            })
        })
    }

    /// Runs `ovn-nbctl` against the whole cluster (it picks the leader).
    pub fn nbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.remotes());
        let mut all = vec![db.as_str(), "--timeout=20"];
        all.extend_from_slice(args);
        run("ovn-nbctl", &all)
    }

    pub fn kill9(&mut self, i: usize) {
        kill(&mut self.members[i].child);
    }

    pub fn restart(&mut self, i: usize) {
        kill(&mut self.members[i].child);
        self.spawn(i);
    }

    fn spawn(&mut self, i: usize) {
        let d = self.dir.path();
        let _ = std::fs::remove_file(self.sock(i));
        let child = Command::new("ovsdb-server")
            .arg(format!(
                "--pidfile={}",
                d.join(format!("s{i}.pid")).display()
            ))
            .arg(format!(
                "--log-file={}",
                d.join(format!("s{i}.log")).display()
            ))
            .arg(format!("--remote=punix:{}", self.sock(i).display()))
            .arg(format!("--unixctl={}", self.ctl(i).display()))
            .arg(self.db(i))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ovsdb-server");
        self.members[i].child = Some(child);
        let sock = self.sock(i);
        poll("cluster member socket", START_TIMEOUT, || {
            std::os::unix::net::UnixStream::connect(&sock)
                .ok()
                .map(|_| ())
        });
    }
}

impl Drop for NbCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            kill(&mut m.child);
        }
    }
}
