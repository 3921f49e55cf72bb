//! The change log of `peerings` (table `peering_changes`, written by triggers in the
//! transaction of each change, in commit order: see its migration) and its retention.
//!
//! Readers: each replica's one change reader (`src/watch/hub.rs`) and WatchPeerings' catch-up
//! of a watcher behind that reader's memory. A position is a `seq`: "every change up to
//! and including it". Rows are always pruned as a prefix; `pruned_through` says how far.

use std::time::Duration;

use sqlx::types::Json;

use super::model::{Labels, PeeringRow, StoredRoute};
use super::{PeeringRecord, Store, StoreError};

/// The channel the change-log trigger notifies on (empty payload, one per transaction).
pub const CHANGES_CHANNEL: &str = "ovn_peerd_changes";

/// What a change did to a peering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Inserted.
    Added,
    /// Any update, the worker's status writes included.
    Modified,
    /// The row is gone (the worker removed the tombstone).
    Deleted,
}

/// One committed change.
#[derive(Debug, Clone, PartialEq)]
pub struct PeeringChange {
    /// Its position in the log.
    pub seq: i64,
    /// What happened.
    pub kind: ChangeKind,
    /// The row after the change; for [`ChangeKind::Deleted`] the row as it was.
    pub peering: PeeringRecord,
}

/// Where the log is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// Every change up to here is committed and was logged (pruned or not).
    pub head: i64,
    /// Changes up to here are pruned: a reader must be at or past it.
    pub pruned_through: i64,
}

/// A page of the log after a position.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangesPage {
    /// The next changes in order (empty: none after the position yet).
    Changes(Vec<PeeringChange>),
    /// Changes right after the position were pruned: it cannot be resumed from.
    Pruned {
        /// How far the log is pruned.
        through: i64,
    },
}

/// A snapshot of the peerings and the log position it corresponds to.
#[derive(Debug, Clone)]
pub struct PeeringSnapshot {
    /// The log position: the snapshot is the result of every change up to it, and of none after.
    pub position: i64,
    /// The peerings, in name order.
    pub peerings: Vec<PeeringRecord>,
}

/// One log row as a change, or why this version cannot read it.
fn decode_change(seq: i64, kind: &str, row: PeeringRow) -> Result<PeeringChange, StoreError> {
    let kind = match kind {
        "added" => ChangeKind::Added,
        "modified" => ChangeKind::Modified,
        "deleted" => ChangeKind::Deleted,
        other => {
            return Err(StoreError::Corrupt {
                name: row.name,
                reason: format!("change {seq} has unknown kind {other:?}"),
            })
        }
    };
    Ok(PeeringChange {
        seq,
        kind,
        peering: row.try_into()?,
    })
}

impl Store {
    /// The log's head and horizon now.
    pub async fn peering_changes_position(&self) -> Result<LogPosition, StoreError> {
        let row = self
            .timed(
                "peering_changes_position",
                sqlx::query!(
                    r#"SELECT greatest((SELECT max(seq) FROM peering_changes), pruned_through)
                         AS "head!", pruned_through FROM peering_changes_horizon"#
                )
                .fetch_one(&self.pool),
            )
            .await?;
        Ok(LogPosition {
            head: row.head,
            pruned_through: row.pruned_through,
        })
    }

    /// Up to `limit` changes after position `after`, in order, from one snapshot; `Pruned`
    /// when changes after it are gone.
    ///
    /// One statement (one round trip, no transaction: a statement is its own snapshot) when
    /// there are changes; the horizon is read again only when there are none, to tell "none
    /// yet" from "pruned". That second read is later than the first, and rows are pruned as
    /// a prefix: if `after` is not below the horizon now, it was not below it then either.
    pub async fn peering_changes_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<ChangesPage, StoreError> {
        let read = self
            .timed("peering_changes_after", async {
                let rows = sqlx::query!(
                    r#"SELECT c.seq, c.kind,
                         r.name AS "name!", r.local_vpc AS "local_vpc!",
                         r.remote_vpc AS "remote_vpc!",
                         r.local_v4, r.remote_v4, r.local_v6, r.remote_v6,
                         r.local_routes AS "local_routes!: Json<Vec<StoredRoute>>",
                         r.remote_routes AS "remote_routes!: Json<Vec<StoredRoute>>",
                         r.state AS "state!", r.state_message AS "state_message!",
                         r.generation AS "generation!",
                         r.observed_generation AS "observed_generation!",
                         r.request_id, r.create_time AS "create_time!",
                         r.update_time AS "update_time!",
                         r.generation_time AS "generation_time!",
                         COALESCE(r.labels, '{}') AS "labels!: Json<Labels>",
                         r.etag AS "etag!"
                       FROM peering_changes c,
                            LATERAL jsonb_populate_record(NULL::peerings, c.peering) AS r
                       WHERE c.seq > $1
                         AND $1 >= (SELECT pruned_through FROM peering_changes_horizon)
                       ORDER BY c.seq LIMIT $2"#,
                    after,
                    limit
                )
                .fetch_all(&self.pool)
                .await?;
                if rows.is_empty() {
                    let through =
                        sqlx::query_scalar!("SELECT pruned_through FROM peering_changes_horizon")
                            .fetch_one(&self.pool)
                            .await?;
                    if after < through {
                        return Ok(Err(through));
                    }
                }
                let rows: Vec<(i64, String, PeeringRow)> = rows
                    .into_iter()
                    .map(|r| {
                        let row = PeeringRow {
                            name: r.name,
                            local_vpc: r.local_vpc,
                            remote_vpc: r.remote_vpc,
                            local_v4: r.local_v4,
                            remote_v4: r.remote_v4,
                            local_v6: r.local_v6,
                            remote_v6: r.remote_v6,
                            local_routes: r.local_routes,
                            remote_routes: r.remote_routes,
                            state: r.state,
                            state_message: r.state_message,
                            generation: r.generation,
                            observed_generation: r.observed_generation,
                            request_id: r.request_id,
                            create_time: r.create_time,
                            update_time: r.update_time,
                            generation_time: r.generation_time,
                            labels: r.labels,
                            etag: r.etag,
                        };
                        (r.seq, r.kind, row)
                    })
                    .collect();
                Ok(Ok(rows))
            })
            .await?;
        let rows = match read {
            Err(through) => return Ok(ChangesPage::Pruned { through }),
            Ok(rows) => rows,
        };
        // A row this version cannot decode (say, a state written by a newer replica during a
        // rolling upgrade) is skipped, loudly: failing the page would stop every watcher at it
        // for good, the reader retrying forever.
        let changes = rows
            .into_iter()
            .filter_map(|(seq, kind, row)| {
                let name = row.name.clone();
                match decode_change(seq, &kind, row) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::error!(seq, peering = %name, error = %e,
                            "skipping a change-log row this version cannot decode");
                        metrics::counter!(crate::metrics::WATCH_UNDECODABLE_CHANGES_TOTAL)
                            .increment(1);
                        None
                    }
                }
            })
            .collect();
        Ok(ChangesPage::Changes(changes))
    }

    /// Every peering (those touching `vpc`, if given; those whose local or remote VPC matches
    /// one of the `LIKE` patterns, if given: a tenant's VPCs) and the log position they are
    /// the result of, from one snapshot: the changes after `position` are exactly those the
    /// snapshot does not hold yet. Filtering here, not in the watcher, keeps another tenant's
    /// rows out of a tenant's stream's memory.
    pub async fn peering_snapshot(
        &self,
        vpc: Option<&str>,
        patterns: Option<&[String]>,
    ) -> Result<PeeringSnapshot, StoreError> {
        let (position, rows) = self
            .timed("peering_snapshot", async {
                let mut tx = self
                    .pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?;
                let position = sqlx::query_scalar!(
                    r#"SELECT greatest((SELECT max(seq) FROM peering_changes), pruned_through)
                         AS "head!" FROM peering_changes_horizon"#
                )
                .fetch_one(&mut *tx)
                .await?;
                let rows = sqlx::query_as!(
                    PeeringRow,
                    r#"SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag FROM peerings
                     WHERE ($1::text IS NULL OR local_vpc = $1 OR remote_vpc = $1)
                       AND ($2::text[] IS NULL
                            OR local_vpc LIKE ANY($2::text[]) OR remote_vpc LIKE ANY($2::text[]))
                     ORDER BY name"#,
                    vpc,
                    patterns
                )
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok((position, rows))
            })
            .await?;
        Ok(PeeringSnapshot {
            position,
            peerings: rows
                .into_iter()
                .map(PeeringRecord::try_from)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Prunes the log to what retention keeps: changes recorded within `keep_for`, and at
    /// most the latest `keep_at_most`; always a prefix. Returns how many were pruned.
    pub async fn peering_changes_prune(
        &self,
        keep_for: Duration,
        keep_at_most: i64,
    ) -> Result<i64, StoreError> {
        self.timed(
            "peering_changes_prune",
            sqlx::query_scalar!(
                r#"WITH cut AS (
                     SELECT greatest(
                       (SELECT max(seq) FROM peering_changes
                          WHERE recorded_at < clock_timestamp() - make_interval(secs => $1)),
                       (SELECT max(seq) FROM peering_changes) - $2) AS through
                   ), gone AS (
                     DELETE FROM peering_changes WHERE seq <= (SELECT through FROM cut)
                     RETURNING seq
                   ), moved AS (
                     UPDATE peering_changes_horizon
                        SET pruned_through = greatest(pruned_through, (SELECT max(seq) FROM gone))
                      WHERE EXISTS (SELECT 1 FROM gone)
                   )
                   SELECT count(*) AS "pruned!" FROM gone"#,
                keep_for.as_secs_f64(),
                keep_at_most
            )
            .fetch_one(&self.pool),
        )
        .await
    }
}
