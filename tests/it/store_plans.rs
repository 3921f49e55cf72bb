//! The create transaction's statements stay index lookups when `peerings` grew after a
//! connection cached their generic plans (issue 14: planned on a small table, they scanned
//! every peering at every create of a bulk of 10,000).

use std::time::Duration;

use ovn_peerd::store::{BatchInsert, NewPeering, PeeringState, Store};

use ovn_peerd_test_support::wait_until_async;

use crate::support::pg::TestDb;

/// One batch of creates `ks` through the store's create transaction, as CreatePeering's
/// group commit runs it (a batch: a generic plan then looks cheaper than custom ones).
async fn create(store: &Store, ks: std::ops::Range<usize>) {
    let new: Vec<NewPeering> = ks
        .clone()
        .map(|k| NewPeering {
            name: format!("c-{k}"),
            local_vpc: format!("vpc-{k}a"),
            remote_vpc: format!("vpc-{k}b"),
            local_v4: Some("169.254.0.1/30".parse().unwrap()),
            remote_v4: Some("169.254.0.2/30".parse().unwrap()),
            local_v6: None,
            remote_v6: None,
            local_routes: vec![],
            remote_routes: vec![],
            request_id: Some(format!("r-{k}")),
            labels: Default::default(),
            state: PeeringState::Pending,
            state_message: String::new(),
        })
        .collect();
    let ports: Vec<[String; 2]> = new
        .iter()
        .map(|p| {
            let (l, r) = (&p.local_vpc, &p.remote_vpc);
            [format!("{l}-{r}"), format!("{r}-{l}")]
        })
        .collect();
    let vpcs: Vec<String> = new
        .iter()
        .flat_map(|p| [p.local_vpc.clone(), p.remote_vpc.clone()])
        .collect();
    let names: Vec<String> = new.iter().map(|p| p.name.clone()).collect();
    let ids: Vec<String> = new.iter().filter_map(|p| p.request_id.clone()).collect();
    let all_ports: Vec<String> = ports.iter().flatten().cloned().collect();
    let refs: Vec<&str> = vpcs.iter().map(String::as_str).collect();
    let mut tx = store.peering_create_begin(&refs, None).await.unwrap();
    let read = tx
        .list_for_batch(&vpcs, &names, &all_ports, &ids, 64)
        .await
        .unwrap()
        .expect("no hub");
    assert!(read.records.is_empty());
    let batch: Vec<BatchInsert> = new
        .iter()
        .zip(&ports)
        .map(|(new, ports)| BatchInsert {
            new,
            request_hash: b"h",
            ports,
        })
        .collect();
    tx.insert_all(&batch).await.unwrap();
    tx.commit().await.unwrap();
}

/// `peerings`' sequential scans so far, once every insert up to `inserted` is counted (a
/// backend reports its counters together at the end of its transactions).
async fn seq_scans(pool: &sqlx::PgPool, inserted: i64) -> i64 {
    wait_until_async(
        "the statistics to count every insert",
        Duration::from_secs(30),
        || async {
            let (ins, seq): (i64, i64) = sqlx::query_as(
                "SELECT n_tup_ins, seq_scan FROM pg_stat_user_tables WHERE relname = 'peerings'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            (ins >= inserted).then_some(seq)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn creates_scan_no_table_after_it_grew_under_their_cached_plans() {
    let db = TestDb::create().await;
    let store = Store::connect_lazy(&db.url).unwrap();
    store.migrate().await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let insert = |from: i32, to: i32| {
        sqlx::query(
            "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4, request_id) \
             SELECT 'p-' || k, 'v-' || k || 'a', 'v-' || k || 'b', \
                    '169.254.0.1/30', '169.254.0.2/30', 'q-' || k \
             FROM generate_series($1, $2) AS k",
        )
        .bind(from)
        .bind(to)
        .execute(&pool)
    };
    // A small table (a page: an empty one is planned as if it had ten), then batches of
    // four, one after another, enough for each of the pool's connections to run every
    // statement more than five times: each caches a generic plan of it, planned small.
    // No analyze meanwhile (autovacuum's would make every connection plan again).
    sqlx::query("ALTER TABLE peerings SET (autovacuum_enabled = false)")
        .execute(&pool)
        .await
        .unwrap();
    insert(1, 20).await.unwrap();
    for k in 0..36 {
        create(&store, 4 * k..4 * k + 4).await;
    }
    insert(21, 3000).await.unwrap();
    let before = seq_scans(&pool, 3144).await;
    for k in 36..40 {
        create(&store, 4 * k..4 * k + 4).await;
    }
    assert_eq!(
        seq_scans(&pool, 3160).await,
        before,
        "creates scanned peerings"
    );
}

/// The worker's narrow read (peerings touching a batch's VPCs) stays index lookups too when
/// `peerings` grew after a connection cached its generic plan (`auto_explain` showed it
/// scanning the whole table on large batches). Counted in tuples read by sequential scans:
/// reads of the small table add at most its 20 rows each, one scan of the grown one 3,000.
#[tokio::test]
async fn the_worker_read_scans_no_table_after_it_grew_under_its_cached_plan() {
    let db = TestDb::create().await;
    let store = Store::connect_lazy(&db.url).unwrap();
    store.migrate().await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let insert = |from: i32, to: i32| {
        sqlx::query(
            "INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4) \
             SELECT 'p-' || k, 'v-' || k || 'a', 'v-' || k || 'b', \
                    '169.254.0.1/30', '169.254.0.2/30' \
             FROM generate_series($1, $2) AS k",
        )
        .bind(from)
        .bind(to)
        .execute(&pool)
    };
    let read = |k: usize| {
        let vpcs: Vec<String> = (8 * k + 1..8 * k + 9).map(|k| format!("v-{k}a")).collect();
        let store = store.clone();
        async move {
            let vpcs: Vec<&str> = vpcs.iter().map(String::as_str).collect();
            store.peering_list_touching(&vpcs).await.unwrap().len()
        }
    };
    sqlx::query("ALTER TABLE peerings SET (autovacuum_enabled = false)")
        .execute(&pool)
        .await
        .unwrap();
    insert(1, 20).await.unwrap();
    // Enough reads for the store's connections to cache a generic plan, planned small.
    for k in 0..40 {
        read(k % 2).await;
    }
    insert(21, 3000).await.unwrap();
    for k in 0..4 {
        assert_eq!(read(10 + k).await, 8);
    }
    // A backend reports its counters when it exits (before it leaves pg_stat_activity).
    drop(store);
    pool.close().await;
    // One connection: the only backend left is this one.
    let check = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    wait_until_async(
        "every other backend of the database to exit",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_one(&check)
            .await
            .unwrap()
                == 0
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let read_by_scans: i64 = sqlx::query_scalar(
        "SELECT coalesce(seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = 'peerings'",
    )
    .fetch_one(&check)
    .await
    .unwrap();
    assert!(
        read_by_scans < 3000,
        "the worker's read scanned peerings: {read_by_scans} rows"
    );
}
