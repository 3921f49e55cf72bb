//! Tests that cannot run here (no root) say so where CI shows it.
//!
//! libtest captures what a passing test prints with `eprintln!`, so a skipped test would look
//! exactly like a passing one. [`skip_unless_root`] writes its line straight to the process's
//! stderr (not through the capture) with a `SKIPPED` marker, and the first skip registers an
//! exit hook that prints one summary line, `N test(s) SKIPPED ...`, after libtest's own result.

use std::io::Write;
use std::sync::Mutex;

use crate::process::is_root;

static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn summary() {
    let skipped = SKIPPED.lock().map(|v| v.clone()).unwrap_or_default();
    if !skipped.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "\n{} test(s) SKIPPED (need root): {}",
            skipped.len(),
            skipped.join(", ")
        );
    }
}

/// Records that `test` was skipped because of `reason`, visibly (see the module doc).
pub fn skip(test: &str, reason: &str) {
    let mut skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    if skipped.is_empty() {
        // SAFETY: registers a plain extern "C" fn with no arguments; it runs at exit, when
        // libtest returns from main (pass) or calls `process::exit` (failure).
        unsafe { libc::atexit(summary) };
    }
    skipped.push(test.to_string());
    // Straight to fd 2: `eprintln!` would be captured and hidden for a passing test.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// Returns false, after [`skip`]ping visibly, when not root: call first and return early.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(
        test,
        "needs root (userspace OVS datapath, network namespaces)",
    );
    false
}
