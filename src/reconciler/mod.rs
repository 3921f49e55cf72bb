//! The convergence worker: makes OVN NB hold exactly the rows the peerings in
//! Postgres call for, and reports each peering's state back.
//!
//! It takes no input. Whatever wakes it (a Postgres `NOTIFY` on a desired
//! change, an NB monitor update, a cache resync, the periodic timer), it runs
//! the same pass (`pass`): read desired state, read the NB cache, derive,
//! diff, write the difference, write statuses. A notification naming one
//! peering narrows the pass to that peering; everything else, including the
//! timer, runs it over all of them (`wake`). Only the replica holding the
//! writer lock (`lock`) runs it.

pub(crate) mod derive;
mod lock;
mod pass;
mod translate;
mod wake;

use std::time::Duration;

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{Config, DatabaseUrl};
use crate::ovsdb::{self, CacheEvent};
use crate::store::{PeeringState, Store};

pub use pass::{PassError, PassOutcome, Scope};
use wake::Wake;

/// The worker's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Postgres URL, for the writer lock's own connection.
    pub database_url: DatabaseUrl,
    /// VPCs that can never be peered.
    pub protected_vpcs: Vec<String>,
    /// The periodic full pass.
    pub resync_interval: Duration,
    /// Largest number of NB rows written in one transaction.
    pub max_rows_per_transaction: usize,
}

impl Settings {
    /// From the command line.
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            database_url: config.database_url.clone(),
            protected_vpcs: config.protected_vpcs.clone(),
            resync_interval: config.resync_interval,
            max_rows_per_transaction: 2000,
        }
    }
}

/// The worker. Cheap to clone; [`run_once`](Reconciler::run_once) and
/// [`run_until_idle`](Reconciler::run_until_idle) drive it synchronously (tests).
#[derive(Clone)]
pub struct Reconciler {
    store: Store,
    nb: ovsdb::Client,
    settings: Settings,
    wake: Arc<Wake>,
    /// Told after every pass; [`publish_state_gauges`] then counts peerings by state.
    passed: Arc<tokio::sync::Notify>,
}

/// Backoff after a failed pass or a lost Postgres listener: 100 ms doubling to 10 s.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

impl Reconciler {
    /// A worker over the store and the NB client.
    pub fn new(store: Store, nb: ovsdb::Client, settings: Settings) -> Self {
        Self {
            store,
            nb,
            settings,
            wake: Arc::new(Wake::new()),
            passed: Arc::default(),
        }
    }

    /// One full pass.
    pub async fn run_once(&self) -> Result<PassOutcome, PassError> {
        pass::run(self, Scope::All).await
    }

    /// Passes until one writes nothing (at most `max_passes`); returns the last outcome.
    pub async fn run_until_idle(&self, max_passes: usize) -> Result<PassOutcome, PassError> {
        let mut last = self.run_once().await?;
        for _ in 1..max_passes {
            if last.is_idle() {
                break;
            }
            last = self.run_once().await?;
        }
        Ok(last)
    }

    /// Runs passes whenever woken until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let wake = self.wake.clone();
        wake.full();
        let listeners = CancellationToken::new();
        tokio::spawn(wake_on_postgres(
            self.store.clone(),
            wake.clone(),
            listeners.clone(),
        ));
        tokio::spawn(wake_on_northbound(
            self.nb.subscribe(),
            wake.clone(),
            listeners.clone(),
        ));
        tokio::spawn(publish_state_gauges(
            self.store.clone(),
            self.passed.clone(),
            listeners.clone(),
        ));
        let _stop_listeners = listeners.drop_guard();

        let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
        let mut next_full = tokio::time::Instant::now();
        loop {
            let Some(scope) = wake.take() else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep_until(next_full) => wake.full(),
                }
                continue;
            };
            if scope == Scope::All {
                next_full = tokio::time::Instant::now() + self.settings.resync_interval;
            }
            let started = std::time::Instant::now();
            let result = pass::run(self, scope).await;
            metrics::histogram!(crate::metrics::RECONCILER_PASS_SECONDS)
                .record(started.elapsed().as_secs_f64());
            let next = match result {
                Ok(_) => {
                    metrics::counter!(crate::metrics::RECONCILER_PASSES_TOTAL, "result" => "ok")
                        .increment(1);
                    retry.reset();
                    continue;
                }
                Err(PassError::NbNotSynced) => {
                    metrics::counter!(crate::metrics::RECONCILER_PASSES_TOTAL, "result" => "nb_not_synced")
                        .increment(1);
                    // Not a failure to back off from: run as soon as the cache is in sync.
                    let mut state = self.nb.state();
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = state.wait_for(|s| s.is_synced()) => {}
                    }
                    wake.full();
                    continue;
                }
                Err(e) => {
                    metrics::counter!(crate::metrics::RECONCILER_PASSES_TOTAL, "result" => e.label())
                        .increment(1);
                    let d = retry.next_delay();
                    tracing::warn!(error = %e, retry_in = ?d, "reconciler pass failed");
                    d
                }
            };
            // After a failure: look at everything again, after the backoff.
            wake.full();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(next) => {}
            }
        }
    }
}

/// Holds the writer lock while running the worker; stands by otherwise.
pub async fn run_with_writer_lock(reconciler: Reconciler, shutdown: CancellationToken) {
    loop {
        let Some(mut lock) =
            lock::WriterLock::acquire(reconciler.settings.database_url.expose(), &shutdown).await
        else {
            return;
        };
        let stop = shutdown.child_token();
        tokio::select! {
            _ = reconciler.run(stop.clone()) => {}
            _ = lock.lost() => {}
        }
        stop.cancel();
        if shutdown.is_cancelled() {
            lock.release().await;
            return;
        }
    }
}

/// Wakes the worker on every desired-state change committed in Postgres.
async fn wake_on_postgres(store: Store, wake: Arc<Wake>, stop: CancellationToken) {
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        let listener = tokio::select! {
            _ = stop.cancelled() => return,
            l = store.desired_changes() => l,
        };
        match listener {
            Ok(mut listener) => {
                backoff.reset();
                // A (re)connected listener may have missed notifications: look at all.
                wake.full();
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        // `None`: the connection was lost and is being re-made;
                        // notifications may have been missed, so look anyway.
                        n = listener.try_recv() => match n {
                            Ok(Some(n)) if !n.payload().is_empty() => wake.peering(n.payload()),
                            Ok(_) => wake.full(),
                            Err(e) => {
                                tracing::warn!(error = %e, "postgres listener lost");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen to postgres"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Wakes the worker on NB changes to the tables it reads and on cache resyncs.
async fn wake_on_northbound(
    mut events: broadcast::Receiver<CacheEvent>,
    wake: Arc<Wake>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            e = events.recv() => match e {
                Ok(CacheEvent::Disconnected) => {}
                Ok(CacheEvent::Changed(changes)) => wake.nb_changed(&changes),
                // A resync, or missed events (lagged): look at everything again.
                Ok(CacheEvent::Resynced) | Err(broadcast::error::RecvError::Lagged(_)) => wake.full(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// Sets the peerings-by-state gauges from Postgres each time a pass ends, until `stop`.
///
/// A task of its own, so that the count (~10 ms at 10,000 peerings) never delays the next
/// pass; passes that end while it counts are folded into one more count, which reads
/// everything they committed.
async fn publish_state_gauges(
    store: Store,
    passed: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = passed.notified() => {}
        }
        let counts = match store.peering_count_by_state().await {
            Ok(c) => c,
            Err(e) => {
                // The next pass tries again; a stale gauge is not worth more.
                tracing::warn!(error = %e, "cannot count peerings by state");
                continue;
            }
        };
        for state in [
            PeeringState::Pending,
            PeeringState::Active,
            PeeringState::Failed,
            PeeringState::Deleting,
        ] {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            metrics::gauge!(crate::metrics::PEERINGS, "state" => state.as_str()).set(n as f64);
        }
    }
}
