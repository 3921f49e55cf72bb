//! The one change reader of this process and the changes it keeps in memory.
//!
//! One task per process LISTENs on the change-log channel and reads the log from Postgres
//! (`seq > head`) while at least one watcher is open; each watcher then takes its changes from
//! the ring of the latest ones here, under a short mutex, and is woken through a `watch`
//! channel of the head. The ring is bounded (`--watch-buffer`): a watcher that needs a
//! change older than the ring reads the log itself (a resume from an older token), with at
//! most [`DB_READERS`] such reads at once per process, or is ended if it had been keeping up
//! and fell behind (see `watcher.rs`). The reader also prunes the log (retention) and
//! follows a prune it did not do (another replica's) by emptying the ring.
//!
//! The reader reads the log only while a watcher is open on this process: with none, a
//! notification costs nothing but forgetting the ring (the next watcher finds it unknown and
//! reads Postgres itself until the reader, woken by that watcher, has set it up again at
//! the log's head). A replica nobody watches does not read every change it commits back.
//!
//! Before each read the reader takes every notification already received, not one: a read
//! sees every change committed before it starts, so one read serves all the notifications
//! that queued during the previous one (a bulk of creates costs a read per batch of
//! notifications, not one per change plus an empty one).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;

use tokio::sync::{watch, Notify, Semaphore, SemaphorePermit};
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
    /// Watchers open on this process (under the same lock as the ring: the reader forgets
    /// the ring only when none is, so no watcher ever sees a ring go from known to unknown).
    watchers: usize,
}

impl Ring {
    /// Nothing known: every watcher reads Postgres itself until the reader sets it up.
    fn forget(&mut self) {
        self.base = i64::MAX;
        self.head = i64::MAX;
        self.changes.clear();
    }
}

/// One open watcher, counted while it lives (see [`Hub::watching`]).
pub(super) struct Watching<'a>(&'a Hub);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.ring().watchers -= 1;
    }
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
    /// Wakes the reader when the first watcher opens (the ring is unknown then).
    first_watcher: Notify,
    /// Cancelled when the server shuts down: every watcher ends (UNAVAILABLE).
    pub(super) shutdown: CancellationToken,
    /// Reads of the log by the reader (not the watchers' own), since start.
    reads: AtomicU64,
    /// Notifications the reader has taken, since start.
    notifications: AtomicU64,
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
                watchers: 0,
            }),
            head: watch::Sender::new(i64::MIN),
            db_readers: Semaphore::new(DB_READERS),
            first_watcher: Notify::new(),
            shutdown,
            reads: AtomicU64::new(0),
            notifications: AtomicU64::new(0),
        })
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a watcher open until the guard is dropped; the first one wakes the reader.
    pub(super) fn watching(&self) -> Watching<'_> {
        let mut ring = self.ring();
        ring.watchers += 1;
        if ring.watchers == 1 {
            self.first_watcher.notify_one();
        }
        Watching(self)
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

    /// Reads the log into the ring until `stop`: woken by notifications, by the first
    /// watcher, and every [`POLL`] in case one was missed; prunes the log every
    /// [`PRUNE_EVERY`].
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
                // Every notification already here is served by the read that follows.
                match drain(&mut listener).await {
                    Ok(n) => self.notifications.fetch_add(n, Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!(error = %e, "change reader's listener lost");
                        break;
                    }
                };
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
                    _ = self.first_watcher.notified() => {}
                    n = listener.try_recv() => match n {
                        Ok(n) => {
                            self.notifications.fetch_add(u64::from(n.is_some()), Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "change reader's listener lost");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Reads every change after the head into the ring; with no watcher open, forgets the
    /// ring instead.
    async fn read(&self) -> Result<(), crate::store::StoreError> {
        let head = {
            let mut ring = self.ring();
            if ring.watchers == 0 {
                ring.forget();
                return Ok(());
            }
            ring.head
        };
        self.reads.fetch_add(1, Ordering::Relaxed);
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

/// Takes every notification the listener has already received, without waiting for another.
/// Each was sent after its change committed, so the read that follows sees all their changes.
/// (`next_buffered` alone is not enough: it holds only what arrived while the listener's
/// connection ran a statement; the rest waits on the socket, which one poll takes.)
async fn drain(listener: &mut PgListener) -> Result<u64, sqlx::Error> {
    let mut taken = 0;
    loop {
        tokio::select! {
            biased;
            n = listener.try_recv() => match n? {
                Some(_) => taken += 1,
                // Connection lost and made again: a read follows anyway.
                None => return Ok(taken),
            },
            () = std::future::ready(()) => return Ok(taken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovn_peerd_test_support::pg::TestDb;

    async fn insert(pool: &sqlx::PgPool, k: u32) {
        let sql = format!(
            "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4) \
             VALUES ('p-{k}', 'vpc-{k}a', 'vpc-{k}b', '169.254.0.1/30', '169.254.0.2/30')"
        );
        sqlx::query(&sql).execute(pool).await.unwrap();
    }

    /// A migrated database of its own, a pool on it, and a hub reading its change log.
    async fn hub_on_a_fresh_database() -> (TestDb, sqlx::PgPool, Arc<Hub>) {
        let db = TestDb::create().await;
        let store = Store::connect_lazy(&db.url).unwrap();
        store.migrate().await.unwrap();
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let hub = Hub::new(
            store,
            Uuid::new_v4(),
            WatchSettings::default(),
            CancellationToken::new(),
        );
        (db, pool, hub)
    }

    fn known(hub: &Hub) -> (i64, i64, Vec<i64>) {
        let ring = hub.ring();
        (
            ring.base,
            ring.head,
            ring.changes.iter().map(|c| c.seq).collect(),
        )
    }

    /// The reader reads the log only while a watcher is open: with none it forgets the ring
    /// (a watcher then reads Postgres itself until the ring is set up again at the head).
    #[tokio::test]
    async fn the_reader_reads_the_log_only_while_a_watcher_is_open() {
        let (_db, pool, hub) = hub_on_a_fresh_database().await;
        const UNKNOWN: (i64, i64, Vec<i64>) = (i64::MAX, i64::MAX, Vec::new());

        insert(&pool, 1).await;
        hub.read().await.unwrap();
        assert_eq!(known(&hub), UNKNOWN, "read with nobody watching");

        let watching = hub.watching();
        hub.read().await.unwrap();
        assert_eq!(known(&hub), (1, 1, vec![]), "set up at the head");
        insert(&pool, 2).await;
        hub.read().await.unwrap();
        assert_eq!(known(&hub), (1, 2, vec![2]));
        assert!(matches!(hub.after(1, 10), After::Changes(c) if c.len() == 1));

        drop(watching);
        insert(&pool, 3).await;
        hub.read().await.unwrap();
        assert_eq!(known(&hub), UNKNOWN, "forgotten when the last watcher left");
        assert!(matches!(hub.after(2, 10), After::Behind));

        let _watching = hub.watching();
        hub.read().await.unwrap();
        assert_eq!(known(&hub), (3, 3, vec![]));
        assert!(
            matches!(hub.after(2, 10), After::Behind),
            "2 < base: from Postgres"
        );
        assert!(matches!(hub.after(3, 10), After::Changes(c) if c.is_empty()));
    }

    /// Notifications that queue while the reader reads are all served by its next read, not
    /// one read each (and an empty one costs two statements).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_read_serves_every_notification_queued_during_a_read() {
        use ovn_peerd_test_support::wait_until_async;
        const WAIT: Duration = Duration::from_secs(30);
        const QUEUED: u64 = 20;
        let (db, pool, hub) = hub_on_a_fresh_database().await;
        let _watching = hub.watching();
        let stop = CancellationToken::new();
        let _stop = stop.clone().drop_guard();
        tokio::spawn(hub.clone().run(stop));
        wait_until_async("the reader sets the ring up", WAIT, || async {
            known(&hub).1 != i64::MAX
        })
        .await
        .unwrap();
        let notify = || async {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(crate::store::CHANGES_CHANNEL)
                .execute(&pool)
                .await
                .unwrap();
        };

        // Hold the reader in a read: it reads the log's horizon, which this locks.
        let mut lock = pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE peering_changes_horizon IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *lock)
            .await
            .unwrap();
        let (reads, taken) = (
            hub.reads.load(Ordering::Relaxed),
            hub.notifications.load(Ordering::Relaxed),
        );
        notify().await;
        wait_until_async("the reader waits for the horizon", WAIT, || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT FROM pg_locks \
                 WHERE relation = 'peering_changes_horizon'::regclass AND NOT granted)",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        })
        .await
        .unwrap();
        // Notifications queue meanwhile; a listener of the test's own sees them delivered.
        let mut mine = PgListener::connect(&db.url).await.unwrap();
        mine.listen(crate::store::CHANGES_CHANNEL).await.unwrap();
        for _ in 0..QUEUED {
            notify().await;
        }
        for _ in 0..QUEUED {
            mine.recv().await.unwrap();
        }
        lock.rollback().await.unwrap();

        wait_until_async("the reader takes every notification", WAIT, || async {
            hub.notifications.load(Ordering::Relaxed) >= taken + 1 + QUEUED
        })
        .await
        .unwrap();
        let after = hub.reads.load(Ordering::Relaxed) - reads;
        // The held read, the one after it for the queued notifications; one spare for a poll.
        assert!(
            after <= 3,
            "{after} reads for {QUEUED} queued notifications"
        );
    }
}
