//! Parking a call at a lock the test holds, to make an interleaving deterministic (no
//! sleeps): the test takes the lock, starts the call, waits until Postgres shows the call
//! waiting for it, changes things under it, then lets it go.
//!
//! Two locks: the per-VPC locks of CreatePeering's transaction (AcceptPeering and
//! UpdatePeering take them too), held with ovn-peerd's own [`Store::peering_create_begin`];
//! and a table lock on `peerings` that stops writes (DeletePeering's statements) before their
//! snapshot is taken, while reads go on.

use std::time::Duration;

use ovn_peerd_test_support::wait_until_async;
use sqlx::{Connection, PgConnection, Postgres, Transaction};

pub const HANG: Duration = Duration::from_secs(30);

/// Whether a session runs a statement containing `needle` and waits for a lock.
pub async fn waiting(pool: &sqlx::PgPool, needle: &str) -> bool {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock' \
           AND query ILIKE $1 AND pid <> pg_backend_pid()",
    )
    .bind(format!("%{needle}%"))
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity")
        > 0
}

/// Waits until a session runs a statement containing `needle` and waits for a lock.
pub async fn wait_for_waiter(url: &str, needle: &str) {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    wait_until_async(
        &format!("a statement with {needle:?} waits for the test's lock"),
        HANG,
        || waiting(&pool, needle),
    )
    .await
    .expect("the call is parked");
}

/// A transaction holding `peerings` against writes (SHARE ROW EXCLUSIVE: reads go on, the
/// holder may write). Dropping it without commit releases it.
pub async fn hold_peerings_table(c: &mut PgConnection) -> Transaction<'_, Postgres> {
    let mut tx = c.begin().await.expect("begin");
    sqlx::query("LOCK TABLE peerings IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .expect("lock peerings");
    tx
}

/// In the holder's transaction: peering `from` (made through the API) becomes peering
/// `to` (any earlier `to` deleted first; its port-name and link reservations dropped,
/// the worker is off) — to a statement that waited for the lock, `to`
/// was deleted and made again, by another tenant if `from` is another tenant's.
pub async fn replace_with(tx: &mut Transaction<'_, Postgres>, to: &str, from: &str) {
    for sql in [
        format!("DELETE FROM peerings WHERE name = '{to}'"),
        format!("DELETE FROM peering_ports WHERE peering_name = '{from}'"),
        format!("DELETE FROM peering_links WHERE peering_name = '{from}'"),
        format!("UPDATE peerings SET name = '{to}' WHERE name = '{from}'"),
    ] {
        sqlx::query(&sql)
            .execute(&mut **tx)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}
