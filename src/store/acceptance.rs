//! Cross-tenant requests in Postgres: accept (inside the VPC-locked transaction of
//! `create.rs`, so the rules are judged again exactly as for a create), reject, expire, and
//! removing a request that never reached NB.
//!
//! A request is `pending_acceptance` and holds what a peering holds (its name, its VPC pair,
//! its port names, its link). Rejected and expired peerings hold only their name: the pair
//! index and the link exclusions leave them out (migration `acceptance`), and their
//! `peering_ports` rows go in the statement that moves them there. Every transition is
//! guarded by the state it comes from, and accept and reject also by the TTL (a request
//! past it is expired even if the sweep has not run), so two callers never both win.

use std::time::Duration;

use sqlx::types::Json;

use super::create::CreateTx;
use super::model::{Labels, PeeringRow, StoredRoute};
use super::{PeeringRecord, Store, StoreError};

impl Store {
    /// Moves every request older than `ttl` to `expired` with `message`, freeing its port
    /// names; returns their names.
    pub async fn peering_expire_overdue(
        &self,
        ttl: Duration,
        message: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.timed(
            "peering_expire_overdue",
            sqlx::query_scalar!(
                r#"WITH e AS (
                     UPDATE peerings SET state = 'expired', state_message = $2, update_time = now()
                     WHERE state = 'pending_acceptance'
                       AND create_time <= now() - make_interval(secs => $1)
                     RETURNING name),
                   ports AS (
                     DELETE FROM peering_ports WHERE peering_name IN (SELECT name FROM e))
                   SELECT name AS "name!" FROM e"#,
                ttl.as_secs_f64(),
                message
            )
            .fetch_all(&self.pool),
        )
        .await
    }

    /// How long until the oldest open request expires (zero or less: overdue); `None` when
    /// there is none. Postgres' clock, like every other comparison with `create_time`.
    pub async fn peering_next_expiry(&self, ttl: Duration) -> Result<Option<f64>, StoreError> {
        self.timed(
            "peering_next_expiry",
            sqlx::query_scalar!(
                r#"SELECT extract(epoch FROM min(create_time) + make_interval(secs => $1) - now())::float8
                   FROM peerings WHERE state = 'pending_acceptance'"#,
                ttl.as_secs_f64()
            )
            .fetch_one(&self.pool),
        )
        .await
    }

    /// Rejects the request `name` (if it is one, not older than `ttl`) with `message`,
    /// freeing its port names. `None` when it is not (any more) an open request.
    pub async fn peering_reject(
        &self,
        name: &str,
        ttl: Duration,
        message: &str,
    ) -> Result<Option<PeeringRecord>, StoreError> {
        let row = self
            .timed(
                "peering_reject",
                sqlx::query_as!(
                    PeeringRow,
                    r#"WITH r AS (
                         UPDATE peerings SET state = 'rejected', state_message = $3,
                           update_time = now()
                         WHERE name = $1 AND state = 'pending_acceptance'
                           AND create_time > now() - make_interval(secs => $2)
                         RETURNING *),
                       ports AS (
                         DELETE FROM peering_ports WHERE peering_name IN (SELECT name FROM r))
                       SELECT name AS "name!", local_vpc AS "local_vpc!",
                         remote_vpc AS "remote_vpc!", local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes!: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes!: Json<Vec<StoredRoute>>",
                         state AS "state!", state_message AS "state_message!",
                         generation AS "generation!",
                         observed_generation AS "observed_generation!", request_id,
                         create_time AS "create_time!", update_time AS "update_time!",
                         generation_time AS "generation_time!",
                         labels AS "labels!: Json<Labels>", etag AS "etag!"
                       FROM r"#,
                    name,
                    ttl.as_secs_f64(),
                    message
                )
                .fetch_optional(&self.pool),
            )
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    /// Removes a peering that never reached NB (a request, rejected or expired) at once,
    /// with its port names; `None` when there is no such peering in one of those states.
    /// With `etag`, only while it is still the peering's etag (else `None`, and
    /// [`Store::peering_mark_deleting`] reports the mismatch).
    pub async fn peering_delete_unconverged(
        &self,
        name: &str,
        etag: Option<uuid::Uuid>,
    ) -> Result<Option<PeeringRecord>, StoreError> {
        let row = self
            .timed(
                "peering_delete_unconverged",
                sqlx::query_as!(
                    PeeringRow,
                    r#"DELETE FROM peerings
                       WHERE name = $1 AND state IN ('pending_acceptance', 'rejected', 'expired')
                         AND ($2::uuid IS NULL OR etag = $2)
                       RETURNING name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6,
                         remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag"#,
                    name,
                    etag,
                )
                .fetch_optional(&self.pool),
            )
            .await?;
        row.map(TryInto::try_into).transpose()
    }
}

impl CreateTx<'_> {
    /// Accepts the request `name` (if it is one, not older than `ttl`): STATE_PENDING at the
    /// next generation (which wakes the worker), and commits. `None` (rolled back) when it is
    /// not (any more) an open request.
    pub async fn accept(
        mut self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<PeeringRecord>, StoreError> {
        let row = self
            .store
            .timed(
                "peering_accept",
                sqlx::query_as!(
                    PeeringRow,
                    r#"UPDATE peerings SET state = 'pending', state_message = '',
                         generation = generation + 1, generation_time = clock_timestamp(),
                         update_time = now()
                       WHERE name = $1 AND state = 'pending_acceptance'
                         AND create_time > now() - make_interval(secs => $2)
                       RETURNING name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6,
                         remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag"#,
                    name,
                    ttl.as_secs_f64()
                )
                .fetch_optional(&mut *self.tx),
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        self.store
            .timed("peering_accept_commit", self.tx.commit())
            .await?;
        row.try_into().map(Some)
    }
}
