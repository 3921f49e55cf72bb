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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use crate::ovsdb::NbCache;
use crate::ovsdb::TransactError;
use crate::peering::desired::DesiredPeering;
use crate::peering::diff::{plan, Outcome, Plan};
use crate::peering::owner::{mass_deletion, Ownership, MASS_DELETION_MIN};
use crate::peering::topology::port_names;
use crate::store::{PeeringRecord, PeeringState, StatusUpdate, StoreError};

use super::actual::{actual_rows, holds_rows_of, our_row_count, Attachments};
use super::derive::{derive, Derivation, Targets};
use super::report::Report;
use super::{write, Reconciler};

pub(super) mod cores;

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
/// reading NB (`actual_rows`), the plan; and how many peerings NB already held
/// exactly.
struct DeriveSteps {
    rules: std::time::Duration,
    actual: std::time::Duration,
    plan: std::time::Duration,
    in_sync: usize,
}

/// The rules, NB's rows and the plan of one pass (the CPU part). `settle_early` (a full
/// pass): each peering NB holds exactly, alone with its names, is settled as soon as it is
/// derived and its rows dropped (see [`derive`]); otherwise every in-sync peering is found by
/// [`actual_rows`]. Either way the same plan and outcomes. The rules, the early settle and
/// the pick of NB's rows run on `threads` threads ([`cores::pass_threads`]: a big full pass),
/// with the same result as one.
fn derive_and_plan(
    targets: Targets<'_>,
    records: &[PeeringRecord],
    cache: &NbCache,
    protected: &[String],
    ownership: &Ownership,
    settle_early: bool,
    threads: usize,
) -> (Derivation, Plan, DeriveSteps) {
    let t0 = Instant::now();
    // A full pass asks of each peering as soon as it is derived whether NB holds it
    // exactly, and drops its rows then (see `derive`); a narrow pass knows which
    // rows to read only once it has judged.
    // Its map of every router's rows is built beside the index (on a thread of its own).
    let instance = &ownership.instance;
    let (mut derivation, attach) = std::thread::scope(|s| {
        let attach =
            settle_early.then(|| cores::Beside::new(s, threads, || Attachments::new(cache, None)));
        let settle = |d: &mut DesiredPeering, alone: bool| {
            d.stamp_instance(instance);
            !matches!(&attach, Some(a) if alone && a.get().holds(cache, d, ownership))
        };
        let derivation = derive(
            targets, records, cache, protected, instance, threads, &settle,
        );
        (derivation, attach.map(cores::Beside::into_inner))
    });
    let t_rules = t0.elapsed();
    let scoped = derivation.judged.as_ref();
    let attach = attach.unwrap_or_else(|| Attachments::new(cache, scoped));
    let settled: HashSet<String> = std::mem::take(&mut derivation.settled)
        .into_iter()
        .collect();
    let actual = actual_rows(
        cache,
        &attach,
        &derivation.desired,
        settled,
        ownership,
        threads,
    );
    drop(attach);
    let t_actual = t0.elapsed();
    // Peerings NB already holds exactly have nothing to plan: their desired rows go
    // now (after a restart, that is nearly all of them, most dropped while deriving).
    // A name desired twice is never among them (`peerings_in_sync`), so each outcome
    // below is set once.
    let desired = std::mem::take(&mut derivation.desired);
    let desired: Vec<_> = desired
        .into_iter()
        .filter(|d| !actual.in_sync.contains(&d.name))
        .collect();
    let mut plan = plan(&desired, &derivation.untouched, &actual.rows);
    drop((desired, actual.rows));
    let in_sync_count = actual.in_sync.len();
    for name in actual.in_sync {
        plan.outcomes.insert(name, Outcome::InSync);
    }
    let t_plan = t0.elapsed();
    let steps = DeriveSteps {
        rules: t_rules,
        actual: t_actual - t_rules,
        plan: t_plan - t_actual,
        in_sync: in_sync_count,
    };
    (derivation, plan, steps)
}

/// The verdict on one live peering after planning and writing.
pub(super) enum Verdict {
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
    let mut report = None;
    let mut outcome = run_behind(r, scope, &mut report).await?;
    if let Some(report) = report {
        outcome.tombstones_removed = report.finish().await?;
    }
    Ok(outcome)
}

/// One pass that leaves its report to Postgres in `report`, still being written (see
/// [`Report`]). The one found there (the previous pass's) is overlaid on this pass's read and
/// awaited just before this pass starts its own. The outcome's `tombstones_removed` is then the
/// report's to say.
pub(super) async fn run_behind(
    r: &Reconciler,
    scope: Scope,
    report: &mut Option<Report>,
) -> Result<PassOutcome, PassError> {
    use tracing::Instrument;
    let span = tracing::info_span!("reconcile", full = scope == Scope::All);
    run_pass(r, scope, report).instrument(span).await
}

async fn run_pass(
    r: &Reconciler,
    scope: Scope,
    report: &mut Option<Report>,
) -> Result<PassOutcome, PassError> {
    let t_start = Instant::now();
    // The NB snapshot a narrow pass's probe read: derived from too, so that what the probe
    // found and what is judged are one NB. Otherwise a fresh one below.
    let mut probed_nb = None;
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
                true => super::narrow::probed_context(r, names, &targets, report.as_ref()).await?,
                false => None,
            };
            let records = match (probed, ports.is_empty()) {
                (Some((records, cache)), _) => {
                    probed_nb = Some(cache);
                    records
                }
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
    // The previous pass's report may still be on its way to Postgres: judge what Postgres
    // holds once it is in (it is awaited before ours starts, see `report.rs`).
    let mut records = records;
    if let Some(previous) = report.as_ref() {
        previous.overlay(&mut records);
    }
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
            // A full pass's snapshot is taken here, after Postgres was read (also when it
            // is split over threads): a peering created meanwhile is judged against an NB at
            // least as new as the one its create was checked against.
            let cache = probed_nb.unwrap_or_else(|| nb.cache());
            let targets = match &changed {
                None => Targets::All,
                Some((names, by_nb)) => Targets::Changed {
                    peerings: names,
                    by_nb,
                },
            };
            let threads = cores::pass_threads(full, records.len());
            let (derivation, plan, steps) = derive_and_plan(
                targets, &records, &cache, &protected, &ownership, full, threads,
            );
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
    metrics::counter!(crate::metrics::RECONCILER_IN_SYNC_TOTAL,
        "scope" => if full { "full" } else { "narrow" })
    .increment(steps.in_sync as u64);
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

    let write_result = write::write_changes(r, &plan, &mut verdicts, &mut outcome).await;
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
    let t_report = Instant::now();
    if let Some(previous) = report.take() {
        previous.finish().await?;
    }
    let report_wait = t_report.elapsed();
    let reporting = Report::start(r.store.clone(), changed, gone, r.passed.clone());
    if write_result.is_err() {
        // What is known is reported before the pass says it failed.
        reporting.finish().await?;
        write_result?;
    } else {
        *report = Some(reporting);
    }
    tracing::debug!(
        peerings = records.len(),
        read_ms = t_read.as_secs_f64() * 1e3,
        derive_ms = (t_derived - t_read).as_secs_f64() * 1e3,
        rules_ms = steps.rules.as_secs_f64() * 1e3,
        actual_ms = steps.actual.as_secs_f64() * 1e3,
        plan_ms = steps.plan.as_secs_f64() * 1e3,
        in_sync = steps.in_sync,
        write_ms = (t_written - t_derived).as_secs_f64() * 1e3,
        // Waiting for the previous pass's report before starting ours.
        report_wait_ms = report_wait.as_secs_f64() * 1e3,
        total_ms = t_start.elapsed().as_secs_f64() * 1e3,
        "pass timings"
    );
    if !outcome.is_idle() || !outcome.failed.is_empty() {
        tracing::info!(
            peerings = outcome.peerings,
            rows_written = outcome.rows_written,
            transactions = outcome.transactions,
            failed = outcome.failed.len(),
            "reconciled"
        );
    }
    Ok(outcome)
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
pub(super) fn changed_statuses(
    records: &[PeeringRecord],
    statuses: Vec<StatusUpdate>,
) -> Vec<StatusUpdate> {
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
mod tests;
