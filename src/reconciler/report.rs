//! A pass's report to Postgres (its statuses, then the tombstones whose NB rows are gone),
//! written while the next pass runs: the worker's loop does not wait for it.
//!
//! NB never waits for it either way: the next pass takes its NB snapshot after this pass's
//! transactions were answered, as before. What must hold is Postgres's side:
//! - **Judged as if read after it.** The next pass's read may predate this report's writes.
//!   [`Report::overlay`] applies to the records it read what the statement applies (same
//!   guards: the generation judged, a live state) and drops the tombstones it removes, before
//!   that pass judges, so it judges and compares its statuses ([`super::pass`]'s
//!   `changed_statuses`) against what Postgres holds once the report is in. No status is
//!   lost: one equal to the stale record but not to what this report writes is still written.
//!   A record read after the report landed is unchanged by it (the same values again).
//! - **In order.** The next pass awaits this report before it starts its own, so two passes'
//!   statuses never race; a report that failed fails the next pass (retried as a full pass,
//!   with backoff, which reads and reports everything again, as before).
//! - **Not lost while idle.** An idle worker waits on the report too ([`landed`]): one that
//!   fails then is logged and retried as a full pass with backoff at once, not at the next
//!   wake (a status write notifies nobody; the next wake may be the resync timer's).
//! - **Not continued after the worker stopped.** On a graceful shutdown the last report is
//!   given [`REPORT_ON_SHUTDOWN`] to land ([`settle`]). Dropped unfinished (fenced, lock
//!   lost, or that time up), its task is aborted: it sends nothing more, but a statement
//!   already sent may still commit in Postgres (as the inline write it replaced could, after
//!   the worker stopped waiting for it). Its guards (the generation judged, a live state)
//!   still hold, and the next holder's full pass reports every peering again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::task::{JoinError, JoinHandle};
use tracing::Instrument;

use crate::store::{PeeringRecord, PeeringState, StatusUpdate, Store, StoreError};

use super::timing::REPORT_ON_SHUTDOWN;

/// One pass's report on its way to Postgres.
pub(super) struct Report {
    task: Option<JoinHandle<Result<usize, StoreError>>>,
    statuses: Arc<Vec<StatusUpdate>>,
    /// Tombstones to remove (name, generation).
    gone: Arc<Vec<(String, i64)>>,
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
        let (statuses, gone) = (Arc::new(statuses), Arc::new(gone));
        let (s, g) = (statuses.clone(), gone.clone());
        let task = tokio::spawn(
            async move {
                store.peering_statuses_set(&s).await?;
                let removed = store.peering_tombstones_remove(&g).await? as usize;
                // The pass's "reconciled" line was logged before this was known.
                if removed > 0 {
                    tracing::info!(tombstones_removed = removed, "tombstones removed");
                }
                // Counted in Postgres within a second of a pass, narrowed or full: a narrowed
                // pass sees only some peerings, so its own tallies cannot say how many there
                // are in each state.
                passed.notify_one();
                Ok(removed)
            }
            .in_current_span(),
        );
        Report {
            task: Some(task),
            statuses,
            gone,
        }
    }

    /// Waits until it is in Postgres; the tombstones it removed.
    pub(super) async fn finish(mut self) -> Result<usize, StoreError> {
        let task = self
            .task
            .take()
            .expect("finished once: `finish` takes self");
        joined(task.await)
    }

    /// `records`, read while this report may still be on its way, made what a read after it
    /// returns: each status applied where the statement applies it, each tombstone it
    /// removes gone.
    pub(super) fn overlay(&self, records: &mut Vec<PeeringRecord>) {
        let gone: HashSet<(&str, i64)> = self.gone.iter().map(|(n, g)| (n.as_str(), *g)).collect();
        records.retain(|p| {
            p.state != PeeringState::Deleting || !gone.contains(&(p.name.as_str(), p.generation))
        });
        let by_name: HashMap<&str, &StatusUpdate> =
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

/// Waits until the report in `slot` is in Postgres, then empties `slot`; the tombstones it
/// removed. Never returns while `slot` is empty. Cancel-safe: dropped before the report is
/// in, it leaves `slot` as it was (the worker's idle `select!`).
pub(super) async fn landed(slot: &mut Option<Report>) -> Result<usize, StoreError> {
    let Some(task) = slot.as_mut().and_then(|r| r.task.as_mut()) else {
        return std::future::pending().await;
    };
    let joined = joined(task.await);
    *slot = None;
    joined
}

/// On a graceful shutdown: the last report, if any, gets [`REPORT_ON_SHUTDOWN`] to land;
/// dropped (aborted) after that.
pub(super) async fn settle(slot: Option<Report>) {
    let Some(report) = slot else { return };
    match tokio::time::timeout(REPORT_ON_SHUTDOWN, report.finish()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the last pass's statuses were not written"),
        Err(_) => tracing::warn!(
            waited = ?REPORT_ON_SHUTDOWN,
            "the last pass's statuses were still being written at shutdown; left to the next holder"
        ),
    }
}

fn joined(r: Result<Result<usize, StoreError>, JoinError>) -> Result<usize, StoreError> {
    match r {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => unreachable!("aborted only on drop"),
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconciler::pass::changed_statuses;

    fn record(name: &str, state: PeeringState, message: &str, generation: i64) -> PeeringRecord {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        PeeringRecord {
            name: name.into(),
            local_vpc: "vpc-1".into(),
            remote_vpc: "vpc-2".into(),
            local_v4: None,
            remote_v4: None,
            local_v6: None,
            remote_v6: None,
            local_routes: vec![],
            remote_routes: vec![],
            state,
            state_message: message.into(),
            generation,
            observed_generation: generation,
            request_id: None,
            create_time: at,
            update_time: at,
            generation_time: at,
            labels: Default::default(),
            etag: uuid::Uuid::nil(),
        }
    }

    fn status(name: &str, state: PeeringState, message: &str, generation: i64) -> StatusUpdate {
        StatusUpdate {
            name: name.into(),
            generation,
            state,
            message: message.into(),
        }
    }

    /// The next pass read before the report was written: "a" FAILED, as Postgres held it
    /// then. The report makes it ACTIVE; the next pass finds it FAILED again, for the same
    /// reason. Compared with the stale read, that status is "unchanged" and would be lost
    /// (Postgres would keep the report's ACTIVE); compared with the overlaid read it is written.
    #[test]
    fn a_status_judged_after_a_report_is_compared_with_what_the_report_wrote() {
        let conflict = "shares 10.2.0.0/16 with peering x";
        let mut records = vec![
            record("a", PeeringState::Failed, conflict, 1),
            // Its report was about generation 2; generation 3 came meanwhile: not applied.
            record("b", PeeringState::Pending, "", 3),
            record("gone", PeeringState::Deleting, "", 2),
            // Re-deleted at a newer generation since: still a tombstone.
            record("kept", PeeringState::Deleting, "", 5),
        ];
        let reported = Report {
            task: None,
            statuses: Arc::new(vec![
                status("a", PeeringState::Active, "", 1),
                status("b", PeeringState::Active, "", 2),
            ]),
            gone: Arc::new(vec![("gone".into(), 2), ("kept".into(), 4)]),
        };
        reported.overlay(&mut records);
        let names: Vec<&str> = records.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "kept"]);
        assert_eq!(
            (records[0].state, records[0].state_message.as_str()),
            (PeeringState::Active, "")
        );
        assert_eq!(
            (records[1].state, records[1].observed_generation),
            (PeeringState::Pending, 3)
        );

        let next = vec![
            status("a", PeeringState::Failed, conflict, 1),
            status("b", PeeringState::Pending, "", 3),
        ];
        assert_eq!(
            changed_statuses(&records, next),
            vec![status("a", PeeringState::Failed, conflict, 1)]
        );
    }
}
