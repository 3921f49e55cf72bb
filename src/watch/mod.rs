//! WatchPeerings' engine: change events of the `peerings` table, from Postgres to every
//! open stream of this process.
//!
//! Postgres is the source: every change of a peering (on any replica, the worker's status
//! writes included) is a row of the `peering_changes` log, written at commit in commit order
//! (`migrations/20261126190000_peering_changes.sql`, queries in `src/store/changes.rs`). Each
//! process runs one reader of that log ([`Hub`]) and fans its changes out to its watchers
//! ([`watcher`]), each with a small bounded channel; positions in the log are the resume
//! tokens ([`token`]). This module knows nothing of gRPC: `src/api/watch.rs` checks the
//! request, authorizes, and turns events into responses and ends into statuses.

pub mod hub;
pub mod token;
pub mod watcher;

use std::time::Duration;

pub use hub::Hub;
pub use watcher::{
    EventKind, Filter, Listing, ResumeError, Slot, SlotRefused, Start, WatchEnd, WatchEvent,
    Watcher,
};

/// Limits of WatchPeerings (flags `--watch-*`).
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Streams open at once on this process; more are RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// Streams open at once on this process per caller (its identity; without one, its
    /// address), so that one tenant cannot take every slot.
    pub max_streams_per_caller: usize,
    /// How long a watcher that is not yet live (sending the initial list, or catching up
    /// from Postgres) may wait for its client to read before it is ended.
    pub stall_timeout: Duration,
    /// A filtered watcher whose position moved without a delivered event sends a BOOKMARK
    /// this often, so that its client's token keeps up with the log.
    pub bookmark_interval: Duration,
    /// Streams end after about this long (±10%), telling the client to resume with its
    /// token: the scope a stream was opened with is not kept forever.
    pub max_age: Duration,
    /// Changes kept in memory; a watcher that falls further behind is ended.
    pub buffer: usize,
    /// How long the log keeps changes.
    pub retention: Duration,
    /// The most changes the log keeps.
    pub retention_changes: i64,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            max_streams: 1000,
            max_streams_per_caller: 100,
            stall_timeout: Duration::from_secs(30),
            bookmark_interval: Duration::from_secs(30),
            max_age: Duration::from_secs(30 * 60),
            buffer: 4096,
            retention: Duration::from_secs(3600),
            retention_changes: 100_000,
        }
    }
}
