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
use crate::peering::desired::{desired_from_facts, desired_rows_in, DesiredPeering};
use crate::peering::topology::{
    effective_routes, resolve_router, PeerIndex, PortView, RouterView, Topology, TopologyFacts,
};
use crate::peering::{PeeringSpec, Side};
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
    // The other peerings, indexed once for the rules that look at a VPC's other peers (a
    // hub's N peerings cost O(N log N), not O(N²)); each is judged against the older ones.
    let all: Vec<PeeringSpec> = specs.iter().map(|(_, s)| s.clone()).collect();
    let index = PeerIndex::new(&all, &topo);
    let mut desired = Vec::with_capacity(specs.len());
    for (i, (rec, spec)) in specs.iter().enumerate() {
        if !wanted.contains(rec.name.as_str()) {
            continue;
        }
        match desired_rows_in(spec, rec.generation, &topo, index.before(i), protected) {
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

/// The live peerings of a context, indexed once, judged one at a time on demand: ListRoutes
/// derives only the peerings its page shows, with the same rules and the same other peerings
/// as [`derive`] (the same NB without the rows of tombstones, the same age order).
pub(crate) struct Judge<'a> {
    topo: Leaving<'a, NbCacheTopology<'a>>,
    specs: Vec<(&'a PeeringRecord, PeeringSpec)>,
    by_name: HashMap<&'a str, usize>,
    index: PeerIndex,
    protected: &'a [String],
}

impl<'a> Judge<'a> {
    pub(crate) fn new(
        context: &'a [PeeringRecord],
        going: &'a BTreeSet<&'a str>,
        cache: &'a NbCache,
        protected: &'a [String],
    ) -> Judge<'a> {
        let topo = Leaving {
            nb: NbCacheTopology(cache),
            going,
        };
        let mut live: Vec<&PeeringRecord> = context
            .iter()
            .filter(|p| p.state != PeeringState::Deleting)
            .collect();
        live.sort_by(|a, b| (a.create_time, &a.name).cmp(&(b.create_time, &b.name)));
        let specs: Vec<(&PeeringRecord, PeeringSpec)> = live
            .into_iter()
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

    /// The names of the tombstones of `context`: their rows leave NB in the worker's pass.
    pub(crate) fn going(context: &[PeeringRecord]) -> BTreeSet<&str> {
        context
            .iter()
            .filter(|p| p.state == PeeringState::Deleting)
            .map(|p| p.name.as_str())
            .collect()
    }

    /// The live peerings judged, as the rules see them.
    pub(crate) fn specs(&self) -> impl Iterator<Item = &PeeringSpec> {
        self.specs.iter().map(|(_, s)| s)
    }

    /// The NB topology judged against.
    pub(crate) fn topo(&self) -> &(impl Topology + use<'a>) {
        &self.topo
    }

    /// The peerings' index (for reading subnets the way the rules do).
    pub(crate) fn index(&self) -> &PeerIndex {
        &self.index
    }

    /// The rows of the live peering `name`; `None` when it is not live or its record cannot
    /// be read as a spec (it wants nothing).
    pub(crate) fn rows(&self, name: &str) -> Option<DesiredPeering> {
        let i = *self.by_name.get(name)?;
        let (rec, spec) = &self.specs[i];
        desired_rows_in(
            spec,
            rec.generation,
            &self.topo,
            self.index.before(i),
            self.protected,
        )
        .ok()
    }

    /// What DiagnosePeering checks NB against: the rows of the live peering `name` as the
    /// worker derives them (`Ok`), or, when it fails the rules now, the rows it would want if
    /// it passed (`Err`, with the refusal), read without judging as ListRoutes reads them: the
    /// other VPC's subnets as the rules see them, the router UUIDs when they resolve (`""`
    /// for a side whose router does not). `None` when it is not live or has no valid spec.
    pub(crate) fn wanted(&self, name: &str) -> Option<Result<DesiredPeering, Unjudged>> {
        let i = *self.by_name.get(name)?;
        let (rec, spec) = &self.specs[i];
        Some(
            desired_rows_in(
                spec,
                rec.generation,
                &self.topo,
                self.index.before(i),
                self.protected,
            )
            .map_err(|why| Unjudged {
                why,
                rows: desired_from_facts(spec, rec.generation, &self.unjudged_facts(spec)),
            }),
        )
    }

    fn unjudged_facts(&self, spec: &PeeringSpec) -> TopologyFacts {
        let id = |side: Side| {
            resolve_router(&self.topo, spec.vpc(side))
                .map(|r| r.id)
                .unwrap_or_default()
        };
        let subnets = |side: Side| self.index.subnets(&self.topo, spec.vpc(side));
        let (local_subnets, remote_subnets) = (subnets(Side::Local), subnets(Side::Remote));
        TopologyFacts {
            local_router_id: id(Side::Local),
            remote_router_id: id(Side::Remote),
            local_routes: effective_routes(
                &spec.local_routes,
                &remote_subnets,
                &spec.remote_connect,
            ),
            remote_routes: effective_routes(
                &spec.remote_routes,
                &local_subnets,
                &spec.local_connect,
            ),
            local_subnets,
            remote_subnets,
        }
    }
}

/// The rows a peering that fails the rules would want, and why it fails.
#[derive(Debug)]
pub(crate) struct Unjudged {
    /// The refusal (the STATE_FAILED message the worker would write).
    pub why: String,
    /// The rows it would want if it passed.
    pub rows: DesiredPeering,
}
