//! Tracing set-up: text or JSON lines, levels from `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops).
///
/// Text lines carry terminal colour codes only when stdout is a terminal: a log written to a
/// file or a pipe (a service manager, a container runtime) gets plain text, which is also
/// cheaper to write (the colour codes were ~1.4% of ovn-peerd's CPU in a 10,000-create
/// bulk: one audit line per create; README, *ovn-peerd's own CPU per peering*).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::stdout().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
