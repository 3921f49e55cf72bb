//! Health reporting through the standard gRPC health service.
//!
//! - `""` and `ovnpeerd.v1.PeeringService`: SERVING only while Postgres answers.
//! - `ovnpeerd.v1.OvnNorthbound`: SERVING while the NB connection is up and its
//!   cache is in sync with the server.
//! - `ovnpeerd.v1.Reconciler` (replicas running the worker): NOT_SERVING while the
//!   mass-deletion brake holds a pass back; SERVING otherwise.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::ovsdb::ConnectionState;
use crate::store::Store;

/// Health service name of the API (also reported as the server's overall health).
pub const API_SERVICE: &str = "ovnpeerd.v1.PeeringService";
/// Health service name reporting the OVN Northbound connection.
pub const NB_SERVICE: &str = "ovnpeerd.v1.OvnNorthbound";

/// Health service name reporting the worker's mass-deletion brake.
pub const RECONCILER_SERVICE: &str = "ovnpeerd.v1.Reconciler";

/// How often Postgres is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long one probe may take before Postgres counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Registers every service as NOT_SERVING before the server answers: tonic's reporter starts
/// with `""` SERVING and the others unknown (NOT_FOUND), which would say "healthy" before
/// Postgres was ever reached and race with the first probes.
pub async fn register_not_serving(reporter: &HealthReporter) {
    for service in ["", API_SERVICE, NB_SERVICE] {
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
}

/// Probes Postgres every second and reports the API's health until cancelled.
pub async fn watch_postgres(store: Store, reporter: HealthReporter, shutdown: CancellationToken) {
    let mut last = None;
    loop {
        let ok = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await,
            Ok(Ok(()))
        );
        if last != Some(ok) {
            let status = if ok {
                tracing::info!("postgres reachable: serving");
                ServingStatus::Serving
            } else {
                tracing::warn!("postgres unreachable: not serving");
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            reporter.set_service_status(API_SERVICE, status).await;
            metrics::gauge!("ovn_peerd_postgres_up").set(if ok { 1.0 } else { 0.0 });
            last = Some(ok);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

/// Reports the NB connection's health from the client's state until cancelled.
pub async fn watch_northbound(
    mut state: watch::Receiver<ConnectionState>,
    reporter: HealthReporter,
    shutdown: CancellationToken,
) {
    loop {
        let ok = state.borrow_and_update().is_synced();
        let status = if ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status(NB_SERVICE, status).await;
        metrics::gauge!("ovn_peerd_northbound_up").set(if ok { 1.0 } else { 0.0 });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}

/// Reports the worker's mass-deletion brake (`Some(why)` while it holds a pass
/// back) until cancelled.
pub async fn watch_mass_deletion(
    mut blocked: watch::Receiver<Option<String>>,
    reporter: HealthReporter,
    shutdown: CancellationToken,
) {
    loop {
        let status = match &*blocked.borrow_and_update() {
            Some(_) => ServingStatus::NotServing,
            None => ServingStatus::Serving,
        };
        reporter
            .set_service_status(RECONCILER_SERVICE, status)
            .await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = blocked.changed() => if changed.is_err() { return },
        }
    }
}
