//! A throwaway Postgres cluster (initdb + postgres in a temp dir, as the `postgres` user when
//! we are root: both refuse to run as root), with one fresh database per bench phase.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::Connection;

use super::proc::Owned;

pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    user: String,
    // Dropped in this order: the postmaster first, then its directory.
    _postmaster: Owned,
    _tmp: tempfile::TempDir,
}

impl PgCluster {
    /// `fsync=off` as in the integration tests: we measure ovn-peerd, not the disk.
    pub fn start() -> PgCluster {
        // Its own temp dir: the `postgres` user must be able to enter it.
        let tmp = tempfile::Builder::new()
            .prefix("peering-bench-pg-")
            .tempdir()
            .expect("pg temp dir");
        let dir = tmp.path().to_path_buf();
        let root = is_root();
        let user = if root {
            "postgres".to_string()
        } else {
            std::env::var("USER").unwrap_or_else(|_| "postgres".into())
        };
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(ok.success(), "chown of the pg dir failed");
        }
        let data = dir.join("data");
        let ok = pg_command("initdb", root)
            .arg("-D")
            .arg(&data)
            .args(["-U", &user, "-A", "trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb (install postgresql: scripts/install-deps)");
        assert!(ok.success(), "initdb failed");
        let port = super::free_port();
        let log = std::fs::File::create(dir.join("postgres.log")).expect("pg log");
        let child = pg_command("postgres", root)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&dir)
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let postmaster = Owned::new("postgres", child);
        super::wait_until("postgres", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        PgCluster {
            dir,
            _tmp: tmp,
            port,
            user,
            _postmaster: postmaster,
        }
    }

    pub fn pid(&self) -> u32 {
        self._postmaster.pid()
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://{}@127.0.0.1:{}/{db}", self.user, self.port)
    }

    /// A fresh, empty database; returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        // The postmaster accepts TCP a moment before it accepts logins.
        let mut conn = None;
        for _ in 0..200 {
            match sqlx::PgConnection::connect(&self.url("postgres")).await {
                Ok(c) => {
                    conn = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let mut conn =
            conn.unwrap_or_else(|| panic!("postgres in {} never answered", self.dir.display()));
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

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn pg_command(name: &str, as_root: bool) -> Command {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    let bin = versions
        .into_iter()
        .rev()
        .map(|v| v.join("bin").join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name));
    let mut cmd = Command::new(bin);
    if as_root {
        let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
        let line = passwd
            .lines()
            .find(|l| l.starts_with("postgres:"))
            .expect("no postgres user: run scripts/install-deps");
        let f: Vec<&str> = line.split(':').collect();
        cmd.uid(f[2].parse().unwrap()).gid(f[3].parse().unwrap());
        cmd.env("HOME", "/tmp");
    }
    cmd
}
