//! How a pass's plan reaches NB: transactions of whole peerings ([`super::batch`]), each behind
//! the writer fence, pipelined, and what each outcome means for its peerings' verdicts.
//!
//! **Pipelined.** Up to [`IN_FLIGHT`] transactions are on the wire at once: the next one is
//! encoded and sent while NB still runs the previous ones (ovsdb-server runs one session's
//! transactions in the order sent), so neither side waits for the other. What keeps that as
//! safe as one at a time:
//! - every transaction carries its own fence `wait` first: once another replica has taken
//!   over, each one still in flight fails on it and commits nothing;
//! - a transaction goes out behind the ones in flight only if it shares no router, port name
//!   or updated row with any of them ([`batch::keys`]): it asks nothing of NB that their
//!   success or failure could change (named-uuid references never cross transactions; a
//!   route's identity and ECMP group live on its router; port names are unique across
//!   routers). One that does share waits until they have landed, including the one-by-one
//!   retry of a refused batch, so it is built from what they left;
//! - replies are settled in send order, each one's verdicts from its own results only.
//!
//! A refused batch is retried peering by peering (each peering still whole), so one peering
//! that cannot be written never blocks the others, except one creating a route where another
//! removes one: it goes only once that removal committed ([`batch::prerequisites`]).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Instant;

use crate::ovsdb::{Operation, OvsdbErrorKind, Sent, TransactError};
use crate::peering::diff::{Change, Plan};

use super::batch::{self, transactions, Group, Key};
use super::pass::{PassError, PassOutcome, Verdict};
use super::wake::EchoWatch;
use super::{fence, translate, Reconciler};

/// Transactions on the wire at once. Enough to keep NB busy while we encode the next one and
/// apply the echo of the last; more would only queue in the server's input.
pub(super) const IN_FLIGHT: usize = 4;

/// Writes the plan in transactions of whole peerings up to the row budget, pipelined.
pub(super) async fn write_changes(
    r: &Reconciler,
    plan: &Plan,
    verdicts: &mut HashMap<String, Verdict>,
    outcome: &mut PassOutcome,
) -> Result<(), PassError> {
    let batches = transactions(plan, r.settings.max_rows_per_transaction);
    let mut flight: VecDeque<InFlight<'_>> = VecDeque::new();
    let result = pipeline(r, &batches, &mut flight, verdicts, outcome).await;
    if let Err(PassError::Fenced) = result {
        // Each one still in flight fails on its own fence and commits nothing (and expects
        // no echo): nothing to wait for.
        return result;
    }
    // Stopped early on another error: the transactions still in flight may have committed
    // (they are independent of the one that failed). Their replies, each bounded by the
    // transact timeout (a lost connection ends them all at once), say which; a peering whose
    // rows committed is never reported as not converged.
    let drained = drain(flight, verdicts, outcome).await;
    result.and(drained)
}

/// Settles the transactions still in flight after the pipeline stopped early, sending
/// nothing more: a reply that commits settles its peerings as usual; a single peering's
/// refusal or guard miss too; anything else leaves its peerings PENDING for the next pass.
async fn drain(
    flight: VecDeque<InFlight<'_>>,
    verdicts: &mut HashMap<String, Verdict>,
    outcome: &mut PassOutcome,
) -> Result<(), PassError> {
    let mut fenced = false;
    for f in flight {
        let batch = f.batch.clone();
        match reply(f, outcome).await {
            Ok(not_done) => {
                for (name, _) in &batch {
                    settle(verdicts, name, Written::from(&not_done, name), outcome);
                }
            }
            Err(PassError::Nb(e)) if batch.len() == 1 && is_refusal(&e) => {
                settle(verdicts, batch[0].0, Written::Refused(&e), outcome)
            }
            Err(PassError::Nb(e)) if batch.len() == 1 && is_guard_miss(&e) => {
                settle(verdicts, batch[0].0, Written::Partly, outcome)
            }
            Err(PassError::Fenced) => fenced = true,
            Err(_) => {}
        }
    }
    match fenced {
        true => Err(PassError::Fenced),
        false => Ok(()),
    }
}

async fn pipeline<'p>(
    r: &Reconciler,
    batches: &'p [Vec<Group<'p>>],
    flight: &mut VecDeque<InFlight<'p>>,
    verdicts: &mut HashMap<String, Verdict>,
    outcome: &mut PassOutcome,
) -> Result<(), PassError> {
    for batch in batches {
        let keys = batch::keys(batch);
        while flight.len() >= IN_FLIGHT || flight.iter().any(|f| !f.keys.is_disjoint(&keys)) {
            let f = flight
                .pop_front()
                .expect("non-empty: guarded by the loop condition");
            land(r, f, verdicts, outcome).await?;
        }
        let groups: Vec<&Group<'p>> = batch.iter().collect();
        flight.push_back(send(r, groups, keys, outcome).await?);
    }
    while let Some(f) = flight.pop_front() {
        land(r, f, verdicts, outcome).await?;
    }
    Ok(())
}

/// One transaction on the wire.
pub(super) struct InFlight<'p> {
    batch: Vec<&'p Group<'p>>,
    keys: HashSet<Key<'p>>,
    ops: Vec<Operation>,
    /// The peering of each operation (`None`: the fence), to tell whose a result is.
    owners: Vec<Option<&'p str>>,
    /// The rows its NB echo will show, registered with the wake-up state until it lands.
    echo: EchoWatch,
    rows: usize,
    fenced: bool,
    started: Instant,
    sent: Sent,
}

/// Builds one transaction (behind the writer fence while the worker holds the lock) and puts
/// it on the wire without waiting for its reply.
async fn send<'p>(
    r: &Reconciler,
    batch: Vec<&'p Group<'p>>,
    keys: HashSet<Key<'p>>,
    outcome: &mut PassOutcome,
) -> Result<InFlight<'p>, PassError> {
    let fence = r.current_fence();
    let mut ops: Vec<Operation> = fence.iter().map(fence::Fence::wait_op).collect();
    let mut owners: Vec<Option<&str>> = vec![None; ops.len()];
    let mut rows = 0;
    {
        // New rows' uuids are chosen against what NB holds now (a fresh snapshot, not the
        // pass's). Transactions in flight together change other routers: their inserts
        // cannot pick the same uuids (a row's identity names its router or port).
        let cache = r.nb.cache();
        let mut ids = translate::RowIds::new(&cache);
        for (peering, changes) in &batch {
            translate::append_peering(changes, &mut ops, &mut ids);
            owners.resize(ops.len(), Some(peering));
            rows += changes
                .iter()
                .map(|c| translate::rows_written(c))
                .sum::<usize>();
        }
    }
    // Its NB echo must not wake the worker for another pass.
    let echo = r.wake.expect_echo(translate::touched_rows(&ops));
    let started = Instant::now();
    match r.nb.send_transaction(&ops).await {
        Ok(sent) => Ok(InFlight {
            batch,
            keys,
            ops,
            owners,
            echo,
            rows,
            fenced: fence.is_some(),
            started,
            sent,
        }),
        Err(e) => {
            drop(echo);
            record(started, &e);
            outcome.transactions += 1;
            Err(PassError::Nb(e))
        }
    }
}

/// Waits for one transaction's reply. Failing on the fence is [`PassError::Fenced`], never a
/// peering's refusal. Returns the peerings whose writes committed only in part.
async fn reply(f: InFlight<'_>, outcome: &mut PassOutcome) -> Result<BTreeSet<String>, PassError> {
    let InFlight {
        batch,
        ops,
        owners,
        echo,
        rows,
        fenced,
        started,
        sent,
        ..
    } = f;
    let result = sent.reply(&ops).await;
    outcome.transactions += 1;
    let results = match result {
        Err(e) => {
            drop(echo);
            record(started, &e);
            return Err(match fenced && fence::failed_on_fence(&e) {
                true => PassError::Fenced,
                false => PassError::Nb(e),
            });
        }
        Ok(results) => {
            echo.committed();
            results
        }
    };
    metrics::histogram!(crate::metrics::NB_TRANSACTION_SECONDS, "outcome" => "ok")
        .record(started.elapsed().as_secs_f64());
    outcome.rows_written += rows;
    for (_, changes) in &batch {
        for c in changes {
            metrics::counter!(crate::metrics::NB_ROWS_WRITTEN_TOTAL, "kind" => change_kind(c))
                .increment(1);
        }
    }
    let not_done = translate::not_done(&owners, &ops, &results);
    if !not_done.is_empty() {
        // The rows changed after we read them: the cache has seen how by now.
        tracing::info!(peerings = ?not_done, "some writes matched no row; retrying");
    }
    Ok(not_done.into_iter().map(str::to_string).collect())
}

fn record(started: Instant, e: &TransactError) {
    metrics::histogram!(crate::metrics::NB_TRANSACTION_SECONDS, "outcome" => e.label())
        .record(started.elapsed().as_secs_f64());
}

/// Sends one transaction of `groups` and waits for it (the retry of a refused batch).
async fn transact<'p>(
    r: &Reconciler,
    groups: Vec<&'p Group<'p>>,
    outcome: &mut PassOutcome,
) -> Result<BTreeSet<String>, PassError> {
    let keys = groups
        .iter()
        .flat_map(|g| batch::keys(std::slice::from_ref(*g)))
        .collect();
    let f = send(r, groups, keys, outcome).await?;
    reply(f, outcome).await
}

/// Settles one transaction's peerings from its reply.
async fn land(
    r: &Reconciler,
    f: InFlight<'_>,
    verdicts: &mut HashMap<String, Verdict>,
    outcome: &mut PassOutcome,
) -> Result<(), PassError> {
    let batch = f.batch.clone();
    match reply(f, outcome).await {
        Ok(not_done) => {
            for (name, _) in &batch {
                settle(verdicts, name, Written::from(&not_done, name), outcome);
            }
            Ok(())
        }
        // One peering's refusal, or one row changed under a guard, must not hold back the
        // others of the batch: write them one by one. Nothing in flight shares their routers
        // or port names, so nothing sent after them depends on these retries.
        Err(PassError::Nb(e)) if (is_refusal(&e) || is_guard_miss(&e)) && batch.len() > 1 => {
            tracing::warn!(error = %e, peerings = batch.len(), "batch not applied; writing peering by peering");
            retry_by_units(r, batch, verdicts, outcome).await
        }
        Err(PassError::Nb(e)) if is_refusal(&e) => {
            settle(verdicts, batch[0].0, Written::Refused(&e), outcome);
            Ok(())
        }
        // A row changed since the cache showed it (an ownership guard failed): nothing was
        // written; the peering is retried once the cache has the change (as ovsdb-idl's
        // TRY_AGAIN), never failed.
        Err(PassError::Nb(e)) if is_guard_miss(&e) => {
            settle(verdicts, batch[0].0, Written::Partly, outcome);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The one-by-one retry of a refused batch. Peerings linked by a removal and an overlapping
/// create ([`batch::prerequisites`]) are first retried together, as one transaction (a cycle
/// of them, each removing what another creates, then commits at once); if that is refused
/// too, each goes alone, the remover first, and a creator only once the removals it waits
/// for committed (else both rows are in NB: an ECMP group, a longer prefix taking part of a
/// shorter one's traffic, two ports in one subnet). It then says what it waits for. In a
/// cycle the first one goes without waiting for the ones after it (a window until the next
/// one's removal lands; a tombstone makes no cycle, live peerings swapping prefixes in one
/// pass can).
async fn retry_by_units(
    r: &Reconciler,
    batch: Vec<&Group<'_>>,
    verdicts: &mut HashMap<String, Verdict>,
    outcome: &mut PassOutcome,
) -> Result<(), PassError> {
    let waits = batch::prerequisites(batch.iter().copied());
    let (order, ends) = batch::linked_units(&waits);
    let mut committed = vec![false; batch.len()];
    // Refused by the server (not a guard miss): retrying soon would be refused again.
    let mut refused = vec![false; batch.len()];
    let mut start = 0;
    for end in ends {
        let unit = &order[start..end];
        start = end;
        // A unit that is the whole batch was just refused as one transaction.
        if unit.len() > 1 && unit.len() < batch.len() {
            let groups: Vec<&Group<'_>> = unit.iter().map(|&k| batch[k]).collect();
            match transact(r, groups, outcome).await {
                Ok(not_done) => {
                    for &k in unit {
                        committed[k] = true;
                        settle(
                            verdicts,
                            batch[k].0,
                            Written::from(&not_done, batch[k].0),
                            outcome,
                        );
                    }
                    continue;
                }
                Err(PassError::Nb(e)) if is_refusal(&e) || is_guard_miss(&e) => {}
                Err(e) => return Err(e),
            }
        }
        for (pos, &k) in unit.iter().enumerate() {
            let group = batch[k];
            if let Some(w) = batch::holding_back(&waits, unit, pos, &committed) {
                let by = batch[w.remover].0;
                let (what, router) = (w.what(), w.router);
                let retry = !refused[w.remover];
                // Held by a refusal, it holds back those after it on the same terms: its own
                // removal waits for that refusal too (else a chain's tail retried for ever).
                refused[k] = !retry;
                settle(
                    verdicts,
                    group.0,
                    Written::HeldBack {
                        by,
                        what,
                        router,
                        retry,
                    },
                    outcome,
                );
                continue;
            }
            match transact(r, vec![group], outcome).await {
                Ok(not_done) => {
                    // Committed: its removals are done even if another of its writes
                    // matched no row.
                    committed[k] = true;
                    settle(
                        verdicts,
                        group.0,
                        Written::from(&not_done, group.0),
                        outcome,
                    )
                }
                Err(PassError::Nb(e)) if is_refusal(&e) => {
                    refused[k] = true;
                    settle(verdicts, group.0, Written::Refused(&e), outcome)
                }
                Err(PassError::Nb(e)) if is_guard_miss(&e) => {
                    settle(verdicts, group.0, Written::Partly, outcome)
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// A `wait` guard of ours found its row changed ("timed out" on an operation; the writer
/// fence is told apart before this, in [`reply`]).
fn is_guard_miss(e: &TransactError) -> bool {
    matches!(e, TransactError::Operation { .. })
        && e.ovsdb_error()
            .is_some_and(|err| err.kind == OvsdbErrorKind::TimedOut)
}

/// The server refused the transaction for what it asks (nothing committed):
/// the peering's rows cannot be written as they are, which is the peering's
/// failure. Everything else is transient, never a peering's failure: a lost
/// reply, a leader change ("not leader"), a guard that found a row changed
/// since we read it ("timed out"), a row a concurrent writer inserted first
/// ("duplicate uuid"), a request the server canceled because the database was converted
/// or removed under it ("canceled", as ovsdb-idl's TRY_AGAIN). The pass then stops; the next one, after a backoff,
/// re-reads NB and tries again.
fn is_refusal(e: &TransactError) -> bool {
    let refused = matches!(
        e,
        TransactError::Operation { .. } | TransactError::Commit(_) | TransactError::Rejected(_)
    );
    refused && e.ovsdb_error().is_some_and(|err| !is_transient(err.kind))
}

fn is_transient(kind: OvsdbErrorKind) -> bool {
    matches!(
        kind,
        OvsdbErrorKind::TimedOut
            | OvsdbErrorKind::NotLeader
            | OvsdbErrorKind::IoError
            | OvsdbErrorKind::ResourcesExhausted
            | OvsdbErrorKind::Aborted
            | OvsdbErrorKind::DuplicateUuid
            | OvsdbErrorKind::Canceled
    )
}

/// How one peering's writes went.
enum Written<'a> {
    /// Committed, every operation matched its row.
    Done,
    /// Committed, but an update or mutation matched no row.
    Partly,
    /// The server refused them.
    Refused(&'a TransactError),
    /// Not sent: peering `by`'s removal of `what` on `router` (its name, when known) was
    /// not written, and these writes must not land before it. `retry`: the removal missed
    /// its guard (a row changed under it), so the pass is retried soon; not when the server
    /// refused it (retried at once it would be refused again: a full pass with backoff for
    /// ever), the creator then waits for the next wake or resync.
    HeldBack {
        by: &'a str,
        what: String,
        router: Option<&'a str>,
        retry: bool,
    },
}

impl Written<'_> {
    fn from(not_done: &BTreeSet<String>, peering: &str) -> Self {
        if not_done.contains(peering) {
            Written::Partly
        } else {
            Written::Done
        }
    }
}

fn settle(
    verdicts: &mut HashMap<String, Verdict>,
    peering: &str,
    written: Written<'_>,
    outcome: &mut PassOutcome,
) {
    match &written {
        Written::Partly | Written::HeldBack { retry: true, .. } => outcome.incomplete += 1,
        Written::HeldBack { retry: false, .. } => {}
        // A deleted peering's refusal too: its rows stay in NB.
        Written::Refused(e) => {
            metrics::counter!(crate::metrics::RECONCILER_ERRORS_TOTAL, "kind" => e.label())
                .increment(1)
        }
        Written::Done => {}
    }
    let by_a_deleted_peering = match &written {
        Written::HeldBack { by, .. } => !verdicts.contains_key(*by),
        _ => false,
    };
    let Some(v) = verdicts.get_mut(peering) else {
        return; // rows of a deleted peering
    };
    if !matches!(v, Verdict::Pending(_)) {
        return;
    }
    *v = match written {
        // The cache has seen a committed transaction, so NB now holds exactly its rows.
        Written::Done => Verdict::Active,
        Written::Partly => {
            Verdict::Pending("a row changed in OVN NB while it was being written; retrying".into())
        }
        Written::HeldBack {
            by, what, router, ..
        } => {
            let deleted = if by_a_deleted_peering { "deleted " } else { "" };
            let router = router.unwrap_or("its router");
            Verdict::Pending(format!(
                "waiting for {what} of {deleted}peering {by} to leave {router}"
            ))
        }
        Written::Refused(e) => Verdict::Failed(format!(
            "OVN NB refused the peering's rows: {}",
            describe(e)
        )),
    };
}

fn describe(e: &TransactError) -> String {
    match e.ovsdb_error() {
        Some(err) => err.to_string(),
        None => e.to_string(),
    }
}

fn change_kind(c: &Change) -> &'static str {
    match c {
        Change::CreatePort { .. } => "port_insert",
        Change::UpdatePort { .. } => "port_update",
        Change::DeletePort { .. } => "port_delete",
        Change::CreateRoute { .. } => "route_insert",
        Change::UpdateRoute { .. } => "route_update",
        Change::DeleteRoute { .. } => "route_delete",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::OvsdbError;

    fn op_error(error: &str) -> TransactError {
        TransactError::Operation {
            index: 1,
            error: OvsdbError::from_json(&serde_json::json!({ "error": error })),
        }
    }

    #[test]
    fn only_a_refusal_of_what_was_asked_is_the_peerings_failure() {
        assert!(is_refusal(&op_error("constraint violation")));
        assert!(is_refusal(&TransactError::Commit(OvsdbError::from_json(
            &serde_json::json!({"error": "referential integrity violation"})
        ))));
        for transient in ["timed out", "not leader", "duplicate uuid", "I/O error"] {
            assert!(!is_refusal(&op_error(transient)), "{transient}");
        }
        // ovsdb-server answers every pending transaction "canceled" when the database is
        // converted or removed (an OVN upgrade): try again, as ovsdb-idl does.
        assert_eq!(
            OvsdbErrorKind::from_error_string("canceled"),
            OvsdbErrorKind::Canceled
        );
        assert!(!is_refusal(&op_error("canceled")));
        for transient in ["not leader", "canceled"] {
            let e = OvsdbError::from_json(&serde_json::json!({ "error": transient }));
            assert!(!is_refusal(&TransactError::Rejected(e)), "{transient}");
        }
        assert!(!is_refusal(&TransactError::OutcomeUnknown("lost".into())));
        assert!(!is_refusal(&TransactError::NotConnected));
    }

    /// A deleted peering's refusal counts in the error metric as a live one's does (its rows
    /// stay in NB, like the live one's rows it holds back); the held-back peering's PENDING
    /// message names what it waits for.
    #[test]
    fn a_tombstones_refusal_counts_and_the_peering_it_holds_back_says_why() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut verdicts = HashMap::from([("p13".to_string(), Verdict::Pending(String::new()))]);
        let mut outcome = PassOutcome::default();
        let refused = op_error("constraint violation");
        metrics::with_local_recorder(&recorder, || {
            settle(
                &mut verdicts,
                "p12",
                Written::Refused(&refused),
                &mut outcome,
            );
            let held = Written::HeldBack {
                by: "p12",
                what: "route 10.2.0.0/24".into(),
                router: Some("vpc-1"),
                retry: true,
            };
            settle(&mut verdicts, "p13", held, &mut outcome);
        });
        let text = handle.render();
        assert!(
            text.lines()
                .any(|l| l.starts_with("ovn_peerd_reconciler_errors_total{") && l.ends_with("} 1")),
            "{text}"
        );
        match &verdicts["p13"] {
            Verdict::Pending(m) => assert_eq!(
                m,
                "waiting for route 10.2.0.0/24 of deleted peering p12 to leave vpc-1"
            ),
            _ => panic!("p13 not PENDING"),
        }
        assert_eq!(outcome.incomplete, 1);
    }

    /// Held back by a removal the server refused (not a guard miss): PENDING, naming it, but
    /// not counted incomplete (no full pass with backoff for a refusal that would recur).
    #[test]
    fn a_peering_held_back_by_a_refused_removal_asks_for_no_retry() {
        let mut verdicts = HashMap::from([("p13".to_string(), Verdict::Pending(String::new()))]);
        let mut outcome = PassOutcome::default();
        let held = Written::HeldBack {
            by: "p12",
            what: "route 10.2.0.0/24".into(),
            router: Some("vpc-1"),
            retry: false,
        };
        settle(&mut verdicts, "p13", held, &mut outcome);
        assert!(matches!(&verdicts["p13"], Verdict::Pending(m) if m.contains("p12")));
        assert_eq!(outcome.incomplete, 0);
    }
}
