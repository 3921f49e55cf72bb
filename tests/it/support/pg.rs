//! Postgres for tests.
//!
//! [`TestDb`] gives each test a fresh database: in the sandbox's cluster when
//! `OVN_PEERD_TEST_PG` names one (what `scripts/test` does), otherwise in a
//! private throwaway cluster. [`PgCluster`] is a throwaway cluster of the
//! test's own, for tests that stop and restart Postgres.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::Connection;

pub use super::process::{free_port, poll as wait_until};

/// The env var naming an admin URL of a running cluster.
pub const ADMIN_URL_ENV: &str = "OVN_PEERD_TEST_PG";

/// A fresh database, dropped when the test ends.
pub struct TestDb {
    /// URL of the fresh database.
    pub url: String,
    admin_url: String,
    name: String,
    _private: Option<PgCluster>,
}

impl TestDb {
    /// Creates a fresh, empty database.
    pub async fn create() -> TestDb {
        match std::env::var(ADMIN_URL_ENV) {
            Ok(url) if !url.is_empty() => Self::create_with(url, None).await,
            _ => {
                let cluster = PgCluster::start();
                Self::create_with(cluster.admin_url(), Some(cluster)).await
            }
        }
    }

    /// Creates a fresh database in the cluster at `admin_url`.
    pub async fn create_in(admin_url: &str) -> TestDb {
        Self::create_with(admin_url.to_string(), None).await
    }

    async fn create_with(admin_url: String, private: Option<PgCluster>) -> TestDb {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach test Postgres at {admin_url}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = with_database(&admin_url, &name);
        TestDb {
            url,
            admin_url,
            name,
            _private: private,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self._private.is_some() {
            return; // the whole cluster goes
        }
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Drop cannot await: use a short-lived runtime on another thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    format!("{base}/{db}{query}")
}

/// A throwaway Postgres cluster owned by one test; stopped (by pid) on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    user: String,
}

impl PgCluster {
    /// initdb + start, as the `postgres` user when running as root (~1 s).
    pub fn start() -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("ovn-peerd-pg-")
            .tempdir()
            .expect("tempdir");
        let as_root = is_root();
        let user = if as_root {
            "postgres".to_string()
        } else {
            std::env::var("USER").unwrap_or_else(|_| "postgres".into())
        };
        let data = dir.path().join("data");
        if as_root {
            chown_to_postgres(dir.path());
        }
        let status = pg_command("initdb", as_root)
            .args(["-D"])
            .arg(&data)
            .args(["-U", &user, "-A", "trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        let port = free_port();
        let mut cluster = PgCluster {
            dir,
            port,
            child: None,
            user,
        };
        cluster.restart();
        cluster
    }

    /// An admin URL (database `postgres`).
    pub fn admin_url(&self) -> String {
        format!("postgres://{}@127.0.0.1:{}/postgres", self.user, self.port)
    }

    /// SIGKILLs the postmaster (its children exit when it goes).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // Orphaned backends notice within a moment; wait for the port to close.
            wait_until(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
            });
        }
    }

    /// Starts the postmaster again on the same data and port and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join(format!("pg-{}.log", self.port)))
            .expect("log file");
        let child = pg_command("postgres", is_root())
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(self.dir.path())
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let port = self.port;
        // An open port is not enough ("the database system is starting up"):
        // wait until the server accepts connections.
        let ready = wait_until(Duration::from_secs(30), || {
            Command::new(pg_bin("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(
            ready,
            "postgres did not start; see {}",
            self.dir.path().display()
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_root() -> bool {
    // SAFETY-free: geteuid via the id command would spawn; read /proc instead.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|v| v.join("bin").join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn pg_command(name: &str, as_root: bool) -> Command {
    let mut cmd = Command::new(pg_bin(name));
    if as_root {
        let (uid, gid) = postgres_ids();
        cmd.uid(uid).gid(gid);
        cmd.env("HOME", "/tmp");
    }
    cmd
}

fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("no postgres user: run scripts/install-deps");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

fn chown_to_postgres(path: &Path) {
    let status = Command::new("chown")
        .arg("-R")
        .arg("postgres:postgres")
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success());
}
