//! Postgres for tests and benches.
//!
//! [`TestDb`] gives each test a fresh database: in the cluster `OVN_PEERD_TEST_PG` names (what
//! `scripts/test` does), otherwise in a private throwaway cluster. [`PgCluster`] is a
//! throwaway cluster of the caller's own (`initdb` + `postgres` in a temp dir, as the
//! `postgres` user when we are root: both refuse to run as root), for tests that stop and
//! restart Postgres and for the benches.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::Connection;

use crate::process::{free_port, is_root, Owned};
use crate::wait_until;

/// The env var naming an admin URL of a running cluster.
pub const ADMIN_URL_ENV: &str = "OVN_PEERD_TEST_PG";

/// `CREATE DATABASE` options for [`TestDb::create_en_us`].
const EN_US: &str =
    " TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US-u-ka-shifted' LOCALE 'C.UTF-8'";

/// A fresh database, dropped when the test ends.
pub struct TestDb {
    /// URL of the fresh database.
    pub url: String,
    admin_url: String,
    name: String,
    private: Option<PgCluster>,
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

    /// Creates a fresh, empty database whose default collation is English as glibc's
    /// `en_US.UTF-8` sorts it (what a stock `postgres` image gives): punctuation such as '-'
    /// is ignored at the first level, so `least('core-hub', 'core2')` is `'core2'` and
    /// `'pa' < 'p-b'`, unlike byte order. ICU's `en-US-u-ka-shifted`, so it needs no OS locale.
    pub async fn create_en_us() -> TestDb {
        match std::env::var(ADMIN_URL_ENV) {
            Ok(url) if !url.is_empty() => Self::create_with_options(url, None, EN_US).await,
            _ => {
                let cluster = PgCluster::start();
                Self::create_with_options(cluster.admin_url(), Some(cluster), EN_US).await
            }
        }
    }

    /// Creates a fresh database in the cluster at `admin_url`.
    pub async fn create_in(admin_url: &str) -> TestDb {
        Self::create_with(admin_url.to_string(), None).await
    }

    async fn create_with(admin_url: String, private: Option<PgCluster>) -> TestDb {
        Self::create_with_options(admin_url, private, "").await
    }

    async fn create_with_options(
        admin_url: String,
        private: Option<PgCluster>,
        options: &str,
    ) -> TestDb {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach test Postgres at {admin_url}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}{options}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = with_database(&admin_url, &name);
        TestDb {
            url,
            admin_url,
            name,
            private,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.private.is_some() {
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

/// A throwaway Postgres cluster; the postmaster is killed (by pid) on drop, then its directory
/// goes. `fsync=off`: tests and benches measure ovn-peerd, not the disk.
pub struct PgCluster {
    // Dropped in this order: the postmaster first, then its directory.
    postmaster: Owned,
    port: u16,
    user: String,
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// initdb + start, and waits until it accepts connections (~1 s).
    pub fn start() -> PgCluster {
        // Its own temp dir: the `postgres` user must be able to enter it.
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
        if as_root {
            chown_to_postgres(dir.path());
        }
        let status = pg_command("initdb", as_root)
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", &user, "-A", "trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb (install postgresql: scripts/install-deps)");
        assert!(status.success(), "initdb failed");
        let mut cluster = PgCluster {
            postmaster: Owned {
                name: "postgres",
                child: None,
            },
            port: free_port(),
            user,
            dir,
        };
        cluster.restart();
        cluster
    }

    /// An admin URL (database `postgres`).
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// The URL of database `db` in this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{}@127.0.0.1:{}/{db}", self.user, self.port)
    }

    /// The postmaster's pid (0 while stopped).
    pub fn pid(&self) -> u32 {
        self.postmaster.pid()
    }

    /// SIGKILLs the postmaster and waits until its port is closed (orphaned backends notice
    /// within a moment).
    pub fn kill(&mut self) {
        if self.postmaster.child.is_some() {
            self.postmaster.kill();
            let port = self.port;
            wait_until(
                "postgres to close its port",
                Duration::from_secs(10),
                || std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Starts the postmaster again on the same data and port and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.postmaster.child.is_none(), "already running");
        let dir = self.dir.path();
        let log =
            std::fs::File::create(dir.join(format!("pg-{}.log", self.port))).expect("log file");
        self.postmaster = Owned::spawn(
            "postgres",
            pg_command("postgres", is_root())
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
                .arg(dir)
                .args(["-c", "fsync=off", "-c", "max_connections=200"])
                .stdout(Stdio::null())
                .stderr(log),
        );
        // An open port is not enough ("the database system is starting up"):
        // wait until the server accepts connections.
        let port = self.port;
        wait_until(
            "postgres to accept connections",
            Duration::from_secs(30),
            || {
                Command::new(pg_bin("pg_isready"))
                    .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success())
            },
        )
        .unwrap_or_else(|e| panic!("{e}; see {}", dir.display()));
    }

    /// A fresh, empty database `name` (dropped first if it exists); returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url())
            .await
            .unwrap_or_else(|e| panic!("postgres in {}: {e}", self.dir.path().display()));
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .expect("drop database");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        self.url(name)
    }
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
