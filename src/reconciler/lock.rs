//! The writer lock: among replicas sharing one database, only the holder of a
//! Postgres session-level advisory lock runs the worker.
//!
//! The lock lives on a dedicated connection (not a pooled one): when the
//! replica dies or its connection breaks, Postgres ends the session and frees
//! the lock, and another replica takes it at its next attempt. "Breaks" must
//! not mean "whenever TCP notices": the session asks the server for short
//! keepalives and a user timeout, and the holder checks the session on a
//! heartbeat and gives the lock up when a check fails or hangs (the budget is
//! in [`super::timing`]). Taking the lock bumps the deployment's writer epoch
//! in this same session: the fence ([`super::fence`]) builds on it.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use super::timing::{
    ACQUIRE_INTERVAL, CONNECT_TIMEOUT, ERROR_BACKOFF_MAX, HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT,
    KEEPALIVES_COUNT, KEEPALIVES_IDLE_SECS, KEEPALIVES_INTERVAL_SECS, RELEASE_TIMEOUT,
    TCP_USER_TIMEOUT_MS,
};
use crate::backoff::Backoff;
use crate::store::{self, StoreError};

/// The advisory lock key: "ovnpeerd" in ASCII.
const LOCK_KEY: i64 = 0x6f76_6e70_6565_7264;
/// The lock session's `application_name`, so operators (and tests) can find it
/// in `pg_stat_activity`.
pub const LOCK_APPLICATION_NAME: &str = "ovn-peerd-writer-lock";

/// A held writer lock and the writer epoch it took.
pub struct WriterLock {
    conn: PgConnection,
    epoch: i64,
}

impl WriterLock {
    /// Waits until this replica holds the lock; `None` on shutdown.
    pub async fn acquire(database_url: &str, shutdown: &CancellationToken) -> Option<WriterLock> {
        let mut logged_waiting = false;
        let mut on_error = Backoff::new(ACQUIRE_INTERVAL, ERROR_BACKOFF_MAX);
        loop {
            let delay = match try_acquire(database_url).await {
                Ok(Some(lock)) => {
                    tracing::info!(
                        epoch = lock.epoch,
                        "writer lock taken: this replica runs the worker"
                    );
                    metrics::gauge!(crate::metrics::WRITER_LOCK_HELD).set(1.0);
                    return Some(lock);
                }
                Ok(None) => {
                    if !logged_waiting {
                        tracing::info!("another replica holds the writer lock; standing by");
                        logged_waiting = true;
                    }
                    on_error.reset();
                    ACQUIRE_INTERVAL
                }
                Err(e) => {
                    let d = on_error.next_delay();
                    tracing::warn!(error = %e, retry_in = ?d, "cannot try the writer lock");
                    d
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// The writer epoch this holder took.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Takes a new epoch past `theirs`, an epoch NB holds that Postgres no
    /// longer knows (this database was restored from a backup). Safe while the
    /// lock is held: no one else in this deployment can take an epoch now.
    pub async fn advance_past(&mut self, theirs: i64) -> Result<i64, StoreError> {
        let epoch = tokio::time::timeout(
            HEARTBEAT_TIMEOUT,
            store::deployment_epoch_bump(&mut self.conn, theirs),
        )
        .await
        .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolTimedOut))??;
        self.epoch = epoch;
        Ok(epoch)
    }

    /// Resolves when the lock is lost: a heartbeat check failed, did not
    /// answer within [`HEARTBEAT_TIMEOUT`], or found another holder's epoch.
    pub async fn lost(&mut self) {
        loop {
            tokio::time::sleep(HEARTBEAT_INTERVAL).await;
            let check = tokio::time::timeout(
                HEARTBEAT_TIMEOUT,
                store::deployment_epoch_get(&mut self.conn),
            )
            .await;
            let why = match check {
                Ok(Ok(e)) if e == self.epoch => continue,
                Ok(Ok(e)) => format!("another holder took epoch {e}"),
                Ok(Err(e)) => format!("lock session failed: {e}"),
                Err(_) => format!("lock session silent for {HEARTBEAT_TIMEOUT:?}"),
            };
            tracing::warn!(
                epoch = self.epoch,
                why,
                "writer lock lost: stopping the worker"
            );
            metrics::gauge!(crate::metrics::WRITER_LOCK_HELD).set(0.0);
            return;
        }
    }

    /// Releases the lock (also released when the connection closes). Bounded:
    /// the session may be the thing that broke.
    pub async fn release(mut self) {
        let _ = tokio::time::timeout(RELEASE_TIMEOUT, async {
            let _ = sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", LOCK_KEY)
                .fetch_one(&mut self.conn)
                .await;
            let _ = self.conn.close().await;
        })
        .await;
        metrics::gauge!(crate::metrics::WRITER_LOCK_HELD).set(0.0);
    }
}

/// The lock session's options: its name, and server-side keepalives so that
/// Postgres ends it (freeing the lock) soon after its holder goes silent.
/// These only apply over TCP; a Unix socket has no partition to detect.
fn session_options(database_url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = database_url.parse()?;
    Ok(options.application_name(LOCK_APPLICATION_NAME).options([
        ("tcp_keepalives_idle", KEEPALIVES_IDLE_SECS.to_string()),
        (
            "tcp_keepalives_interval",
            KEEPALIVES_INTERVAL_SECS.to_string(),
        ),
        ("tcp_keepalives_count", KEEPALIVES_COUNT.to_string()),
        ("tcp_user_timeout", TCP_USER_TIMEOUT_MS.to_string()),
    ]))
}

async fn try_acquire(database_url: &str) -> Result<Option<WriterLock>, StoreError> {
    let options = session_options(database_url).map_err(StoreError::Config)?;
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolTimedOut))??;
    let held = sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "held!""#, LOCK_KEY)
        .fetch_one(&mut conn)
        .await?;
    if !held {
        let _ = conn.close().await;
        return Ok(None);
    }
    // Only now, under the lock: no other holder can bump concurrently.
    let epoch = store::deployment_epoch_bump(&mut conn, 0).await?;
    Ok(Some(WriterLock { conn, epoch }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_session_asks_for_keepalives_and_names_itself() {
        let o = session_options("postgres://u@db.example:5432/peerd").unwrap();
        assert_eq!(o.get_application_name(), Some(LOCK_APPLICATION_NAME));
        let opts = o.get_options().unwrap_or_default();
        for (k, v) in [
            ("tcp_keepalives_idle", "5"),
            ("tcp_keepalives_interval", "2"),
            ("tcp_keepalives_count", "3"),
            ("tcp_user_timeout", "10000"),
        ] {
            assert!(opts.contains(&format!("-c {k}={v}")), "{k} in {opts:?}");
        }
    }
}
