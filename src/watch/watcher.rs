//! One WatchPeerings stream: its task, from the start (a snapshot or a resume token) to its
//! end, sending events into a small bounded channel that the gRPC response drains.
//!
//! It never slows anything else: it reads changes from the hub's ring (shared) or, when it
//! is behind the ring, from Postgres under the hub's read permits; it waits for its client
//! only on its own channel. A watcher that was keeping up (served from the ring) and whose
//! next change has left the ring while its client was not reading is ended
//! ([`WatchEnd::FellBehind`]); it resumes with its last token. One that is not yet live
//! (its initial list, a catch-up from Postgres) and whose client does not read for
//! `stall_timeout` is ended the same way ([`WatchEnd::Stalled`]), so that a client that
//! never reads holds neither memory nor a slot. Every stream ends after about `max_age`
//! ([`WatchEnd::Expired`]), and a filtered one whose position moved past hidden changes
//! sends a BOOKMARK every `bookmark_interval`, so that its token never goes stale.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::hub::{After, Hub, PAGE};
use super::token;
use crate::store::{ChangeKind, ChangesPage, PeeringChange, PeeringRecord, StoreError};

/// Events buffered per watcher, between its task and its gRPC stream.
pub const CHANNEL: usize = 32;

/// What a watcher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// In the initial list, or inserted since.
    Added,
    /// Changed (any column, the state included).
    Modified,
    /// Gone.
    Deleted,
    /// The initial list is complete.
    Synced,
    /// No peering: the position moved past changes this watcher does not show.
    Bookmark,
}

/// One event of a stream.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// What happened.
    pub kind: EventKind,
    /// The change whose `peering` this event carries, shared by every watcher (none for
    /// [`EventKind::Synced`]; for the initial list's ADDED events, the listed row).
    pub change: Option<Arc<PeeringChange>>,
    /// Where to resume after this event; empty for the initial list's ADDED events
    /// (resume from the SYNCED event's token, or re-watch without a token).
    pub resume_token: String,
}

/// Why a stream ended (its client disconnecting is not an end it is told about).
#[derive(Debug, thiserror::Error)]
pub enum WatchEnd {
    /// The changes after the token were pruned, or the token is ahead of the log.
    #[error("the resume_token is too old (its changes were pruned) or unknown to this database: re-watch without a token")]
    OutOfRange,
    /// It was keeping up, then its client stopped reading for too long.
    #[error("the watcher fell more than {0} changes behind: watch again with the resume_token of the last event received")]
    FellBehind(usize),
    /// It was not yet live (initial list, catch-up) and its client did not read for this long.
    #[error("the client did not read for {0:?}: watch again with the resume_token of the last event received (during the initial list: without a token)")]
    Stalled(Duration),
    /// The stream reached its maximum age.
    #[error("the stream reached its maximum age (--watch-max-age): watch again with the resume_token of the last event received")]
    Expired,
    /// The server is shutting down.
    #[error(
        "ovn-peerd is shutting down: watch again with the resume_token of the last event received"
    )]
    ShuttingDown,
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// Every current peering as ADDED, SYNCED, then changes.
    Snapshot,
    /// The changes after this log position.
    After(i64),
}

/// Which peerings a watcher sees.
pub type Filter = Box<dyn Fn(&PeeringRecord) -> bool + Send + Sync>;

/// Which rows the initial list reads from Postgres (the [`Filter`] still applies).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Those touching this VPC.
    pub vpc: Option<String>,
    /// Those whose local or remote VPC matches one of these `LIKE` patterns (a tenant's).
    pub patterns: Option<Vec<String>>,
}

/// One open stream's place: a slot of `--watch-max-streams` and one of its caller's
/// `--watch-max-streams-per-caller`, both given back when it is dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    hub: Arc<Hub>,
    caller: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut callers = self.hub.callers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = callers.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                callers.remove(&self.caller);
            }
        }
    }
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefused {
    /// `--watch-max-streams` streams are open on this replica.
    Replica(usize),
    /// `--watch-max-streams-per-caller` streams of this caller are open on this replica.
    Caller(usize),
}

/// A running watcher, as the gRPC response sees it: events, then maybe why it ended.
pub struct Watcher {
    /// Events in order; closed when the watcher ended.
    pub events: mpsc::Receiver<WatchEvent>,
    /// Why it ended, once `events` is closed (nothing: the client went away).
    pub end: oneshot::Receiver<WatchEnd>,
}

impl Hub {
    /// A stream slot for `caller`, if fewer than `--watch-max-streams` are open and fewer
    /// than `--watch-max-streams-per-caller` of `caller`'s.
    pub fn stream_slot(self: &Arc<Self>, caller: &str) -> Result<Slot, SlotRefused> {
        let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
        let open = callers.get(caller).copied().unwrap_or(0);
        if open >= self.settings.max_streams_per_caller {
            return Err(SlotRefused::Caller(self.settings.max_streams_per_caller));
        }
        let permit = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| SlotRefused::Replica(self.settings.max_streams))?;
        callers.insert(caller.to_owned(), open + 1);
        Ok(Slot {
            _permit: permit,
            hub: self.clone(),
            caller: caller.to_owned(),
        })
    }

    /// Checks a resume token against the log now: its position, or why it cannot be used.
    pub async fn resume_position(&self, resume_token: &str) -> Result<i64, ResumeError> {
        let pos = token::decode(resume_token, self.deployment).map_err(ResumeError::Token)?;
        let log = self.store.peering_changes_position().await?;
        if pos < log.pruned_through || pos > log.head {
            return Err(ResumeError::End(WatchEnd::OutOfRange));
        }
        Ok(pos)
    }

    /// Starts a watcher task holding `slot` (released when it ends).
    pub fn watch(
        self: &Arc<Self>,
        start: Start,
        filter: Filter,
        listing: Listing,
        slot: Slot,
    ) -> Watcher {
        let (tx, events) = mpsc::channel(CHANNEL);
        let (end_tx, end) = oneshot::channel();
        let hub = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let watching = hub.watching();
            metrics::gauge!(crate::metrics::WATCH_STREAMS).increment(1.0);
            let run = Run {
                hub: &hub,
                filter,
                tx: &tx,
                live: false,
            };
            let ended = tokio::select! {
                r = run.run(start, listing) => r,
                _ = hub.shutdown.cancelled() => Err(WatchEnd::ShuttingDown),
                _ = tokio::time::sleep(jittered(hub.settings.max_age)) => Err(WatchEnd::Expired),
                _ = tx.closed() => Ok(()),
            };
            // No longer a watcher before it is no longer counted: a gauge at 0 means the
            // reader reads no more and forgets the ring at its next notification.
            drop(watching);
            metrics::gauge!(crate::metrics::WATCH_STREAMS).decrement(1.0);
            let reason = match &ended {
                Ok(()) => "client",
                Err(WatchEnd::FellBehind(_) | WatchEnd::Stalled(_)) => "fell_behind",
                Err(WatchEnd::Expired) => "max_age",
                Err(WatchEnd::OutOfRange) => "out_of_range",
                Err(WatchEnd::ShuttingDown) => "shutting_down",
                Err(WatchEnd::Store(_)) => "database",
            };
            metrics::counter!(crate::metrics::WATCH_ENDED_TOTAL, "reason" => reason).increment(1);
            if let Err(e) = ended {
                if let WatchEnd::Store(e) = &e {
                    tracing::warn!(error = %e, "a watcher ended on a database error");
                }
                // Sent before `tx` is dropped: the stream reads it once the events are drained.
                let _ = end_tx.send(e);
            }
        });
        Watcher { events, end }
    }
}

/// Why a resume token was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The token itself.
    #[error(transparent)]
    Token(token::TokenError),
    /// Its position.
    #[error(transparent)]
    End(#[from] WatchEnd),
}

impl From<StoreError> for ResumeError {
    fn from(e: StoreError) -> Self {
        ResumeError::End(WatchEnd::Store(e))
    }
}

struct Run<'a> {
    hub: &'a Arc<Hub>,
    filter: Filter,
    tx: &'a mpsc::Sender<WatchEvent>,
    /// Served from the ring at least once: from then on, falling out of it ends the watcher.
    live: bool,
}

/// `d` ±10%, so that streams opened together do not all end together.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.9..=1.1))
}

impl Run<'_> {
    /// Runs until the watcher ends (`Ok`: its client went away).
    async fn run(mut self, start: Start, listing: Listing) -> Result<(), WatchEnd> {
        let mut pos = match start {
            Start::After(pos) => pos,
            Start::Snapshot => {
                let snapshot = {
                    let _permit = self.hub.db_read().await;
                    self.hub
                        .store
                        .peering_snapshot(listing.vpc.as_deref(), listing.patterns.as_deref())
                        .await?
                };
                for peering in snapshot.peerings {
                    if (self.filter)(&peering) {
                        let listed = PeeringChange {
                            seq: snapshot.position,
                            kind: ChangeKind::Added,
                            peering,
                        };
                        self.send(
                            EventKind::Added,
                            Some(Arc::new(listed)),
                            String::new(),
                            None,
                        )
                        .await?;
                    }
                }
                let token = token::encode(self.hub.deployment, snapshot.position);
                self.send(EventKind::Synced, None, token, None).await?;
                snapshot.position
            }
        };
        // The position the client's last token stands for.
        let mut told = pos;
        let every = self.hub.settings.bookmark_interval;
        let mut bookmark_at = Instant::now() + every;
        let mut head = self.hub.subscribe();
        loop {
            head.borrow_and_update();
            if Instant::now() >= bookmark_at {
                bookmark_at = Instant::now() + every;
                if told != pos {
                    let token = token::encode(self.hub.deployment, pos);
                    self.send(EventKind::Bookmark, None, token, Some(pos))
                        .await?;
                    told = pos;
                }
            }
            let changes = match self.hub.after(pos, PAGE as usize) {
                After::Changes(changes) => {
                    self.live = true;
                    changes
                }
                After::Behind if self.live => {
                    return Err(WatchEnd::FellBehind(self.hub.settings.buffer))
                }
                After::Behind => {
                    let _permit = self.hub.db_read().await;
                    match self.hub.store.peering_changes_after(pos, PAGE).await? {
                        ChangesPage::Pruned { .. } => return Err(WatchEnd::OutOfRange),
                        ChangesPage::Changes(c) => c.into_iter().map(Arc::new).collect(),
                    }
                }
            };
            if changes.is_empty() {
                // Nothing after `pos` yet: wait for the reader to move (or a bookmark's time).
                tokio::select! {
                    moved = head.changed() => if moved.is_err() {
                        return Err(WatchEnd::ShuttingDown);
                    },
                    _ = tokio::time::sleep_until(bookmark_at), if told != pos => {}
                }
                continue;
            }
            for c in changes {
                pos = c.seq;
                if !(self.filter)(&c.peering) {
                    continue;
                }
                let kind = match c.kind {
                    ChangeKind::Added => EventKind::Added,
                    ChangeKind::Modified => EventKind::Modified,
                    ChangeKind::Deleted => EventKind::Deleted,
                };
                let token = token::encode(self.hub.deployment, c.seq);
                self.send(kind, Some(c), token, Some(pos)).await?;
                told = pos;
            }
        }
    }

    /// Sends one event, waiting for room; a live watcher whose position (`pos`) leaves the
    /// ring meanwhile is ended, and one not yet live after `stall_timeout`.
    async fn send(
        &self,
        kind: EventKind,
        change: Option<Arc<PeeringChange>>,
        resume_token: String,
        pos: Option<i64>,
    ) -> Result<(), WatchEnd> {
        let event = WatchEvent {
            kind,
            change,
            resume_token,
        };
        let mut head = self.hub.subscribe();
        let stall = self.hub.settings.stall_timeout;
        let stalled = tokio::time::sleep(stall);
        tokio::pin!(stalled);
        let permit = loop {
            tokio::select! {
                permit = self.tx.reserve() => match permit {
                    Ok(p) => break p,
                    // The client went away; the select in `watch` ends the task.
                    Err(_) => return std::future::pending().await,
                },
                moved = head.changed(), if self.live => {
                    if moved.is_err() {
                        return Err(WatchEnd::ShuttingDown);
                    }
                    if pos.is_some_and(|p| self.hub.passed(p)) {
                        return Err(WatchEnd::FellBehind(self.hub.settings.buffer));
                    }
                }
                _ = &mut stalled, if !self.live => return Err(WatchEnd::Stalled(stall)),
            }
        };
        permit.send(event);
        Ok(())
    }
}
