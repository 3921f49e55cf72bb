//! Queries on the one-row `deployment` table: this deployment's id and its
//! writer epoch.
//!
//! The epoch statements run on the writer lock's own session (a
//! `PgConnection` the caller holds), never on the pool: the bump must happen
//! while that session holds the advisory lock, and the heartbeat must ask
//! that very session.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{Store, StoreError};

/// This deployment as Postgres records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    /// Made at the first migration; never changes.
    pub id: Uuid,
    /// The epoch of the latest writer-lock holder (0: none yet).
    pub writer_epoch: i64,
}

impl Store {
    /// This deployment's id and current writer epoch.
    pub async fn deployment_get(&self) -> Result<Deployment, StoreError> {
        self.timed(
            "deployment_get",
            sqlx::query_as!(Deployment, "SELECT id, writer_epoch FROM deployment")
                .fetch_one(&self.pool),
        )
        .await
    }
}

/// Bumps the writer epoch on the lock session past both its current value
/// and `past` (an epoch seen elsewhere, e.g. in NB after a restore of this
/// database from a backup); returns the new one. Call it only while that
/// session holds the writer lock.
pub async fn deployment_epoch_bump(conn: &mut PgConnection, past: i64) -> Result<i64, StoreError> {
    let epoch = sqlx::query_scalar!(
        "UPDATE deployment SET writer_epoch = greatest(writer_epoch, $1) + 1 \
         RETURNING writer_epoch",
        past
    )
    .fetch_one(conn)
    .await?;
    Ok(epoch)
}

/// The writer epoch as the lock session reads it (the holder's heartbeat).
pub async fn deployment_epoch_get(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar!("SELECT writer_epoch FROM deployment")
        .fetch_one(conn)
        .await?)
}
