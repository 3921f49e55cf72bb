//! The other peerings as the topology rules consult them: built once per pass (or per
//! ListRoutes call) from a list of peerings and an NB snapshot, so that judging one peering of
//! a hub with N spokes costs O(log N) per address, not O(N) (and a pass O(N log N), not
//! O(N²)).
//!
//! Per VPC it holds what [`super::check_topology`] used to recompute for each peering: the
//! VPC's router resolved once, its subnets, the networks of its gateway ports and of peer
//! ports none of the indexed peerings claims, the links and routes its peerings install there
//! (in [`PrefixMap`]s: "every entry overlapping this prefix" without a scan), and its installed
//! routes by ECMP key. Every entry remembers the position of its peering in the list the index
//! was built from, so that a caller judging peerings in age order can restrict the rules to the
//! ones before it ([`PeerIndex::before`]) and so that refusals list conflicts in list order,
//! exactly as the pairwise comparison did.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use ipnet::IpNet;

use super::{effective_routes, is_peer, parse_networks, resolve_router, vpc_subnets, Topology};
use super::{RouteView, RouterView};
use crate::peering::{overlaps, port_name, PeeringSpec, RoutePolicy, RouteSpec};

/// Networks keyed by prefix (host bits cleared), answering "every entry overlapping `q`" with
/// one range scan (the entries inside `q`) and one lookup per prefix length present that is
/// shorter than `q`'s (the entries containing `q`).
#[derive(Debug, Clone)]
pub struct PrefixMap<T> {
    map: BTreeMap<IpNet, Vec<T>>,
    /// (is IPv6, prefix length) of the keys present.
    lens: BTreeSet<(bool, u8)>,
}

impl<T> Default for PrefixMap<T> {
    fn default() -> Self {
        PrefixMap {
            map: BTreeMap::new(),
            lens: BTreeSet::new(),
        }
    }
}

impl<T> PrefixMap<T> {
    /// Adds `value` under `net` (its host bits are ignored).
    pub fn insert(&mut self, net: IpNet, value: T) {
        let key = net.trunc();
        self.lens.insert((is_v6(&key), key.prefix_len()));
        self.map.entry(key).or_default().push(value);
    }

    /// Every value whose network overlaps `q` (one contains the other), in no particular order.
    pub fn overlapping(&self, q: &IpNet) -> impl Iterator<Item = &T> + '_ {
        let q = q.trunc();
        let v6 = is_v6(&q);
        let containing =
            self.lens
                .range((v6, 0)..(v6, q.prefix_len()))
                .filter_map(move |&(_, len)| {
                    let key = IpNet::new(q.addr(), len).ok()?.trunc();
                    self.map.get(&key)
                });
        let last = IpNet::new(q.broadcast(), q.max_prefix_len()).expect("host prefix");
        let inside = self
            .map
            .range(q..=last)
            .filter(move |(k, _)| overlaps(k, &q))
            .map(|(_, v)| v);
        containing.chain(inside).flatten()
    }
}

fn is_v6(n: &IpNet) -> bool {
    matches!(n, IpNet::V6(_))
}

/// Position of a peering in the list the index was built from.
type Pos = usize;

/// The router of a VPC, resolved once, with what the rules read of it.
#[derive(Debug, Clone)]
pub(super) struct ResolvedRouter {
    pub id: String,
    pub name: String,
    pub subnets: Vec<IpNet>,
    /// Networks of gateway ports and peer ports, (router port order, network, port name),
    /// those claimed by an indexed peering of this VPC apart, by port name.
    unclaimed: Vec<(usize, IpNet, String)>,
    claimed: HashMap<String, Vec<(usize, IpNet)>>,
    /// Installed main-table routes by (policy, prefix): (router route order, the route).
    ecmp: HashMap<(RoutePolicy, IpNet), Vec<(usize, RouteView)>>,
}

/// One VPC: its router and what its indexed peerings occupy there.
#[derive(Debug, Clone, Default)]
pub(super) struct VpcIndex {
    /// Resolved on first use ([`PeerIndex::vpc`]): a narrow pass at a hub judges a few
    /// peerings, and resolving each of the N spokes' routers (a copy of its ports and routes)
    /// was most of its cost.
    router: OnceLock<Result<ResolvedRouter, String>>,
    /// The port names the indexed peerings hold in this VPC.
    claimed: BTreeSet<String>,
    /// Links of the peerings in this VPC: (position, order within it, network).
    links: PrefixMap<(Pos, usize, IpNet)>,
    /// Routes the peerings install in this VPC: (position, order within it, route).
    routes: PrefixMap<(Pos, usize, RouteSpec)>,
}

/// The indexed peerings and their VPCs (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct PeerIndex {
    names: Vec<String>,
    /// (local, remote) VPC of every peering.
    pairs: Vec<(String, String)>,
    by_name: HashMap<String, Vec<Pos>>,
    /// By unordered VPC pair.
    by_pair: HashMap<(String, String), Vec<Pos>>,
    /// Both port names of every peering.
    by_port: HashMap<String, Vec<Pos>>,
    /// Every peering by VPC (each VPC of a peering once).
    by_vpc: HashMap<String, Vec<Pos>>,
    vpcs: HashMap<String, VpcIndex>,
}

/// The indexed peerings a rule may consult: all of them, or those before a position.
#[derive(Debug, Clone, Copy)]
pub struct Others<'a> {
    pub(super) index: &'a PeerIndex,
    upto: Pos,
}

impl PeerIndex {
    /// Indexes `peerings` (in this order) against `topo`. O(P log P) in the peerings, plus one
    /// read of each of their VPCs' routers.
    pub fn new(peerings: &[PeeringSpec], topo: &(impl Topology + ?Sized)) -> PeerIndex {
        let mut ix = PeerIndex::default();
        let mut subnets: HashMap<String, Vec<IpNet>> = HashMap::new();
        for (pos, o) in peerings.iter().enumerate() {
            ix.names.push(o.name.clone());
            ix.pairs.push((o.local_vpc.clone(), o.remote_vpc.clone()));
            ix.by_name.entry(o.name.clone()).or_default().push(pos);
            ix.by_pair
                .entry(pair(&o.local_vpc, &o.remote_vpc))
                .or_default()
                .push(pos);
            for name in super::port_names(&o.local_vpc, &o.remote_vpc) {
                ix.by_port.entry(name).or_default().push(pos);
            }
            let vpcs: BTreeSet<&str> = [o.local_vpc.as_str(), o.remote_vpc.as_str()].into();
            for vpc in vpcs {
                let Some(t) = o.side_of(vpc) else { continue };
                ix.by_vpc.entry(vpc.to_string()).or_default().push(pos);
                let entry = ix.vpcs.entry(vpc.to_string()).or_default();
                entry.claimed.insert(port_name(vpc, o.vpc(t.other())));
                for (k, n) in o.connect(t).networks().into_iter().enumerate() {
                    entry.links.insert(n, (pos, k, n));
                }
                let other = o.vpc(t.other());
                let other_subnets = subnets
                    .entry(other.to_string())
                    .or_insert_with(|| topo.subnets_named(other));
                let installed = effective_routes(o.routes(t), other_subnets, o.connect(t));
                for (k, r) in installed.into_iter().enumerate() {
                    entry.routes.insert(r.prefix, (pos, k, r));
                }
            }
        }
        ix
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

    /// The index of a VPC, its router resolved from `topo` (once), or an empty one read from
    /// `topo` when no indexed peering touches it.
    pub(super) fn vpc<'a>(
        &'a self,
        topo: &(impl Topology + ?Sized),
        vpc: &str,
    ) -> Cow<'a, VpcIndex> {
        let v = match self.vpcs.get(vpc) {
            Some(v) => Cow::Borrowed(v),
            None => Cow::Owned(VpcIndex::default()),
        };
        v.router
            .get_or_init(|| ResolvedRouter::new(topo, vpc, &v.claimed));
        v
    }
}

impl PeerIndex {
    /// The subnets the rules read for `vpc` (those of its one router; none when it has not
    /// exactly one, and then a peering of it fails the rules anyway).
    pub fn subnets(&self, topo: &(impl Topology + ?Sized), vpc: &str) -> Vec<IpNet> {
        match self.vpc(topo, vpc).router() {
            Ok(r) => r.subnets.clone(),
            Err(_) => Vec::new(),
        }
    }
}

impl<'a> Others<'a> {
    /// The name of the peering at `pos`.
    pub(super) fn name(&self, pos: Pos) -> &'a str {
        &self.index.names[pos]
    }

    /// (local, remote) VPC of the peering at `pos`.
    pub(super) fn pair(&self, pos: Pos) -> (&'a str, &'a str) {
        let (l, r) = &self.index.pairs[pos];
        (l, r)
    }

    /// Whether the peering at `pos` takes part, for the peering named `me`.
    pub(super) fn counts(&self, pos: Pos, me: &str) -> bool {
        pos < self.upto && self.index.names[pos] != me
    }

    /// Peerings (not `me`) that hold one of the port names `ports` or peer `a` with `b`, in
    /// list order.
    pub(super) fn name_candidates(&self, me: &str, ports: &[String], a: &str, b: &str) -> Vec<Pos> {
        let ix = self.index;
        let mut c: Vec<Pos> = ports
            .iter()
            .flat_map(|p| ix.by_port.get(p).into_iter().flatten().copied())
            .collect();
        if a == b {
            c.extend(ix.by_vpc.get(a).into_iter().flatten().copied());
        } else {
            c.extend(ix.by_pair.get(&pair(a, b)).into_iter().flatten().copied());
        }
        c.retain(|&p| self.counts(p, me));
        c.sort_unstable();
        c.dedup();
        c
    }

    /// Links of the counted peerings in `vpc` overlapping `q`, in list order: (network, peering).
    pub(super) fn links(&self, vpc: &VpcIndex, q: &IpNet, me: &str) -> Vec<(IpNet, &'a str)> {
        let mut hits: Vec<(Pos, usize, IpNet)> = vpc
            .links
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
        vpc: &VpcIndex,
        q: &IpNet,
        policy: RoutePolicy,
        me: &str,
    ) -> Vec<(RouteSpec, &'a str)> {
        let mut hits: Vec<&(Pos, usize, RouteSpec)> = vpc
            .routes
            .overlapping(q)
            .filter(|(p, _, r)| r.policy == policy && self.counts(*p, me))
            .collect();
        hits.sort_unstable_by_key(|(p, k, _)| (*p, *k));
        hits.into_iter()
            .map(|(p, _, r)| (*r, self.name(*p)))
            .collect()
    }
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

impl ResolvedRouter {
    /// The one router named `vpc` (or why not); `claimed`: the port names the indexed
    /// peerings hold in it.
    fn new(
        topo: &(impl Topology + ?Sized),
        vpc: &str,
        claimed_names: &BTreeSet<String>,
    ) -> Result<ResolvedRouter, String> {
        let router: RouterView = resolve_router(topo, vpc)?;
        let mut unclaimed = Vec::new();
        let mut claimed: HashMap<String, Vec<(usize, IpNet)>> = HashMap::new();
        for (i, p) in router.ports.iter().enumerate() {
            if !(is_peer(p) || p.is_gateway) {
                continue;
            }
            for n in parse_networks(p) {
                if claimed_names.contains(&p.name) {
                    claimed.entry(p.name.clone()).or_default().push((i, n));
                } else {
                    unclaimed.push((i, n, p.name.clone()));
                }
            }
        }
        let mut ecmp: HashMap<(RoutePolicy, IpNet), Vec<(usize, RouteView)>> = HashMap::new();
        for (i, r) in router.routes.iter().enumerate() {
            // ovn-peerd installs every route in the main table ("").
            if !r.route_table.is_empty() {
                continue;
            }
            if let Some(key) = r.key() {
                ecmp.entry(key).or_default().push((i, r.clone()));
            }
        }
        Ok(ResolvedRouter {
            subnets: vpc_subnets(&router),
            id: router.id,
            name: router.name,
            unclaimed,
            claimed,
            ecmp,
        })
    }

    /// Networks of gateway ports and of peer ports that are not ours, in router port order:
    /// (network, port name). Ours: `own` (the checked peering's port here) and the ports the
    /// indexed peerings claim, unless only `me` (the checked peering's name) claims them.
    pub(super) fn port_nets(&self, own: &str, reclaimed: &[String]) -> Vec<(IpNet, String)> {
        let mut nets: Vec<(usize, IpNet, String)> = self
            .unclaimed
            .iter()
            .filter(|(_, _, name)| name != own)
            .cloned()
            .collect();
        for name in reclaimed.iter().filter(|n| *n != own) {
            for (i, n) in self.claimed.get(name).into_iter().flatten() {
                nets.push((*i, *n, name.clone()));
            }
        }
        nets.sort_by_key(|(i, _, _)| *i);
        nets.into_iter().map(|(_, n, name)| (n, name)).collect()
    }

    /// Installed main-table routes with this (policy, prefix), not of peering `me`, in router
    /// order.
    pub(super) fn ecmp(&self, key: (RoutePolicy, IpNet), me: &str) -> Vec<&(usize, RouteView)> {
        self.ecmp
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|(_, r)| r.peering.as_deref() != Some(me))
            .collect()
    }
}

impl VpcIndex {
    /// The VPC's one router, or why there is not exactly one.
    pub(super) fn router(&self) -> Result<&ResolvedRouter, &str> {
        match self.router.get() {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => Err(e),
            None => Err("not resolved"),
        }
    }
}

impl PeerIndex {
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
            out.extend(self.by_port.get(&name).into_iter().flatten());
        }
        out.extend(
            self.by_pair
                .get(&pair(&spec.local_vpc, &spec.remote_vpc))
                .into_iter()
                .flatten(),
        );
        let mut nets: Vec<IpNet> = also.to_vec();
        for side in crate::peering::Side::BOTH {
            let link = spec.connect(side);
            nets.extend(link.networks());
            let other_subnets = topo.subnets_named(spec.vpc(side.other()));
            let installed = effective_routes(spec.routes(side), &other_subnets, link);
            nets.extend(installed.iter().map(|r| r.prefix));
        }
        for vpc in [&spec.local_vpc, &spec.remote_vpc] {
            let Some(v) = self.vpcs.get(vpc.as_str()) else {
                continue;
            };
            for q in &nets {
                out.extend(v.links.overlapping(q).map(|(p, _, _)| *p));
                out.extend(v.routes.overlapping(q).map(|(p, _, _)| *p));
            }
        }
        out.retain(|&p| self.names[p] != spec.name);
        out
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
        for &pos in self.by_name.get(me).into_iter().flatten() {
            let (l, r) = &self.pairs[pos];
            let other = if l == vpc {
                r
            } else if r == vpc {
                l
            } else {
                continue;
            };
            let port = port_name(vpc, other);
            let held_by_another = self
                .by_port
                .get(&port)
                .into_iter()
                .flatten()
                .any(|&q| self.names[q] != me && self.claims(q, vpc, &port));
            if !held_by_another {
                out.push(port);
            }
        }
        out
    }

    /// Whether the peering at `pos` has its port `port` in `vpc`.
    fn claims(&self, pos: Pos, vpc: &str, port: &str) -> bool {
        let (l, r) = &self.pairs[pos];
        (l == vpc && port_name(l, r) == port) || (r == vpc && port_name(r, l) == port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peering::topology::{check_topology_in, PortView, RouterView};

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// A spread of prefixes nesting in each other at many lengths, both families.
    fn nets() -> Vec<IpNet> {
        let mut v = Vec::new();
        for len in [0u8, 8, 16, 20, 23, 24, 25, 30, 32] {
            for a in [
                "10.0.0.0",
                "10.0.1.7",
                "10.1.0.0",
                "192.168.3.4",
                "10.0.0.255",
            ] {
                v.push(IpNet::new(a.parse().unwrap(), len).unwrap());
            }
        }
        for len in [0u8, 10, 48, 64, 126, 128] {
            for a in ["fd00::", "fd00::1:0", "fe80::5"] {
                v.push(IpNet::new(a.parse().unwrap(), len).unwrap());
            }
        }
        v
    }

    #[test]
    fn prefix_map_finds_exactly_the_overlapping_entries() {
        let all = nets();
        let mut m = PrefixMap::default();
        for (i, net) in all.iter().enumerate() {
            m.insert(*net, i);
        }
        for q in &all {
            let mut found: Vec<usize> = m.overlapping(q).copied().collect();
            found.sort_unstable();
            let want: Vec<usize> = (0..all.len()).filter(|&i| overlaps(&all[i], q)).collect();
            assert_eq!(found, want, "query {q}");
        }
        // Only the /0 entries of the family cover an unrelated prefix.
        assert_eq!(m.overlapping(&n("172.16.0.0/12")).count(), 5);
    }

    fn router(name: &str, subnet: &str) -> RouterView {
        RouterView {
            id: format!("id-{name}"),
            name: name.into(),
            ports: vec![PortView {
                name: format!("{name}-lan"),
                networks: vec![subnet.into()],
                ..Default::default()
            }],
            routes: vec![],
        }
    }

    fn spec(name: &str, a: &str, b: &str, link: (&str, &str)) -> PeeringSpec {
        PeeringSpec {
            name: name.into(),
            local_vpc: a.into(),
            remote_vpc: b.into(),
            local_connect: link.0.parse().unwrap(),
            remote_connect: link.1.parse().unwrap(),
            local_routes: vec![],
            remote_routes: vec![],
        }
    }

    /// `before(n)`: only the first n indexed peerings conflict (age order: the older wins),
    /// while a later one's port is still ours, not a foreign port in the way.
    #[test]
    fn before_restricts_the_conflict_rules_to_earlier_peerings() {
        let topo = vec![
            router("hub", "10.0.0.1/24"),
            router("s1", "10.1.0.1/24"),
            router("s2", "10.2.0.1/24"),
        ];
        let old = spec("old", "hub", "s1", ("169.254.0.1/30", "169.254.0.2/30"));
        // Its link overlaps old's in the hub.
        let new = spec("new", "hub", "s2", ("169.254.0.5/29", "169.254.0.6/29"));
        let index = PeerIndex::new(&[old.clone(), new.clone()], &topo);
        let refused = check_topology_in(&new, &topo, index.before(1), &[]).unwrap_err();
        assert!(refused.to_string().contains("peering \"old\""), "{refused}");
        assert!(check_topology_in(&old, &topo, index.before(0), &[]).is_ok());
        // All of them: each names the other.
        let both = check_topology_in(&old, &topo, index.all(), &[]).unwrap_err();
        assert!(both.to_string().contains("peering \"new\""), "{both}");
    }

    /// A hub with many spokes: every spoke judged against one index passes, and the spoke whose
    /// link overlaps another's is refused naming exactly that one.
    #[test]
    fn one_index_judges_every_spoke_of_a_hub() {
        let spokes = 300;
        let mut topo = vec![router("hub", "10.0.0.1/24")];
        let mut specs = Vec::new();
        for k in 0..spokes {
            let s = format!("s{k}");
            topo.push(router(&s, &format!("10.{}.{}.1/24", 1 + k / 256, k % 256)));
            let base = 4 * k as u32;
            let host = |d: u32| {
                let a = u32::from(std::net::Ipv4Addr::new(169, 254, 0, 0)) + base + d;
                format!("{}/30", std::net::Ipv4Addr::from(a))
            };
            specs.push(spec(&format!("p{k}"), "hub", &s, (&host(1), &host(2))));
        }
        // The last one reuses spoke 7's link.
        specs.push(spec(
            "dup",
            "hub",
            "s-dup",
            ("169.254.0.29/30", "169.254.0.30/30"),
        ));
        topo.push(router("s-dup", "10.9.0.1/24"));
        let index = PeerIndex::new(&specs, &topo);
        for s in &specs[..spokes] {
            let r = check_topology_in(s, &topo, index.all(), &[]);
            if s.name == "p7" {
                assert!(r.unwrap_err().to_string().contains("peering \"dup\""));
            } else {
                let facts = r.unwrap_or_else(|e| panic!("{}: {e}", s.name));
                assert_eq!(facts.remote_routes, vec![RouteSpec::dst(n("10.0.0.0/24"))]);
            }
        }
        let dup = check_topology_in(&specs[spokes], &topo, index.all(), &[]).unwrap_err();
        let msg = dup.to_string();
        assert!(msg.contains("peering \"p7\""), "{msg}");
        // Only in the hub: the spokes are different VPCs.
        assert_eq!(msg.matches("of peering").count(), 1, "{msg}");
    }
}
