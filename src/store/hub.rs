//! The one home of "full read below a hub": the bound ([`FULL_READ_BELOW`], held by the
//! [`Store`] so that tests can lower it for the API and the worker alike) and the decision
//! ([`reaches`]), for CreatePeering's batch read (`create_batch.rs`) and the worker's narrow
//! pass ([`Store::peering_list_touching_below`]).
//!
//! Below the bound, every peering of the VPCs is read in one statement and nothing is asked
//! of NB; at a hub (a VPC with the bound or more peerings on either side), the caller asks
//! the conflict probe, whose question (which VPCs' subnets overlap a network) wants an index
//! of every subnet in NB, brought up to date for every new NB state (at 2,000 routers that
//! walk was most of a lone create's time, and of a narrow pass's).

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::types::Json;

use super::model::{Labels, PeeringRow, StoredRoute};
use super::{PeeringRecord, Store, StoreError};

/// A VPC with this many peerings or more (as its local or its remote VPC) is a hub.
pub const FULL_READ_BELOW: usize = 64;

/// The most rows a batch's full read takes (every peering of many small VPCs together, each
/// below [`FULL_READ_BELOW`]: 128 creates could read ~16,000): past it the batch asks the
/// probe, as at a hub, and the read is cut at this many plus one. The same for the worker's
/// narrow read (up to 32 peerings' VPCs).
pub const FULL_READ_ROWS: usize = 1024;

/// The bound a [`Store`] and its clones use: [`FULL_READ_BELOW`] unless set (tests).
#[derive(Debug)]
pub(super) struct HubBound(AtomicUsize);

impl Default for HubBound {
    fn default() -> Self {
        HubBound(AtomicUsize::new(FULL_READ_BELOW))
    }
}

impl Store {
    /// The bound: a VPC with this many peerings or more on either side is a hub.
    pub fn full_read_below(&self) -> usize {
        self.hub.0.load(Ordering::Relaxed)
    }

    /// Sets [`Store::full_read_below`] for this store and its clones (0: every VPC is a hub,
    /// the probe always). Not a user setting: `Config::full_read_below`, set only by tests.
    pub fn set_full_read_below(&self, n: usize) {
        self.hub.0.store(n, Ordering::Relaxed);
    }

    /// The worker's read of every peering touching `vpcs` (as [`Store::peering_list_touching`])
    /// when none of them is a hub; `None` when one is (at most the bound is read per VPC and
    /// side, through the `peerings_{local,remote}_vpc_name_c` indexes) or when they hold more
    /// than [`FULL_READ_ROWS`] together, and the caller asks the probe instead.
    pub async fn peering_list_touching_below(
        &self,
        vpcs: &[&str],
    ) -> Result<Option<Vec<PeeringRecord>>, StoreError> {
        let per_vpc = self.full_read_below();
        let limit = i64::try_from(per_vpc).unwrap_or(i64::MAX);
        let budget = i64::try_from(FULL_READ_ROWS + 1).unwrap_or(i64::MAX);
        let rows = self
            .timed(
                "peering_list_touching_below",
                sqlx::query_as!(
                    PeeringRow,
                    r#"WITH q AS (
                         SELECT t.name FROM unnest($1::text[]) AS v(vpc),
                               LATERAL (SELECT name FROM peerings
                                        WHERE local_vpc = v.vpc
                                          AND state IN ('pending', 'active', 'failed', 'deleting')
                                        LIMIT $2) AS t
                         UNION SELECT t.name FROM unnest($1::text[]) AS v(vpc),
                               LATERAL (SELECT name FROM peerings
                                        WHERE remote_vpc = v.vpc
                                          AND state IN ('pending', 'active', 'failed', 'deleting')
                                        LIMIT $2) AS t)
                       SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag FROM peerings
                       WHERE name = ANY(ARRAY(SELECT name FROM q LIMIT $3))
                       ORDER BY name"#,
                    vpcs as &[&str],
                    limit,
                    budget,
                )
                .fetch_all(&self.pool),
            )
            .await?;
        let sides = rows
            .iter()
            .map(|r| (r.local_vpc.as_str(), r.remote_vpc.as_str()));
        if rows.len() > FULL_READ_ROWS || reaches(sides, vpcs, per_vpc) {
            return Ok(None);
        }
        rows.into_iter()
            .map(PeeringRecord::try_from)
            .collect::<Result<_, _>>()
            .map(Some)
    }
}

/// Whether one of `vpcs` reaches `per_vpc` peerings on either side among `rows` (local VPC,
/// remote VPC): it is a hub. Rows of other VPCs count for nobody.
pub(super) fn reaches<'a, V: AsRef<str>>(
    rows: impl Iterator<Item = (&'a str, &'a str)>,
    vpcs: &[V],
    per_vpc: usize,
) -> bool {
    let mut counts: std::collections::HashMap<&str, (usize, usize)> =
        vpcs.iter().map(|v| (v.as_ref(), (0, 0))).collect();
    for (local, remote) in rows {
        if let Some(c) = counts.get_mut(local) {
            c.0 += 1;
        }
        if let Some(c) = counts.get_mut(remote) {
            c.1 += 1;
        }
    }
    counts
        .values()
        .any(|&(local, remote)| local >= per_vpc || remote >= per_vpc)
}

#[cfg(test)]
mod tests {
    use super::reaches;

    #[test]
    fn a_vpc_reaching_the_bound_on_either_side_is_reported() {
        let vpcs = ["a".to_string(), "b".to_string()];
        let rows = [("a", "x"), ("y", "a"), ("a", "z"), ("q", "r")];
        // a: 2 local, 1 remote; the row of q and r (read for its name) counts for nobody.
        assert!(!reaches(rows.iter().copied(), &vpcs, 3));
        assert!(reaches(rows.iter().copied(), &vpcs, 2));
        assert!(reaches([("x", "b"), ("y", "b")].into_iter(), &vpcs, 2));
        // Bound 0: every read counts as reaching it (the probe always).
        assert!(reaches(std::iter::empty(), &vpcs, 0));
    }
}
