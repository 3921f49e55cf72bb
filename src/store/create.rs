//! The create transaction: CreatePeering's cross-peering rules are judged and
//! the peering is inserted inside one transaction that holds a per-VPC lock on
//! both VPCs, so two creates touching a VPC are judged one after the other
//! (across replicas: the lock is Postgres's). Also the peer-port names
//! (`peering_ports`) and the request fingerprint (`request_hash`). Round trips
//! are counted here: CreatePeering's latency is mostly them.

use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};

use super::model::{NewPeering, PeeringRow};
use super::{PeeringRecord, Store, StoreError};

/// The columns [`peering_row`] reads. Rows are decoded by hand here so that this
/// file does not depend on how the rest of the store decodes (derive or macros).
const COLUMNS: &str = "name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6, \
    local_routes, remote_routes, state, state_message, generation, observed_generation, \
    request_id, create_time, update_time, generation_time";

/// First key of the two-key advisory locks taken per VPC (the writer lock uses
/// the one-key space, so they never meet): "vpc" in ASCII.
const VPC_LOCK_SPACE: i32 = 0x0076_7063;

/// A peering created with a request_id, and the fingerprint of that request
/// (`None` for peerings stored before fingerprints were kept).
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The peering.
    pub record: PeeringRecord,
    /// SHA-256 of the canonical request.
    pub request_hash: Option<Vec<u8>>,
}

/// An open create transaction holding the locks of its VPCs. Dropping it
/// rolls back and releases them.
pub struct CreateTx<'s> {
    store: &'s Store,
    tx: Transaction<'static, Postgres>,
}

/// The lock key of a VPC name: 32-bit FNV-1a, stable across versions and replicas.
fn vpc_lock_key(vpc: &str) -> i32 {
    let hash = vpc.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash as i32
}

fn peering_row(row: &PgRow) -> Result<PeeringRow, sqlx::Error> {
    Ok(PeeringRow {
        name: row.try_get("name")?,
        local_vpc: row.try_get("local_vpc")?,
        remote_vpc: row.try_get("remote_vpc")?,
        local_v4: row.try_get("local_v4")?,
        remote_v4: row.try_get("remote_v4")?,
        local_v6: row.try_get("local_v6")?,
        remote_v6: row.try_get("remote_v6")?,
        local_routes: row.try_get("local_routes")?,
        remote_routes: row.try_get("remote_routes")?,
        state: row.try_get("state")?,
        state_message: row.try_get("state_message")?,
        generation: row.try_get("generation")?,
        observed_generation: row.try_get("observed_generation")?,
        request_id: row.try_get("request_id")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        generation_time: row.try_get("generation_time")?,
    })
}

fn record(row: &PgRow) -> Result<PeeringRecord, StoreError> {
    peering_row(row)?.try_into()
}

fn request_record(row: PgRow) -> Result<RequestRecord, StoreError> {
    Ok(RequestRecord {
        request_hash: row.try_get("request_hash")?,
        record: record(&row)?,
    })
}

impl Store {
    /// Begins a create transaction and takes the per-VPC locks of `vpcs` in
    /// ascending key order (a fixed order: two creates never deadlock, even
    /// when two names share a key). Held until commit or rollback.
    pub async fn peering_create_begin(&self, vpcs: &[&str]) -> Result<CreateTx<'_>, StoreError> {
        let mut keys: Vec<i32> = vpcs.iter().map(|v| vpc_lock_key(v)).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut tx = self.pool.begin().await?;
        // One round trip: a function scan yields the array's elements in order,
        // and each row's lock is taken before the next row is produced.
        self.timed(
            "peering_create_lock",
            sqlx::query("SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::int4[]) AS k")
                .bind(VPC_LOCK_SPACE)
                .bind(&keys)
                .execute(&mut *tx),
        )
        .await?;
        Ok(CreateTx { store: self, tx })
    }

    /// The peering created with this request_id, with its request fingerprint.
    pub async fn peering_get_by_request_id_hashed(
        &self,
        request_id: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS}, request_hash FROM peerings WHERE request_id = $1");
        let row = self
            .timed(
                "peering_get_by_request_id_hashed",
                sqlx::query(&sql)
                    .bind(request_id)
                    .fetch_optional(&self.pool),
            )
            .await?;
        row.map(request_record).transpose()
    }

    /// CreatePeering's view of the other peerings: every peering touching any
    /// of `vpcs`, the one named `name`, and those holding any of `ports` (port
    /// names are unique across the deployment, not per VPC). One round trip,
    /// one snapshot.
    pub async fn peering_list_for_create(
        &self,
        vpcs: &[&str],
        name: &str,
        ports: &[String],
    ) -> Result<Vec<PeeringRecord>, StoreError> {
        let rows = self
            .timed(
                "peering_list_for_create",
                sqlx::query(&list_for_create_sql())
                    .bind(vpcs)
                    .bind(name)
                    .bind(ports)
                    .fetch_all(&self.pool),
            )
            .await?;
        rows.iter().map(record).collect()
    }
}

fn list_for_create_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM peerings \
         WHERE local_vpc = ANY($1) OR remote_vpc = ANY($1) OR name = $2 \
            OR name IN (SELECT peering_name FROM peering_ports WHERE port_name = ANY($3)) \
         ORDER BY name"
    )
}

impl CreateTx<'_> {
    /// As [`Store::peering_get_by_request_id_hashed`], inside the transaction.
    pub async fn by_request_id(
        &mut self,
        request_id: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS}, request_hash FROM peerings WHERE request_id = $1");
        let row = self
            .store
            .timed(
                "peering_get_by_request_id_hashed",
                sqlx::query(&sql)
                    .bind(request_id)
                    .fetch_optional(&mut *self.tx),
            )
            .await?;
        row.map(request_record).transpose()
    }

    /// As [`Store::peering_list_for_create`], inside the transaction.
    pub async fn list_for_create(
        &mut self,
        vpcs: &[&str],
        name: &str,
        ports: &[String],
    ) -> Result<Vec<PeeringRecord>, StoreError> {
        let rows = self
            .store
            .timed(
                "peering_list_for_create",
                sqlx::query(&list_for_create_sql())
                    .bind(vpcs)
                    .bind(name)
                    .bind(ports)
                    .fetch_all(&mut *self.tx),
            )
            .await?;
        rows.iter().map(record).collect()
    }

    /// Inserts the peering (generation 1, STATE_PENDING) with its port names
    /// and request fingerprint, and commits. The constraints still have the
    /// last word: [`StoreError::PortTaken`], `LinkOverlap`, `RequestIdTaken`...
    pub async fn insert(
        mut self,
        new: &NewPeering,
        request_hash: Option<&[u8]>,
        ports: &[String],
    ) -> Result<PeeringRecord, StoreError> {
        // The port rows reference the peering inserted by the same statement.
        let sql = format!(
            "WITH p AS (INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4, \
             local_v6, remote_v6, local_routes, remote_routes, request_id, request_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}), \
             ports AS (INSERT INTO peering_ports (port_name, peering_name) \
             SELECT DISTINCT unnest($12::text[]), $1) \
             SELECT * FROM p"
        );
        let row = self
            .store
            .timed(
                "peering_insert",
                sqlx::query(&sql)
                    .bind(&new.name)
                    .bind(&new.local_vpc)
                    .bind(&new.remote_vpc)
                    .bind(new.local_v4)
                    .bind(new.remote_v4)
                    .bind(new.local_v6)
                    .bind(new.remote_v6)
                    .bind(sqlx::types::Json(&new.local_routes))
                    .bind(sqlx::types::Json(&new.remote_routes))
                    .bind(&new.request_id)
                    .bind(request_hash)
                    .bind(ports)
                    .fetch_one(&mut *self.tx),
            )
            .await?;
        self.store
            .timed("peering_create_commit", self.tx.commit())
            .await?;
        record(&row)
    }
}

#[cfg(test)]
mod tests {
    use super::vpc_lock_key;

    #[test]
    fn lock_keys_are_stable() {
        // Replicas of different versions must agree on a VPC's key.
        assert_eq!(vpc_lock_key(""), 0x811c_9dc5_u32 as i32);
        assert_eq!(vpc_lock_key("a"), 0xe40c_292c_u32 as i32);
        assert_ne!(vpc_lock_key("vpc-1"), vpc_lock_key("vpc-2"));
    }
}
