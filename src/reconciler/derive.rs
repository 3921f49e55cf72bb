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
use crate::peering::desired::{desired_rows_in, DesiredPeering};
use crate::peering::topology::PeerIndex;
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
    // The other peerings, indexed once for the rules that look at a VPC's other peers (a
    // hub's N peerings cost O(N log N), not O(N²)).
    let all: Vec<PeeringSpec> = specs.iter().map(|(_, s)| s.clone()).collect();
    let index = PeerIndex::new(&all, &topo);
    let mut desired = Vec::with_capacity(specs.len());
    for (rec, spec) in specs.iter() {
        if !wanted.contains(rec.name.as_str()) {
            continue;
        }
        match desired_rows_in(spec, rec.generation, &topo, index.all(), protected) {
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

/// The live peerings of a context, indexed once, judged one at a time on demand: ListRoutes
/// derives only the peerings its page shows, with the same rules and the same other peerings
/// as [`derive`].
pub(crate) struct Judge<'a> {
    topo: NbCacheTopology<'a>,
    specs: Vec<(&'a PeeringRecord, PeeringSpec)>,
    by_name: HashMap<&'a str, usize>,
    index: PeerIndex,
    protected: &'a [String],
}

impl<'a> Judge<'a> {
    pub(crate) fn new(
        context: &'a [PeeringRecord],
        cache: &'a NbCache,
        protected: &'a [String],
    ) -> Judge<'a> {
        let topo = NbCacheTopology(cache);
        let specs: Vec<(&PeeringRecord, PeeringSpec)> = context
            .iter()
            .filter(|p| p.state != PeeringState::Deleting)
            .filter_map(|rec| rec.spec().ok().map(|s| (rec, s)))
            .collect();
        let all: Vec<PeeringSpec> = specs.iter().map(|(_, s)| s.clone()).collect();
        let index = PeerIndex::new(&all, &topo);
        let by_name = specs
            .iter()
            .enumerate()
            .map(|(i, (r, _))| (r.name.as_str(), i))
            .collect();
        Judge {
            topo,
            specs,
            by_name,
            index,
            protected,
        }
    }

    /// The live peerings judged, as the rules see them.
    pub(crate) fn specs(&self) -> impl Iterator<Item = &PeeringSpec> {
        self.specs.iter().map(|(_, s)| s)
    }

    /// The NB topology judged against.
    pub(crate) fn topo(&self) -> &NbCacheTopology<'a> {
        &self.topo
    }

    /// The peerings' index (for reading subnets the way the rules do).
    pub(crate) fn index(&self) -> &PeerIndex {
        &self.index
    }

    /// The rows of the live peering `name`; `None` when it is not live or its record cannot
    /// be read as a spec (it wants nothing).
    pub(crate) fn rows(&self, name: &str) -> Option<DesiredPeering> {
        let (rec, spec) = &self.specs[*self.by_name.get(name)?];
        desired_rows_in(
            spec,
            rec.generation,
            &self.topo,
            self.index.all(),
            self.protected,
        )
        .ok()
    }
}
