//! The other peerings as the topology rules consult them: built once per pass (or per
//! ListRoutes call) from a list of peerings and an NB snapshot, so that judging one peering of
//! a hub with N spokes costs O(log N) per address, not O(N) (and a pass O(N log N), not
//! O(N²)).
//!
//! Per VPC it holds what [`super::check_topology`] used to recompute for each peering: the
//! VPC's router resolved once ([`ResolvedRouter`], read in place), the links and routes its
//! peerings install there ("every entry overlapping this prefix" without a scan), and which
//! port names they claim. Every entry remembers the position of its peering in the list the
//! index was built from, so that a caller judging peerings in age order can restrict the rules
//! to the ones before it ([`PeerIndex::before`]) and so that refusals list conflicts in list
//! order, exactly as the pairwise comparison did.
//!
//! **Flat.** A full pass indexes every peering (100,000 disjoint pairs: 200,000 VPCs): the
//! index is a few sorted vectors over all of them (VPCs numbered once, port names by hash,
//! links and routes grouped by VPC in one vector each), so indexing a peering allocates
//! nothing but its name, and dropping the index frees a handful of vectors. What each lookup
//! answers is what a scan of the list answers (`index/tests.rs` checks it on random lists).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use ipnet::IpNet;

use super::prefix::{Grouped, Prefixes};
use super::router::ResolvedRouter;
use super::{effective_routes, Topology};
use crate::peering::{port_name, PeeringSpec, RoutePolicy, RouteSpec};

/// Position of a peering in the list the index was built from.
type Pos = usize;
/// A VPC's number in the index.
type Vid = u32;

/// The indexed peerings and their VPCs (see the module doc).
#[derive(Debug, Default)]
pub struct PeerIndex {
    names: Vec<String>,
    /// (local, remote) VPC of every peering.
    pairs: Vec<(Vid, Vid)>,
    vpc_names: Vec<String>,
    vpc_ids: HashMap<String, Vid>,
    /// (hash of a name, position), sorted: a name's peerings in list order without comparing
    /// names along the way (callers check the name).
    by_name: Vec<(u64, Pos)>,
    /// (unordered VPC pair, position), sorted.
    by_pair: Vec<((Vid, Vid), Pos)>,
    /// (hash of a port name, position): both port names of every peering, sorted.
    by_port: Vec<(u64, Pos)>,
    /// (VPC, position), each VPC of a peering once, sorted.
    by_vpc: Vec<(Vid, Pos)>,
    /// Links of the peerings, by VPC: (position, order within it, network).
    links: Grouped<(Pos, usize, IpNet)>,
    /// Routes the peerings install, by VPC: (position, order within it, route).
    routes: Grouped<(Pos, usize, RouteSpec)>,
    /// Each VPC's subnets as [`Topology::subnets_named`] read them (the other VPC of some
    /// indexed peering), kept for [`Self::affected_by`]: a hub's are read once per index.
    subnets: Vec<Vec<IpNet>>,
    /// Each VPC's router, resolved on first use ([`PeerIndex::vpc`]): a narrow pass at a hub
    /// judges a few peerings and need not resolve the N spokes' routers.
    routers: Vec<OnceLock<Result<ResolvedRouter, String>>>,
}

/// A VPC with fewer indexed peerings than this has its router asked per question when the
/// topology indexes its rows ([`PeerIndex::vpc`]).
const ASK_BELOW: usize = 64;

/// A router with fewer ports and routes than this is read whole ([`PeerIndex::vpc`]). Debug
/// builds ask every router of an indexed topology, and check each answer against the router
/// read whole ([`ResolvedRouter`]), so that every test judging through the replica covers both.
const ASK_FROM_ROWS: usize = if cfg!(debug_assertions) { 1 } else { 256 };

/// One VPC as a check reads it: its router and the index's entries there.
#[derive(Debug)]
pub(super) struct VpcRef<'a> {
    vid: Option<Vid>,
    router: Cow<'a, Result<ResolvedRouter, String>>,
}

/// The indexed peerings a rule may consult: all of them, or those before a position.
#[derive(Debug, Clone, Copy)]
pub struct Others<'a> {
    pub(super) index: &'a PeerIndex,
    upto: Pos,
}

impl PeerIndex {
    /// Indexes `peerings` (in this order) against `topo`. O(P log P) in the peerings, plus one
    /// read of each of their VPCs' subnets.
    pub fn new(peerings: &[PeeringSpec], topo: &(impl Topology + ?Sized)) -> PeerIndex {
        let read = |vpcs: &[String]| vpcs.iter().map(|v| topo.subnets_named(v)).collect();
        Self::reading_subnets(peerings, &read)
    }

    /// As [`Self::new`], every VPC's subnets read at once by `read`: given the VPCs of
    /// `peerings` (in the index's order), it answers for each what
    /// [`Topology::subnets_named`] says (a big full pass reads them on several threads).
    pub(crate) fn reading_subnets(
        peerings: &[PeeringSpec],
        read: &dyn Fn(&[String]) -> Vec<Vec<IpNet>>,
    ) -> PeerIndex {
        let mut ix = PeerIndex {
            names: Vec::with_capacity(peerings.len()),
            pairs: Vec::with_capacity(peerings.len()),
            by_pair: Vec::with_capacity(peerings.len()),
            by_port: Vec::with_capacity(2 * peerings.len()),
            by_vpc: Vec::with_capacity(2 * peerings.len()),
            ..Default::default()
        };
        let n = 2 * peerings.len();
        let (mut links, mut routes) = (Vec::with_capacity(n), Vec::with_capacity(n));
        // Each VPC's subnets, read once (the automatic routes into its peers): every VPC
        // of an indexed peering is the other VPC of one.
        for o in peerings {
            let pair = (ix.intern(&o.local_vpc), ix.intern(&o.remote_vpc));
            ix.pairs.push(pair);
        }
        let subnets = read(&ix.vpc_names);
        assert_eq!(subnets.len(), ix.vpc_names.len(), "subnets of every VPC");
        for (pos, o) in peerings.iter().enumerate() {
            let (l, r) = ix.pairs[pos];
            ix.names.push(o.name.clone());
            ix.by_pair.push(((l.min(r), l.max(r)), pos));
            for (this, other) in [(&o.local_vpc, &o.remote_vpc), (&o.remote_vpc, &o.local_vpc)] {
                ix.by_port.push((port_hash(this, other), pos));
            }
            let vids: &[Vid] = if l == r { &[l] } else { &[l, r] };
            for &vid in vids {
                let vpc = &ix.vpc_names[vid as usize];
                let Some(t) = o.side_of(vpc) else { continue };
                ix.by_vpc.push((vid, pos));
                for (k, n) in o.connect(t).networks().into_iter().enumerate() {
                    links.push((vid, n, (pos, k, n)));
                }
                let other = ix.vpc_ids[o.vpc(t.other())] as usize;
                let other_subnets = &subnets[other];
                let installed = effective_routes(o.routes(t), other_subnets, o.connect(t));
                for (k, r) in installed.into_iter().enumerate() {
                    routes.push((vid, r.prefix, (pos, k, r)));
                }
            }
        }
        let by_name = &mut ix.by_name;
        by_name.extend(
            ix.names
                .iter()
                .enumerate()
                .map(|(pos, n)| (name_hash(n), pos)),
        );
        by_name.sort_unstable();
        ix.by_pair.sort_unstable();
        ix.by_port.sort_unstable();
        ix.by_vpc.sort_unstable();
        let vpcs = ix.vpc_names.len();
        ix.links = Grouped::new(links, vpcs);
        ix.routes = Grouped::new(routes, vpcs);
        ix.routers = (0..vpcs).map(|_| OnceLock::new()).collect();
        ix.subnets = subnets;
        ix
    }

    fn intern(&mut self, vpc: &str) -> Vid {
        if let Some(v) = self.vpc_ids.get(vpc) {
            return *v;
        }
        let v = self.vpc_names.len() as Vid;
        self.vpc_names.push(vpc.to_string());
        self.vpc_ids.insert(vpc.to_string(), v);
        v
    }

    /// Every indexed peering.
    pub fn all(&self) -> Others<'_> {
        Others {
            index: self,
            upto: self.names.len(),
        }
    }

    /// Only the first `n` indexed peerings take part in the conflict rules (links, routes,
    /// names): for judging peerings in age order. Ports of later ones are still ours, never
    /// foreign.
    pub fn before(&self, n: usize) -> Others<'_> {
        Others {
            index: self,
            upto: n.min(self.names.len()),
        }
    }

    /// A VPC, its router resolved from `topo` (once), or one with no entries, its router read
    /// from `topo` now, when no indexed peering touches it.
    ///
    /// A big router (at least [`ASK_FROM_ROWS`] ports and routes: a hub's) of a topology
    /// that indexes its rows, with few indexed peerings (a hub's new spoke judged against the
    /// few that can conflict), is asked per question instead of read whole; with many (a full
    /// pass over a hub: a question per spoke) it is read once, and so is a small one.
    pub(super) fn vpc<'a>(&'a self, topo: &(impl Topology + ?Sized), vpc: &str) -> VpcRef<'a> {
        // Told by the router once found (`RouterRows::indexed_rows`), not asked of `topo` by
        // name again: a full pass resolves every VPC's router.
        let ask = |peerings: usize| {
            move |rows: Option<usize>| {
                peerings < ASK_BELOW && rows.is_some_and(|rows| rows >= ASK_FROM_ROWS)
            }
        };
        match self.vpc_ids.get(vpc) {
            Some(&vid) => VpcRef {
                vid: Some(vid),
                router: Cow::Borrowed(self.routers[vid as usize].get_or_init(|| {
                    let ask = ask(self.peerings_of(vid));
                    ResolvedRouter::new(topo, vpc, |p| self.claims_in(vpc, p), ask)
                })),
            },
            None => VpcRef {
                vid: None,
                router: Cow::Owned(ResolvedRouter::new(topo, vpc, |_| false, ask(0))),
            },
        }
    }

    /// How many indexed peerings touch the VPC `vid`.
    fn peerings_of(&self, vid: Vid) -> usize {
        let from = self.by_vpc.partition_point(|(v, _)| *v < vid);
        let to = self.by_vpc.partition_point(|(v, _)| *v <= vid);
        to - from
    }

    /// The subnets the rules read for `vpc` (those of its one router; none when it has not
    /// exactly one, and then a peering of it fails the rules anyway).
    pub fn subnets(&self, topo: &(impl Topology + ?Sized), vpc: &str) -> Vec<IpNet> {
        match self.vpc(topo, vpc).router() {
            Ok(r) => r.subnets.clone(),
            Err(_) => Vec::new(),
        }
    }

    /// Positions holding the port name `port` (by hash; callers check the name).
    fn port_holders(&self, port: &str) -> impl Iterator<Item = Pos> + '_ {
        let h = cut(fnv(port.as_bytes(), FNV_OFFSET));
        let from = self.by_port.partition_point(|(k, _)| *k < h);
        self.by_port[from..]
            .iter()
            .take_while(move |(k, _)| *k == h)
            .map(|(_, p)| *p)
    }

    /// Whether an indexed peering holds the port name `port` in `vpc`.
    fn claims_in(&self, vpc: &str, port: &str) -> bool {
        self.port_holders(port).any(|q| self.claims(q, vpc, port))
    }

    /// Whether the peering at `pos` has its port `port` in `vpc`.
    fn claims(&self, pos: Pos, vpc: &str, port: &str) -> bool {
        let (l, r) = self.pair_names(pos);
        (l == vpc && is_port_name(port, l, r)) || (r == vpc && is_port_name(port, r, l))
    }

    fn pair_names(&self, pos: Pos) -> (&str, &str) {
        let (l, r) = self.pairs[pos];
        (&self.vpc_names[l as usize], &self.vpc_names[r as usize])
    }

    /// Positions of the peerings named `name`, in list order.
    fn named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = Pos> + 's {
        let h = name_hash(name);
        let from = self.by_name.partition_point(|(k, _)| *k < h);
        self.by_name[from..]
            .iter()
            .take_while(move |(k, _)| *k == h)
            .map(|(_, p)| *p)
            .filter(move |p| self.names[*p] == name)
    }

    /// Positions of the peerings of the unordered pair (a, b), in list order.
    fn of_pair(&self, a: Vid, b: Vid) -> impl Iterator<Item = Pos> + '_ {
        let key = (a.min(b), a.max(b));
        let from = self.by_pair.partition_point(|(k, _)| *k < key);
        self.by_pair[from..]
            .iter()
            .take_while(move |(k, _)| *k == key)
            .map(|(_, p)| *p)
    }

    /// Positions of the peerings of `vpc`, in list order.
    fn of_vpc(&self, vid: Vid) -> impl Iterator<Item = Pos> + '_ {
        let from = self.by_vpc.partition_point(|(k, _)| *k < vid);
        self.by_vpc[from..]
            .iter()
            .take_while(move |(k, _)| *k == vid)
            .map(|(_, p)| *p)
    }

    /// Positions of the peerings holding the port name `port`.
    fn holding_port<'s>(&'s self, port: &'s str) -> impl Iterator<Item = Pos> + 's {
        self.port_holders(port).filter(move |&q| {
            let (l, r) = self.pair_names(q);
            is_port_name(port, l, r) || is_port_name(port, r, l)
        })
    }
}

impl VpcRef<'_> {
    /// Whether an indexed peering of the VPC `vpc` (this one) claims the port name `port`
    /// (what [`PeerIndex::vpc`] resolves its router with).
    pub(super) fn claims(&self, index: &PeerIndex, vpc: &str, port: &str) -> bool {
        self.vid.is_some() && index.claims_in(vpc, port)
    }

    /// The VPC's one router, or why there is not exactly one.
    pub(super) fn router(&self) -> Result<&ResolvedRouter, &str> {
        self.router.as_ref().as_ref().map_err(String::as_str)
    }
}

impl<'a> Others<'a> {
    /// The name of the peering at `pos`.
    pub(super) fn name(&self, pos: Pos) -> &'a str {
        &self.index.names[pos]
    }

    /// (local, remote) VPC of the peering at `pos`.
    pub(super) fn pair(&self, pos: Pos) -> (&'a str, &'a str) {
        self.index.pair_names(pos)
    }

    /// Whether the peering at `pos` takes part, for the peering named `me`.
    pub(super) fn counts(&self, pos: Pos, me: &str) -> bool {
        pos < self.upto && self.index.names[pos] != me
    }

    /// Peerings (not `me`) that hold one of the port names `ports` or peer `a` with `b`, in
    /// list order.
    pub(super) fn name_candidates(&self, me: &str, ports: &[String], a: &str, b: &str) -> Vec<Pos> {
        let ix = self.index;
        // Counted as they come: a peering finds itself by its pair and its port names,
        // and is usually all it finds (then nothing is allocated).
        let counted = |p: &Pos| self.counts(*p, me);
        let mut c: Vec<Pos> = ports
            .iter()
            .flat_map(|p| ix.holding_port(p))
            .filter(counted)
            .collect();
        match (ix.vpc_ids.get(a), ix.vpc_ids.get(b)) {
            (Some(&a), Some(&b)) if a == b => c.extend(ix.of_vpc(a).filter(counted)),
            (Some(&a), Some(&b)) => c.extend(ix.of_pair(a, b).filter(counted)),
            _ => {}
        }
        c.sort_unstable();
        c.dedup();
        c
    }

    /// Links of the counted peerings in `vpc` overlapping `q`, in list order: (network, peering).
    pub(super) fn links(&self, vpc: &VpcRef<'_>, q: &IpNet, me: &str) -> Vec<(IpNet, &'a str)> {
        let mut hits: Vec<(Pos, usize, IpNet)> = self
            .index
            .links_in(vpc)
            .overlapping(q)
            .filter(|(p, _, _)| self.counts(*p, me))
            .copied()
            .collect();
        hits.sort_unstable_by_key(|(p, k, _)| (*p, *k));
        hits.into_iter()
            .map(|(p, _, n)| (n, self.name(p)))
            .collect()
    }

    /// Routes of the counted peerings in `vpc` with `policy` overlapping `q`, in list order.
    pub(super) fn routes(
        &self,
        vpc: &VpcRef<'_>,
        q: &IpNet,
        policy: RoutePolicy,
        me: &str,
    ) -> Vec<(RouteSpec, &'a str)> {
        let mut hits: Vec<&(Pos, usize, RouteSpec)> = self
            .index
            .routes_in(vpc)
            .overlapping(q)
            .filter(|(p, _, r)| r.policy == policy && self.counts(*p, me))
            .collect();
        hits.sort_unstable_by_key(|(p, k, _)| (*p, *k));
        hits.into_iter()
            .map(|(p, _, r)| (*r, self.name(*p)))
            .collect()
    }
}

impl PeerIndex {
    fn links_in(&self, vpc: &VpcRef<'_>) -> Prefixes<'_, (Pos, usize, IpNet)> {
        vpc.vid
            .map_or_else(Prefixes::empty, |v| self.links.group(v))
    }

    fn routes_in(&self, vpc: &VpcRef<'_>) -> Prefixes<'_, (Pos, usize, RouteSpec)> {
        vpc.vid
            .map_or_else(Prefixes::empty, |v| self.routes.group(v))
    }

    /// The indexed peerings whose verdict can depend on `spec` (indexed or not: a tombstone's
    /// spec works too), positions in list order, `spec`'s own left out: those holding one of
    /// its port names or peering the same two VPCs, and those with a link or a route (any
    /// policy) in one of its VPCs overlapping one of its links, one of the routes it installs
    /// there, or one of `also` (its rows as NB holds them, which may predate a subnet change).
    ///
    /// No other rule looks at another peering, so the others' verdicts are the same with or
    /// without `spec`: a narrow pass judges only these again (a hub's new spoke conflicts with
    /// the few spokes whose prefixes overlap its own, not with all N).
    pub fn affected_by(
        &self,
        spec: &PeeringSpec,
        topo: &(impl Topology + ?Sized),
        also: &[IpNet],
    ) -> BTreeSet<Pos> {
        let mut out: BTreeSet<Pos> = BTreeSet::new();
        for name in super::port_names(&spec.local_vpc, &spec.remote_vpc) {
            out.extend(self.holding_port(&name));
        }
        let ids = (
            self.vpc_ids.get(&spec.local_vpc),
            self.vpc_ids.get(&spec.remote_vpc),
        );
        if let (Some(&a), Some(&b)) = ids {
            out.extend(self.of_pair(a, b));
        }
        let mut nets: Vec<IpNet> = also.to_vec();
        for side in crate::peering::Side::BOTH {
            let link = spec.connect(side);
            nets.extend(link.networks());
            let other = spec.vpc(side.other());
            let known = self.vpc_ids.get(other).map(|v| &self.subnets[*v as usize]);
            let read;
            let other_subnets = match known {
                Some(s) => s,
                None => {
                    read = topo.subnets_named(other);
                    &read
                }
            };
            let installed = effective_routes(spec.routes(side), other_subnets, link);
            nets.extend(installed.iter().map(|r| r.prefix));
        }
        for vid in [ids.0, ids.1].into_iter().flatten() {
            let (links, routes) = (self.links.group(*vid), self.routes.group(*vid));
            for q in &nets {
                out.extend(links.overlapping(q).map(|(p, _, _)| *p));
                out.extend(routes.overlapping(q).map(|(p, _, _)| *p));
            }
        }
        out.retain(|&p| self.names[p] != spec.name);
        out
    }

    /// Whether another indexed peering has the name of the one at `pos` or one of its port
    /// names, or it peers a VPC with itself (its two ports share a name).
    pub fn shares_a_name(&self, pos: Pos) -> bool {
        let (l, r) = self.pair_names(pos);
        if l == r || self.named(&self.names[pos]).nth(1).is_some() {
            return true;
        }
        [(l, r), (r, l)].into_iter().any(|(a, b)| {
            let h = port_hash(a, b);
            let from = self.by_port.partition_point(|(k, _)| *k < h);
            self.by_port[from..]
                .iter()
                .take_while(|(k, _)| *k == h)
                .filter(|(_, q)| *q != pos)
                .any(|(_, q)| {
                    let (c, d) = self.pair_names(*q);
                    same_port(a, b, c, d) || same_port(a, b, d, c)
                })
        })
    }

    /// The name of the indexed peering at `pos`.
    pub fn name_at(&self, pos: Pos) -> &str {
        &self.names[pos]
    }

    /// Port names in `vpc` that only peerings named `me` claim: not ours when `me` is judged
    /// (the pairwise rules skipped every peering of the judged name). Empty in practice
    /// (names are unique), and a lookup by name, never a scan of the VPC's peerings.
    pub(super) fn claimed_only_by(&self, vpc: &str, me: &str) -> Vec<String> {
        let mut out = Vec::new();
        for pos in self.named(me) {
            let (l, r) = self.pair_names(pos);
            let other = if l == vpc {
                r
            } else if r == vpc {
                l
            } else {
                continue;
            };
            let port = port_name(vpc, other);
            let held_by_another = self
                .port_holders(&port)
                .any(|q| self.names[q] != me && self.claims(q, vpc, &port));
            if !held_by_another {
                out.push(port);
            }
        }
        out
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, continuing from `h`: streaming, so a port name hashes the same from
/// its two VPC names as from the whole name.
fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hash of a peering's name (distinct from port names' only by chance: each lookup checks
/// the name).
fn name_hash(name: &str) -> u64 {
    cut(fnv(name.as_bytes(), FNV_OFFSET))
}

/// The hash of [`port_name`]`(this, other)`, without building it.
fn port_hash(this: &str, other: &str) -> u64 {
    let h = fnv(this.as_bytes(), FNV_OFFSET);
    let h = fnv(b"-", h);
    cut(fnv(other.as_bytes(), h))
}

/// A hash as the index keeps it: whole, except in this crate's unit tests, where only 3 bits
/// are kept so that different names share a hash and every lookup's name check is exercised
/// (`index/tests.rs` compares each lookup with a scan).
fn cut(h: u64) -> u64 {
    if cfg!(test) {
        h & 0b111
    } else {
        h
    }
}

/// Whether [`port_name`]`(a, b)` is [`port_name`]`(c, d)`, without building them.
fn same_port(a: &str, b: &str, c: &str, d: &str) -> bool {
    let dash = std::iter::once(b'-');
    a.len() + b.len() == c.len() + d.len()
        && a.bytes()
            .chain(dash.clone())
            .chain(b.bytes())
            .eq(c.bytes().chain(dash).chain(d.bytes()))
}

/// Whether `port` is [`port_name`]`(this, other)`, without building it.
fn is_port_name(port: &str, this: &str, other: &str) -> bool {
    port.len() == this.len() + 1 + other.len()
        && port.starts_with(this)
        && port.as_bytes()[this.len()] == b'-'
        && port.ends_with(other)
}

#[cfg(test)]
mod tests;
