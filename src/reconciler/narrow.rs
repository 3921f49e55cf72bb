//! A narrow pass's read at a hub: the peerings that can take part in the rules for the
//! changed ones, found by the conflict probe in SQL ([`crate::peering::topology::ConflictQuery`]),
//! instead of every peering of their VPCs (a hub's N), when that is enough: when, judged
//! against what the probe read, the pass would judge the changed peerings and nothing else
//! (no tombstone or failed peering of their VPCs, no other peering they affect). Each changed
//! peering is then judged against every peering that can conflict with it (the probe's
//! superset), so its verdict is the one the full read gives; otherwise the caller reads
//! every peering of their VPCs as before.
//!
//! Below a hub ([`crate::store::FULL_READ_BELOW`], as for CreatePeering) that full read is
//! taken at once, bounded, in one statement: the probe's NB question (an index of every
//! subnet in NB, brought up to date for each new NB state) is asked only when one of the
//! VPCs reaches the bound.

use std::collections::BTreeSet;

use crate::ovsdb::CacheSnapshot;
use crate::store::{PeeringRecord, StoreError};

use super::derive::{judges_only, narrow_probe, MAX_NARROWED};
use super::report::Report;
use super::Reconciler;

/// The context of a narrow pass over `targets` (the peerings named `names`, as stored) read
/// by probe, and the NB snapshot the probe was computed from and judged against: the pass
/// must derive from that same snapshot (a subnet added to a third VPC after the probe would
/// make a conflict the probe did not read). Below a hub, every peering of their VPCs instead
/// (the full read, no probe). `None` when the probe's read is not enough (see the module
/// doc).
pub(super) async fn probed_context(
    r: &Reconciler,
    names: &BTreeSet<String>,
    targets: &[PeeringRecord],
    previous: Option<&Report>,
) -> Result<Option<(Vec<PeeringRecord>, CacheSnapshot)>, StoreError> {
    if targets.is_empty() || targets.len() > MAX_NARROWED || !r.nb.state().borrow().is_synced() {
        return Ok(None);
    }
    // Below a hub: every peering of their VPCs, judged against the NB of now (taken after
    // the read, as the pass would).
    let vpcs: BTreeSet<&str> = targets
        .iter()
        .flat_map(|p| [p.local_vpc.as_str(), p.remote_vpc.as_str()])
        .collect();
    let vpcs: Vec<&str> = vpcs.into_iter().collect();
    if let Some(records) = r.store.peering_list_touching_below(&vpcs).await? {
        return Ok(Some((records, r.nb.cache())));
    }
    // Reading NB for the probe and judging what it read are CPU work: off the async workers.
    let (cache, owned) = (r.nb.cache(), targets.to_vec());
    let (probe, cache) = tokio::task::spawn_blocking(move || (narrow_probe(&owned, &cache), cache))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let Some(probe) = probe else {
        return Ok(None);
    };
    let mut records = r.store.peering_list_conflicting(&probe).await?;
    // Whether the probe's read is enough depends on its peerings' states: as Postgres holds
    // them once the previous pass's report is in.
    if let Some(previous) = previous {
        previous.overlay(&mut records);
    }
    let (names, instance) = (names.clone(), r.settings.deployment_id.to_string());
    tokio::task::spawn_blocking(move || {
        let enough = judges_only(&names, &records, &cache, &instance);
        Ok(enough.then_some((records, cache)))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
