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

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;

use crate::adapters::NbCacheTopology;
use crate::ovsdb::{NbCache, Table};
use crate::peering::desired::{desired_from_facts, desired_rows_in, DesiredPeering};
use crate::peering::topology::{
    effective_routes, resolve_subnets, ConflictQuery, PeerIndex, PortRef, PortView, RouteRef,
    RouteView, RouterRows, RouterView, RowId, Topology, TopologyFacts,
};
use crate::peering::{PeeringSpec, Side, PEERING_KEY};
use crate::store::{PeeringRecord, PeeringState};

use super::pass::cores;

/// The desired rows of the peerings judged, and the ones that cannot be derived.
pub(crate) struct Derivation {
    /// The rows of each target that can be derived (and that `settle` kept).
    pub desired: Vec<DesiredPeering>,
    /// The targets whose rows `settle` dropped (NB holds them exactly), in age order.
    pub settled: Vec<String>,
    /// Failed peerings whose existing rows must be left as they are (frozen).
    pub untouched: BTreeSet<String>,
    /// Targets whose rows cannot be derived now, and why (the STATE_FAILED message).
    pub failed: BTreeMap<String, String>,
    /// With [`Targets::Changed`], every peering judged (the changed ones, stored or not, the
    /// context's tombstones, and the peerings they affect): the only ones whose NB rows the
    /// pass may touch and whose statuses it may write. `None` with [`Targets::All`].
    pub judged: Option<BTreeSet<String>>,
}

/// Which peerings of the context a derivation judges.
pub(crate) enum Targets<'a> {
    /// Every one.
    All,
    /// `peerings` (named by Postgres: created, changed or deleted), every tombstone of the
    /// context (their rows leave NB in this very pass, which the others are judged against),
    /// the failed peerings of the changed ones' VPCs, every other peering whose verdict one
    /// of them can change ([`PeerIndex::affected_by`]: a hub's new spoke re-judges the few
    /// spokes whose prefixes overlap its own, not all N), and `by_nb` (the peerings of the
    /// routers and port names others changed in NB).
    Changed {
        /// Named by Postgres.
        peerings: &'a BTreeSet<String>,
        /// Touched by foreign NB changes.
        by_nb: &'a BTreeSet<String>,
    },
}

/// Derives the rows of the `targets` of `context` (every live peering of their VPCs: it feeds
/// the rules that look at a VPC's other peers).
///
/// `settle` sees each peering's desired rows as soon as they are derived, with whether no
/// other live peering of `context` has its name or one of its port names, and says whether
/// to keep them in [`Derivation::desired`]: a full pass stamps them and drops at once those
/// NB already holds exactly (most of them: nothing to plan; their names go to
/// [`Derivation::settled`]), instead of holding 100,000 peerings' rows until the plan.
///
/// With `threads` > 1 (a big full pass, [`cores::pass_threads`]), the peerings are judged on
/// that many threads ([`cores::in_chunks`]): the rules and `settle` read only the snapshot,
/// the index and their own peering, and the results are merged in age order, so the
/// derivation is the one a single thread gives (`pass::tests::split_derivation_equals_one_thread`).
pub(crate) fn derive(
    targets: Targets<'_>,
    context: &[PeeringRecord],
    cache: &NbCache,
    protected: &[String],
    instance: &str,
    threads: usize,
    settle: &(dyn Fn(&mut DesiredPeering, bool) -> bool + Sync),
) -> Derivation {
    // Rows of peerings deleted through the API leave NB in this very pass: they block no one.
    // Rows of another deployment are foreign (`instance`: ours), whatever their peering name.
    let going: BTreeSet<&str> = Judge::going(context);
    let topo = Leaving {
        nb: NbCacheTopology(cache, Some(instance)),
        going: &going,
    };
    let mut failed = BTreeMap::new();
    let mut untouched = BTreeSet::new();
    // Oldest first: each peering is judged against those before it (ties).
    let (records, specs, unreadable) = live_specs(context);
    // The other peerings, indexed once for the rules that look at a VPC's other peers (a
    // hub's N peerings cost O(N log N), not O(N²)); each is judged against the older ones.
    // Their VPCs' subnets read on the pass's threads: at 100,000 peerings, 200,000 routers.
    let read = |vpcs: &[String]| -> Vec<Vec<IpNet>> {
        let chunks = cores::in_chunks(vpcs, threads, |_, chunk| {
            chunk
                .iter()
                .map(|v| topo.subnets_named(v))
                .collect::<Vec<_>>()
        });
        chunks.into_iter().flatten().collect()
    };
    let index = PeerIndex::reading_subnets(&specs, &read);
    let judged = match targets {
        Targets::All => None,
        Targets::Changed { peerings, by_nb } => {
            let mut judged = affected(peerings, context, &index, &topo, cache);
            judged.extend(by_nb.iter().cloned());
            Some(judged)
        }
    };
    let wanted = |name: &str| judged.as_ref().is_none_or(|j| j.contains(name));
    for (rec, e) in unreadable {
        if wanted(&rec.name) {
            failed.insert(rec.name.clone(), e);
            untouched.insert(rec.name.clone());
        }
    }
    // Judged in chunks of consecutive peerings (in age order), merged in that order.
    let positions: Vec<usize> = (0..records.len())
        .filter(|&i| wanted(&records[i].name))
        .collect();
    let chunks = cores::in_chunks(&positions, threads, |_, chunk| {
        let mut out = Judged::default();
        for &i in chunk {
            let (rec, spec) = (records[i], &specs[i]);
            match desired_rows_in(spec, rec.generation, &topo, index.before(i), protected) {
                Ok(mut d) => match settle(&mut d, !index.shares_a_name(i)) {
                    true => out.desired.push(d),
                    false => out.settled.push(d.name),
                },
                Err(why) => out
                    .failed
                    .push((rec.name.clone(), why, router_gone(&topo, spec))),
            }
        }
        out
    });
    // Freed on a thread of its own when there is one to spare (a big full pass): its
    // 200,000 routers' entries at 100,000 peerings are tens of ms the pass need not wait for.
    if threads > 1 {
        let _ = std::thread::Builder::new()
            .name("pass-helper".into())
            .spawn(move || drop(index));
    }
    let (mut desired, mut settled) = (Vec::new(), Vec::new());
    for chunk in chunks {
        desired.extend(chunk.desired);
        settled.extend(chunk.settled);
        for (name, why, gone) in chunk.failed {
            if !gone {
                untouched.insert(name.clone());
            }
            failed.insert(name, why);
        }
    }
    Derivation {
        desired,
        settled,
        untouched,
        failed,
        judged,
    }
}

/// What one chunk of peerings came to: kept rows, names settled, failures (with whether a
/// router of the pair is gone).
#[derive(Default)]
struct Judged {
    desired: Vec<DesiredPeering>,
    settled: Vec<String>,
    failed: Vec<(String, String, bool)>,
}

/// The live peerings of `context`, oldest first (`create_time`, then name), as records and
/// specs side by side, and those whose record cannot be read as a spec (with why).
#[allow(clippy::type_complexity)]
fn live_specs(
    context: &[PeeringRecord],
) -> (
    Vec<&PeeringRecord>,
    Vec<PeeringSpec>,
    Vec<(&PeeringRecord, String)>,
) {
    let mut live: Vec<&PeeringRecord> = context
        .iter()
        .filter(|p| p.state != PeeringState::Deleting)
        .collect();
    live.sort_by(|a, b| (a.create_time, &a.name).cmp(&(b.create_time, &b.name)));
    let (mut records, mut specs, mut unreadable) = (Vec::new(), Vec::new(), Vec::new());
    for rec in live {
        match rec.spec() {
            Ok(spec) => {
                records.push(rec);
                specs.push(spec);
            }
            Err(e) => unreadable.push((rec, e.to_string())),
        }
    }
    (records, specs, unreadable)
}

/// Above this many changed peerings (and tombstones) a narrow pass judges every peering it
/// reads: each one's neighbours are looked up in the index (and its NB rows read), so a bulk
/// insert of thousands would cost more than judging the lot.
pub(crate) const MAX_NARROWED: usize = 32;

/// The peerings a narrow pass judges: `changed`, the tombstones of `context`, the failed
/// peerings of the changed ones' VPCs, and the indexed peerings whose verdict one of those
/// can change, by its spec or by its rows as NB holds them (they may predate a change of
/// subnets).
fn affected(
    changed: &BTreeSet<String>,
    context: &[PeeringRecord],
    index: &PeerIndex,
    topo: &impl Topology,
    cache: &NbCache,
) -> BTreeSet<String> {
    let mut judged = changed.clone();
    let is_source =
        |p: &PeeringRecord| changed.contains(&p.name) || p.state == PeeringState::Deleting;
    if context.iter().filter(|p| is_source(p)).count() > MAX_NARROWED {
        // A bulk insert: judging them all is cheaper than asking what each one affects.
        judged.extend(context.iter().map(|p| p.name.clone()));
        return judged;
    }
    // A failed peering of their VPCs too: it may name one of them by an earlier spec (an
    // update moved its routes) that neither the new spec nor NB shows any more.
    let vpcs: BTreeSet<&str> = context
        .iter()
        .filter(|p| changed.contains(&p.name))
        .flat_map(|p| [p.local_vpc.as_str(), p.remote_vpc.as_str()])
        .collect();
    judged.extend(
        context
            .iter()
            .filter(|p| p.state == PeeringState::Failed)
            .filter(|p| vpcs.contains(p.local_vpc.as_str()) || vpcs.contains(p.remote_vpc.as_str()))
            .map(|p| p.name.clone()),
    );
    let sources = context.iter().filter(|p| is_source(p));
    for rec in sources {
        judged.insert(rec.name.clone());
        let Ok(spec) = rec.spec() else { continue };
        let rows = nb_networks_of(cache, &rec.name);
        for pos in index.affected_by(&spec, topo, &rows) {
            judged.insert(index.name_at(pos).to_string());
        }
    }
    judged
}

/// The conflict probe of a narrow pass over `targets`: their specs (links known) and their
/// rows as NB holds them; `None` when one of them cannot be read as a spec.
pub(crate) fn narrow_probe(targets: &[PeeringRecord], cache: &NbCache) -> Option<ConflictQuery> {
    let topo = NbCacheTopology(cache, None);
    let mut q = ConflictQuery::default();
    for rec in targets {
        let spec = rec.spec().ok()?;
        q.add(&spec, &topo, &[], &nb_networks_of(cache, &rec.name));
    }
    Some(q)
}

/// Whether a narrow pass over `changed` with `context` judges `changed` alone: no tombstone
/// or failed peering of their VPCs, no other peering of `context` that one of them affects.
/// When `context` is a probe's read, the full read of their VPCs then judges them alone too.
pub(crate) fn judges_only(
    changed: &BTreeSet<String>,
    context: &[PeeringRecord],
    cache: &NbCache,
    instance: &str,
) -> bool {
    let going: BTreeSet<&str> = Judge::going(context);
    let topo = Leaving {
        nb: NbCacheTopology(cache, Some(instance)),
        going: &going,
    };
    let (_, specs, _) = live_specs(context);
    let index = PeerIndex::new(&specs, &topo);
    affected(changed, context, &index, &topo, cache).is_subset(changed)
}

/// The networks of the NB rows marked as the peering's: its ports' networks and its routes'
/// prefixes.
fn nb_networks_of(cache: &NbCache, peering: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (table, uuid) in cache.rows_with_external_id(PEERING_KEY, peering) {
        match table {
            Table::LogicalRouterPort => {
                let networks = cache.port(uuid).map(|p| &p.networks[..]);
                out.extend(
                    networks
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|n| n.parse::<IpNet>().ok()),
                );
            }
            Table::LogicalRouterStaticRoute => {
                let route = cache.static_route(uuid).map(|r| RouteView {
                    ip_prefix: r.ip_prefix.to_string(),
                    ..Default::default()
                });
                out.extend(route.and_then(|r| r.key()).map(|(_, prefix)| prefix));
            }
            _ => {}
        }
    }
    out
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
        self.going_ref(peering.as_deref())
    }

    fn going_ref(&self, peering: Option<&str>) -> bool {
        peering.is_some_and(|p| self.going.contains(p))
    }
}

/// A router as [`Leaving`] shows it: without the rows of the peerings going.
struct LeavingRouter<'a> {
    router: &'a dyn RouterRows,
    going: &'a BTreeSet<&'a str>,
}

impl RouterRows for LeavingRouter<'_> {
    fn id(&self) -> String {
        self.router.id()
    }

    fn name(&self) -> &str {
        self.router.name()
    }

    fn each_port(&self, f: &mut dyn FnMut(PortRef<'_>)) {
        self.router.each_port(&mut |p| {
            if !p.peering.is_some_and(|p| self.going.contains(p)) {
                f(p)
            }
        });
    }

    fn each_route(&self, f: &mut dyn FnMut(RouteRef<'_>)) {
        self.router.each_route(&mut |r| {
            if !r.peering.is_some_and(|p| self.going.contains(p)) {
                f(r)
            }
        });
    }

    /// As NB holds them (the rows of the peerings going included).
    fn indexed_rows(&self) -> Option<usize> {
        self.router.indexed_rows()
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

    fn visit_routers_named(&self, name: &str, f: &mut dyn FnMut(&dyn RouterRows)) {
        self.nb.visit_routers_named(name, &mut |r| {
            f(&LeavingRouter {
                router: r,
                going: self.going,
            })
        });
    }

    fn visit_port_named(&self, name: &str, f: &mut dyn FnMut(PortRef<'_>)) {
        self.nb.visit_port_named(name, &mut |p| {
            if !self.going_ref(p.peering) {
                f(p)
            }
        });
    }

    fn visit_route(&self, router: &str, id: RowId<'_>, f: &mut dyn FnMut(RouteRef<'_>)) {
        self.nb.visit_route(router, id, &mut |r| {
            if !self.going_ref(r.peering) {
                f(r)
            }
        });
    }

    fn router_count(&self, name: &str) -> usize {
        self.nb.router_count(name)
    }

    fn visit_ports_overlapping(
        &self,
        router: &str,
        q: &IpNet,
        f: &mut dyn FnMut(usize, PortRef<'_>),
    ) {
        self.nb.visit_ports_overlapping(router, q, &mut |order, p| {
            if !self.going_ref(p.peering) {
                f(order, p)
            }
        });
    }

    fn visit_routes_with_prefix(
        &self,
        router: &str,
        prefix: &IpNet,
        f: &mut dyn FnMut(usize, RouteRef<'_>),
    ) {
        self.nb
            .visit_routes_with_prefix(router, prefix, &mut |order, r| {
                if !self.going_ref(r.peering) {
                    f(order, r)
                }
            });
    }

    fn router_of_port(&self, port: &str) -> Option<String> {
        self.nb.router_of_port(port)
    }

    /// As NB holds them (the replica's index), not filtered: the rows of the peerings going
    /// are peer ports, so never subnets, unless a hand edit cleared a going port's `peer`.
    /// Then its link counts as a subnet of the router for this one pass (the old walk
    /// dropped it), as it did in every pass since the edit; the pass deletes the row, and the
    /// next pass no longer sees it. Filtering would need the index to name the port giving
    /// each subnet, or a walk of the hub's 10,000 ports per question, which the index exists
    /// to avoid. The test below holds this reading.
    fn subnets_named(&self, name: &str) -> Vec<IpNet> {
        self.nb.subnets_named(name)
    }
}

/// Whether a router of the pair no longer exists in NB (no router has its name).
fn router_gone(topo: &impl Topology, spec: &PeeringSpec) -> bool {
    [&spec.local_vpc, &spec.remote_vpc]
        .iter()
        .any(|vpc| topo.router_count(vpc) == 0)
}

/// The live peerings of a context, indexed once, judged one at a time on demand: ListRoutes
/// derives only the peerings its page shows, with the same rules and the same other peerings
/// as [`derive`] (the same NB without the rows of tombstones, the same age order).
pub(crate) struct Judge<'a> {
    topo: Leaving<'a, NbCacheTopology<'a>>,
    records: Vec<&'a PeeringRecord>,
    specs: Vec<PeeringSpec>,
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
        instance: Option<&'a str>,
    ) -> Judge<'a> {
        let topo = Leaving {
            nb: NbCacheTopology(cache, instance),
            going,
        };
        let (records, specs, _) = live_specs(context);
        let index = PeerIndex::new(&specs, &topo);
        let by_name = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i))
            .collect();
        Judge {
            topo,
            records,
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

    /// The rows of the live peering `name`; `None` when it is not live or its record cannot
    /// be read as a spec (it wants nothing).
    pub(crate) fn rows(&self, name: &str) -> Option<DesiredPeering> {
        let i = *self.by_name.get(name)?;
        desired_rows_in(
            &self.specs[i],
            self.records[i].generation,
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
        let (rec, spec) = (self.records[i], &self.specs[i]);
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
            resolve_subnets(&self.topo, spec.vpc(side))
                .map(|(id, _)| id)
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

/// The subnets the rules read for `vpc` when judging against `context` (its tombstones' rows
/// leaving NB): those of its one router, none when it has not exactly one. What
/// [`PeerIndex::subnets`] answers for a [`Judge`] of `context`, without indexing `context`
/// (which reads the subnets of every VPC its peerings join: a hub's 10,000 ports).
pub(crate) fn subnets_as_judged(
    context: &[PeeringRecord],
    cache: &NbCache,
    vpc: &str,
    instance: Option<&str>,
) -> Vec<IpNet> {
    let going = Judge::going(context);
    let topo = Leaving {
        nb: NbCacheTopology(cache, instance),
        going: &going,
    };
    resolve_subnets(&topo, vpc)
        .map(|(_, subnets)| subnets)
        .unwrap_or_default()
}

/// The rows a peering that fails the rules would want, and why it fails.
#[derive(Debug)]
pub(crate) struct Unjudged {
    /// The refusal (the STATE_FAILED message the worker would write).
    pub why: String,
    /// The rows it would want if it passed.
    pub rows: DesiredPeering,
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::ovsdb::cache::tests::{types, ApplyValue};
    use crate::ovsdb::cache::UpdateFormat;
    use crate::peering::{OWNER_KEY, OWNER_VALUE};

    /// A port of a peering going whose `peer` a hand edit cleared still gives its router a
    /// subnet under [`Leaving`] (see `Leaving::subnets_named`); a going port with its `peer`
    /// does not, and neither does anything once the row is gone.
    #[test]
    fn a_going_port_with_peer_cleared_by_hand_counts_as_a_subnet_for_one_pass() {
        let t = types();
        let (router, lan, link, peered) = (
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            Uuid::from_u128(3),
            Uuid::from_u128(4),
        );
        let ours =
            |peering: &str| json!(["map", [[OWNER_KEY, OWNER_VALUE], [PEERING_KEY, peering]]]);
        let uuids = |s: &[Uuid]| {
            json!([
                "set",
                s.iter()
                    .map(|u| json!(["uuid", u.to_string()]))
                    .collect::<Vec<_>>()
            ])
        };
        let mut c = NbCache::new(Some(OWNER_KEY.into()));
        let update = json!({
            "Logical_Router_Port": {
                lan.to_string(): {"insert": {"name": "lan", "networks": "10.0.0.1/24"}},
                link.to_string(): {"insert": {"name": "p1-a", "networks": "169.254.0.1/30",
                    "external_ids": ours("p1")}},
                peered.to_string(): {"insert": {"name": "p2-a", "networks": "169.254.0.5/30",
                    "peer": ["set", ["p2-b"]], "external_ids": ours("p2")}},
            },
            "Logical_Router": {
                router.to_string(): {"insert": {"name": "vpc-a", "ports": uuids(&[lan, link, peered])}},
            },
        });
        c.apply_v(&t, UpdateFormat::V2, &update).unwrap();
        let going: BTreeSet<&str> = ["p1", "p2"].into();
        let leaving = Leaving {
            nb: NbCacheTopology(&c, None),
            going: &going,
        };
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            leaving.subnets_named("vpc-a"),
            vec![net("10.0.0.0/24"), net("169.254.0.0/30")]
        );
        let gone = json!({"Logical_Router_Port": {link.to_string(): {"delete": null}},
            "Logical_Router": {router.to_string(): {"modify": {"ports": uuids(&[link])}}}});
        c.apply_v(&t, UpdateFormat::V2, &gone).unwrap();
        let leaving = Leaving {
            nb: NbCacheTopology(&c, None),
            going: &going,
        };
        assert_eq!(leaving.subnets_named("vpc-a"), vec![net("10.0.0.0/24")]);
    }
}
