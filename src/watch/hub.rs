//! The one change reader of this process and the changes it keeps in memory.
//!
//! One task per process LISTENs on the change-log channel and reads the log from Postgres
//! (`seq > head`), whatever the number of watchers; each watcher then takes its changes from
//! the ring of the latest ones here, under a short mutex, and is woken through a `watch`
//! channel of the head. The ring is bounded (`--watch-buffer`): a watcher that needs a
//! change older than the ring reads the log itself (a resume from an older token), with at
//! most [`DB_READERS`] such reads at once per process, or is ended if it had been keeping up
//! and fell behind (see `watcher.rs`). The reader also prunes the log (retention) and
//! follows a prune it did not do (another replica's) by emptying the ring.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::WatchSettings;
use crate::backoff::Backoff;
use crate::store::{ChangesPage, PeeringChange, Store};

/// Log rows read per query.
pub(super) const PAGE: i64 = 500;
/// Watchers' own reads of Postgres (snapshots, catch-up) at once, per process.
pub const DB_READERS: usize = 4;
/// The reader looks at the log this often even without a notification (a missed one).
const POLL: Duration = Duration::from_secs(5);
/// How often the log is pruned (and old UpdatePeering request_ids with it).
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How long an UpdatePeering request_id is remembered for its retries.
pub const UPDATE_REQUESTS_KEPT: Duration = Duration::from_secs(24 * 3600);

/// The changes kept in memory: every committed change with `base < seq <= head`.
struct Ring {
    base: i64,
    head: i64,
    changes: VecDeque<Arc<PeeringChange>>,
}

/// What the ring holds after a position.
#[derive(Debug)]
pub(super) enum After {
    /// The next changes (empty: none yet).
    Changes(Vec<Arc<PeeringChange>>),
    /// The ring no longer (or does not yet) hold the change right after the position.
    Behind,
}

/// The process's change reader and ring, shared by every watcher.
pub struct Hub {
    pub(super) store: Store,
    pub(super) deployment: Uuid,
    pub(crate) settings: WatchSettings,
    ring: Mutex<Ring>,
    head: watch::Sender<i64>,
    /// One permit per open WatchPeerings stream.
    pub(super) streams: Arc<Semaphore>,
    /// Open streams per caller (see [`super::Slot`]).
    pub(super) callers: Mutex<HashMap<String, usize>>,
    db_readers: Semaphore,
    /// Cancelled when the server shuts down: every watcher ends (UNAVAILABLE).
    pub(super) shutdown: CancellationToken,
}

impl Hub {
    /// A hub over `store`; watchers end when `shutdown` is cancelled. Start its reader with
    /// [`Hub::run`].
    pub fn new(
        store: Store,
        deployment: Uuid,
        settings: WatchSettings,
        shutdown: CancellationToken,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            deployment,
            streams: Arc::new(Semaphore::new(settings.max_streams)),
            callers: Mutex::new(HashMap::new()),
            settings,
            // Until the reader knows the head, every watcher reads Postgres itself.
            ring: Mutex::new(Ring {
                base: i64::MAX,
                head: i64::MAX,
                changes: VecDeque::new(),
            }),
            head: watch::Sender::new(i64::MIN),
            db_readers: Semaphore::new(DB_READERS),
            shutdown,
        })
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Up to `limit` changes after `pos`, from memory.
    pub(super) fn after(&self, pos: i64, limit: usize) -> After {
        let ring = self.ring();
        if pos < ring.base {
            return After::Behind;
        }
        let start = ring.changes.partition_point(|c| c.seq <= pos);
        After::Changes(ring.changes.range(start..).take(limit).cloned().collect())
    }

    /// Whether the change after `pos` has left the ring (a watcher there fell behind).
    pub(super) fn passed(&self, pos: i64) -> bool {
        let ring = self.ring();
        ring.base != i64::MAX && pos < ring.base
    }

    /// Resolves whenever the head moves.
    pub(super) fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// A permit for one of a watcher's own reads of Postgres.
    pub(super) async fn db_read(&self) -> SemaphorePermit<'_> {
        self.db_readers
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }

    /// Reads the log into the ring until `stop`: woken by notifications, and every
    /// [`POLL`] in case one was missed; prunes the log every [`PRUNE_EVERY`].
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            let listener = tokio::select! {
                _ = stop.cancelled() => return,
                l = self.store.change_notifications() => l,
            };
            let mut listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "change reader cannot listen to postgres");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => continue,
                    }
                }
            };
            loop {
                // Listening first, then reading: nothing committed in between is missed.
                match self.read().await {
                    Ok(()) => backoff.reset(),
                    Err(e) => {
                        tracing::warn!(error = %e, "change reader cannot read the log");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(backoff.next_delay()) => continue,
                        }
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = prune.tick() => self.prune().await,
                    _ = tokio::time::sleep(POLL) => {}
                    n = listener.try_recv() => match n {
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "change reader's listener lost");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Reads every change after the head into the ring.
    async fn read(&self) -> Result<(), crate::store::StoreError> {
        let head = self.ring().head;
        let mut head = if head == i64::MAX {
            let position = self.store.peering_changes_position().await?;
            let mut ring = self.ring();
            ring.base = position.head;
            ring.head = position.head;
            position.head
        } else {
            head
        };
        loop {
            // Whether there may be more after this page: a short page reached the head (a
            // change committed after it notifies), so it needs no read that finds nothing.
            let more = match self.store.peering_changes_after(head, PAGE).await? {
                ChangesPage::Pruned { through } => {
                    // Pruned past us (a replica that was away for longer than retention):
                    // watchers at positions before `through` cannot be served.
                    let mut ring = self.ring();
                    ring.changes.clear();
                    ring.base = through;
                    ring.head = through;
                    head = through;
                    true
                }
                ChangesPage::Changes(changes) if changes.is_empty() => break,
                ChangesPage::Changes(changes) => {
                    let more = changes.len() as i64 >= PAGE;
                    let mut ring = self.ring();
                    for c in changes {
                        head = c.seq;
                        ring.changes.push_back(Arc::new(c));
                    }
                    ring.head = head;
                    while ring.changes.len() > self.settings.buffer {
                        let gone = ring.changes.pop_front().expect("longer than the buffer");
                        ring.base = gone.seq;
                    }
                    more
                }
            };
            self.head.send_replace(head);
            if !more {
                break;
            }
        }
        // Also when nothing was read: the first read sets the ring up at the log's head,
        // which may include changes committed after a watcher's snapshot; a watcher waiting
        // for the head to move must hear of it (else it waits for ever).
        self.head
            .send_if_modified(|h| std::mem::replace(h, head) != head);
        Ok(())
    }

    async fn prune(&self) {
        match self
            .store
            .peering_changes_prune(self.settings.retention, self.settings.retention_changes)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "change log pruned"),
            Err(e) => tracing::warn!(error = %e, "cannot prune the change log"),
        }
        match self
            .store
            .peering_update_requests_prune(UPDATE_REQUESTS_KEPT)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "old update request_ids forgotten"),
            Err(e) => tracing::warn!(error = %e, "cannot prune old update request_ids"),
        }
    }
}
