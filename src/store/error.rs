//! The persistence layer's error: what went wrong, in terms callers act on.

use sqlx::error::DatabaseError;

/// An error from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A peering with this name exists.
    #[error("a peering with this name already exists")]
    NameTaken,
    /// The two VPCs are already peered (either direction).
    #[error("these VPCs are already peered")]
    PairTaken,
    /// The request_id was used before.
    #[error("this request_id was already used")]
    RequestIdTaken,
    /// The etag given is not the peering's current one: nothing was written.
    #[error("peering {name:?} changed since it was read (etag mismatch)")]
    EtagMismatch {
        /// The peering.
        name: String,
    },
    /// UpdatePeering's request_id was used before (by another update).
    #[error("this update request_id was already used")]
    UpdateRequestIdTaken,
    /// A peer-port name of the peering is held by another peering.
    #[error("a port name of this peering is held by another peering")]
    PortTaken,
    /// The link's connect subnet overlaps another link of one of its VPCs.
    #[error("the IPv{family} link overlaps the link of another peering of one of its VPCs")]
    LinkOverlap {
        /// 4 or 6.
        family: u8,
    },
    /// A wait for VPC locks ended at the caller's deadline (lock_not_available 55P03 from
    /// the `lock_timeout` `Store::peering_create_begin` sets from it): a lock was held
    /// elsewhere until then. The transaction is rolled back; nothing was written. Made
    /// there only; any other 55P03 is [`StoreError::LockTimeout`].
    #[error("a lock of {vpcs:?} was held elsewhere until the deadline")]
    LockBusy {
        /// The VPCs whose locks were asked for.
        vpcs: Vec<String>,
        /// Postgres's error (its message names the lock).
        #[source]
        source: sqlx::Error,
    },
    /// A lock wait ended at a `lock_timeout` that is not a caller's deadline (lock_not_available
    /// 55P03: the server's, the role's, or the bound left for a wait after a transaction's
    /// VPC locks): contention, rolled back; running it again may succeed.
    #[error("a lock wait ended at the database's lock_timeout")]
    LockTimeout(#[source] sqlx::Error),
    /// Postgres could not be reached or the connection broke.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database URL does not parse.
    #[error("invalid database URL")]
    Config(#[source] sqlx::Error),
    /// Migrations failed.
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A stored row does not decode (a bug or a hand-edited row).
    #[error("stored peering {name:?} is corrupt: {reason}")]
    Corrupt {
        /// The peering.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The transaction lost to a concurrent one (deadlock_detected 40P01,
    /// serialization_failure 40001) and was rolled back: running it again may succeed.
    #[error("the transaction lost to a concurrent one and was rolled back")]
    Conflict(#[source] sqlx::Error),
    /// Anything else the database said.
    #[error("database error")]
    Other(#[source] sqlx::Error),
}

impl StoreError {
    /// Whether retrying later may succeed (the database was unreachable).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error() {
            if let Some(mapped) = from_constraint(db) {
                return mapped;
            }
            // Class 08 (connection), 57P (operator intervention: shutdown), 53 (resources).
            let code = db.code().unwrap_or_default();
            if code == "40P01" || code == "40001" {
                return StoreError::Conflict(e);
            }
            if code == "55P03" {
                return StoreError::LockTimeout(e);
            }
            if code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") {
                return StoreError::Unavailable(e);
            }
            return StoreError::Other(e);
        }
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            other => StoreError::Other(other),
        }
    }
}

fn from_constraint(db: &dyn DatabaseError) -> Option<StoreError> {
    match db.constraint()? {
        "peerings_pkey" => Some(StoreError::NameTaken),
        "peerings_vpc_pair" => Some(StoreError::PairTaken),
        "peerings_request_id_key" => Some(StoreError::RequestIdTaken),
        "peering_ports_pkey" => Some(StoreError::PortTaken),
        "peering_update_requests_pkey" => Some(StoreError::UpdateRequestIdTaken),
        "peering_links_v4_excl" => Some(StoreError::LinkOverlap { family: 4 }),
        "peering_links_v6_excl" => Some(StoreError::LinkOverlap { family: 6 }),
        _ => None,
    }
}
