//! UpdatePeering's statements, inside the VPC-locked transaction of `store::create`
//! ([`CreateTx`]): the peering is read `FOR UPDATE`, judged by the API, and written by one
//! `UPDATE` that checks the etag it read (so a write by anyone in between, the worker's
//! status writes included, makes it change nothing), with the request_id row in the same
//! transaction. A route change bumps `generation` (which wakes the worker through the
//! `peerings_notify` trigger) and puts the peering back to `pending`; labels alone do not.

use sqlx::types::Json;

use super::model::{Labels, PeeringRow, StoredRoute};
use super::{CreateTx, PeeringRecord, Store, StoreError};

/// What an update writes: `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct PeeringEdit {
    /// New labels.
    pub labels: Option<Labels>,
    /// New explicit routes into local_vpc (empty = automatic).
    pub local_routes: Option<Vec<StoredRoute>>,
    /// New explicit routes into remote_vpc (empty = automatic).
    pub remote_routes: Option<Vec<StoredRoute>>,
    /// Whether the desired NB rows change: bump `generation`, back to `pending`.
    pub bump_generation: bool,
}

impl Store {
    /// The peering an UpdatePeering request_id was used for, with the request's fingerprint.
    pub async fn peering_update_request_get(
        &self,
        request_id: &str,
    ) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let row = self
            .timed(
                "peering_update_request_get",
                sqlx::query!(
                    "SELECT peering_name, request_hash FROM peering_update_requests \
                     WHERE request_id = $1",
                    request_id
                )
                .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row.map(|r| (r.peering_name, r.request_hash)))
    }
}

impl CreateTx<'_> {
    /// As [`Store::peering_update_request_get`], inside the transaction.
    pub async fn update_request(
        &mut self,
        request_id: &str,
    ) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let row = self
            .store
            .timed(
                "peering_update_request_get",
                sqlx::query!(
                    "SELECT peering_name, request_hash FROM peering_update_requests \
                     WHERE request_id = $1",
                    request_id
                )
                .fetch_optional(&mut *self.tx),
            )
            .await?;
        Ok(row.map(|r| (r.peering_name, r.request_hash)))
    }

    /// The peering, its row locked until the transaction ends (the worker's status
    /// writes wait for it).
    pub async fn peering_for_update(
        &mut self,
        name: &str,
    ) -> Result<Option<PeeringRecord>, StoreError> {
        let row = self
            .store
            .timed(
                "peering_get_for_update",
                sqlx::query_as!(
                    PeeringRow,
                    r#"SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag
                       FROM peerings WHERE name = $1 FOR UPDATE"#,
                    name
                )
                .fetch_optional(&mut *self.tx),
            )
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    /// Writes `change` to the peering if its etag is still `etag` and it is not being
    /// deleted, records the request_id (with the request's fingerprint) and commits.
    /// [`StoreError::EtagMismatch`] when the row changed: nothing is written.
    pub async fn update(
        mut self,
        name: &str,
        etag: uuid::Uuid,
        change: &PeeringEdit,
        request: Option<(&str, &[u8])>,
    ) -> Result<PeeringRecord, StoreError> {
        let row = self
            .store
            .timed(
                "peering_update",
                sqlx::query_as!(
                    PeeringRow,
                    r#"UPDATE peerings SET
                         labels = COALESCE($3, labels),
                         local_routes = COALESCE($4, local_routes),
                         remote_routes = COALESCE($5, remote_routes),
                         generation = generation + CASE WHEN $6 THEN 1 ELSE 0 END,
                         generation_time = CASE WHEN $6 THEN clock_timestamp()
                                           ELSE generation_time END,
                         state = CASE WHEN $6 THEN 'pending' ELSE state END,
                         state_message = CASE WHEN $6 THEN '' ELSE state_message END,
                         update_time = now()
                       WHERE name = $1 AND etag = $2 AND state <> 'deleting'
                         AND (NOT $6 OR state IN ('pending', 'active', 'failed'))
                       RETURNING name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6,
                         remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag"#,
                    name,
                    etag,
                    change.labels.as_ref().map(Json) as _,
                    change.local_routes.as_ref().map(Json) as _,
                    change.remote_routes.as_ref().map(Json) as _,
                    change.bump_generation,
                )
                .fetch_optional(&mut *self.tx),
            )
            .await?;
        let Some(row) = row else {
            return Err(StoreError::EtagMismatch {
                name: name.to_owned(),
            });
        };
        if let Some((request_id, hash)) = request {
            self.store
                .timed(
                    "peering_update_request_insert",
                    sqlx::query!(
                        "INSERT INTO peering_update_requests (request_id, peering_name, \
                         request_hash) VALUES ($1, $2, $3)",
                        request_id,
                        name,
                        hash
                    )
                    .execute(&mut *self.tx),
                )
                .await?;
        }
        self.store
            .timed("peering_update_commit", self.tx.commit())
            .await?;
        row.try_into()
    }
}
