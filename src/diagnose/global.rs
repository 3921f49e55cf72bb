//! The checks of the peering as a whole: its stored state, whether it passes the rules now,
//! and whether ovn-northd has caught up with NB.

use super::{Finding, NbCfg, PeeringFacts, Severity, Snapshot};
use crate::store::PeeringState;

/// `peering_state`: ACTIVE at its generation is OK; PENDING and DELETING are on their way;
/// FAILED says why.
pub(super) fn peering_state(p: &PeeringFacts) -> Finding {
    let (g, o) = (p.generation, p.observed_generation);
    let (severity, message) = match p.state {
        PeeringState::Active if o == g => (
            Severity::Ok,
            format!("ACTIVE: NB held the rows of generation {g} at the worker's last pass"),
        ),
        PeeringState::Active => (
            Severity::Warning,
            format!("ACTIVE at generation {o}, but generation {g} is not converged yet"),
        ),
        PeeringState::Pending => (
            Severity::Warning,
            format!("PENDING: the worker has not converged generation {g} yet (observed {o})"),
        ),
        PeeringState::Deleting => (
            Severity::Warning,
            "DELETING: its NB rows are being removed; the findings below show what is left"
                .to_string(),
        ),
        PeeringState::Failed => (Severity::Error, format!("FAILED: {}", p.state_message)),
        PeeringState::PendingAcceptance => (
            Severity::Warning,
            format!(
                "PENDING_ACCEPTANCE: nothing is in NB until the remote VPC's tenant accepts it{}",
                suffix(&p.state_message)
            ),
        ),
        PeeringState::Rejected => (
            Severity::Error,
            format!(
                "REJECTED by the remote VPC's tenant: it never reaches NB{}",
                suffix(&p.state_message)
            ),
        ),
        PeeringState::Expired => (
            Severity::Error,
            format!(
                "EXPIRED: not accepted in time, it never reaches NB{}",
                suffix(&p.state_message)
            ),
        ),
    };
    Finding::new("peering_state", severity, message, Vec::new())
}

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    }
}

/// `desired_rows`: the peering passes the rules against NB now.
pub(super) fn desired_rows(snap: &Snapshot) -> Finding {
    let w = &snap.wanted;
    match &snap.refusal {
        None => Finding::new(
            "desired_rows",
            Severity::Ok,
            format!(
                "generation {} derives {} port(s) and {} route(s)",
                w.generation,
                w.ports.len(),
                w.routes.len()
            ),
            Vec::new(),
        ),
        Some(why) => Finding::new(
            "desired_rows",
            Severity::Error,
            format!(
                "the peering fails the rules against NB now: {why}; the checks below use the {} route(s) it would want",
                w.routes.len()
            ),
            Vec::new(),
        ),
    }
}

/// `northd_sync`: read only (no `nb_cfg` bump): whether `sb_cfg` has reached `nb_cfg`.
pub(super) fn northd_sync(cfg: Option<&NbCfg>) -> Finding {
    let Some(c) = cfg else {
        return Finding::new(
            "northd_sync",
            Severity::Warning,
            "unknown: NB has no NB_Global row (ovn-northd has never connected)".into(),
            Vec::new(),
        );
    };
    let (n, s, h) = (c.nb_cfg, c.sb_cfg, c.hv_cfg);
    let hv = if h >= n {
        format!("hv_cfg {h}: the chassis have caught up too")
    } else {
        format!("hv_cfg {h}: not every chassis has caught up")
    };
    if s >= n {
        Finding::new(
            "northd_sync",
            Severity::Ok,
            format!(
                "sb_cfg {s} >= nb_cfg {n}: ovn-northd has processed the last NB change a client waited for ({hv}); nb_cfg is bumped only by clients that wait (ovn-nbctl --wait), so later changes are not covered"
            ),
            vec![c.label()],
        )
    } else {
        Finding::new(
            "northd_sync",
            Severity::Warning,
            format!(
                "sb_cfg {s} < nb_cfg {n}: ovn-northd has not processed the last NB change a client waited for: it is behind or not running ({hv})"
            ),
            vec![c.label()],
        )
    }
}
