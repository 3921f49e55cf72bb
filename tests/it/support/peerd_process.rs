//! ovn-peerd as a separate process (the built binary), for tests that `kill -9` it or run
//! several replicas. Its log (stdout) goes to a file in a temp dir the fixture owns.
#![allow(dead_code)] // shared by several test modules; not all use every helper

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::{free_port, wait_until, DieWithParent, KillOnDrop};

/// A running `ovn-peerd` binary; SIGKILLed by pid on drop.
pub struct PeerdProcess {
    pub port: u16,
    child: Option<Child>,
    guard: Option<KillOnDrop>,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl PeerdProcess {
    /// Starts the binary over `database_url` and `nb_remote` with the worker on, and waits
    /// until it serves gRPC.
    pub fn start(database_url: &str, nb_remote: &str) -> PeerdProcess {
        Self::start_with_args(database_url, nb_remote, &[])
    }

    /// As [`PeerdProcess::start`], with more flags; one of ours given in `extra` (e.g.
    /// `--metrics-listen ADDR`) replaces ours, as clap refuses a flag given twice.
    pub fn start_with_args(database_url: &str, nb_remote: &str, extra: &[&str]) -> PeerdProcess {
        let dir = tempfile::Builder::new()
            .prefix("peerd-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("peerd.log");
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_ovn-peerd"))
            .args(
                [
                    ["--listen", &format!("127.0.0.1:{port}")],
                    ["--metrics-listen", ""],
                    ["--resync-interval-secs", "300"],
                ]
                .iter()
                .filter(|[flag, _]| !extra.contains(flag))
                .flatten(),
            )
            .args(extra)
            .env("DATABASE_URL", database_url)
            .env("OVN_NB_DB", nb_remote)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::null())
            .die_with_parent()
            .spawn()
            .expect("spawn ovn-peerd");
        let guard = KillOnDrop(child.id());
        let p = PeerdProcess {
            port,
            child: Some(child),
            guard: Some(guard),
            dir,
            log,
        };
        // It binds before migrating; "serving gRPC" comes after migrations.
        if let Err(e) = wait_until("ovn-peerd to serve gRPC", Duration::from_secs(30), || {
            p.log().contains("serving gRPC")
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }) {
            panic!("{e}:\n{}", p.log());
        }
        p
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it logged that it took the writer lock.
    pub fn holds_writer_lock(&self) -> bool {
        self.log().contains("writer lock taken")
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) to the process.
    pub fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) on a pid we own; no memory is shared.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// `kill -9`, and reap it.
    pub fn kill9(&mut self) {
        self.guard.take(); // sends SIGKILL by pid
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for PeerdProcess {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "ovn-peerd log ({}):\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}
