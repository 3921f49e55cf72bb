//! A pass's report (statuses, tombstones) goes to Postgres while the next pass runs
//! (`src/reconciler/report.rs`): the next pass may read before it lands. That must lose no
//! status. Shown without timing: the test holds the peering's row lock in Postgres, so the
//! first report cannot land until the test lets it, while the next pass reads (the old
//! status: the lock blocks writers, not readers), judges and writes NB. The next pass's
//! verdict equals that stale status; compared with the stale read it would be "unchanged" and
//! never written, and the first report, landing last, would leave the wrong status for good.
//! Real worker loop, real Postgres and `ovsdb-server`, NB rows read with `ovn-nbctl`.

use std::time::Duration;

use ovn_peerd::store::PeeringState;

use super::{active_p, eventually, insert_sql, pool, record, store, wait_state};
use crate::support::nb::NbServer;
use crate::support::nbrows::NbRows;
use crate::support::peerd::{test_config, Options, TestPeerd};
use crate::support::pg::TestDb;
use crate::support::vpc::{create_vpc, next_mac};

#[tokio::test]
async fn a_status_judged_while_the_last_report_waits_is_not_lost() {
    let (t, s, active) = active_p(Duration::from_secs(10)).await;

    // Hold p's row: the worker's next status write for it waits for the test.
    let pg = pool(&t.db.url).await;
    let mut lock = pg.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM peerings WHERE name = 'p' FOR UPDATE")
        .execute(&mut *lock)
        .await
        .expect("lock p's row");

    // Pass 1: vpc-2 is gone, p FAILED (its report waits on the lock), vpc-1's half removed.
    t.nb.nbctl(&["lr-del", "vpc-2"]);
    eventually("vpc-1's half removed", Duration::from_secs(10), || async {
        (NbRows::read(&t.nb).owned_count() == 0).then_some(())
    })
    .await;
    // Pass 2: vpc-2 is back, router and subnet in one NB transaction (so one pass, not one
    // between them whose report would land after the lock and hide a lost status); it reads
    // p as ACTIVE (pass 1's FAILED is not in yet), judges it ACTIVE and writes both halves,
    // then waits for pass 1's report before its own. Nothing wakes the worker after it.
    let mac = next_mac();
    t.nb.nbctl(&[
        "lr-add",
        "vpc-2",
        "--",
        "lrp-add",
        "vpc-2",
        "vpc-2-s0",
        &mac,
        "10.2.0.1/24",
    ]);
    let route = ("10.2.0.0/24".into(), "169.254.0.2".into(), "dst-ip".into());
    eventually(
        "both halves written again, vpc-1's route in",
        Duration::from_secs(10),
        || async {
            let rows = NbRows::read(&t.nb);
            (rows.owned_ports_of("vpc-1").len() == 1
                && rows.owned_ports_of("vpc-2").len() == 1
                && rows.owned_routes_of("vpc-1").contains(&route))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        record(&s, "p").await.update_time,
        active.update_time,
        "no status of p was written while its row was held"
    );

    // Pass 1's FAILED lands, then pass 2's ACTIVE after it.
    lock.rollback().await.expect("release p's row");
    let back = eventually(
        "p ACTIVE after both reports",
        Duration::from_secs(10),
        || async {
            let r = s.peering_get("p").await.ok().flatten()?;
            (r.update_time > active.update_time && r.state == PeeringState::Active).then_some(r)
        },
    )
    .await;
    assert_eq!(back.state_message, "");
    assert_eq!(back.observed_generation, back.generation);
}

/// A report that fails while the worker is idle is retried at once, with backoff, as a full
/// pass: not at the next wake. A status write notifies nobody, so here nothing else would
/// wake the worker before the resync timer (5 minutes). Postgres refuses p's status change
/// (a trigger) and counts each attempt in a sequence (not rolled back with the statement).
#[tokio::test]
async fn a_report_that_fails_while_the_worker_is_idle_is_retried() {
    let (t, s, _) = active_p(Duration::from_secs(10)).await;
    let pg = pool(&t.db.url).await;
    for refuse in [
        "CREATE SEQUENCE status_attempts",
        "CREATE FUNCTION refuse_status() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM nextval('status_attempts'); RAISE EXCEPTION 'refused by the test'; END $$",
        "CREATE TRIGGER refuse_status BEFORE UPDATE OF state ON peerings FOR EACH ROW \
         WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION refuse_status()",
    ] {
        sqlx::query(refuse).execute(&pg).await.expect(refuse);
    }
    let attempts = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM status_attempts",
        )
        .fetch_one(&pg)
        .await
        .expect("attempts");
        n
    };

    // One narrow pass: vpc-2 gone, vpc-1's half removed, p FAILED; its report is refused
    // once the worker is idle (its own NB writes wake nobody).
    t.nb.nbctl(&["lr-del", "vpc-2"]);
    eventually("p's report refused", Duration::from_secs(10), || async {
        (attempts().await >= 1).then_some(())
    })
    .await;
    eventually(
        "p's report tried again with nothing waking the worker",
        Duration::from_secs(10),
        || async { (attempts().await >= 2).then_some(()) },
    )
    .await;
    assert_eq!(NbRows::read(&t.nb).owned_count(), 0);

    // Postgres takes it again: the next retry lands.
    sqlx::query("DROP TRIGGER refuse_status ON peerings")
        .execute(&pg)
        .await
        .expect("drop the trigger");
    let failed = wait_state(&s, "p", PeeringState::Failed, Duration::from_secs(30)).await;
    assert!(failed.state_message.contains("vpc-2"), "{failed:?}");
}

/// The same at a hub, where a narrow pass reads by conflict probe (`narrow.rs`, which judges
/// whether the probe's read is enough with the held report overlaid too), through two
/// updates of one peering: q fails because n's routes overlap its own (n is older); n's next
/// update takes them away while that FAILED is held, and the pass for it judges q again and
/// finds it ACTIVE, the status it read. That ACTIVE must still be written after the FAILED.
/// Every VPC a hub (bound 0): the probe's path.
#[tokio::test]
async fn at_a_hub_a_status_judged_while_the_last_report_waits_is_not_lost() {
    let t = every_vpc_a_hub().await;
    create_vpc(&t.nb, "a", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "b", &["10.2.1.1/24"]);
    create_vpc(&t.nb, "c", &["10.3.0.1/24"]);
    let pg = pool(&t.db.url).await;
    insert_sql(&pg, "q", "a", "b", "169.254.0.1/30", "169.254.0.2/30").await;
    // n is the older one: it wins a conflict with q.
    insert_sql(&pg, "n", "a", "c", "169.254.0.5/30", "169.254.0.6/30").await;
    sqlx::query("UPDATE peerings SET create_time = now() - interval '1 hour' WHERE name = 'n'")
        .execute(&pg)
        .await
        .expect("age n");
    let s = store(&t.db.url);
    wait_state(&s, "q", PeeringState::Active, Duration::from_secs(10)).await;
    wait_state(&s, "n", PeeringState::Active, Duration::from_secs(10)).await;

    let mut held = hold_reports(&pg).await;
    let set_routes = |routes: &'static str| {
        let pg = pg.clone();
        async move {
            sqlx::query(
                "UPDATE peerings SET local_routes = $1::jsonb, generation = generation + 1 \
                 WHERE name = 'n'",
            )
            .bind(routes)
            .execute(&pg)
            .await
            .expect("update n");
        }
    };
    let route_in_a = |prefix: &str| {
        let route = (prefix.to_string(), "169.254.0.6".into(), "dst-ip".into());
        NbRows::read(&t.nb).owned_routes_of("a").contains(&route)
    };

    // Pass A: n routes 10.2.0.0/16 into a, over q's 10.2.1.0/24; n wins, q FAILED (held).
    set_routes(r#"[{"cidr": "10.2.0.0/16", "policy": "dst-ip"}]"#).await;
    eventually(
        "n's explicit route in a",
        Duration::from_secs(10),
        || async { route_in_a("10.2.0.0/16").then_some(()) },
    )
    .await;
    // Pass B: n back to its automatic route (c's subnet), which overlaps nothing of q's.
    set_routes("[]").await;
    eventually(
        "n's automatic route in a",
        Duration::from_secs(10),
        || async { (route_in_a("10.3.0.0/24") && !route_in_a("10.2.0.0/16")).then_some(()) },
    )
    .await;
    assert_eq!(record(&s, "q").await.state, PeeringState::Active, "held");

    // A's report lands (q FAILED), then B's: n's status and, in the same statement, q's.
    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut *held)
        .await
        .expect("release");
    wait_state(&s, "n", PeeringState::Active, Duration::from_secs(10)).await;
    let q = record(&s, "q").await;
    assert_eq!(
        (q.state, q.state_message.as_str()),
        (PeeringState::Active, ""),
        "q's ACTIVE written after the held FAILED"
    );
}

/// ovn-peerd with the worker in the background and every VPC a hub (bound 0): narrow passes
/// read by conflict probe.
async fn every_vpc_a_hub() -> TestPeerd {
    let (db, nb) = (TestDb::create().await, NbServer::start());
    let opts = Options {
        worker: true,
        ..Options::default()
    };
    let mut config = test_config(&db.url, &nb.remote(), &opts);
    config.full_read_below = 0;
    TestPeerd::start_on(db, nb, config).await
}

/// Holds the worker's status writes until the returned connection unlocks advisory lock 4242
/// (a statement trigger waits for it before any row is locked: the test's own updates go
/// through).
async fn hold_reports(pg: &sqlx::PgPool) -> sqlx::pool::PoolConnection<sqlx::Postgres> {
    for hold in [
        "CREATE FUNCTION hold_reports() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF current_query() LIKE '%observed_generation = u.generation%' THEN \
         PERFORM pg_advisory_xact_lock_shared(4242); END IF; RETURN NULL; END $$",
        "CREATE TRIGGER hold_reports BEFORE UPDATE ON peerings FOR EACH STATEMENT \
         EXECUTE FUNCTION hold_reports()",
    ] {
        sqlx::query(hold).execute(pg).await.expect(hold);
    }
    let mut held = pg.acquire().await.expect("connection");
    sqlx::query("SELECT pg_advisory_lock(4242)")
        .execute(&mut *held)
        .await
        .expect("hold the worker's status writes");
    held
}

/// Whether a status write of the worker waits for [`hold_reports`]'s lock: the pass that
/// made it has judged and written NB.
async fn a_report_is_held(pg: &sqlx::PgPool) -> bool {
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 \
         AND NOT granted",
    )
    .fetch_one(pg)
    .await
    .expect("pg_locks");
    waiting > 0
}

/// A narrow pass at a hub asks whether the conflict probe's read is enough with the held
/// report's statuses overlaid (`src/reconciler/narrow.rs`): a FAILED there that Postgres does
/// not show yet makes it read every peering of the VPCs. x, updated to route 10.2.0.0/16 into
/// hub a over older y's 10.2.1.0/24, is FAILED by a pass whose report is held (Postgres still
/// says ACTIVE). Then c, which overlaps neither, changes: its pass judges x again (a failed
/// peering of its VPC), and must judge it against y, which only the full read has (the
/// probe reads x for its explicit routes, not y). Judged against the probe's read alone x
/// would pass, and its route overlapping y's would be written.
#[tokio::test]
async fn at_a_hub_a_failed_status_held_in_the_last_report_widens_the_next_narrow_read() {
    let t = every_vpc_a_hub().await;
    create_vpc(&t.nb, "a", &["10.1.0.1/24"]);
    create_vpc(&t.nb, "y", &["10.2.1.1/24"]);
    create_vpc(&t.nb, "x", &["10.9.0.1/24"]);
    create_vpc(&t.nb, "c", &["10.3.0.1/24"]);
    let pg = pool(&t.db.url).await;
    insert_sql(&pg, "y", "a", "y", "169.254.0.1/30", "169.254.0.2/30").await;
    insert_sql(&pg, "x", "a", "x", "169.254.0.5/30", "169.254.0.6/30").await;
    insert_sql(&pg, "c", "a", "c", "169.254.0.9/30", "169.254.0.10/30").await;
    // Ages: y, then x, then c.
    sqlx::query(
        "UPDATE peerings SET create_time = now() - CASE name WHEN 'y' THEN interval '2 hours' \
         WHEN 'x' THEN interval '1 hour' ELSE interval '0' END",
    )
    .execute(&pg)
    .await
    .expect("age them");
    let s = store(&t.db.url);
    for name in ["y", "x", "c"] {
        wait_state(&s, name, PeeringState::Active, Duration::from_secs(10)).await;
    }
    let mut held = hold_reports(&pg).await;

    // Pass P: x now routes 10.2.0.0/16 into a, over older y's 10.2.1.0/24: x FAILED, frozen
    // (its rows stay as they were), its report held.
    sqlx::query(
        "UPDATE peerings SET local_routes = '[{\"cidr\": \"10.2.0.0/16\", \"policy\": \"dst-ip\"}]'::jsonb, \
         generation = generation + 1 WHERE name = 'x'",
    )
    .execute(&pg)
    .await
    .expect("update x");
    eventually("x's FAILED held", Duration::from_secs(10), || async {
        a_report_is_held(&pg).await.then_some(())
    })
    .await;
    assert_eq!(record(&s, "x").await.state, PeeringState::Active, "held");

    // Pass Q, narrow, for c (a new generation: its rows' markers are rewritten).
    let c = record(&s, "c").await;
    sqlx::query("UPDATE peerings SET generation = generation + 1 WHERE name = 'c'")
        .execute(&pg)
        .await
        .expect("update c");
    let marked = (c.generation + 1).to_string();
    eventually(
        "c's rows marked with its new generation",
        Duration::from_secs(10),
        || async {
            let rows = NbRows::read(&t.nb);
            let ours = rows
                .routes
                .values()
                .filter(|r| {
                    r.external_ids.get("ovn-peerd:peering").map(String::as_str) == Some("c")
                })
                .collect::<Vec<_>>();
            (!ours.is_empty()
                && ours
                    .iter()
                    .all(|r| r.external_ids.get("ovn-peerd:generation") == Some(&marked)))
            .then_some(())
        },
    )
    .await;
    let in_a = NbRows::read(&t.nb).owned_routes_of("a");
    assert!(
        !in_a.iter().any(|(prefix, ..)| prefix == "10.2.0.0/16"),
        "x's route over y's was written: {in_a:?}"
    );

    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut *held)
        .await
        .expect("release");
    let x = eventually("x FAILED in Postgres", Duration::from_secs(10), || async {
        let r = s.peering_get("x").await.ok().flatten()?;
        (r.state == PeeringState::Failed).then_some(r)
    })
    .await;
    assert!(x.state_message.contains("\"y\""), "{x:?}");
    wait_state(&s, "c", PeeringState::Active, Duration::from_secs(10)).await;
    assert_eq!(record(&s, "x").await.state, PeeringState::Failed, "{x:?}");
}
