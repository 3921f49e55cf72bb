//! The creates that leave their batch because a lock of one of their VPCs is held outside
//! this replica's batcher (another replica's batch, UpdatePeering, AcceptPeering): each is
//! run as a lone create is (`create_tx.rs`: it waits for its locks in Postgres, judged there
//! one after the other with whatever holds them), on a task of its own, outside the batch
//! turns. So the batch commits its other creates at once, and a busy VPC parks neither a
//! turn nor the unrelated creates queued with it.
//!
//! The creates that left at one busy VPC run one after the other on one task: one pool
//! connection waits at that lock, not one per create. Until that task ends, this replica
//! holds their VPCs in its batcher (as a running batch does): later creates on them wait in
//! the queue rather than trying the lock, failing, and parking another connection.

use std::collections::BTreeMap;

use tracing::Instrument;

use super::{Holding, Job, PeeringApi};

impl PeeringApi {
    /// Runs `departed` (creates touching one of `busy`) on their own, grouped by the first
    /// busy VPC each touches, each group on a task; answers each create, unless its caller
    /// has gone (its deadline passed): then it is dropped, its transaction with it.
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
            let mut vpcs: Vec<String> = group
                .iter()
                .flat_map(|j| {
                    [
                        j.validated.local_vpc.clone(),
                        j.validated.remote_vpc.clone(),
                    ]
                })
                .collect();
            vpcs.sort_unstable();
            vpcs.dedup();
            self.inner.creates.hold(&vpcs);
            let holding = Holding {
                api: self.clone(),
                vpcs,
            };
            let api = self.clone();
            tokio::spawn(
                async move {
                    for job in group {
                        let answer = tokio::select! {
                            a = api.create_one(&job.validated, &job.request, false) => a,
                            () = job.gone.cancelled() => continue,
                        };
                        let _ = job.reply.send(answer);
                    }
                    drop(holding);
                }
                .instrument(tracing::Span::current()),
            );
        }
    }
}
