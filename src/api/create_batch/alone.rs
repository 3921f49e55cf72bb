//! The creates that leave their batch because a lock of one of their VPCs is held outside
//! this replica's batcher (another replica's batch, UpdatePeering, AcceptPeering): those of
//! one busy VPC go on as one batch of their own that waits for its locks in Postgres
//! (judged there after whatever holds them, with the batch's one read and its hub probe,
//! stored in one transaction), on a task of its own, outside the batch turns. So the batch
//! commits its other creates at once, and a busy VPC parks neither a turn nor the unrelated
//! creates queued with it.
//!
//! One pool connection waits at a busy lock, not one per create, and at most
//! [`super::PARKED_BATCHES`] such batches wait at once (the others wait for a place holding
//! no connection). Until its batch ends, this replica holds their VPCs in its batcher (as a
//! running batch does): later creates on them wait in the queue rather than trying the lock,
//! failing, and parking another connection.
//!
//! Such a batch waits at its lock until the latest deadline of its creates' callers
//! ([`latest`]; each caller leaves as its own passes, nothing of it stored), less a margin
//! (`store::LOCK_WAIT_MARGIN`, or a quarter of the time left if shorter), then ends in
//! Postgres too: its connection is not held at a lock for callers that are all gone, and
//! each caller still there is told the busy lock naming its own VPCs only.

use std::collections::BTreeMap;
use std::time::Instant;

use tracing::Instrument;

use super::{vpcs_of, Holding, Job, Locks, PeeringApi};

impl PeeringApi {
    /// Runs `departed` (creates touching one of `busy`) on their own, grouped by the first
    /// busy VPC each touches, each group as a batch that waits for its locks, on a task;
    /// answers each create as a batch does.
    pub(super) fn run_alone(&self, departed: Vec<Job>, busy: &[String]) {
        let mut groups: BTreeMap<&str, Vec<Job>> = BTreeMap::new();
        for job in departed {
            let v = &job.validated;
            let at = busy
                .iter()
                .find(|b| **b == v.local_vpc || **b == v.remote_vpc)
                .map_or("", String::as_str);
            groups.entry(at).or_default().push(job);
        }
        for group in groups.into_values() {
            let vpcs = vpcs_of(&group);
            self.inner.creates.hold(&vpcs);
            let holding = Holding {
                api: self.clone(),
                vpcs,
            };
            let api = self.clone();
            let places = self.inner.creates.parked.clone();
            tokio::spawn(
                async move {
                    // Closed never: the semaphore lives as long as the batcher.
                    let place = places.acquire_owned().await;
                    api.run_batch_locking(group, Locks::Wait).await;
                    drop((place, holding));
                }
                .instrument(tracing::Span::current()),
            );
        }
    }
}

/// The latest of the callers' `deadlines`: how long a batch of their creates may wait for a
/// lock. `None` (no bound) when one of them has none.
pub(super) fn latest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    let mut latest = None;
    for d in deadlines {
        latest = latest.max(Some(d?));
    }
    latest
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::latest;

    #[test]
    fn a_batch_waits_until_its_latest_deadline_and_without_bound_when_one_has_none() {
        let now = Instant::now();
        let (soon, later) = (
            now + Duration::from_millis(100),
            now + Duration::from_secs(5),
        );
        assert_eq!(latest([Some(later), Some(soon)]), Some(later));
        assert_eq!(latest([Some(soon), Some(later)]), Some(later));
        assert_eq!(latest([Some(soon), None, Some(later)]), None);
        assert_eq!(latest([None]), None);
    }
}
