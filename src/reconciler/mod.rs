//! The convergence worker: makes OVN NB hold exactly the rows the peerings in
//! Postgres call for, and reports each peering's state back.
//!
//! It takes no input. Whatever wakes it (a Postgres `NOTIFY` on a desired
//! change, an NB monitor update, a cache resync, the periodic timer), it runs
//! the same pass (`pass`): read desired state, read the NB cache, derive,
//! diff, write the difference, write statuses (while the next pass already runs:
//! `report`). A notification naming one
//! peering narrows the pass to that peering and the other peerings of its two
//! VPCs (their verdicts may depend on it); everything else, including the
//! timer, runs it over all of them (`wake`). Only the replica holding the
//! writer lock (`lock`) runs it, and every NB transaction it sends asserts
//! that it still does (`fence`). Its intervals and backoffs: `timing`.

mod actual;
mod batch;
pub(crate) mod derive;
pub mod fence;
mod lock;
mod narrow;
mod nb_scope;
mod pass;
mod report;
pub mod timing;
#[doc(hidden)] // public for the integration tests of its guards
pub mod translate;
mod wake;
mod write;

use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::config::{Config, DatabaseUrl};
use crate::ovsdb::{self, CacheEvent};
use crate::store::{PeeringState, Store};

use fence::Fence;
pub use lock::{WriterLock, LOCK_APPLICATION_NAME};
pub use pass::{PassError, PassOutcome, Scope};
use timing::{AFTER_LOSS_DELAY, LISTEN_WAIT, RETRY_MAX, RETRY_MIN, STATE_GAUGES_EVERY};
use wake::Wake;

/// A narrow pass judging at least this many peerings (a bulk insert's) is followed by a heap
/// trim, as every full pass is; a lone create's pass is not worth one.
const LARGE_PASS: usize = 1000;

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
    /// This deployment's id (Postgres `deployment.id`): names its NB fence and
    /// marks its NB rows (`ovn-peerd:instance`).
    pub deployment_id: Uuid,
    /// Let a pass delete more than half of this deployment's NB rows.
    pub allow_mass_deletion: bool,
}

impl Settings {
    /// From the command line and the deployment's id as Postgres holds it
    /// ([`Store::deployment_get`]).
    pub fn from_config(config: &Config, deployment_id: Uuid) -> Settings {
        Settings {
            deployment_id,
            database_url: config.database_url.clone(),
            protected_vpcs: config.protected_vpcs.clone(),
            resync_interval: config.resync_interval,
            max_rows_per_transaction: MAX_ROWS_PER_TRANSACTION,
            allow_mass_deletion: config.allow_mass_deletion,
        }
    }
}

/// NB rows a transaction of the worker carries at most (25 new peerings; a peering is never
/// split). ovsdb-server's CPU per row grows with the transaction's size: the same 2,000
/// peerings with both monitors (ours and an independent one) cost it 0.14 ms a peering in
/// transactions of 80 rows, 0.16 ms of 200, 0.30 ms of 800 and 0.41 ms of 2,000
/// (`scripts/nb-write-cost`, README "What our NB writes cost ovsdb-server").
pub const MAX_ROWS_PER_TRANSACTION: usize = 200;

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
    /// The fence of the writer lock this worker holds; `None` when it holds
    /// none (standing by, or driven by a test without the lock).
    fence: Arc<watch::Sender<Option<Fence>>>,
    /// Why the last pass was held back by the mass-deletion brake, while it is.
    mass_deletion: Arc<watch::Sender<Option<String>>>,
}

impl Reconciler {
    /// A worker over the store and the NB client.
    pub fn new(store: Store, nb: ovsdb::Client, settings: Settings) -> Self {
        Self {
            store,
            nb,
            settings,
            wake: Arc::new(Wake::new()),
            passed: Arc::default(),
            fence: Arc::new(watch::Sender::new(None)),
            mass_deletion: Arc::new(watch::Sender::new(None)),
        }
    }

    /// `Some(why)` while the mass-deletion brake holds passes back (health, tests).
    pub fn mass_deletion_blocked(&self) -> watch::Receiver<Option<String>> {
        self.mass_deletion.subscribe()
    }

    /// This deployment's id.
    pub fn deployment_id(&self) -> Uuid {
        self.settings.deployment_id
    }

    /// The writer epoch this worker fences its NB transactions with, while it
    /// holds the writer lock.
    pub fn writer_epoch(&self) -> Option<i64> {
        self.fence.borrow().as_ref().map(Fence::epoch)
    }

    fn current_fence(&self) -> Option<Fence> {
        self.fence.borrow().clone()
    }

    /// Waits for the writer lock, then writes its epoch into NB; from then on
    /// every NB transaction of this worker is fenced with it. `None` on
    /// shutdown. When NB already holds a newer epoch of this deployment (its
    /// database was restored from a backup), the holder takes one past it.
    pub async fn take_writer_lock(&self, shutdown: &CancellationToken) -> Option<WriterLock> {
        loop {
            let mut lock =
                lock::WriterLock::acquire(self.settings.database_url.expose(), shutdown).await?;
            let mut fence = Fence::new(self.settings.deployment_id, lock.epoch());
            let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
            let installed = loop {
                let wait = match fence::install(&self.nb, &fence).await {
                    Ok(fence::Installed::Yes) => break true,
                    // Postgres is behind NB (restored from a backup), or our own earlier
                    // write landed after all: under the lock, a newer epoch is safe to take.
                    Ok(fence::Installed::Superseded { theirs }) => {
                        tracing::warn!(
                            ours = fence.epoch(),
                            theirs,
                            "NB already holds this or a newer writer epoch: taking one past it"
                        );
                        match lock.advance_past(theirs).await {
                            Ok(epoch) => fence = Fence::new(self.settings.deployment_id, epoch),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot take a newer writer epoch")
                            }
                        }
                        backoff.next_delay()
                    }
                    Err(e) => {
                        let d = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in = ?d, "cannot write the writer fence into NB");
                        d
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        lock.release().await;
                        return None;
                    }
                    _ = lock.lost() => break false,
                    _ = tokio::time::sleep(wait) => {}
                }
            };
            if installed {
                tracing::info!(epoch = fence.epoch(), "writer fence written into NB");
                self.fence.send_replace(Some(fence));
                return Some(lock);
            }
            lock.release().await;
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(AFTER_LOSS_DELAY) => {}
            }
        }
    }

    /// Forgets the fence: the lock is gone, this worker no longer writes.
    fn drop_fence(&self) {
        self.fence.send_replace(None);
    }

    /// One full pass.
    pub async fn run_once(&self) -> Result<PassOutcome, PassError> {
        pass::run(self, Scope::All).await
    }

    /// One narrow pass, as a Postgres notification naming these peerings starts it.
    pub async fn run_for(&self, names: &[&str]) -> Result<PassOutcome, PassError> {
        let names = names.iter().map(|n| n.to_string()).collect();
        let scope = Scope::Narrow {
            peerings: names,
            vpcs: Default::default(),
            ports: Default::default(),
        };
        pass::run(self, scope).await
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

    /// Runs passes whenever woken until `shutdown`, or until a pass finds
    /// that another replica has fenced this one out of NB.
    pub async fn run(&self, shutdown: CancellationToken) {
        let wake = self.wake.clone();
        let listeners = CancellationToken::new();
        let _stop_listeners = listeners.clone().drop_guard();
        // Listen first, then read: the first full pass reads Postgres and NB after both
        // listeners are up, so everything it does not see reaches it as a notification.
        // Each listener asks for a full pass when it starts (it may have missed something);
        // started before the first pass, those requests fold into it. Started after it (as
        // they were), they cost a second full pass that a peering created at start-up
        // waited behind (issue 14: 7 s to NB after a restart at 10,000 peerings).
        let postgres_listening = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(wake_on_postgres(
            self.store.clone(),
            wake.clone(),
            postgres_listening.clone(),
            listeners.clone(),
        ));
        tokio::spawn(publish_state_gauges(
            self.store.clone(),
            self.passed.clone(),
            listeners.clone(),
        ));
        // A pass needs the replica in sync; subscribed once it is, the NB listener does not
        // see the initial sync's resync event (the first pass reads that very replica).
        let mut state = self.nb.state();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = state.wait_for(|s| s.is_synced()) => {}
        }
        tokio::spawn(wake_on_northbound(
            self.nb.clone(),
            self.nb.subscribe(),
            wake.clone(),
            listeners.clone(),
        ));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = postgres_listening.notified() => {}
            // Postgres unreachable: the pass will say so (and retry) rather than wait here.
            _ = tokio::time::sleep(LISTEN_WAIT) => {}
        }
        wake.full();

        let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
        let mut next_full = tokio::time::Instant::now();
        // The last pass's statuses and tombstones on their way to Postgres while the next pass
        // runs: it judges with them overlaid on its read and awaits them before writing its
        // own; an idle worker awaits them too. Given a moment to land on shutdown, aborted
        // when fenced or when the lock is lost (`report.rs`).
        let mut report = None;
        loop {
            let Some(scope) = wake.take() else {
                let landed = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.notified() => continue,
                    _ = tokio::time::sleep_until(next_full) => {
                        wake.full();
                        continue;
                    }
                    landed = report::landed(&mut report) => landed,
                };
                // Failed while idle: nothing else would look again before the resync timer.
                if let Err(e) = landed {
                    let d = retry.next_delay();
                    tracing::warn!(error = %e, retry_in = ?d, "writing a pass's statuses failed");
                    wake.full();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(d) => {}
                    }
                }
                continue;
            };
            if scope == Scope::All {
                next_full = tokio::time::Instant::now() + self.settings.resync_interval;
            }
            let kind = if scope == Scope::All {
                "full"
            } else {
                "narrow"
            };
            let started = std::time::Instant::now();
            let full = scope == Scope::All;
            let result = pass::run_behind(self, scope, &mut report).await;
            metrics::histogram!(crate::metrics::RECONCILER_PASS_SECONDS)
                .record(started.elapsed().as_secs_f64());
            // What a pass frees is handed back once it has dropped its peerings, rows and plan
            // (a trim inside the pass could give back only what it had freed so far): after a
            // pass that succeeded over everything (start, timer, resync) or over many
            // peerings (a bulk insert's), at most once per gap. A failed pass trims nothing:
            // it is retried, with backoff, as a full pass that trims once it succeeds.
            if result
                .as_ref()
                .is_ok_and(|o| full || o.peerings >= LARGE_PASS)
            {
                crate::heap::release_freed_memory_soon(crate::heap::After::Pass);
            }
            let next = match result {
                Ok(o) if o.incomplete == 0 => {
                    metrics::counter!(crate::metrics::RECONCILER_PASSES_TOTAL, "result" => "ok", "scope" => kind)
                        .increment(1);
                    retry.reset();
                    continue;
                }
                Ok(o) => {
                    // Some writes did not apply (rows changed meanwhile): re-read and
                    // retry, with backoff in case the cause persists.
                    metrics::counter!(crate::metrics::RECONCILER_PASSES_TOTAL, "result" => "incomplete", "scope" => kind)
                        .increment(1);
                    let d = retry.next_delay();
                    tracing::info!(peerings = o.incomplete, retry_in = ?d, "writes not applied; retrying");
                    d
                }
                Err(PassError::Fenced) => {
                    metrics::counter!(crate::metrics::RECONCILER_PASSES_TOTAL, "result" => "fenced", "scope" => kind)
                        .increment(1);
                    tracing::warn!(
                        "NB refused a transaction on the writer fence: another replica \
                        holds the writer lock; stopping the worker"
                    );
                    return;
                }
                Err(PassError::NbNotSynced) => {
                    metrics::counter!(crate::metrics::RECONCILER_PASSES_TOTAL, "result" => "nb_not_synced", "scope" => kind)
                        .increment(1);
                    // Not a failure to back off from: run as soon as the cache is in sync.
                    let mut state = self.nb.state();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = state.wait_for(|s| s.is_synced()) => {}
                    }
                    wake.full();
                    continue;
                }
                Err(e) => {
                    metrics::counter!(crate::metrics::RECONCILER_PASSES_TOTAL, "result" => e.label(), "scope" => kind)
                        .increment(1);
                    let d = retry.next_delay();
                    tracing::warn!(error = %e, retry_in = ?d, "reconciler pass failed");
                    d
                }
            };
            // After a failure: look at everything again, after the backoff.
            wake.full();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(next) => {}
            }
        }
        // Shut down gracefully: the last pass's statuses are ours to write still.
        report::settle(report).await;
    }
}

/// Holds the writer lock while running the worker; stands by otherwise. The
/// worker stops when the lock is lost (heartbeat) or NB says another replica
/// took it (fence); this replica then waits a little and stands by again.
pub async fn run_with_writer_lock(reconciler: Reconciler, shutdown: CancellationToken) {
    loop {
        let Some(mut lock) = reconciler.take_writer_lock(&shutdown).await else {
            return;
        };
        let stop = shutdown.child_token();
        tokio::select! {
            _ = reconciler.run(stop.clone()) => {}
            _ = lock.lost() => {}
        }
        stop.cancel();
        reconciler.drop_fence();
        lock.release().await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(AFTER_LOSS_DELAY) => {}
        }
    }
}

/// Wakes the worker on every desired-state change committed in Postgres; tells `listening`
/// each time it (re)starts listening.
async fn wake_on_postgres(
    store: Store,
    wake: Arc<Wake>,
    listening: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
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
                listening.notify_one();
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

/// Wakes the worker on NB changes to the tables it reads and on cache resyncs: a change
/// someone else made wakes it for the peerings of the routers and port names it touched
/// (`nb_scope.rs`), one it cannot place for a full pass.
async fn wake_on_northbound(
    nb: ovsdb::Client,
    mut events: broadcast::Receiver<CacheEvent>,
    wake: Arc<Wake>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            e = events.recv() => match e {
                Ok(CacheEvent::Disconnected) => {}
                Ok(CacheEvent::Changed(changes)) => {
                    let foreign = wake.foreign(&changes);
                    let now = nb.cache();
                    match nb_scope::touched(&changes, &now, |c| foreign.contains(&c.uuid)) {
                        Some(t) => wake.touched(t),
                        None => wake.full(),
                    }
                }
                // A resync, or missed events (lagged): look at everything again.
                Ok(CacheEvent::Resynced) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    wake.full();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// Sets the peerings-by-state gauges from Postgres after passes end, at most every
/// [`STATE_GAUGES_EVERY`], until `stop`.
///
/// A task of its own, so that the count never delays the next pass; passes that end while
/// it counts or waits are folded into one more count, which reads everything they committed.
async fn publish_state_gauges(
    store: Store,
    passed: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = passed.notified() => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next = tokio::time::Instant::now() + STATE_GAUGES_EVERY;
        let counts = match store.peering_count_by_state().await {
            Ok(c) => c,
            Err(e) => {
                // The next pass tries again; a stale gauge is not worth more.
                tracing::warn!(error = %e, "cannot count peerings by state");
                continue;
            }
        };
        for state in PeeringState::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            metrics::gauge!(crate::metrics::PEERINGS, "state" => state.as_str()).set(n as f64);
        }
    }
}
