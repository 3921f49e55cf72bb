//! Postgres for tests: [`TestDb`] (a fresh database per test) and [`PgCluster`] (a throwaway
//! cluster a test can kill and restart), from the `ovn-peerd-test-support` crate.

pub use ovn_peerd_test_support::pg::{PgCluster, TestDb};
pub use ovn_peerd_test_support::{free_port, wait_until};

/// Sessions of this database (ovn-peerd's pool, the test's) waiting for a lock.
pub async fn lock_waiters(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity")
}
