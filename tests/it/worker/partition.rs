//! A real network partition between the writer-lock holder and Postgres (root only).
//!
//! Postgres runs in a network namespace of this test, reachable from the host over a veth
//! pair (TCP) and, for everyone but the holder, over its Unix socket (a path in the
//! filesystem, so it crosses namespaces). Setting the namespace's end of the veth down cuts
//! the holder's TCP session without closing it: no FIN, no RST, just silence, as when a
//! switch or a host in between fails. The holder must notice on its own (heartbeat) and
//! Postgres must free the lock on its own (the session's keepalives), so a standby takes over.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ovn_peerd::ovsdb::{Client, ClientConfig};
use ovn_peerd::reconciler::{self, Reconciler, Settings};
use ovn_peerd::store::Store;
use tokio_util::sync::CancellationToken;

use super::eventually;
use crate::support::nb::NbServer;
use crate::support::ovn::skip_unless_root;
use crate::support::peerd::{test_config, Options};

const PG_PORT: u16 = 5432;

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pg_bin(name: &str) -> String {
    let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("postgres installed")
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("postgres binary")
        .display()
        .to_string()
}

/// Postgres in a namespace of its own, with a veth to the host; all removed on drop.
struct PartitionablePg {
    dir: tempfile::TempDir,
    netns: String,
    host_if: String,
    ns_if: String,
    ns_addr: String,
    postgres: Option<Child>,
}

impl PartitionablePg {
    fn start() -> PartitionablePg {
        let n = uuid::Uuid::new_v4().as_bytes()[0];
        let tag = format!("{}{n:02x}", std::process::id() % 10_000);
        let (netns, host_if, ns_if) = (
            format!("pdpart{tag}"),
            format!("pph{tag}"),
            format!("ppn{tag}"),
        );
        let (host_addr, ns_addr) = (format!("10.239.{n}.1"), format!("10.239.{n}.2"));
        let dir = tempfile::Builder::new()
            .prefix("pd-part-")
            .tempdir()
            .unwrap();
        run(
            "chown",
            &["-R", "postgres:postgres", dir.path().to_str().unwrap()],
        );
        let mut pg = PartitionablePg {
            dir,
            netns: netns.clone(),
            host_if: host_if.clone(),
            ns_if: ns_if.clone(),
            ns_addr: ns_addr.clone(),
            postgres: None,
        };
        run("ip", &["netns", "add", &netns]);
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
        );
        run("ip", &["link", "set", &ns_if, "netns", &netns]);
        run(
            "ip",
            &["addr", "add", &format!("{host_addr}/30"), "dev", &host_if],
        );
        run("ip", &["link", "set", &host_if, "up"]);
        pg.in_ns(&["ip", "addr", "add", &format!("{ns_addr}/30"), "dev", &ns_if]);
        pg.in_ns(&["ip", "link", "set", &ns_if, "up"]);
        pg.in_ns(&["ip", "link", "set", "lo", "up"]);

        let data = pg.dir.path().join("data");
        let status = Command::new(pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .uid(postgres_uid())
            .gid(postgres_gid())
            .env("HOME", "/tmp")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb");
        assert!(status.success(), "initdb");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 10.239.0.0/16 trust\n",
        )
        .unwrap();
        let log = std::fs::File::create(pg.dir.path().join("pg.log")).unwrap();
        // `ip netns exec` and `setpriv` both exec: the pid we hold is the postmaster's.
        let child = Command::new("ip")
            .args(["netns", "exec", &netns, "setpriv", "--reuid=postgres"])
            .args(["--regid=postgres", "--init-groups", &pg_bin("postgres")])
            .arg("-D")
            .arg(&data)
            .args(["-p", &PG_PORT.to_string(), "-h", &ns_addr, "-k"])
            .arg(pg.dir.path())
            .args(["-c", "fsync=off"])
            .env("HOME", "/tmp")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres in its namespace");
        pg.postgres = Some(child);
        // The socket appears before the server accepts connections: ask it.
        let isready = pg_bin("pg_isready");
        let sock_dir = pg.dir.path().display().to_string();
        crate::support::process::wait_until(
            "postgres accepts connections",
            Duration::from_secs(30),
            || {
                Command::new(&isready)
                    .args(["-q", "-h", &sock_dir, "-p", &PG_PORT.to_string()])
                    .status()
                    .is_ok_and(|s| s.success())
            },
        )
        .unwrap_or_else(|e| panic!("postgres did not start in {sock_dir}: {e}"));
        pg
    }

    fn in_ns(&self, cmd: &[&str]) {
        let mut args = vec!["netns", "exec", &self.netns];
        args.extend_from_slice(cmd);
        run("ip", &args);
    }

    /// Over TCP through the veth (what the partition cuts).
    fn tcp_url(&self, db: &str) -> String {
        format!("postgres://postgres@{}:{PG_PORT}/{db}", self.ns_addr)
    }

    /// Over the Unix socket (what the partition leaves alone).
    fn unix_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@localhost:{PG_PORT}/{db}?host={}",
            self.dir.path().display()
        )
    }

    /// Silence on the TCP path: nothing gets through, nothing is closed.
    fn partition(&self) {
        self.in_ns(&["ip", "link", "set", &self.ns_if, "down"]);
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PartitionablePg {
    fn drop(&mut self) {
        if let Some(mut c) = self.postgres.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn passwd_field(i: usize) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("postgres user");
    line.split(':').nth(i).unwrap().parse().unwrap()
}
fn postgres_uid() -> u32 {
    passwd_field(2)
}
fn postgres_gid() -> u32 {
    passwd_field(3)
}

async fn replica(database_url: &str, nb: &NbServer) -> Reconciler {
    let store = Store::connect_lazy(database_url).unwrap();
    let client = Client::start(
        ClientConfig::new(&nb.remote(), ovn_peerd::startup::NB_DATABASE)
            .unwrap()
            .with_owner_key(ovn_peerd::peering::PEERING_KEY),
    )
    .unwrap();
    client.wait_synced(Duration::from_secs(10)).await.unwrap();
    let id = store.deployment_get().await.expect("deployment").id;
    let config = test_config(database_url, &nb.remote(), &Options::default());
    Reconciler::new(store, client, Settings::from_config(&config, id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_holder_stops_and_postgres_frees_its_lock_for_a_standby() {
    if !skip_unless_root("a_partitioned_holder_stops_and_postgres_frees_its_lock_for_a_standby") {
        return;
    }
    let pg = PartitionablePg::start();
    let admin = pg.unix_url("postgres");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("postgres in {}: {e}", pg.dir().display()));
    sqlx::query("CREATE DATABASE peerd")
        .execute(&mut conn)
        .await
        .unwrap();
    Store::connect_lazy(&pg.unix_url("peerd"))
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let nb = NbServer::start();

    // A reaches Postgres over TCP (its pool and its lock session); B over the socket.
    let a = replica(&pg.tcp_url("peerd"), &nb).await;
    let b = replica(&pg.unix_url("peerd"), &nb).await;
    let shutdown = CancellationToken::new();
    let run_a = tokio::spawn(reconciler::run_with_writer_lock(
        a.clone(),
        shutdown.clone(),
    ));
    eventually("A holds the lock", Duration::from_secs(20), || async {
        (a.writer_epoch() == Some(1)).then_some(())
    })
    .await;
    let run_b = tokio::spawn(reconciler::run_with_writer_lock(
        b.clone(),
        shutdown.clone(),
    ));

    pg.partition();
    let cut = Instant::now();
    eventually(
        "A notices on its own and stops its worker",
        Duration::from_secs(20),
        || async { a.writer_epoch().is_none().then_some(()) },
    )
    .await;
    let a_stopped = cut.elapsed();
    // Without the session's keepalives Postgres would hold A's lock for as long as the
    // kernel's default keepalive (2 h): B would never get it.
    eventually(
        "Postgres frees A's lock and B takes over",
        Duration::from_secs(60),
        || async { (b.writer_epoch() == Some(2)).then_some(()) },
    )
    .await;
    eprintln!(
        "partition → A stopped after {a_stopped:?}, B took over after {:?}",
        cut.elapsed()
    );
    assert_eq!(a.writer_epoch(), None);

    shutdown.cancel();
    run_b.await.unwrap();
    // A may be stuck connecting through the partition: bounded, but do not wait for it.
    run_a.abort();
}
