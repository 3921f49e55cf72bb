//! Queries on the `peerings` table.

//!
//! Every statement is a `sqlx::query*!` macro, checked at build time against the schema
//! through the offline data in `.sqlx/` (see the `store` module docs to regenerate it). A
//! macro takes only a literal, so the column list of [`PeeringRow`] is spelled out in each
//! `SELECT`/`RETURNING`; the `AS "col: Type"` overrides decode the jsonb route lists.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::model::{Labels, PeeringRow, StoredRoute};
use super::{PeeringRecord, PeeringState, Store, StoreError};

/// A status the worker reports for one peering at one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// Peering name.
    pub name: String,
    /// The generation the worker judged.
    pub generation: i64,
    /// Pending, Active or Failed.
    pub state: PeeringState,
    /// Why, when there is a reason.
    pub message: String,
}

fn records(rows: Vec<PeeringRow>) -> Result<Vec<PeeringRecord>, StoreError> {
    rows.into_iter().map(PeeringRecord::try_from).collect()
}

impl Store {
    /// One peering by name.
    pub async fn peering_get(&self, name: &str) -> Result<Option<PeeringRecord>, StoreError> {
        let row = self
            .timed(
                "peering_get",
                sqlx::query_as!(
                    PeeringRow,
                    r#"SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag FROM peerings WHERE name = $1"#,
                    name
                )
                .fetch_optional(&self.pool),
            )
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    /// The peering created with this request_id, if any.
    pub async fn peering_get_by_request_id(
        &self,
        request_id: &str,
    ) -> Result<Option<PeeringRecord>, StoreError> {
        let row = self
            .timed(
                "peering_get_by_request_id",
                sqlx::query_as!(
                    PeeringRow,
                    r#"SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag FROM peerings WHERE request_id = $1"#,
                    request_id
                )
                .fetch_optional(&self.pool),
            )
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    /// A page of peerings in name order after `after`, optionally those touching `vpc`.
    pub async fn peering_list(
        &self,
        after: Option<&str>,
        limit: i64,
        vpc: Option<&str>,
    ) -> Result<Vec<PeeringRecord>, StoreError> {
        let rows = self
            .timed(
                "peering_list",
                sqlx::query_as!(
                    PeeringRow,
                    r#"SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag FROM peerings
                     WHERE ($1::text IS NULL OR name > $1)
                     AND ($2::text IS NULL OR local_vpc = $2 OR remote_vpc = $2)
                     ORDER BY name LIMIT $3"#,
                    after,
                    vpc,
                    limit
                )
                .fetch_all(&self.pool),
            )
            .await?;
        records(rows)
    }

    /// A page of peerings in name order after `after` whose local or remote VPC matches one
    /// of the `LIKE` patterns (a tenant's VPCs).
    pub async fn peering_list_like(
        &self,
        after: Option<&str>,
        limit: i64,
        patterns: &[String],
    ) -> Result<Vec<PeeringRecord>, StoreError> {
        let rows = self
            .timed(
                "peering_list_like",
                sqlx::query_as!(
                    PeeringRow,
                    r#"SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag FROM peerings
                     WHERE ($1::text IS NULL OR name > $1)
                     AND (local_vpc LIKE ANY($2::text[]) OR remote_vpc LIKE ANY($2::text[]))
                     ORDER BY name LIMIT $3"#,
                    after,
                    patterns,
                    limit
                )
                .fetch_all(&self.pool),
            )
            .await?;
        records(rows)
    }

    /// Every peering touching any of `vpcs` whose rows may be in NB
    /// ([`PeeringState::in_northbound`]): the worker's and ListRoutes' context.
    ///
    /// In a transaction with sequential scans off (as the create's, `create.rs`): a pooled
    /// connection caches a generic plan of this statement after five runs, planned at the
    /// table's size then; planned small, it scanned every peering for every narrow pass once
    /// the table had grown. Two more round trips, against a scan of the table.
    pub async fn peering_list_touching(
        &self,
        vpcs: &[&str],
    ) -> Result<Vec<PeeringRecord>, StoreError> {
        let rows = self
            .timed("peering_list_touching", async {
                let mut tx = self.pool.begin().await?;
                sqlx::query_scalar!(
                    r#"SELECT set_config('enable_seqscan', 'off', true) AS "off!""#
                )
                .fetch_one(&mut *tx)
                .await?;
                let rows = sqlx::query_as!(
                    PeeringRow,
                    r#"SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag FROM peerings
                     WHERE (local_vpc = ANY($1) OR remote_vpc = ANY($1))
                       AND state IN ('pending', 'active', 'failed', 'deleting')
                     ORDER BY name"#,
                    vpcs as &[&str]
                )
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(rows)
            })
            .await?;
        records(rows)
    }

    /// ListRoutes' context in one round trip: every peering touching `vpc`, and every peering
    /// touching a VPC one of those joins, whose rows may be in NB
    /// ([`PeeringState::in_northbound`]); the same set as [`Store::peering_list_touching`] of
    /// `vpc` and its peers' VPCs.
    pub async fn peering_list_touching_neighbours(
        &self,
        vpc: &str,
    ) -> Result<Vec<PeeringRecord>, StoreError> {
        let rows = self
            .timed(
                "peering_list_touching_neighbours",
                sqlx::query_as!(
                    PeeringRow,
                    r#"WITH mine AS (
                         SELECT local_vpc, remote_vpc FROM peerings
                          WHERE (local_vpc = $1 OR remote_vpc = $1)
                            AND state IN ('pending', 'active', 'failed', 'deleting')),
                       vpcs AS (
                         SELECT local_vpc AS v FROM mine UNION SELECT remote_vpc FROM mine
                         UNION SELECT $1)
                       SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag FROM peerings
                     WHERE (local_vpc IN (SELECT v FROM vpcs) OR remote_vpc IN (SELECT v FROM vpcs))
                       AND state IN ('pending', 'active', 'failed', 'deleting')
                     ORDER BY name"#,
                    vpc
                )
                .fetch_all(&self.pool),
            )
            .await?;
        records(rows)
    }

    /// Every peering touching any of `vpcs`, and the one named `name` if any
    /// (CreatePeering's rules and name check in one round trip).
    pub async fn peering_list_touching_or_named(
        &self,
        vpcs: &[&str],
        name: &str,
    ) -> Result<Vec<PeeringRecord>, StoreError> {
        let rows = self
            .timed(
                "peering_list_touching_or_named",
                sqlx::query_as!(
                    PeeringRow,
                    r#"SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag FROM peerings
                     WHERE local_vpc = ANY($1) OR remote_vpc = ANY($1) OR name = $2
                     ORDER BY name"#,
                    vpcs as &[&str],
                    name
                )
                .fetch_all(&self.pool),
            )
            .await?;
        records(rows)
    }

    /// The named peerings that exist and may have rows in NB (for the worker's pass over
    /// changed ones).
    pub async fn peering_list_named(
        &self,
        names: &[&str],
    ) -> Result<Vec<PeeringRecord>, StoreError> {
        let rows = self
            .timed(
                "peering_list_named",
                sqlx::query_as!(
                    PeeringRow,
                    r#"SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag FROM peerings WHERE name = ANY($1)
                         AND state IN ('pending', 'active', 'failed', 'deleting') ORDER BY name"#,
                    names as &[&str]
                )
                .fetch_all(&self.pool),
            )
            .await?;
        records(rows)
    }

    /// Every peering whose rows may be in NB, for the worker's pass: cross-tenant requests,
    /// rejected and expired peerings are never written, nor judged with the others.
    pub async fn peering_list_all(&self) -> Result<Vec<PeeringRecord>, StoreError> {
        let rows = self
            .timed(
                "peering_list_all",
                sqlx::query_as!(
                    PeeringRow,
                    r#"SELECT
                         name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag
                       FROM peerings
                       WHERE state IN ('pending', 'active', 'failed', 'deleting')
                       ORDER BY name"#
                )
                .fetch_all(&self.pool),
            )
            .await?;
        records(rows)
    }

    /// How many peerings are stored in each state (a state with none is absent).
    pub async fn peering_count_by_state(&self) -> Result<Vec<(PeeringState, i64)>, StoreError> {
        let rows = self
            .timed(
                "peering_count_by_state",
                sqlx::query!(r#"SELECT state, count(*) AS "n!" FROM peerings GROUP BY state"#)
                    .fetch_all(&self.pool),
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                let state = PeeringState::parse(&r.state).ok_or_else(|| StoreError::Corrupt {
                    name: String::new(),
                    reason: format!("unknown state {:?}", r.state),
                })?;
                Ok((state, r.n))
            })
            .collect()
    }

    /// Marks a peering for deletion (bumping its generation) and returns it.
    /// A peering already being deleted is returned as it is; `None` when unknown.
    /// With `etag`, only while the peering's etag is still that one (checked in the
    /// statement that writes): else [`StoreError::EtagMismatch`] and nothing changes.
    /// Only the peering made at `created` (the one the caller was authorized for): one made
    /// again under the name since is left alone (`None`).
    pub async fn peering_mark_deleting(
        &self,
        name: &str,
        etag: Option<uuid::Uuid>,
        created: DateTime<Utc>,
    ) -> Result<Option<PeeringRecord>, StoreError> {
        let row = self
            .timed(
                "peering_mark_deleting",
                sqlx::query_as!(
                    PeeringRow,
                    r#"UPDATE peerings SET state = 'deleting', state_message = '',
                     generation = generation + 1, generation_time = clock_timestamp(),
                     update_time = now()
                     WHERE name = $1 AND state <> 'deleting'
                       AND ($2::uuid IS NULL OR etag = $2) AND create_time = $3 RETURNING
                         name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag"#,
                    name,
                    etag,
                    created,
                )
                .fetch_optional(&self.pool),
            )
            .await?;
        if let Some(row) = row {
            return Ok(Some(row.try_into()?));
        }
        // Nothing written: gone (made again since, or not), already being deleted, or
        // another etag.
        match self
            .peering_get(name)
            .await?
            .filter(|r| r.create_time == created)
        {
            Some(r) if etag.is_some_and(|e| e != r.etag) => Err(StoreError::EtagMismatch {
                name: name.to_owned(),
            }),
            other => Ok(other),
        }
    }

    /// Writes the worker's verdicts in one statement. A verdict about a
    /// generation that is no longer current, or about a peering being deleted,
    /// is ignored, as is one about a peering the worker does not converge (a request); unchanged
    /// rows are not rewritten. Returns rows changed.
    pub async fn peering_statuses_set(&self, updates: &[StatusUpdate]) -> Result<u64, StoreError> {
        if updates.is_empty() {
            return Ok(0);
        }
        let names: Vec<&str> = updates.iter().map(|u| u.name.as_str()).collect();
        let generations: Vec<i64> = updates.iter().map(|u| u.generation).collect();
        let states: Vec<&str> = updates.iter().map(|u| u.state.as_str()).collect();
        let messages: Vec<&str> = updates.iter().map(|u| u.message.as_str()).collect();
        let result = self
            .timed(
                "peering_statuses_set",
                sqlx::query!(
                    "UPDATE peerings p SET state = u.state, state_message = u.message, \
                     observed_generation = u.generation, update_time = now() \
                     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) \
                          AS u(name, generation, state, message) \
                     WHERE p.name = u.name AND p.generation = u.generation \
                       AND p.state IN ('pending', 'active', 'failed') \
                       AND (p.state, p.state_message, p.observed_generation) \
                           IS DISTINCT FROM (u.state, u.message, u.generation)",
                    &names as &[&str],
                    &generations,
                    &states as &[&str],
                    &messages as &[&str],
                )
                .execute(&self.pool),
            )
            .await?;
        Ok(result.rows_affected())
    }

    /// Removes tombstones whose NB rows are gone, if still at the given generation.
    pub async fn peering_tombstones_remove(
        &self,
        tombstones: &[(String, i64)],
    ) -> Result<u64, StoreError> {
        if tombstones.is_empty() {
            return Ok(0);
        }
        let names: Vec<&str> = tombstones.iter().map(|(n, _)| n.as_str()).collect();
        let generations: Vec<i64> = tombstones.iter().map(|(_, g)| *g).collect();
        let result = self
            .timed(
                "peering_tombstones_remove",
                sqlx::query!(
                    "DELETE FROM peerings p \
                     USING unnest($1::text[], $2::bigint[]) AS t(name, generation) \
                     WHERE p.name = t.name AND p.generation = t.generation \
                       AND p.state = 'deleting'",
                    &names as &[&str],
                    &generations,
                )
                .execute(&self.pool),
            )
            .await?;
        Ok(result.rows_affected())
    }
}
