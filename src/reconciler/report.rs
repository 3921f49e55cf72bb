//! A pass's report to Postgres (its statuses, then the tombstones whose NB rows are gone),
//! written while the next pass reads: the worker's loop does not wait for it.
//!
//! NB never waits for it either way: the next pass takes its NB snapshot after this pass's
//! transactions were answered, as before. What must hold is Postgres's side:
//! - **In order.** The next pass awaits this report before it judges (right after its own
//!   read, which is what overlaps), so two passes' statuses never race, and a report that
//!   failed fails the next pass (retried as a full pass, with backoff, as before).
//! - **Nothing judged from a stale read, no status lost.** The next pass's read may predate
//!   this report's writes. Once the report is done, [`Reported::overlay`] applies to the
//!   read records exactly what the statement applied (same guards: the generation judged,
//!   a live state), and drops the tombstones it removed, so the next pass judges and filters
//!   its statuses ([`super::pass`]'s `changed_statuses`) against what Postgres holds now. A
//!   status equal to the stale record but not to what this report wrote is still written.
//! - **Not after the worker stopped.** Dropped unfinished (shutdown, fenced, lock lost),
//!   it is aborted: the next holder's full pass reports every peering again.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::store::{PeeringRecord, PeeringState, StatusUpdate, Store, StoreError};

/// One pass's report on its way to Postgres.
pub(super) struct Report {
    task: Option<JoinHandle<Result<Reported, StoreError>>>,
}

/// What a finished report wrote.
#[derive(Debug, Default)]
pub(super) struct Reported {
    statuses: Vec<StatusUpdate>,
    /// Tombstones removed (name, generation), among those asked for.
    gone: Vec<(String, i64)>,
    pub(super) tombstones_removed: usize,
}

impl Report {
    /// Starts writing `statuses` (only those that differ from what the pass read), then
    /// removing the tombstones `gone`; `passed` is told once both are in Postgres.
    pub(super) fn start(
        store: Store,
        statuses: Vec<StatusUpdate>,
        gone: Vec<(String, i64)>,
        passed: Arc<tokio::sync::Notify>,
    ) -> Report {
        let task = tokio::spawn(async move {
            store.peering_statuses_set(&statuses).await?;
            let removed = store.peering_tombstones_remove(&gone).await? as usize;
            // Counted in Postgres within a second of a pass, narrowed or full: a narrowed
            // pass sees only some peerings, so its own tallies cannot say how many there are
            // in each state.
            passed.notify_one();
            Ok(Reported {
                statuses,
                gone,
                tombstones_removed: removed,
            })
        });
        Report { task: Some(task) }
    }

    /// Waits until it is in Postgres.
    pub(super) async fn finish(mut self) -> Result<Reported, StoreError> {
        let task = self.task.take().expect("finished once: `finish` takes self");
        match task.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => unreachable!("aborted only on drop"),
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Reported {
    /// `records`, read while this report was being written, made what a read after it
    /// returns: each status applied where the statement applied it, each tombstone it
    /// removed gone.
    pub(super) fn overlay(&self, records: &mut Vec<PeeringRecord>) {
        let gone: HashSet<(&str, i64)> = self.gone.iter().map(|(n, g)| (n.as_str(), *g)).collect();
        records.retain(|p| {
            p.state != PeeringState::Deleting || !gone.contains(&(p.name.as_str(), p.generation))
        });
        let by_name: std::collections::HashMap<&str, &StatusUpdate> =
            self.statuses.iter().map(|u| (u.name.as_str(), u)).collect();
        for p in records.iter_mut() {
            let Some(u) = by_name.get(p.name.as_str()) else {
                continue;
            };
            let live = matches!(
                p.state,
                PeeringState::Pending | PeeringState::Active | PeeringState::Failed
            );
            if live && p.generation == u.generation {
                p.state = u.state;
                p.state_message.clone_from(&u.message);
                p.observed_generation = u.generation;
            }
        }
    }
}
