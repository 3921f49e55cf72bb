//! Shutdown as README states it: "SIGTERM/SIGINT stop accepting, finish in-flight calls and
//! exit 0" (SIGTERM's exit code is checked in `server.rs`).

use std::process::{Command, Stdio};
use std::time::Duration;

use ovn_peerd::proto::v1::ListPeeringsRequest;

use crate::support::nb::NbServer;
use crate::support::peerd::TestPeerd;
use crate::support::pg::{free_port, wait_until, TestDb};
use crate::support::process::KillOnDrop;
use ovn_peerd_test_support::wait_until_async;

#[tokio::test]
async fn the_binary_exits_zero_on_sigint_like_sigterm() {
    let (db, nb) = (TestDb::create().await, NbServer::start());
    let Serving {
        mut child,
        guard,
        log,
        ..
    } = Serving::start(&db, &nb);
    let read_log = || log_of(&log);

    // SIGINT (what Ctrl-C sends): a clean stop, exit 0, not death by the signal.
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let exit = child.wait().unwrap();
    std::mem::forget(guard);
    assert!(exit.success(), "exit status {exit:?}\n{}", read_log());
    assert!(read_log().contains("SIGINT"), "{}", read_log());
}

/// SIGHUP to the running binary reaches the NB client and resets its index guard (the
/// operator's action after restoring NB from a backup, README), and the process keeps serving
/// (SIGHUP's default action would end it).
#[tokio::test]
async fn sighup_resets_the_nb_index_guard_of_the_running_binary() {
    let (db, nb) = (TestDb::create().await, NbServer::start());
    let Serving {
        mut child,
        guard: _guard,
        log,
        port,
    } = Serving::start(&db, &nb);
    let read_log = || log_of(&log);
    assert!(!read_log().contains("index guard reset"));

    let sent = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    wait_until(
        "the NB client's guard reset",
        Duration::from_secs(30),
        || read_log().contains("index guard reset"),
    )
    .unwrap_or_else(|e| panic!("{e}:\n{}", read_log()));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended ovn-peerd"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
}

/// A log written to a file (stdout not a terminal) is plain text: no terminal colour codes,
/// which cost CPU on every line (one audit line per create) and garble the file.
#[tokio::test]
async fn a_log_written_to_a_file_has_no_colour_codes() {
    let (db, nb) = (TestDb::create().await, NbServer::start());
    let Serving {
        guard: _guard, log, ..
    } = Serving::start(&db, &nb);
    let text = log_of(&log);
    assert!(text.contains(" INFO "), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in the log:\n{text}");
}

/// The ovn-peerd binary started on `db` and `nb`, serving gRPC on `port` (no metrics
/// listener), its log (stdout) in `log`; killed when `guard` drops.
struct Serving {
    child: std::process::Child,
    guard: KillOnDrop,
    log: tempfile::NamedTempFile,
    port: u16,
}

impl Serving {
    fn start(db: &TestDb, nb: &NbServer) -> Serving {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ovn-peerd"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics-listen",
                "",
            ])
            .env("DATABASE_URL", &db.url)
            .env("OVN_NB_DB", nb.remote())
            .env("RUST_LOG", "info")
            .stdout(log.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ovn-peerd");
        let guard = KillOnDrop(child.id());
        wait_until("ovn-peerd serves", Duration::from_secs(30), || {
            log_of(&log).contains("serving gRPC")
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .unwrap_or_else(|e| panic!("ovn-peerd did not start serving ({e}):\n{}", log_of(&log)));
        Serving {
            child,
            guard,
            log,
            port,
        }
    }
}

fn log_of(log: &tempfile::NamedTempFile) -> String {
    std::fs::read_to_string(log.path()).unwrap_or_default()
}

/// ListPeerings queries of this database waiting for a lock (the held call is in Postgres).
/// Background tasks (the worker, the acceptance sweep) may wait on the lock too: not counted.
async fn lock_waiters(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock' \
           AND query LIKE '%ORDER BY name LIMIT%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_connections_and_finishes_the_call_in_flight() {
    let mut peerd = TestPeerd::start().await;
    let addr = peerd.addr;
    let pool = sqlx::PgPool::connect(&peerd.db.url).await.unwrap();
    // A call held in flight by a table lock: ListPeerings waits on it inside Postgres.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE peerings IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut client = peerd.client().await;
    let call = tokio::spawn(async move {
        client
            .list_peerings(ListPeeringsRequest::default())
            .await
            .map(|r| r.into_inner().peerings.len())
    });
    wait_until_async(
        "the call waiting on the locked table",
        Duration::from_secs(20),
        || async { lock_waiters(&pool).await == 1 },
    )
    .await
    .expect("the call never reached Postgres");

    // Shutdown starts while the call is held.
    let stop = peerd.stop();
    tokio::pin!(stop);
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        r = &mut stop => panic!("stopped while a call was in flight: {r:?}"),
        _ = tokio::time::timeout(Duration::from_secs(20), refused) => {}
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused once shutdown has started"
    );
    assert!(
        !call.is_finished(),
        "the held call ended before its lock was released"
    );

    // Released: the call completes with OK, then the server stops cleanly.
    lock.commit().await.unwrap();
    let listed = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the in-flight call finished")
        .unwrap()
        .expect("the in-flight call succeeded");
    assert_eq!(listed, 0);
    tokio::time::timeout(Duration::from_secs(20), stop)
        .await
        .expect("shutdown finished")
        .expect("run returns Ok on shutdown");
}
