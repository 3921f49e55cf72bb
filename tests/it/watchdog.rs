//! A per-test time limit for this binary, so that a hung test fails fast instead of holding
//! CI until its global limit. `cargo test` has none (libtest only prints "has been running
//! for over 60 seconds"), and CI runs `cargo test`, not nextest.
//!
//! A thread started with the binary (from `.init_array`, before `main`) looks every second at
//! this process's threads in `/proc/self/task`: libtest runs each test on a thread named after
//! it, so a thread that is neither the main thread nor a tokio worker and has lived longer
//! than the limit is a test that hangs. It then prints which and exits with 101 (a failed
//! run), like a failed test would. The limit is `OVN_PEERD_TEST_TIMEOUT_SECS` (default 600 s:
//! well above the slowest test on a loaded 2-core machine); 0 disables it.

use std::time::Duration;

/// Default per-test limit.
const DEFAULT_LIMIT: Duration = Duration::from_secs(600);
/// The env var that changes it.
pub const LIMIT_ENV: &str = "OVN_PEERD_TEST_TIMEOUT_SECS";

#[used]
#[link_section = ".init_array"]
static START: extern "C" fn() = start;

extern "C" fn start() {
    let limit = match std::env::var(LIMIT_ENV) {
        Ok(s) => match s.parse::<u64>() {
            Ok(0) => return,
            Ok(n) => Duration::from_secs(n),
            Err(_) => DEFAULT_LIMIT,
        },
        Err(_) => DEFAULT_LIMIT,
    };
    // `--list` and the like start no test: nothing to watch, but harmless either way.
    let _ = std::thread::Builder::new()
        .name("test-watchdog".into())
        .spawn(move || watch(limit));
}

fn watch(limit: Duration) {
    let main_tid = std::process::id().to_string();
    let ticks = clock_ticks();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(now) = uptime() else { continue };
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            continue;
        };
        for task in tasks.flatten() {
            let tid = task.file_name().to_string_lossy().into_owned();
            if tid == main_tid {
                continue;
            }
            let dir = task.path();
            let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
                continue;
            };
            let name = name.trim_end();
            if name.starts_with("tokio-") || name == "test-watchdog" {
                continue;
            }
            let Some(started) = std::fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|s| start_ticks(&s))
            else {
                continue;
            };
            let age = now - started as f64 / ticks;
            if age > limit.as_secs_f64() {
                eprintln!(
                    "\nwatchdog: test thread {name:?} (thread names are cut to 15 bytes; libtest \
                     printed the full name as running for over 60 seconds) has run for {age:.0} s, \
                     over the per-test limit of {} s ({LIMIT_ENV}): failing the run",
                    limit.as_secs()
                );
                std::process::exit(101);
            }
        }
    }
}

/// Seconds since boot.
fn uptime() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A task's start time in clock ticks since boot (`/proc/PID/task/TID/stat` field 22; the
/// name in field 2 may hold spaces and parentheses, so count from the last `)`).
fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as f64
    } else {
        100.0
    }
}

/// Not run by default: what the next test starts with a short limit.
#[test]
#[ignore = "hangs on purpose: run by a_hung_test_fails_the_run_fast"]
fn hangs_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[test]
fn a_hung_test_fails_the_run_fast() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "watchdog::hangs_forever"])
        .env(LIMIT_ENV, "2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run this test binary");
    let guard = crate::support::process::KillOnDrop(child.id());
    // A bound that tells "stopped by the watchdog" from "still sleeping", not a timing claim.
    crate::support::pg::wait_until(
        "the watchdog stops the hung test",
        Duration::from_secs(120),
        || matches!(child.try_wait(), Ok(Some(_))),
    )
    .unwrap_or_else(|e| panic!("the hung test was not stopped: {e}"));
    std::mem::forget(guard);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "{stderr}");
    assert!(
        stderr.contains("over the per-test limit of 2 s"),
        "{stderr}"
    );
}
