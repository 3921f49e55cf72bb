//! Child processes of tests and the tools they use. The process fixtures themselves live in
//! the `ovn-peerd-test-support` crate (`tests/support/`); re-exported here so tests keep their
//! `support::process::...` paths.

use std::path::PathBuf;

pub use ovn_peerd_test_support::process::{free_port, DieWithParent, KillOnDrop};
pub use ovn_peerd_test_support::wait_until;

/// grpcurl: from scripts/install-deps' venv, else from PATH.
pub fn grpcurl() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin/grpcurl");
    if venv.exists() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("grpcurl"))
            .find(|p| p.exists())
    })
}
