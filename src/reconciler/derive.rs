//! The one derivation of desired NB rows from stored peerings, shared by the worker's pass
//! and by ListRoutes, so that what ListRoutes says would be installed is exactly what the
//! worker installs.
//!
//! Pure over its inputs (records and an NB cache snapshot): no I/O, no awaiting. The rules
//! themselves live in [`crate::peering`]; this only picks, for each peering, the other
//! peerings the rules must see, and what happens to the rows of one that fails.
//!
//! **Ties.** Two peerings that conflict (overlapping routes or links in a shared VPC, a port
//! name, the same pair) are judged in age order: each peering is checked against the *older*
//! ones only (`create_time`, then name), so the older stays ACTIVE and the newer is FAILED
//! naming it, whatever order they are read in. When the older goes, the newer passes.
//!
//! **A failed peering's rows**, by why it failed:
//! - a router of the pair is **gone**: its half went with it (NB garbage-collects a deleted
//!   router's ports and routes); the survivor's port and routes now lead nowhere, and would
//!   form an ECMP group with a later peering of the same subnets, so they are deleted. When the
//!   router comes back the peering is derived again and converges as new.
//! - anything else (a router name that is **ambiguous**, a rule broken by a change in NB or by
//!   an older peering): frozen, rows left as they are. With two routers of one name we cannot
//!   tell which one our rows serve, and deleting them could cut traffic that still flows; a
//!   rule broken later may be a transient edit, and the FAILED message tells the operator.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::adapters::NbCacheTopology;
use crate::ovsdb::NbCache;
use crate::peering::desired::{desired_rows, DesiredPeering};
use crate::peering::topology::{PortView, RouterView, Topology};
use crate::peering::PeeringSpec;
use crate::store::{PeeringRecord, PeeringState};

/// The desired rows of every live peering, and the ones that cannot be derived.
pub(crate) struct Derivation {
    /// The rows of each target that can be derived.
    pub desired: Vec<DesiredPeering>,
    /// Failed peerings whose existing rows must be left as they are (frozen).
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
    // Rows of peerings deleted through the API leave NB in this very pass: they block no one.
    let going: BTreeSet<&str> = context
        .iter()
        .filter(|p| p.state == PeeringState::Deleting)
        .map(|p| p.name.as_str())
        .collect();
    let topo = Leaving {
        nb: NbCacheTopology(cache),
        going: &going,
    };
    let wanted: HashSet<&str> = targets.iter().map(|p| p.name.as_str()).collect();
    let mut specs: Vec<(&PeeringRecord, PeeringSpec)> = Vec::new();
    let mut failed = BTreeMap::new();
    let mut untouched = BTreeSet::new();
    // Oldest first: each peering is judged against those before it (ties).
    let mut live: Vec<&PeeringRecord> = context
        .iter()
        .filter(|p| p.state != PeeringState::Deleting)
        .collect();
    live.sort_by(|a, b| (a.create_time, &a.name).cmp(&(b.create_time, &b.name)));
    for rec in live {
        match rec.spec() {
            Ok(spec) => specs.push((rec, spec)),
            Err(e) if wanted.contains(rec.name.as_str()) => {
                failed.insert(rec.name.clone(), e.to_string());
                untouched.insert(rec.name.clone());
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
            .filter(|&j| j < i)
            .collect();
        neighbours.sort_unstable();
        neighbours.dedup();
        let others: Vec<PeeringSpec> = neighbours.iter().map(|&j| specs[j].1.clone()).collect();
        match desired_rows(spec, rec.generation, &topo, &others, protected) {
            Ok(d) => desired.push(d),
            Err(why) => {
                if !router_gone(&topo, spec) {
                    untouched.insert(rec.name.clone());
                }
                failed.insert(rec.name.clone(), why);
            }
        }
    }
    Derivation {
        desired,
        untouched,
        failed,
    }
}

/// NB as it is once the rows of the peerings `going` (tombstones: the same pass deletes
/// their rows, before it writes anyone else's) are gone, so that a peering waiting for one
/// of them (an ECMP route, a port name) is judged against what NB will hold.
struct Leaving<'a, T> {
    nb: T,
    going: &'a BTreeSet<&'a str>,
}

impl<T: Topology> Leaving<'_, T> {
    fn gone(&self, peering: &Option<String>) -> bool {
        peering.as_deref().is_some_and(|p| self.going.contains(p))
    }
}

impl<T: Topology> Topology for Leaving<'_, T> {
    fn routers_named(&self, name: &str) -> Vec<RouterView> {
        let mut routers = self.nb.routers_named(name);
        for r in &mut routers {
            r.ports.retain(|p| !self.gone(&p.peering));
            r.routes.retain(|x| !self.gone(&x.peering));
        }
        routers
    }

    fn port_named(&self, name: &str) -> Option<PortView> {
        self.nb.port_named(name).filter(|p| !self.gone(&p.peering))
    }

    fn router_of_port(&self, port: &str) -> Option<String> {
        self.nb.router_of_port(port)
    }
}

/// Whether a router of the pair no longer exists in NB (no router has its name).
fn router_gone(topo: &impl Topology, spec: &PeeringSpec) -> bool {
    [&spec.local_vpc, &spec.remote_vpc]
        .iter()
        .any(|vpc| topo.routers_named(vpc).is_empty())
}
