//! Child processes of tests and the tools they use.

use std::path::PathBuf;

/// SIGKILLs a pid when dropped (a test's child, even when the test panics).
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

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
