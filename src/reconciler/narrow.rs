//! A narrow pass's read at a hub: the peerings that can take part in the rules for the
//! changed ones, found by the conflict probe in SQL ([`crate::peering::topology::ConflictQuery`]),
//! instead of every peering of their VPCs (a hub's N), when that is enough: when, judged
//! against what the probe read, the pass would judge the changed peerings and nothing else
//! (no tombstone or failed peering of their VPCs, no other peering they affect). Each changed
//! peering is then judged against every peering that can conflict with it (the probe's
//! superset), so its verdict is the one the full read gives; otherwise the caller reads
//! every peering of their VPCs as before.

use std::collections::BTreeSet;

use crate::store::{PeeringRecord, StoreError};

use super::derive::{judges_only, narrow_probe, MAX_NARROWED};
use super::Reconciler;

/// The context of a narrow pass over `targets` (the peerings named `names`, as stored) read
/// by probe; `None` when the probe's read is not enough (see the module doc).
pub(super) async fn probed_context(
    r: &Reconciler,
    names: &BTreeSet<String>,
    targets: &[PeeringRecord],
) -> Result<Option<Vec<PeeringRecord>>, StoreError> {
    if targets.is_empty() || targets.len() > MAX_NARROWED || !r.nb.state().borrow().is_synced() {
        return Ok(None);
    }
    // Reading NB for the probe and judging what it read are CPU work: off the async workers.
    let (nb, owned) = (r.nb.clone(), targets.to_vec());
    let probe = tokio::task::spawn_blocking(move || narrow_probe(&owned, &nb.cache()))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let Some(probe) = probe else {
        return Ok(None);
    };
    let records = r.store.peering_list_conflicting(&probe).await?;
    let (nb, names) = (r.nb.clone(), names.clone());
    tokio::task::spawn_blocking(move || {
        let enough = judges_only(&names, &records, &nb.cache());
        Ok(enough.then_some(records))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
