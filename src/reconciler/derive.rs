//! The one derivation of desired NB rows from stored peerings, shared by the worker's pass
//! and by ListRoutes, so that what ListRoutes says would be installed is exactly what the
//! worker installs.
//!
//! Pure over its inputs (records and an NB cache snapshot): no I/O, no awaiting. The rules
//! themselves live in [`crate::peering`]; this only picks, for each peering, the other
//! peerings the rules must see.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::adapters::NbCacheTopology;
use crate::ovsdb::NbCache;
use crate::peering::desired::{desired_rows, DesiredPeering};
use crate::peering::PeeringSpec;
use crate::store::{PeeringRecord, PeeringState};

/// The desired rows of every live peering, and the ones that cannot be derived.
pub(crate) struct Derivation {
    /// The rows of each target that can be derived.
    pub desired: Vec<DesiredPeering>,
    /// Peerings whose existing rows must be left as they are (they failed).
    pub untouched: BTreeSet<String>,
    /// Targets whose rows cannot be derived now, and why (the STATE_FAILED message).
    pub failed: BTreeMap<String, String>,
}

/// Derives the rows of `targets`; `context` (a superset: every live peering
/// of their VPCs) feeds the rules that look at a VPC's other peers.
pub(crate) fn derive(
    targets: &[PeeringRecord],
    context: &[PeeringRecord],
    cache: &NbCache,
    protected: &[String],
) -> Derivation {
    let topo = NbCacheTopology(cache);
    let wanted: HashSet<&str> = targets.iter().map(|p| p.name.as_str()).collect();
    let mut specs: Vec<(&PeeringRecord, PeeringSpec)> = Vec::new();
    let mut failed = BTreeMap::new();
    for rec in context.iter().filter(|p| p.state != PeeringState::Deleting) {
        match rec.spec() {
            Ok(spec) => specs.push((rec, spec)),
            Err(e) if wanted.contains(rec.name.as_str()) => {
                failed.insert(rec.name.clone(), e.to_string());
            }
            Err(_) => {}
        }
    }
    // Other peerings by VPC, for the rules that look at a VPC's other peers.
    let mut by_vpc: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (_, s)) in specs.iter().enumerate() {
        by_vpc.entry(s.local_vpc.as_str()).or_default().push(i);
        by_vpc.entry(s.remote_vpc.as_str()).or_default().push(i);
    }
    let mut desired = Vec::with_capacity(specs.len());
    for (i, (rec, spec)) in specs.iter().enumerate() {
        if !wanted.contains(rec.name.as_str()) {
            continue;
        }
        let mut neighbours: Vec<usize> = [spec.local_vpc.as_str(), spec.remote_vpc.as_str()]
            .iter()
            .flat_map(|v| by_vpc.get(v).into_iter().flatten().copied())
            .filter(|&j| j != i)
            .collect();
        neighbours.sort_unstable();
        neighbours.dedup();
        let others: Vec<PeeringSpec> = neighbours.iter().map(|&j| specs[j].1.clone()).collect();
        match desired_rows(spec, rec.generation, &topo, &others, protected) {
            Ok(d) => desired.push(d),
            Err(why) => {
                failed.insert(rec.name.clone(), why);
            }
        }
    }
    Derivation {
        desired,
        untouched: failed.keys().cloned().collect(),
        failed,
    }
}
