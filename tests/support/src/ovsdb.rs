//! `ovsdb-server`s: the installed schemas, the one starter ([`start_server`]), a standalone NB
//! ([`NbServer`]) and a Raft cluster of NB servers ([`NbCluster`]), each optionally also over
//! `pssl:` with certificates from [`crate::pki`].
//!
//! Every server runs in the foreground (no `--detach`, so the pid we hold is the server's) as
//! an [`Owned`] child that dies with the test binary, in a directory of its fixture where its
//! database, socket (`NAME.sock`), control socket (`NAME.ctl`) and log (`NAME.log`) live.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::pki::Pki;
use crate::process::{free_port, Owned};
use crate::wait_until;

/// OVN Northbound schema, as Debian's `ovn-central` installs it.
pub const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
/// OVN Southbound schema.
pub const SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";
/// Open vSwitch's database schema (`ovs-vswitchd`'s).
pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a tool to completion; panics with its stderr when it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (scripts/install-deps installs it): {e}"));
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

/// `ovsdb-tool create DB SCHEMA` (replacing any file there).
pub fn create_db(db: &Path, schema: impl AsRef<Path>) {
    let _ = std::fs::remove_file(db);
    run(
        "ovsdb-tool",
        &["create", path_str(db), path_str(schema.as_ref())],
    );
}

/// The last lines of a log, for a panic message.
fn tail(log: &Path, from: u64) -> String {
    let text = read_from(log, from);
    let lines: Vec<&str> = text.lines().rev().take(10).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s.get(offset as usize..).unwrap_or("").to_owned()
}

/// Starts `ovsdb-server` on `DIR/NAME.db`, serving `punix:DIR/NAME.sock` and `extra_remotes`,
/// and waits until the unix socket accepts (panicking with the log's tail if the server exits
/// first). The one way this crate, the tests and the benches start an ovsdb-server.
pub fn start_server(dir: &Path, name: &str, extra_remotes: &[String]) -> Owned {
    start_server_with(dir, name, extra_remotes, &[])
}

/// [`start_server`] with more `ovsdb-server` options (e.g. [`Pki::server_args`] for `pssl:`).
pub fn start_server_with(
    dir: &Path,
    name: &str,
    extra_remotes: &[String],
    extra_args: &[String],
) -> Owned {
    let sock = dir.join(format!("{name}.sock"));
    let log = dir.join(format!("{name}.log"));
    let log_len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&sock);
    let mut cmd = Command::new("ovsdb-server");
    cmd.arg("-vconsole:off")
        .arg(format!(
            "--pidfile={}",
            dir.join(format!("{name}.pid")).display()
        ))
        .arg(format!("--log-file={}", log.display()))
        .arg(format!("--remote=punix:{}", sock.display()))
        .args(extra_remotes.iter().map(|r| format!("--remote={r}")))
        .args(extra_args)
        .arg(format!(
            "--unixctl={}",
            dir.join(format!("{name}.ctl")).display()
        ))
        .arg(dir.join(format!("{name}.db")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut server = Owned::spawn("ovsdb-server", &mut cmd);
    wait_until(
        &format!("ovsdb-server {}", sock.display()),
        START_TIMEOUT,
        || {
            if let Some(status) = server.exited() {
                panic!(
                    "ovsdb-server exited with {status}:\n{}",
                    tail(&log, log_len)
                );
            }
            UnixStream::connect(&sock).is_ok()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    server
}

enum Dir {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Given(p) => p,
        }
    }
}

/// A standalone NB server on a unix socket and a loopback TCP port; killed by pid on drop.
pub struct NbServer {
    // Dropped in this order: the server, then its directory.
    server: Owned,
    port: u16,
    /// `pssl:` port and the PKI it serves with, for [`NbServer::start_ssl`].
    ssl: Option<(u16, &'static Pki)>,
    dir: Dir,
}

impl NbServer {
    /// A fresh server with the installed NB schema, in a temp dir of its own.
    pub fn start() -> Self {
        Self::with_schema(NB_SCHEMA)
    }

    /// A fresh server with another schema file (e.g. one with an extra or missing column).
    pub fn with_schema(schema: impl AsRef<Path>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nb-")
            .tempdir()
            .expect("tempdir");
        Self::start_at(Dir::Temp(dir), schema.as_ref())
    }

    /// A fresh server that also serves `pssl:` (see [`NbServer::ssl_remote`]) with `pki`'s
    /// server certificate, requiring a client certificate signed by `pki`'s CA.
    pub fn start_ssl(pki: &'static Pki) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nb-")
            .tempdir()
            .expect("tempdir");
        let dir = Dir::Temp(dir);
        create_db(&dir.path().join("nb.db"), NB_SCHEMA);
        let mut s = NbServer {
            server: Owned {
                name: "ovsdb-server",
                child: None,
            },
            port: 0,
            ssl: Some((free_port(), pki)),
            dir,
        };
        s.spawn();
        s
    }

    /// A fresh NB database in `dir` (created if missing, kept after the server stops: a bench
    /// keeps its logs there).
    pub fn start_in(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("nb dir");
        Self::start_at(Dir::Given(dir.to_path_buf()), Path::new(NB_SCHEMA))
    }

    fn start_at(dir: Dir, schema: &Path) -> Self {
        create_db(&dir.path().join("nb.db"), schema);
        let mut s = NbServer {
            server: Owned {
                name: "ovsdb-server",
                child: None,
            },
            port: 0,
            ssl: None,
            dir,
        };
        s.spawn();
        s
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn sock(&self) -> PathBuf {
        self.dir().join("nb.sock")
    }
    pub fn ctl(&self) -> PathBuf {
        self.dir().join("nb.ctl")
    }
    pub fn log(&self) -> PathBuf {
        self.dir().join("nb.log")
    }
    pub fn db_file(&self) -> PathBuf {
        self.dir().join("nb.db")
    }
    /// `unix:DIR/nb.sock`.
    pub fn remote(&self) -> String {
        format!("unix:{}", self.sock().display())
    }
    /// `tcp:127.0.0.1:PORT` (the same port across restarts).
    pub fn tcp_remote(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.port)
    }
    /// `ssl:127.0.0.1:PORT` of a server started with [`NbServer::start_ssl`].
    pub fn ssl_remote(&self) -> String {
        let (port, _) = self.ssl.expect("an NbServer::start_ssl server");
        format!("ssl:127.0.0.1:{port}")
    }

    /// Runs `ovn-nbctl --db=<ssl remote>` with the PKI's client certificate: the independent
    /// reader of a TLS server.
    pub fn nbctl_ssl(&self, args: &[&str]) -> String {
        let (_, pki) = self.ssl.expect("an NbServer::start_ssl server");
        let mut all = vec![format!("--db={}", self.ssl_remote()), "--timeout=10".into()];
        all.extend(pki.client_args());
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run("ovn-nbctl", &all)
    }

    /// The server's pid; `None` while it is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.server.child.as_ref().map(std::process::Child::id)
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
        self.server.kill();
    }

    /// Starts the server again on the same database file, socket and TCP port.
    pub fn restart(&mut self) {
        self.server.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = self.log();
        let log_len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        // Port 0 the first time: ovsdb-server binds a free port itself (no race with other
        // processes) and logs it; a restart asks for the same port again.
        let mut remotes = vec![format!("ptcp:{}:127.0.0.1", self.port)];
        let mut args = Vec::new();
        if let Some((port, pki)) = self.ssl {
            remotes.push(format!("pssl:{port}:127.0.0.1"));
            args = pki.server_args();
        }
        self.server = start_server_with(self.dir.path(), "nb", &remotes, &args);
        if self.port == 0 {
            self.port = wait_until("ovsdb-server to log its TCP port", START_TIMEOUT, || {
                read_from(&log, log_len)
                    .lines()
                    .filter_map(|l| l.split("listening on port ").nth(1))
                    .find_map(|p| p.trim().parse::<u16>().ok())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let ports = [Some(self.port), self.ssl.map(|(p, _)| p)];
        for port in ports.into_iter().flatten() {
            wait_until("ovsdb-server's TCP port", START_TIMEOUT, || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

struct Member {
    raft_port: u16,
    /// `pssl:` port, in a cluster started with [`NbCluster::start_ssl`].
    ssl_port: Option<u16>,
    server: Option<Owned>,
}

/// A Raft cluster of NB servers on unix sockets (Raft itself on loopback TCP).
pub struct NbCluster {
    // Dropped in this order: the servers, then their directory.
    members: Vec<Member>,
    pki: Option<&'static Pki>,
    dir: tempfile::TempDir,
}

impl NbCluster {
    pub fn start(n: usize) -> Self {
        Self::start_inner(n, None)
    }

    /// A cluster whose members also serve `pssl:` with `pki`'s server certificate (Raft
    /// itself stays on plain TCP); see [`NbCluster::ssl_remotes`].
    pub fn start_ssl(n: usize, pki: &'static Pki) -> Self {
        Self::start_inner(n, Some(pki))
    }

    fn start_inner(n: usize, pki: Option<&'static Pki>) -> Self {
        assert!(n >= 1);
        let dir = tempfile::Builder::new()
            .prefix("nbc-")
            .tempdir()
            .expect("tempdir");
        let mut c = NbCluster {
            dir,
            pki,
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
                ssl_port: pki.map(|_| free_port()),
                server: None,
            });
        }
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            wait_until("cluster membership", START_TIMEOUT, || {
                c.status(i).contains("Status: cluster member")
            })
            .unwrap_or_else(|e| panic!("{e}"));
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
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
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

    /// `ssl:127.0.0.1:PORT` of member `i` (a cluster from [`NbCluster::start_ssl`]).
    pub fn ssl_remote(&self, i: usize) -> String {
        let port = self.members[i]
            .ssl_port
            .expect("an NbCluster::start_ssl cluster");
        format!("ssl:127.0.0.1:{port}")
    }
    /// All members' `ssl:` remotes, comma-separated.
    pub fn ssl_remotes(&self) -> String {
        (0..self.len())
            .map(|i| self.ssl_remote(i))
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
        wait_until("a cluster leader", START_TIMEOUT, || {
            (0..self.len()).find(|&i| {
                self.members[i].server.is_some() && self.status(i).contains("Role: leader")
            })
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `ovn-nbctl` against the whole cluster (it picks the leader).
    pub fn nbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.remotes());
        let mut all = vec![db.as_str(), "--timeout=20"];
        all.extend_from_slice(args);
        run("ovn-nbctl", &all)
    }

    pub fn kill9(&mut self, i: usize) {
        self.members[i].server = None;
    }

    pub fn restart(&mut self, i: usize) {
        self.members[i].server = None;
        self.spawn(i);
    }

    fn spawn(&mut self, i: usize) {
        let (remotes, args) = match (self.pki, self.members[i].ssl_port) {
            (Some(pki), Some(port)) => (vec![format!("pssl:{port}:127.0.0.1")], pki.server_args()),
            _ => (Vec::new(), Vec::new()),
        };
        let server = start_server_with(self.dir.path(), &format!("s{i}"), &remotes, &args);
        self.members[i].server = Some(server);
    }
}
