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
    /// that can take part in the rules for the probed peerings: the same arms as
    /// CreatePeering's probe (`CreateTx::list_for_batch_probe`), so also every tombstone and
    /// failed peering of their VPCs. One round trip.
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
                    r#"WITH q AS (
                         SELECT name FROM peerings WHERE name = ANY($1)
                         UNION SELECT peering_name FROM peering_ports WHERE port_name = ANY($2)
                         UNION SELECT pp.name FROM peerings pp
                               JOIN unnest($3::text[], $4::text[]) AS vp(a, b)
                                 ON pp.vpc_low = least(vp.a, vp.b)
                                AND pp.vpc_high = greatest(vp.a, vp.b)
                               WHERE pp.state NOT IN ('rejected', 'expired')
                         UNION SELECT l.peering_name FROM peering_links l
                               JOIN unnest($5::cidr[]) AS n(net)
                                 ON family(l.link) = 4 AND l.vpc = ANY($6) AND l.link && n.net
                         UNION SELECT l.peering_name FROM peering_links l
                               JOIN unnest($5::cidr[]) AS n(net)
                                 ON family(l.link) = 6 AND l.vpc = ANY($6) AND l.link && n.net
                         UNION SELECT name FROM peerings
                               WHERE local_vpc = ANY($6)
                                 AND (local_routes <> '[]'::jsonb OR remote_routes <> '[]'::jsonb
                                      OR state NOT IN ('pending', 'active', 'pending_acceptance',
                                                       'rejected', 'expired'))
                         UNION SELECT name FROM peerings
                               WHERE remote_vpc = ANY($6)
                                 AND (local_routes <> '[]'::jsonb OR remote_routes <> '[]'::jsonb
                                      OR state NOT IN ('pending', 'active', 'pending_acceptance',
                                                       'rejected', 'expired')))
                       SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag
                       FROM peerings WHERE name = ANY(ARRAY(SELECT name FROM q))
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
