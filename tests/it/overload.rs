//! Overload: bounded concurrency with load shedding, and per-call deadlines (README
//! "Overload and deadlines"). Calls are held in flight by a table lock in Postgres, so what
//! is in flight is known, never guessed from timing.

use std::time::Duration;

use ovn_peerd::proto::v1::{CreatePeeringRequest, GetPeeringRequest, Peering};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::nb::NbServer;
use crate::support::peerd::{test_config, Options, TestPeerd};
use crate::support::pg::{lock_waiters, TestDb};
use crate::support::vpc::create_vpc;
use ovn_peerd_test_support::wait_until;

const PROMPT: Duration = Duration::from_secs(30);

fn create(name: &str, local: &str, remote: &str) -> CreatePeeringRequest {
    CreatePeeringRequest {
        peering: Some(Peering {
            name: name.into(),
            local_vpc: local.into(),
            remote_vpc: remote.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn start(max_in_flight: usize, vpcs: usize) -> TestPeerd {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    let config = ovn_peerd::config::Config {
        max_in_flight,
        ..test_config(&db.url, &nb.remote(), &Options::default())
    };
    let t = TestPeerd::start_on(db, nb, config).await;
    for i in 0..vpcs {
        create_vpc(&t.nb, &format!("vpc-{i}"), &[&format!("10.{i}.0.1/24")]);
    }
    t
}

/// Waits (the one `wait_until`, on this multi-threaded runtime) until `n` backends wait.
fn wait_lock_waiters(pool: &sqlx::PgPool, n: i64) {
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        wait_until(&format!("{n} calls waiting in Postgres"), PROMPT, || {
            rt.block_on(lock_waiters(pool)) == n
        })
    })
    .unwrap();
}

async fn stored(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM peerings ORDER BY name")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_beyond_the_limit_are_refused_at_once_and_the_admitted_ones_complete() {
    let t = start(2, 8).await;
    let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE peerings IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    // Two creates fill the limit: both wait for the lock, inside Postgres. One after the
    // other: sent together they may share one batch (one transaction, one waiter); the
    // second, on other VPCs, gets a batch of its own while the first one's waits.
    let mut held = Vec::new();
    for (n, (name, a, b)) in [("a", "vpc-0", "vpc-1"), ("b", "vpc-2", "vpc-3")]
        .into_iter()
        .enumerate()
    {
        let mut c = t.client().await;
        let req = create(name, a, b);
        held.push(tokio::spawn(async move { c.create_peering(req).await }));
        wait_lock_waiters(&pool, n as i64 + 1);
    }

    // Twenty more, of every kind, while the lock is still held: each is answered (so none
    // waited for the lock) with RESOURCE_EXHAUSTED.
    let mut extra = Vec::new();
    for i in 0..20 {
        let mut c = t.client().await;
        extra.push(tokio::spawn(async move {
            if i % 2 == 0 {
                c.create_peering(create(&format!("x{i}"), "vpc-4", "vpc-5"))
                    .await
                    .map(|_| ())
            } else {
                c.get_peering(GetPeeringRequest { name: "a".into() })
                    .await
                    .map(|_| ())
            }
        }));
    }
    tokio::task::block_in_place(|| {
        wait_until("the 20 extra calls answered", PROMPT, || {
            extra.iter().all(|h| h.is_finished())
        })
    })
    .expect("calls beyond the limit must not wait");
    for h in extra {
        let status = h.await.unwrap().expect_err("refused");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    assert_eq!(
        lock_waiters(&pool).await,
        2,
        "the admitted calls still wait"
    );
    assert!(stored(&pool).await.is_empty());

    // Released: the admitted calls complete, and the places they held are free again.
    lock.commit().await.unwrap();
    for h in held {
        h.await.unwrap().expect("an admitted call completes");
    }
    let mut c = t.client().await;
    c.create_peering(create("c", "vpc-6", "vpc-7"))
        .await
        .expect("a call after the overload");
    assert_eq!(stored(&pool).await, ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_past_its_deadline_is_stopped_and_leaves_nothing_behind() {
    let t = start(8, 2).await;
    let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE peerings IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut c = t.client().await;
    let mut req = tonic::Request::new(create("p", "vpc-0", "vpc-1"));
    req.set_timeout(Duration::from_millis(300));
    // The lock is still held when the answer comes: the deadline ended the call.
    let status = c.create_peering(req).await.expect_err("past its deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    // Released: the abandoned transaction rolls back (nothing stored) and gives back the
    // VPCs' locks, so the same create goes through.
    lock.commit().await.unwrap();
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        wait_until("the abandoned transaction ended", PROMPT, || {
            rt.block_on(async {
                let open: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND pid <> pg_backend_pid() AND state <> 'idle'",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                open == 0
            })
        })
    })
    .unwrap();
    assert!(stored(&pool).await.is_empty());
    c.create_peering(create("p", "vpc-0", "vpc-1"))
        .await
        .expect("the same create, without a deadline");
    assert_eq!(stored(&pool).await, ["p"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_excess_call_is_refused_on_its_headers_before_its_message_is_read() {
    let t = start(1, 4).await;
    let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE peerings IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut c = t.client().await;
    let held = tokio::spawn(async move { c.create_peering(create("a", "vpc-0", "vpc-1")).await });
    wait_lock_waiters(&pool, 1);

    // A message larger than the server decodes (4 MB): had it been read, the answer would
    // be OUT_OF_RANGE; refused on its headers, it is RESOURCE_EXHAUSTED, with a retry hint.
    let huge = create(&"x".repeat(5 << 20), "vpc-2", "vpc-3");
    let mut c = t.client().await;
    let status = c
        .create_peering(huge.clone())
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.get_error_details().retry_info().is_some(),
        "{status:?}"
    );

    lock.commit().await.unwrap();
    held.await.unwrap().expect("the admitted call completes");
    // Admitted, the same message is read, and too large.
    let status = c.create_peering(huge).await.expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(stored(&pool).await, ["a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_client_is_never_refused() {
    // One call at a time, with room for one: each call's place is free again before its
    // answer arrives, so the next one is admitted.
    let t = start(1, 8).await;
    let mut c = t.client().await;
    for i in 0..4 {
        let name = format!("p{i}");
        let (a, b) = (format!("vpc-{}", 2 * i), format!("vpc-{}", 2 * i + 1));
        c.create_peering(create(&name, &a, &b))
            .await
            .expect("create");
        c.get_peering(GetPeeringRequest { name })
            .await
            .expect("get");
        c.list_peerings(ovn_peerd::proto::v1::ListPeeringsRequest::default())
            .await
            .expect("list");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_call_s_unread_message_leaves_the_other_calls_of_its_connection_alone() {
    // One HTTP/2 connection for everything: a held call, a refused 5 MB call (its message
    // never read) with a health check beside it, then an admitted call.
    let t = start(1, 4).await;
    let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    let channel = t.channel().await;
    let api =
        ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient::new(channel.clone());
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE peerings IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut c = api.clone();
    let held = tokio::spawn(async move { c.create_peering(create("a", "vpc-0", "vpc-1")).await });
    wait_lock_waiters(&pool, 1);

    let huge = create(&"x".repeat(5 << 20), "vpc-2", "vpc-3");
    let mut c = api.clone();
    // A guard, not a measure: a connection stalled by the unread message would hang.
    let (refused, checked) = tokio::time::timeout(PROMPT, async {
        tokio::join!(
            c.create_peering(huge),
            health.check(tonic_health::pb::HealthCheckRequest::default()),
        )
    })
    .await
    .expect("neither call hangs");
    let status = refused.expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    checked.expect("the health check beside it is answered");
    // Again, after the refusal: the connection still carries calls.
    tokio::time::timeout(
        PROMPT,
        health.check(tonic_health::pb::HealthCheckRequest::default()),
    )
    .await
    .expect("the health check after it does not hang")
    .expect("the health check after it is answered");

    lock.commit().await.unwrap();
    held.await.unwrap().expect("the held call completes");
    let mut c = api.clone();
    let got = tokio::time::timeout(
        PROMPT,
        c.get_peering(GetPeeringRequest { name: "a".into() }),
    )
    .await
    .expect("the admitted call does not hang")
    .expect("an admitted call on the same connection");
    assert_eq!(got.into_inner().name, "a");
}

/// The HTTP/2 settings a server sends first on a new plaintext connection at `addr`
/// (identifier, value), read with the bare protocol: tonic's client does not show them.
async fn http2_settings_of(addr: std::net::SocketAddr) -> Vec<(u16, u32)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The client preface, then an empty SETTINGS frame.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut header = [0u8; 9];
    tcp.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], 0x4, "the server's first frame is SETTINGS");
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    payload
        .chunks_exact(6)
        .map(|s| {
            let id = u16::from_be_bytes([s[0], s[1]]);
            (id, u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_listeners_bound_the_streams_of_a_connection() {
    let db = TestDb::create().await;
    let nb = NbServer::start();
    let mut config = test_config(&db.url, &nb.remote(), &Options::default());
    config.health_listen = Some("127.0.0.1:0".parse().unwrap());
    let t = TestPeerd::start_on(db, nb, config).await;
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    let want = (
        MAX_CONCURRENT_STREAMS,
        ovn_peerd::api::MAX_STREAMS_PER_CONNECTION,
    );
    let api = http2_settings_of(t.addr).await;
    assert!(api.contains(&want), "API listener: {api:?}");
    let health = http2_settings_of(t.health_addr.expect("a health listener")).await;
    assert!(health.contains(&want), "health listener: {health:?}");
}
