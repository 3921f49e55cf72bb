//! The writer lock: among replicas sharing one database, only the holder of a
//! Postgres session-level advisory lock runs the worker.
//!
//! The lock lives on a dedicated connection (not a pooled one): when the
//! replica dies or its connection breaks, Postgres ends the session and frees
//! the lock, and another replica takes it at its next attempt.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// The advisory lock key: "ovnpeerd" in ASCII.
const LOCK_KEY: i64 = 0x6f76_6e70_6565_7264;
/// How often a replica without the lock tries to take it (and the first delay after an error).
pub const ACQUIRE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the holder checks its lock connection is alive.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Longest delay between attempts while Postgres cannot be reached.
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A held writer lock.
pub struct WriterLock {
    conn: PgConnection,
}

impl WriterLock {
    /// Waits until this replica holds the lock; `None` on shutdown.
    pub async fn acquire(database_url: &str, shutdown: &CancellationToken) -> Option<WriterLock> {
        let mut logged_waiting = false;
        let mut on_error = Backoff::new(ACQUIRE_INTERVAL, ERROR_BACKOFF_MAX);
        loop {
            let delay = match try_acquire(database_url).await {
                Ok(Some(lock)) => {
                    tracing::info!("writer lock taken: this replica runs the worker");
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

    /// Resolves when the lock is lost (its connection broke).
    pub async fn lost(&mut self) {
        loop {
            tokio::time::sleep(KEEPALIVE_INTERVAL).await;
            let alive = tokio::time::timeout(KEEPALIVE_INTERVAL, self.conn.ping()).await;
            if !matches!(alive, Ok(Ok(()))) {
                tracing::warn!("writer lock connection lost: stopping the worker");
                metrics::gauge!(crate::metrics::WRITER_LOCK_HELD).set(0.0);
                return;
            }
        }
    }

    /// Releases the lock (also released when the connection closes).
    pub async fn release(mut self) {
        let _ = sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", LOCK_KEY)
            .fetch_one(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
        metrics::gauge!(crate::metrics::WRITER_LOCK_HELD).set(0.0);
    }
}

async fn try_acquire(database_url: &str) -> Result<Option<WriterLock>, sqlx::Error> {
    let mut conn =
        tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(database_url))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let held = sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "held!""#, LOCK_KEY)
        .fetch_one(&mut conn)
        .await?;
    if held {
        Ok(Some(WriterLock { conn }))
    } else {
        let _ = conn.close().await;
        Ok(None)
    }
}
