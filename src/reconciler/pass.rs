//! One pass of the worker: desired (Postgres) vs actual (NB cache) →
//! minimal NB writes → statuses, over every peering ([`Scope::All`]) or over
//! the ones Postgres said changed, those of the routers and port names that
//! others changed in NB, and the other peerings of their VPCs whose verdict a changed one
//! can affect ([`Scope::Narrow`], [`super::derive::Targets::Changed`]). Level-triggered: it
//! needs no memory of earlier passes, so a crash at any point is repaired by the next pass.
//!
//! Only this deployment's rows are written ([`crate::peering::owner`]). A plan
//! that would delete most of them is held back (the mass-deletion brake)
//! unless `--allow-mass-deletion`. A write is the peering's failure only when
//! NB refuses what was asked; a transient error or a write that matched no row
//! leaves it not ACTIVE and is retried by a later pass, with backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use crate::ovsdb::{Operation, OvsdbErrorKind, TransactError};
use crate::peering::diff::{plan, Change, Outcome, Plan};
use crate::peering::owner::{mass_deletion, Ownership, MASS_DELETION_MIN};
use crate::peering::topology::port_names;
use crate::store::{PeeringRecord, PeeringState, StatusUpdate, StoreError};

use super::actual::{actual_rows, holds_rows_of, our_row_count};
use super::batch::{transactions, Group};
use super::derive::{derive, Targets};
use super::{fence, translate, Reconciler};

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassOutcome {
    /// Peerings judged (tombstones included): all of them in a full pass; in a narrow one
    /// the changed ones, those NB changes touched, the tombstones of their VPCs and the
    /// peerings they can affect.
    pub peerings: usize,
    /// NB rows written (inserted, updated or removed).
    pub rows_written: usize,
    /// NB transactions sent.
    pub transactions: usize,
    /// Tombstones removed from Postgres.
    pub tombstones_removed: usize,
    /// Peerings in STATE_ACTIVE after the pass.
    pub active: usize,
    /// Peerings in STATE_FAILED after the pass, with why.
    pub failed: BTreeMap<String, String>,
    /// Peerings still being deleted.
    pub deleting: usize,
    /// Peerings whose writes committed only in part (a guarded update or a
    /// router mutation matched no row): not ACTIVE; re-read and retried.
    pub incomplete: usize,
    /// Peerings whose changes the mass-deletion brake held back.
    pub held_back: usize,
}

impl PassOutcome {
    /// Whether the pass found nothing (more) to write.
    pub fn is_idle(&self) -> bool {
        self.rows_written == 0 && self.tombstones_removed == 0 && self.incomplete == 0
    }
}

/// Why a pass (or taking the writer role) stopped before finishing.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// Postgres failed.
    #[error("reading or writing desired state failed")]
    Store(#[from] StoreError),
    /// The NB cache is not in sync with a server (disconnected, resyncing).
    #[error("the OVN NB cache is not in sync")]
    NbNotSynced,
    /// An NB transaction's outcome is unknown or it could not be sent.
    #[error("OVN NB transaction failed")]
    Nb(#[source] TransactError),
    /// NB refused our writer fence: another replica took the writer lock. Stop
    /// writing; nothing was committed, and it says nothing about any peering.
    #[error("fenced out of OVN NB: another replica holds the writer lock")]
    Fenced,
}

impl PassError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            PassError::Store(_) => "store",
            PassError::NbNotSynced => "nb_not_synced",
            PassError::Nb(_) => "nb",
            PassError::Fenced => "fenced",
        }
    }
}

/// Where a pass's CPU work went (the `pass timings` debug line): the rules (`derive`),
/// reading NB (`actual_rows`), the plan, the trim; and how many peerings NB already held
/// exactly.
struct DeriveSteps {
    rules: std::time::Duration,
    actual: std::time::Duration,
    plan: std::time::Duration,
    /// Handing the pass's freed memory back (full passes).
    trim: std::time::Duration,
    in_sync: usize,
}

/// The verdict on one live peering after planning and writing.
enum Verdict {
    Active,
    Pending(String),
    Failed(String),
}

/// Which peerings a pass looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every peering and every row marked as ours: the level-triggered pass.
    All,
    /// Only these peerings and their rows: those named (by Postgres notifications), those
    /// of the VPCs (routers) and holding the port names that others changed in NB, and the
    /// other peerings of their VPCs that a named one can affect (all of them are read and
    /// judged against).
    Narrow {
        /// Peerings that changed in Postgres.
        peerings: BTreeSet<String>,
        /// Routers someone else changed in NB.
        vpcs: BTreeSet<String>,
        /// Port names someone else added, changed or removed in NB.
        ports: BTreeSet<String>,
    },
}

pub(super) async fn run(r: &Reconciler, scope: Scope) -> Result<PassOutcome, PassError> {
    use tracing::Instrument;
    let span = tracing::info_span!("reconcile", full = scope == Scope::All);
    run_pass(r, scope).instrument(span).await
}

async fn run_pass(r: &Reconciler, scope: Scope) -> Result<PassOutcome, PassError> {
    let t_start = Instant::now();
    let (records, changed) = match &scope {
        Scope::All => (r.store.peering_list_all().await?, None),
        Scope::Narrow {
            peerings: names,
            vpcs: touched,
            ports,
        } => {
            let named: Vec<&str> = names.iter().map(String::as_str).collect();
            let targets = match named.is_empty() {
                true => Vec::new(),
                false => r.store.peering_list_named(&named).await?,
            };
            // Their VPCs' other peerings: the rules judge against them, and those whose
            // verdict the change can affect are judged again (one may have been FAILED
            // because of the peering that just changed, or went).
            let vpcs: BTreeSet<&str> = targets
                .iter()
                .flat_map(|p| [p.local_vpc.as_str(), p.remote_vpc.as_str()])
                .chain(touched.iter().map(String::as_str))
                .collect();
            let vpcs: Vec<&str> = vpcs.into_iter().collect();
            // Nothing changed in NB under them: the few peerings that can conflict with them
            // may be enough (a hub's new spoke), read by probe (`narrow.rs`).
            let probed = match touched.is_empty() && ports.is_empty() {
                true => super::narrow::probed_context(r, names, &targets).await?,
                false => None,
            };
            let records = match (probed, ports.is_empty()) {
                (Some(records), _) => records,
                (None, true) => r.store.peering_list_touching(&vpcs).await?,
                (None, false) => {
                    let ports: Vec<String> = ports.iter().cloned().collect();
                    r.store
                        .peering_list_touching_or_holding(&vpcs, &ports)
                        .await?
                }
            };
            // The peerings of the routers and port names others changed in NB: judged again,
            // each one (their subnets or ports may have changed under them).
            let by_nb: BTreeSet<String> = records
                .iter()
                .filter(|p| {
                    touched.contains(&p.local_vpc)
                        || touched.contains(&p.remote_vpc)
                        || port_names(&p.local_vpc, &p.remote_vpc)
                            .iter()
                            .any(|n| ports.contains(n))
                })
                .map(|p| p.name.clone())
                .collect();
            (records, Some((names.clone(), by_nb)))
        }
    };
    let t_read = t_start.elapsed();
    if !r.nb.state().borrow().is_synced() {
        return Err(PassError::NbNotSynced);
    }
    // Deriving and diffing is CPU work proportional to the number of peerings:
    // keep it off the async workers that serve the API.
    let nb = r.nb.clone();
    let protected = r.settings.protected_vpcs.clone();
    // A narrow pass holds only its peerings' names: enough to adopt their old rows.
    let ownership = Ownership::new(
        r.settings.deployment_id.to_string(),
        records.iter().map(|p| p.name.clone()),
    );
    let allow_mass_deletion = r.settings.allow_mass_deletion;
    // Deleted through the API: their rows' deletion is asked for, never braked.
    let tombstones: BTreeSet<String> = records
        .iter()
        .filter(|p| p.state == PeeringState::Deleting)
        .map(|p| p.name.clone())
        .collect();
    let full = changed.is_none();
    let (records, ownership, derivation, mut plan, brake, tombstones, steps) =
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let cache = nb.cache();
            let targets = match &changed {
                None => Targets::All,
                Some((names, by_nb)) => Targets::Changed {
                    peerings: names,
                    by_nb,
                },
            };
            let mut derivation = derive(targets, &records, &cache, &protected);
            for d in &mut derivation.desired {
                d.stamp_instance(&ownership.instance);
            }
            let t_rules = t0.elapsed();
            let scoped = derivation.judged.as_ref();
            let actual = actual_rows(&cache, scoped, &derivation.desired, &ownership);
            let t_actual = t0.elapsed();
            // Peerings NB already holds exactly have nothing to plan: their desired rows go
            // now (after a restart, that is nearly all of them).
            let desired = std::mem::take(&mut derivation.desired);
            let (in_sync, desired): (Vec<_>, Vec<_>) = desired
                .into_iter()
                .partition(|d| actual.in_sync.contains(&d.name));
            let mut plan = plan(&desired, &derivation.untouched, &actual.rows);
            drop((desired, actual.rows));
            let in_sync_count = in_sync.len();
            for d in in_sync {
                plan.outcomes.insert(d.name, Outcome::InSync);
            }
            let t_plan = t0.elapsed();
            if full {
                // A full pass allocates and frees per peering (the rules' views, every
                // desired row): without this the process keeps its peak for good (the first
                // pass after a restart at 10,000 peerings: +70-200 MB).
                crate::ovsdb::release_freed_memory();
            }
            let steps = DeriveSteps {
                rules: t_rules,
                actual: t_actual - t_rules,
                plan: t_plan - t_actual,
                trim: t0.elapsed() - t_plan,
                in_sync: in_sync_count,
            };
            let brake = match plan.deletions(&tombstones) {
                n if n > MASS_DELETION_MIN && !allow_mass_deletion => {
                    mass_deletion(n, our_row_count(&cache, &ownership))
                }
                _ => None,
            };
            (
                records, ownership, derivation, plan, brake, tombstones, steps,
            )
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let t_derived = t_start.elapsed();
    let held_back = match &brake {
        Some(why) => {
            tracing::warn!(reason = %why, "mass-deletion brake: this pass deletes nothing");
            plan.hold_deletions(&tombstones)
        }
        None => BTreeSet::new(),
    };
    if brake.is_some() || scope == Scope::All {
        metrics::gauge!(crate::metrics::MASS_DELETION_BLOCKED)
            .set(f64::from(u8::from(brake.is_some())));
        r.mass_deletion.send_if_modified(|b| {
            let changed = *b != brake;
            b.clone_from(&brake);
            changed
        });
    }

    let mut outcome = PassOutcome {
        peerings: derivation
            .judged
            .as_ref()
            .map_or(records.len(), BTreeSet::len),
        ..Default::default()
    };
    let mut verdicts: HashMap<String, Verdict> = HashMap::new();
    for (name, why) in &derivation.failed {
        verdicts.insert(name.clone(), Verdict::Failed(why.clone()));
    }
    for (name, o) in &plan.outcomes {
        let v = match o {
            Outcome::InSync => Verdict::Active,
            Outcome::Changed => Verdict::Pending(String::new()),
            Outcome::Blocked(why) => Verdict::Failed(why.clone()),
        };
        verdicts.insert(name.clone(), v);
    }
    if let Some(why) = &brake {
        for name in held_back.iter().filter(|n| plan.outcomes.contains_key(*n)) {
            verdicts.insert(name.clone(), Verdict::Pending(why.clone()));
        }
        outcome.held_back = held_back.len();
    }

    let write_result = write_changes(r, &plan, &mut verdicts, &mut outcome).await;
    let t_written = t_start.elapsed();
    if let Err(PassError::Fenced) = write_result {
        // Not ours to judge any more: the new holder reports statuses.
        return Err(PassError::Fenced);
    }

    // Statuses, even when writing stopped half-way: what is known is reported.
    let statuses = statuses(&records, &verdicts);
    for u in &statuses {
        match u.state {
            PeeringState::Active => outcome.active += 1,
            PeeringState::Failed => {
                outcome.failed.insert(u.name.clone(), u.message.clone());
            }
            _ => {}
        }
    }
    let changed = changed_statuses(&records, statuses);
    record_convergence_delay(&records, &changed);
    r.store.peering_statuses_set(&changed).await?;
    write_result?;

    // Tombstones whose rows are all gone from NB.
    let gone: Vec<(String, i64)> = {
        let cache = r.nb.cache();
        records
            .iter()
            .filter(|p| p.state == PeeringState::Deleting)
            .filter(|p| !holds_rows_of(&cache, &p.name, &ownership))
            .map(|p| (p.name.clone(), p.generation))
            .collect()
    };
    outcome.deleting = records
        .iter()
        .filter(|p| p.state == PeeringState::Deleting)
        .count()
        - gone.len();
    outcome.tombstones_removed = r.store.peering_tombstones_remove(&gone).await? as usize;
    tracing::debug!(
        peerings = records.len(),
        read_ms = t_read.as_secs_f64() * 1e3,
        derive_ms = (t_derived - t_read).as_secs_f64() * 1e3,
        rules_ms = steps.rules.as_secs_f64() * 1e3,
        actual_ms = steps.actual.as_secs_f64() * 1e3,
        plan_ms = steps.plan.as_secs_f64() * 1e3,
        trim_ms = steps.trim.as_secs_f64() * 1e3,
        in_sync = steps.in_sync,
        write_ms = (t_written - t_derived).as_secs_f64() * 1e3,
        total_ms = t_start.elapsed().as_secs_f64() * 1e3,
        "pass timings"
    );
    // Counted in Postgres after every pass, narrowed or full: a narrowed pass sees only
    // some peerings, so its own tallies cannot say how many there are in each state.
    r.passed.notify_one();
    if !outcome.is_idle() || !outcome.failed.is_empty() {
        tracing::info!(
            peerings = outcome.peerings,
            rows_written = outcome.rows_written,
            transactions = outcome.transactions,
            tombstones_removed = outcome.tombstones_removed,
            failed = outcome.failed.len(),
            "reconciled"
        );
    }
    Ok(outcome)
}

/// Writes the plan in transactions of whole peerings up to the row budget ([`transactions`]).
/// A batch the server refuses is retried peering by peering (each peering still whole), so
/// one peering that cannot be written never blocks the others.
async fn write_changes(
    r: &Reconciler,
    plan: &Plan,
    verdicts: &mut HashMap<String, Verdict>,
    outcome: &mut PassOutcome,
) -> Result<(), PassError> {
    for batch in transactions(plan, r.settings.max_rows_per_transaction) {
        let batch: Vec<&Group<'_>> = batch.iter().collect();
        write_batch(r, &batch, verdicts, outcome).await?;
    }
    Ok(())
}

async fn write_batch(
    r: &Reconciler,
    batch: &[&(&str, Vec<&Change>)],
    verdicts: &mut HashMap<String, Verdict>,
    outcome: &mut PassOutcome,
) -> Result<(), PassError> {
    match transact(r, batch, outcome).await {
        Ok(not_done) => {
            for (name, _) in batch {
                settle(verdicts, name, Written::from(&not_done, name), outcome);
            }
            Ok(())
        }
        // One peering's refusal, or one row changed under a guard, must not hold back the
        // others of the batch: write them one by one.
        Err(PassError::Nb(e)) if (is_refusal(&e) || is_guard_miss(&e)) && batch.len() > 1 => {
            tracing::warn!(error = %e, peerings = batch.len(), "batch not applied; writing peering by peering");
            for group in batch {
                match transact(r, std::slice::from_ref(group), outcome).await {
                    Ok(not_done) => settle(
                        verdicts,
                        group.0,
                        Written::from(&not_done, group.0),
                        outcome,
                    ),
                    Err(PassError::Nb(e)) if is_refusal(&e) => {
                        settle(verdicts, group.0, Written::Refused(&e), outcome)
                    }
                    Err(PassError::Nb(e)) if is_guard_miss(&e) => {
                        settle(verdicts, group.0, Written::Partly, outcome)
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
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

/// A `wait` guard of ours found its row changed ("timed out" on an operation; the writer
/// fence is told apart before this, in [`transact`]).
fn is_guard_miss(e: &TransactError) -> bool {
    matches!(e, TransactError::Operation { .. })
        && e.ovsdb_error()
            .is_some_and(|err| err.kind == OvsdbErrorKind::TimedOut)
}

/// The one place the worker sends NB transactions, behind the writer fence while it holds
/// the lock. Failing on the fence is [`PassError::Fenced`], never a peering's refusal.
/// Returns the peerings whose writes committed only in part.
async fn transact(
    r: &Reconciler,
    batch: &[&(&str, Vec<&Change>)],
    outcome: &mut PassOutcome,
) -> Result<BTreeSet<String>, PassError> {
    let fence = r.current_fence();
    let mut ops: Vec<Operation> = fence.iter().map(fence::Fence::wait_op).collect();
    // The peering of each operation, to tell which one a result belongs to.
    let mut owners: Vec<Option<&str>> = vec![None; ops.len()];
    let mut rows = 0;
    {
        // New rows' uuids are chosen against what NB holds now (a fresh snapshot, not
        // the pass's).
        let cache = r.nb.cache();
        let mut ids = translate::RowIds::new(&cache);
        for (peering, changes) in batch {
            translate::append_peering(changes, &mut ops, &mut ids);
            owners.resize(ops.len(), Some(peering));
            rows += changes
                .iter()
                .map(|c| translate::rows_written(c))
                .sum::<usize>();
        }
    }
    // Its NB echo must not wake the worker for another pass.
    let touched = translate::touched_rows(&ops);
    r.wake.expect_echo(&touched);
    let started = Instant::now();
    let result = r.nb.transact(&ops).await;
    if result.is_err() {
        r.wake.forget_echo(&touched);
    }
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    metrics::histogram!(crate::metrics::NB_TRANSACTION_SECONDS, "outcome" => label)
        .record(started.elapsed().as_secs_f64());
    outcome.transactions += 1;
    let results = match result {
        Err(e) if fence.is_some() && fence::failed_on_fence(&e) => return Err(PassError::Fenced),
        Err(e) => return Err(PassError::Nb(e)),
        Ok(results) => results,
    };
    outcome.rows_written += rows;
    for (_, changes) in batch {
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

/// The server refused the transaction for what it asks (nothing committed):
/// the peering's rows cannot be written as they are, which is the peering's
/// failure. Everything else is transient, never a peering's failure: a lost
/// reply, a leader change ("not leader"), a guard that found a row changed
/// since we read it ("timed out"), a row a concurrent writer inserted first
/// ("duplicate uuid"). The pass then stops; the next one, after a backoff,
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
    if matches!(written, Written::Partly) {
        outcome.incomplete += 1;
    }
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
        Written::Refused(e) => {
            metrics::counter!(crate::metrics::RECONCILER_ERRORS_TOTAL, "kind" => e.label())
                .increment(1);
            Verdict::Failed(format!(
                "OVN NB refused the peering's rows: {}",
                describe(e)
            ))
        }
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

/// The status of every live peering after this pass.
fn statuses(records: &[PeeringRecord], verdicts: &HashMap<String, Verdict>) -> Vec<StatusUpdate> {
    records
        .iter()
        .filter(|p| p.state != PeeringState::Deleting)
        .filter_map(|p| {
            let (state, message) = match verdicts.get(&p.name)? {
                Verdict::Active => (PeeringState::Active, String::new()),
                Verdict::Pending(m) => (PeeringState::Pending, m.clone()),
                Verdict::Failed(m) => (PeeringState::Failed, m.clone()),
            };
            Some(StatusUpdate {
                name: p.name.clone(),
                generation: p.generation,
                state,
                message,
            })
        })
        .collect()
}

/// Only the statuses that differ from what Postgres holds.
fn changed_statuses(records: &[PeeringRecord], statuses: Vec<StatusUpdate>) -> Vec<StatusUpdate> {
    let by_name: HashMap<&str, &PeeringRecord> =
        records.iter().map(|p| (p.name.as_str(), p)).collect();
    statuses
        .into_iter()
        .filter(|u| {
            by_name.get(u.name.as_str()).is_some_and(|p| {
                p.state != u.state
                    || p.state_message != u.message
                    || p.observed_generation != u.generation
            })
        })
        .collect()
}

/// Desired change committed → NB confirmed, for peerings that just became active.
fn record_convergence_delay(records: &[PeeringRecord], updates: &[StatusUpdate]) {
    let now = chrono::Utc::now();
    let by_name: HashMap<&str, &PeeringRecord> =
        records.iter().map(|p| (p.name.as_str(), p)).collect();
    for u in updates.iter().filter(|u| u.state == PeeringState::Active) {
        if let Some(p) = by_name.get(u.name.as_str()) {
            if p.observed_generation < p.generation || p.state != PeeringState::Active {
                let delay = (now - p.generation_time).num_microseconds().unwrap_or(0);
                metrics::histogram!(crate::metrics::CONVERGENCE_DELAY_SECONDS)
                    .record(delay.max(0) as f64 / 1e6);
            }
        }
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
        assert!(!is_refusal(&TransactError::Rejected(
            OvsdbError::from_json(&serde_json::json!({"error": "not leader"}))
        )));
        assert!(!is_refusal(&TransactError::OutcomeUnknown("lost".into())));
        assert!(!is_refusal(&TransactError::NotConnected));
    }
}
