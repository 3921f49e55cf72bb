//! Persistence: every SQL statement of ovn-peerd lives under this module.
//!
//! Postgres holds the desired state (the `peerings` table, see `migrations/`).
//! Methods are named noun-first (`peering_insert`, `peering_list`) and return
//! [`StoreError`], which says what the caller can act on (a taken name, a
//! taken VPC pair, an overlapping link, an unreachable database) and keeps the
//! driver's error as its source for logs.
//!
//! Every statement is static and written with `sqlx::query!`/`query_as!`/`query_scalar!`,
//! so the build checks it against the schema in `migrations/`. The build never needs a
//! database: it reads the description of each statement from `.sqlx/` (committed), because
//! `.cargo/config.toml` sets `SQLX_OFFLINE=true`; a statement without its data there is a
//! compile error, so a query changed without regenerating `.sqlx/` fails the build (and CI).
//!
//! After adding or changing a statement or a migration, regenerate `.sqlx/` with
//! `scripts/sqlx-prepare` (no sqlx-cli needed): it starts a throwaway Postgres
//! (`scripts/sandbox`), applies `migrations/`, and rebuilds this crate with
//! `SQLX_OFFLINE=false`, `DATABASE_URL` and `SQLX_OFFLINE_DIR=.sqlx`, which makes the macros
//! check every statement against that database and write their data. Commit the result.

mod acceptance;
mod changes;
mod conflicts;
mod create;
mod create_batch;
mod deployment;
mod error;
mod hub;
mod model;
mod peerings;
mod routes_page;
mod update;

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;

pub use changes::{
    ChangeKind, ChangesPage, LogPosition, PeeringChange, PeeringSnapshot, CHANGES_CHANNEL,
};
pub use create::{CreateTx, RequestRecord, LOCK_WAIT_MARGIN};
pub use create_batch::{BatchInsert, BatchRead, UnreadableRow};
pub use deployment::{deployment_epoch_bump, deployment_epoch_get, Deployment};
pub use error::StoreError;
pub use hub::FULL_READ_BELOW;
pub use model::{Labels, NewPeering, PeeringRecord, PeeringState, StoredRoute};
pub use peerings::StatusUpdate;
pub use update::PeeringEdit;

/// The channel the `peerings` triggers notify on every desired-state change.
pub const DESIRED_CHANGED_CHANNEL: &str = "ovn_peerd_desired";

/// A pooled connection idle for longer than this is pinged before it is used (a dead one is
/// replaced); one used more recently is trusted (it was pinged when it went back).
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The one handle to Postgres.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    /// [`Store::full_read_below`], shared by its clones.
    hub: std::sync::Arc<hub::HubBound>,
}

impl Store {
    /// A pool that connects lazily: start-up does not fail while Postgres is down.
    pub fn connect_lazy(database_url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = database_url.parse().map_err(StoreError::Config)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(2))
            .idle_timeout(Duration::from_secs(300))
            // sqlx pings every idle connection it hands out: one more round trip before
            // every statement or transaction (a lone CreatePeering's first of six). A
            // connection is pinged when it goes back to the pool anyway, so only one idle
            // for a while (Postgres may have restarted meanwhile) is pinged before use.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IDLE_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options.application_name("ovn-peerd"));
        Ok(Self {
            pool,
            hub: Default::default(),
        })
    }

    /// Applies pending migrations (embedded at build time). A database that
    /// cannot be reached is [`StoreError::Unavailable`], like for any query.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        use sqlx::migrate::MigrateError;
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .map_err(|e| match e {
                MigrateError::Execute(inner) => StoreError::from(inner),
                other => StoreError::Migrate(other),
            })
    }

    /// Whether Postgres answers a trivial query now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed(
            "ping",
            sqlx::query!("SELECT 1 AS one").fetch_one(&self.pool),
        )
        .await
        .map(|_| ())
    }

    /// A listener on [`DESIRED_CHANGED_CHANNEL`]; it reconnects by itself.
    pub async fn desired_changes(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(DESIRED_CHANGED_CHANNEL).await?;
        Ok(listener)
    }

    /// A listener on [`CHANGES_CHANNEL`] (the change log grew); it reconnects by itself.
    pub async fn change_notifications(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        Ok(listener)
    }

    /// Runs one query future, recording its latency and outcome by operation.
    async fn timed<T>(
        &self,
        operation: &'static str,
        fut: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = fut.await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!(crate::metrics::DB_QUERY_DURATION_SECONDS,
            "operation" => operation, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
        result.map_err(StoreError::from)
    }
}
