//! The `ovn-peerd` binary: parse configuration, serve until SIGTERM/SIGINT.

use clap::Parser;
use tokio_util::sync::CancellationToken;

use ovn_peerd::config::Config;
use ovn_peerd::startup::Application;

/// `--features jemalloc`: jemalloc instead of glibc malloc (see `ovn_peerd::heap`).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read before `main`: a background thread hands pages freed 1 s ago back
/// to the system (dirty, then at once unmapped rather than kept "muzzy"), as glibc's trims do.
#[cfg(feature = "jemalloc")]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: ovn_peerd::heap::MallocConf = ovn_peerd::heap::MallocConf::new(
    c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0",
);

fn main() -> std::process::ExitCode {
    ovn_peerd::heap::tune();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(serve()),
        Err(e) => {
            eprintln!("ovn-peerd: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> std::process::ExitCode {
    let config = Config::parse();
    ovn_peerd::telemetry::init(config.log_format);
    if let Some(addr) = config.metrics_listen {
        if let Err(e) = ovn_peerd::metrics::install(addr) {
            tracing::error!(error = ?e, %addr, "cannot serve metrics");
            return std::process::ExitCode::FAILURE;
        }
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    // Start-up waits for Postgres; a signal meanwhile stops it cleanly too.
    let built = tokio::select! {
        built = Application::build(config) => built,
        _ = shutdown.cancelled() => return std::process::ExitCode::SUCCESS,
    };
    let result = match built {
        Ok(app) => app.run(shutdown).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = ?e, "ovn-peerd failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
