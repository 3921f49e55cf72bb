//! Tracing output in tests, off unless asked for (zero2prod's `TEST_LOG`).
//!
//! A test run prints no log lines by default: they would drown the one failure that matters.
//! `TEST_LOG=1 cargo test ...` installs a subscriber that writes through libtest's capture (so
//! a passing test's lines still stay hidden unless `--nocapture`), with levels from `RUST_LOG`
//! (default `info`).

use std::sync::Once;

use tracing_subscriber::EnvFilter;

/// The variable that turns test logs on (any value but empty or `0`).
pub const TEST_LOG_ENV: &str = "TEST_LOG";

/// Whether `TEST_LOG` asks for logs.
pub fn wanted() -> bool {
    std::env::var_os(TEST_LOG_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Installs the test subscriber once per process when [`wanted`]; otherwise does nothing, so
/// tracing events go nowhere. Call at the start of every fixture that runs ovn-peerd code.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if wanted() {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}
