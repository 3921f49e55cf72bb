//! The worker's narrow read at a hub: of the peerings of the changed ones' VPCs, only those
//! that can take part in the rules for them ([`ConflictQuery`]), found through indexes.

use sqlx::types::Json;

use super::model::{Labels, PeeringRow, StoredRoute};
use super::{PeeringRecord, Store, StoreError};
use crate::peering::topology::ConflictQuery;

/// A [`ConflictQuery`] as the probe's SQL parameters ($1 to $6 of both probe reads: this one
/// and `CreateTx::list_for_batch_probe`).
pub(super) struct ProbeArgs<'a> {
    pub names: Vec<&'a str>,
    pub ports: Vec<&'a str>,
    /// The pairs' lower and higher VPC names, in step.
    pub lo: Vec<&'a str>,
    pub hi: Vec<&'a str>,
    pub nets: Vec<ipnet::IpNet>,
    pub vpcs: Vec<&'a str>,
}

impl<'a> ProbeArgs<'a> {
    pub fn of(q: &'a ConflictQuery) -> Self {
        ProbeArgs {
            names: q.names.iter().map(String::as_str).collect(),
            ports: q.ports.iter().map(String::as_str).collect(),
            lo: q.pairs.iter().map(|(l, _)| l.as_str()).collect(),
            hi: q.pairs.iter().map(|(_, h)| h.as_str()).collect(),
            nets: q.nets.iter().copied().collect(),
            vpcs: q.vpcs.iter().map(String::as_str).collect(),
        }
    }
}

impl Store {
    /// The stored peerings whose rows may be in NB ([`super::PeeringState::in_northbound`])
    /// that can take part in the rules for the probed peerings: the SQL function
    /// `peerings_conflicting` (migration `20261127010000`), CreatePeering's probe too
    /// (`CreateTx::list_for_batch_probe`), so also every tombstone and failed peering of their
    /// VPCs. One round trip.
    pub async fn peering_list_conflicting(
        &self,
        q: &ConflictQuery,
    ) -> Result<Vec<PeeringRecord>, StoreError> {
        let ProbeArgs {
            names,
            ports,
            lo,
            hi,
            nets,
            vpcs,
        } = ProbeArgs::of(q);
        let rows = self
            .timed(
                "peering_list_conflicting",
                sqlx::query_as!(
                    PeeringRow,
                    r#"SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag
                       FROM peerings
                       WHERE name = ANY(ARRAY(
                         SELECT c.name FROM peerings_conflicting($1, $2, $3, $4, $5::cidr[], $6) AS c))
                         AND state IN ('pending', 'active', 'failed', 'deleting')
                       ORDER BY name"#,
                    &names as &[&str],
                    &ports as &[&str],
                    &lo as &[&str],
                    &hi as &[&str],
                    &nets,
                    &vpcs as &[&str]
                )
                .fetch_all(&self.pool),
            )
            .await?;
        rows.into_iter().map(PeeringRecord::try_from).collect()
    }
}
