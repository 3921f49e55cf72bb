//! What Postgres itself enforces, even against a writer that bypasses ovn-peerd (another
//! replica, an operator with psql): here, a generation never goes back.

use crate::support::pg::TestDb;

#[tokio::test]
async fn a_direct_sql_update_to_a_lower_generation_fails() {
    let db = TestDb::create().await;
    // The schema as ovn-peerd applies it at start.
    let store = ovn_peerd::store::Store::connect_lazy(&db.url).expect("store");
    store.migrate().await.expect("migrations");
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4) \
         VALUES ('p', 'vpc-1', 'vpc-2', '169.254.0.1/30', '169.254.0.2/30')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let generation = || async {
        sqlx::query_scalar::<_, i64>("SELECT generation FROM peerings WHERE name = 'p'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    // Forward and unchanged are fine.
    sqlx::query("UPDATE peerings SET generation = 3 WHERE name = 'p'")
        .execute(&pool)
        .await
        .expect("a higher generation");
    sqlx::query("UPDATE peerings SET generation = 3, state = 'active' WHERE name = 'p'")
        .execute(&pool)
        .await
        .expect("the same generation");
    assert_eq!(generation().await, 3);

    // Back: refused by the database, and nothing changed.
    let err = sqlx::query("UPDATE peerings SET generation = 2, state = 'pending' WHERE name = 'p'")
        .execute(&pool)
        .await
        .expect_err("a lower generation must be refused");
    assert!(
        err.to_string().contains("would go back from 3 to 2"),
        "{err}"
    );
    assert_eq!(generation().await, 3);
    let state: String = sqlx::query_scalar("SELECT state FROM peerings WHERE name = 'p'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "active");
}
