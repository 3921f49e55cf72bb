//! What Postgres itself enforces, even against a writer that bypasses ovn-peerd (another
//! replica, an operator with psql): a generation never goes back; links are unique per VPC.

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

#[tokio::test]
async fn a_direct_sql_insert_of_a_link_overlapping_one_of_the_same_vpc_fails() {
    let db = TestDb::create().await;
    let store = ovn_peerd::store::Store::connect_lazy(&db.url).expect("store");
    store.migrate().await.expect("migrations");
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let insert = |name: &'static str, vpcs: (&'static str, &'static str), link: &'static str| {
        let pool = pool.clone();
        async move {
            let link: ipnet::IpNet = link.parse().unwrap();
            let (l, r) = ovn_peerd::peering::links::link_hosts(link).unwrap();
            sqlx::query(
                "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4) \
                 VALUES ($1, $2, $3, $4::inet, $5::inet)",
            )
            .bind(name)
            .bind(vpcs.0)
            .bind(vpcs.1)
            .bind(l.to_string())
            .bind(r.to_string())
            .execute(&pool)
            .await
        }
    };
    insert("a", ("vpc-1", "vpc-2"), "169.254.0.0/30")
        .await
        .expect("the first link");
    // Another pair of routers: the same link is theirs to use too.
    insert("b", ("vpc-3", "vpc-4"), "169.254.0.0/30")
        .await
        .expect("the same link on routers that share nothing");
    // A router of `a` (as either side) and an overlapping link: refused by the database.
    for (name, vpcs, link) in [
        ("c", ("vpc-5", "vpc-2"), "169.254.0.0/30"),
        ("d", ("vpc-1", "vpc-5"), "169.254.0.0/29"),
        ("e", ("vpc-4", "vpc-1"), "169.254.0.0/31"),
    ] {
        let err = insert(name, vpcs, link)
            .await
            .expect_err("an overlapping link on a shared router");
        assert!(
            err.to_string().contains("peering_links_v4_excl"),
            "{name}: {err}"
        );
    }
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM peerings ORDER BY name")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(names, ["a", "b"]);
    // Gone with its peering: the link is free on vpc-1 again.
    sqlx::query("DELETE FROM peerings WHERE name = 'a'")
        .execute(&pool)
        .await
        .unwrap();
    insert("d", ("vpc-1", "vpc-5"), "169.254.0.0/29")
        .await
        .expect("the link of a deleted peering");
}

/// The same rule for IPv6 (its own exclusion, `peering_links_v6_excl`): a link-local link
/// is free on routers that share nothing, refused if it overlaps one on a shared router.
#[tokio::test]
async fn a_direct_sql_insert_of_a_v6_link_overlapping_one_of_the_same_vpc_fails() {
    let db = TestDb::create().await;
    let store = ovn_peerd::store::Store::connect_lazy(&db.url).expect("store");
    store.migrate().await.expect("migrations");
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let insert = |name: &'static str, vpcs: (&'static str, &'static str), link: &'static str| {
        let pool = pool.clone();
        async move {
            let link: ipnet::IpNet = link.parse().unwrap();
            let (l, r) = ovn_peerd::peering::links::link_hosts(link).unwrap();
            sqlx::query(
                "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v6, remote_v6) \
                 VALUES ($1, $2, $3, $4::inet, $5::inet)",
            )
            .bind(name)
            .bind(vpcs.0)
            .bind(vpcs.1)
            .bind(l.to_string())
            .bind(r.to_string())
            .execute(&pool)
            .await
        }
    };
    insert("a", ("vpc-1", "vpc-2"), "fe80::/64")
        .await
        .expect("the first link");
    insert("b", ("vpc-3", "vpc-4"), "fe80::/64")
        .await
        .expect("the same link on routers that share nothing");
    for (name, vpcs, link) in [
        ("c", ("vpc-5", "vpc-2"), "fe80::/127"),
        ("d", ("vpc-1", "vpc-5"), "fe80::/127"),
        ("e", ("vpc-4", "vpc-6"), "fe80::/64"),
    ] {
        let err = insert(name, vpcs, link)
            .await
            .expect_err("an overlapping link on a shared router");
        assert!(
            err.to_string().contains("peering_links_v6_excl"),
            "{name}: {err}"
        );
    }
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM peerings ORDER BY name")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(names, ["a", "b"]);
}

/// UpdatePeering's request_ids are forgotten after a day (the watch hub's prune tick calls
/// this with `UPDATE_REQUESTS_KEPT`); younger ones stay for their retries.
#[tokio::test]
async fn update_request_ids_older_than_a_day_are_pruned() {
    let db = TestDb::create().await;
    let store = ovn_peerd::store::Store::connect_lazy(&db.url).expect("store");
    store.migrate().await.expect("migrations");
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    for sql in [
        "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4) \
         VALUES ('p', 'vpc-1', 'vpc-2', '169.254.0.1/30', '169.254.0.2/30')",
        "INSERT INTO peering_update_requests (request_id, peering_name, request_hash, create_time) \
         VALUES ('old', 'p', '\\x00', now() - interval '25 hours'), \
                ('new', 'p', '\\x00', now() - interval '23 hours')",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let kept = ovn_peerd::watch::hub::UPDATE_REQUESTS_KEPT;
    assert_eq!(store.peering_update_requests_prune(kept).await.unwrap(), 1);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT request_id FROM peering_update_requests ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(left, ["new"]);
}
