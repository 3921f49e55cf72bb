//! Topology preconditions (FAILED_PRECONDITION): what a peering needs from NB and from the
//! other peerings, judged on a snapshot.
//!
//! [`check_topology`] serves both the API (refuse a new peering) and the worker (a peering
//! whose world changed, e.g. a subnet added later that now overlaps, goes FAILED with the
//! refusal as its message). It reads NB only through the [`Topology`] trait so that it stays a
//! plain function over plain data.
//!
//! Overlap rules compare like with like: a `src-ip` route selects traffic by source, so it is
//! only compared with other `src-ip` routes, never with subnets or links. (On upstream OVN a
//! `src-ip` route still takes part in longest-prefix match and can capture return traffic,
//! kube-ovn #1981; only explicit routes can be `src-ip`, so that is the requester's choice.)

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

mod index;
mod prefix;
mod probe;
mod router;
mod rows;
mod views;

use index::VpcRef;
pub use index::{Others, PeerIndex};
pub use prefix::PrefixMap;
pub use probe::{ConflictQuery, Nearby};
use router::{check_ecmp, ResolvedRouter};
pub use rows::{PortRef, RouteRef, RouterRows, RowId};
use views::route_key;
pub use views::{PortView, RouteView, RouterView};

use super::validate::ValidatedPeering;
use super::{
    overlaps, port_name, ConnectAddrs, PeeringSpec, Refusal, RefusalKind, RoutePolicy, RouteSpec,
    Side, Violation,
};

/// Read access to NB routers.
pub trait Topology {
    /// Every router with this name (zero, one, or more: NB names are not unique).
    fn routers_named(&self, name: &str) -> Vec<RouterView>;
    /// The router port with this name, on whatever router (port names are unique in NB).
    /// Asked for every peering checked: must be cheap.
    fn port_named(&self, name: &str) -> Option<PortView>;
    /// The name of the router holding the port `port`. Only asked to name a conflict, so it
    /// may be slow (a scan).
    fn router_of_port(&self, port: &str) -> Option<String>;
    /// Every router named `name`, read in place by `f` (its ports and routes borrowed): what
    /// the rules resolve a VPC's router with, once per VPC and pass (a hub's router holds a
    /// port and a route per spoke). This default copies them through [`Self::routers_named`];
    /// an implementation over a replica should lend its rows instead.
    fn visit_routers_named(&self, name: &str, f: &mut dyn FnMut(&dyn RouterRows)) {
        for r in self.routers_named(name) {
            f(&r);
        }
    }
    /// The router port named `name`, read in place by `f` (not called when there is none).
    /// Asked for both port names of every peering judged. Default: [`Self::port_named`].
    fn visit_port_named(&self, name: &str, f: &mut dyn FnMut(PortRef<'_>)) {
        if let Some(p) = self.port_named(name) {
            f((&p).into());
        }
    }
    /// The static route `id` of the router named `router`, read in place by `f` (not called
    /// when there is none). Asked only to name a conflict, one row each: an implementation
    /// over a replica should look the row up. Default: a walk of that router's routes.
    fn visit_route(&self, router: &str, id: RowId<'_>, f: &mut dyn FnMut(RouteRef<'_>)) {
        self.visit_routers_named(router, &mut |r| {
            r.each_route(&mut |route| {
                if route.id == id {
                    f(route)
                }
            })
        });
    }
    /// The peer and gateway ports of the routers named `router` with a network overlapping
    /// `q`, each once, with its order among its router's ports. Default: a walk.
    fn visit_ports_overlapping(
        &self,
        router: &str,
        q: &IpNet,
        f: &mut dyn FnMut(usize, PortRef<'_>),
    ) {
        self.visit_routers_named(router, &mut |r| {
            let mut order = 0;
            r.each_port(&mut |p| {
                if (p.is_peer() || p.is_gateway) && p.nets().any(|n| overlaps(&n, q)) {
                    f(order, p);
                }
                order += 1;
            })
        });
    }
    /// The static routes (every route table) of the routers named `router` whose prefix is
    /// `prefix` (as [`RouteRef::key`] reads it), with each one's order among its router's
    /// routes. Default: a walk.
    fn visit_routes_with_prefix(
        &self,
        router: &str,
        prefix: &IpNet,
        f: &mut dyn FnMut(usize, RouteRef<'_>),
    ) {
        self.visit_routers_named(router, &mut |r| {
            let mut order = 0;
            r.each_route(&mut |route| {
                if route.key().is_some_and(|(_, p)| p == *prefix) {
                    f(order, route);
                }
                order += 1;
            })
        });
    }
    /// The subnets of every router named `name` ([`vpc_subnets`] of each, merged, sorted,
    /// without duplicates); none when there is no such router. Asked for the other VPC of
    /// every peering indexed (a hub's N spokes).
    fn subnets_named(&self, name: &str) -> Vec<IpNet> {
        let mut all = Vec::new();
        self.visit_routers_named(name, &mut |r| {
            r.each_port(&mut |p| {
                all.extend(subnets_of_port(p.networks, p.peer, p.is_gateway));
            })
        });
        all.sort_unstable();
        all.dedup();
        all
    }
    /// How many routers have this name.
    fn router_count(&self, name: &str) -> usize {
        let mut n = 0;
        self.visit_routers_named(name, &mut |_| n += 1);
        n
    }
    /// The networks of every port of every router named `name`, host bits cleared, in router
    /// and port order (unparseable ones skipped).
    fn port_networks_named(&self, name: &str) -> Vec<IpNet> {
        let mut out = Vec::new();
        self.visit_routers_named(name, &mut |r| r.each_port(&mut |p| out.extend(p.nets())));
        out
    }
}

/// The one router named `vpc`, or why there is not exactly one.
pub fn resolve_router(topo: &(impl Topology + ?Sized), vpc: &str) -> Result<RouterView, String> {
    let mut routers = topo.routers_named(vpc);
    match routers.len() {
        1 => Ok(routers.remove(0)),
        0 => Err(format!("no OVN logical router is named {vpc:?}")),
        n => Err(format!(
            "{n} OVN logical routers are named {vpc:?}; a VPC must be exactly one"
        )),
    }
}

/// The UUID and subnets ([`vpc_subnets`]) of the one router named `vpc`, or why there is not
/// exactly one (as [`resolve_router`] says it), read in place: no copy of a hub's ports.
pub fn resolve_subnets(
    topo: &(impl Topology + ?Sized),
    vpc: &str,
) -> Result<(String, Vec<IpNet>), String> {
    let (mut found, mut out) = (0, None);
    topo.visit_routers_named(vpc, &mut |r| {
        found += 1;
        if found == 1 {
            let mut subnets = Vec::new();
            r.each_port(&mut |p| subnets.extend(subnets_of_port(p.networks, p.peer, p.is_gateway)));
            subnets.sort_unstable();
            subnets.dedup();
            out = Some((r.id(), subnets));
        }
    });
    match (found, out) {
        (1, Some(out)) => Ok(out),
        (0, _) => Err(format!("no OVN logical router is named {vpc:?}")),
        (n, _) => Err(format!(
            "{n} OVN logical routers are named {vpc:?}; a VPC must be exactly one"
        )),
    }
}

/// A VPC's subnets: the networks of its router ports, host bits cleared, leaving out peer
/// ports and gateway ports; sorted, without duplicates. Unparseable networks are skipped.
pub fn vpc_subnets(router: &RouterView) -> Vec<IpNet> {
    let nets: BTreeSet<IpNet> = router
        .ports
        .iter()
        .flat_map(|p| subnets_of_port(&p.networks, p.peer.as_deref(), p.is_gateway))
        .collect();
    nets.into_iter().collect()
}

/// What one router port adds to its VPC's subnets (see [`vpc_subnets`]): its networks, host
/// bits cleared, unless it is a peer port or a gateway port.
pub fn subnets_of_port<'a>(
    networks: &'a [String],
    peer: Option<&str>,
    is_gateway: bool,
) -> impl Iterator<Item = IpNet> + 'a {
    let counts = !(peer.is_some_and(|peer| !peer.is_empty()) || is_gateway);
    networks
        .iter()
        .filter(move |_| counts)
        .filter_map(|n| n.parse::<IpNet>().ok())
        .map(|n| n.trunc())
}

/// The routes a side installs: the explicit ones, or else one dst-ip route per subnet of the
/// other VPC in the families the link has (a route needs a nexthop of its family).
pub fn effective_routes(
    explicit: &[RouteSpec],
    other_subnets: &[IpNet],
    link: &ConnectAddrs,
) -> Vec<RouteSpec> {
    if !explicit.is_empty() {
        return explicit.to_vec();
    }
    let families = link.families();
    other_subnets
        .iter()
        .filter(|s| families.contains(&super::Family::of(s)))
        .map(|s| RouteSpec::dst(*s))
        .collect()
}

/// What [`check_topology`] found, for deriving rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyFacts {
    /// UUID of `local_vpc`'s router.
    pub local_router_id: String,
    /// UUID of `remote_vpc`'s router.
    pub remote_router_id: String,
    /// `local_vpc`'s subnets.
    pub local_subnets: Vec<IpNet>,
    /// `remote_vpc`'s subnets.
    pub remote_subnets: Vec<IpNet>,
    /// Routes to install in `local_vpc` (explicit or automatic).
    pub local_routes: Vec<RouteSpec>,
    /// Routes to install in `remote_vpc`.
    pub remote_routes: Vec<RouteSpec>,
}

impl TopologyFacts {
    /// The router UUID of a side.
    pub fn router_id(&self, side: Side) -> &str {
        match side {
            Side::Local => &self.local_router_id,
            Side::Remote => &self.remote_router_id,
        }
    }

    /// The routes to install in a side's VPC.
    pub fn routes(&self, side: Side) -> &[RouteSpec] {
        match side {
            Side::Local => &self.local_routes,
            Side::Remote => &self.remote_routes,
        }
    }
}

/// Checks a complete spec against NB and the other peerings (those whose rows are or may be
/// in NB; the spec's own name is skipped, so passing every peering is fine, and only the ones
/// touching either VPC matter). Every violation is reported (kind FAILED_PRECONDITION).
///
/// Indexes `others` for this one call; to judge many peerings against the same list, build a
/// [`PeerIndex`] once and call [`check_topology_in`].
pub fn check_topology(
    spec: &PeeringSpec,
    topo: &(impl Topology + ?Sized),
    others: &[PeeringSpec],
    protected: &[String],
) -> Result<TopologyFacts, Refusal> {
    let index = PeerIndex::new(others, topo);
    check_topology_in(spec, topo, index.all(), protected)
}

/// [`check_topology`] against indexed peerings (built from the same `topo`): O(log N) per
/// address of the spec in the number N of peerings of its VPCs.
pub fn check_topology_in(
    spec: &PeeringSpec,
    topo: &(impl Topology + ?Sized),
    others: Others<'_>,
    protected: &[String],
) -> Result<TopologyFacts, Refusal> {
    let mut v = Vec::new();
    for side in Side::BOTH {
        if protected.iter().any(|p| p == spec.vpc(side)) {
            v.push(Violation::new(
                vpc_field(side),
                format!("{:?} is protected and cannot be peered", spec.vpc(side)),
            ));
        }
    }
    // This peering's port names, local side's first (as `Side::BOTH`), made once.
    let mine = port_names(&spec.local_vpc, &spec.remote_vpc);
    check_names(spec, &mine, others, &mut v);
    check_nb_ports(spec, &mine, topo, &mut v);
    let vpcs = Side::BOTH.map(|side| others.index.vpc(topo, spec.vpc(side)));
    let mut routers = Vec::with_capacity(2);
    for (side, vx) in Side::BOTH.into_iter().zip(&vpcs) {
        match vx.router() {
            Ok(r) => routers.push(Some(r)),
            Err(e) => {
                v.push(Violation::new(vpc_field(side), e.to_string()));
                routers.push(None);
            }
        }
    }
    let (Some(local_router), Some(remote_router)) = (routers[0], routers[1]) else {
        return Err(Refusal {
            kind: RefusalKind::FailedPrecondition,
            violations: v,
        });
    };
    let local_subnets = local_router.subnets.clone();
    let remote_subnets = remote_router.subnets.clone();
    for r in &remote_subnets {
        for l in local_subnets.iter().filter(|l| overlaps(l, r)) {
            v.push(Violation::new(
                vpc_field(Side::Remote),
                format!(
                    "subnet {r} of {:?} overlaps subnet {l} of {:?}",
                    spec.remote_vpc, spec.local_vpc
                ),
            ));
        }
    }
    let facts = TopologyFacts {
        local_router_id: local_router.id.clone(),
        remote_router_id: remote_router.id.clone(),
        local_routes: effective_routes(&spec.local_routes, &remote_subnets, &spec.remote_connect),
        remote_routes: effective_routes(&spec.remote_routes, &local_subnets, &spec.local_connect),
        local_subnets,
        remote_subnets,
    };
    for (i, side) in Side::BOTH.into_iter().enumerate() {
        let router = routers[i].expect("both resolved");
        let vpc = spec.vpc(side);
        let own = &mine[i];
        let ctx = VpcContext {
            topo,
            vpc,
            me: &spec.name,
            subnets: &router.subnets,
            router,
            own,
            reclaimed: std::cell::OnceCell::new(),
            index: &vpcs[i],
            others,
        };
        ctx.check_link(spec, side, &mut v);
        ctx.check_routes(spec, side, facts.routes(side), &mut v);
        check_ecmp(spec, side, topo, router, facts.routes(side), &mut v);
    }
    Refusal::check(RefusalKind::FailedPrecondition, v, facts)
}

/// Networks a link allocated for `peering` must avoid: every port network of both VPCs'
/// routers, the links of the `peerings` that share a VPC with it (links are unique per VPC,
/// not across the deployment: those of other VPCs are free to reuse), the peering's own
/// explicit routes and the dst-ip routes other peerings install in either VPC.
pub fn allocation_exclusions(
    peering: &ValidatedPeering,
    topo: &(impl Topology + ?Sized),
    peerings: &[PeeringSpec],
) -> Vec<IpNet> {
    let vpcs = [peering.local_vpc.as_str(), peering.remote_vpc.as_str()];
    let mut used: Vec<IpNet> = vpcs
        .iter()
        .flat_map(|vpc| topo.port_networks_named(vpc))
        .collect();
    let mut cache = BTreeMap::new();
    let shares_a_vpc = |o: &&PeeringSpec| Side::BOTH.iter().any(|s| vpcs.contains(&o.vpc(*s)));
    for o in peerings
        .iter()
        .filter(|o| o.name != peering.name)
        .filter(shares_a_vpc)
    {
        used.extend(o.local_connect.networks());
        for side in Side::BOTH.into_iter().filter(|s| vpcs.contains(&o.vpc(*s))) {
            let other_subnets = subnets_by_name(topo, o.vpc(side.other()), &mut cache);
            let routes = effective_routes(o.routes(side), &other_subnets, o.connect(side));
            used.extend(
                routes
                    .iter()
                    .filter(|r| r.policy == RoutePolicy::DstIp)
                    .map(|r| r.prefix),
            );
        }
    }
    used.extend(
        peering
            .local_routes
            .iter()
            .chain(&peering.remote_routes)
            .map(|r| r.prefix),
    );
    used
}

/// One VPC of the checked peering and what already occupies its address space.
struct VpcContext<'a, T: ?Sized> {
    /// What the router was resolved from (asked again when it keeps no rows).
    topo: &'a T,
    vpc: &'a str,
    /// The checked peering's name (never in conflict with itself).
    me: &'a str,
    subnets: &'a [IpNet],
    /// Its router: the networks of gateway ports and foreign peer ports.
    router: &'a ResolvedRouter,
    /// The checked peering's port here, and the peer ports only it claims: not foreign.
    own: &'a str,
    /// Found when first asked: only when a port another peering claims is met (at a hub, in
    /// nearly every check; elsewhere rarely).
    reclaimed: std::cell::OnceCell<Vec<String>>,
    /// Links and routes of the other peerings in this VPC.
    index: &'a VpcRef<'a>,
    others: Others<'a>,
}

impl<T: Topology + ?Sized> VpcContext<'_, T> {
    /// Networks of gateway ports and foreign peer ports overlapping `q`, in router port order:
    /// (network, port name).
    fn port_nets(&self, q: &IpNet) -> Vec<(IpNet, String)> {
        let claimed = |port: &str| self.index.claims(self.others.index, self.vpc, port);
        let reclaimed = |port: &str| {
            let only_mine = self
                .reclaimed
                .get_or_init(|| self.others.index.claimed_only_by(self.vpc, self.me));
            only_mine.iter().any(|r| r == port)
        };
        self.router
            .port_nets(self.topo, q, self.own, &reclaimed, &claimed)
    }

    /// The link must not overlap anything already routed in this VPC.
    fn check_link(&self, spec: &PeeringSpec, side: Side, v: &mut Vec<Violation>) {
        // Field names are written only for a violation: nearly every peering has none.
        let field = || format!("peering.{}_connect_ip", side.as_str());
        let vpc = &self.vpc;
        for link in spec.connect(side).networks() {
            let mut clash = |what: String| {
                v.push(Violation::new(
                    field(),
                    format!("link {link} overlaps {what}"),
                ))
            };
            for s in self.subnets.iter().filter(|s| overlaps(s, &link)) {
                clash(format!("subnet {s} of {vpc:?}"));
            }
            for (n, port) in self.port_nets(&link) {
                clash(format!("network {n} of port {port:?} of {vpc:?}"));
            }
            for (n, peering) in self.others.links(self.index, &link, self.me) {
                clash(format!("link {n} of peering {peering:?} in {vpc:?}"));
            }
            for (r, peering) in self
                .others
                .routes(self.index, &link, RoutePolicy::DstIp, self.me)
            {
                clash(format!(
                    "route {} that {vpc:?} sends to peering {peering:?}",
                    r.prefix
                ));
            }
        }
    }

    /// The routes this VPC would install towards the new peer must be unambiguous.
    fn check_routes(
        &self,
        spec: &PeeringSpec,
        side: Side,
        routes: &[RouteSpec],
        v: &mut Vec<Violation>,
    ) {
        let explicit = !spec.routes(side).is_empty();
        let vpc = &self.vpc;
        for (i, r) in routes.iter().enumerate() {
            let p = r.prefix;
            // Written only for a violation: nearly every route has none.
            let field_and_label = || {
                let list = format!("peering.{}_routes", side.as_str());
                if explicit {
                    (format!("{list}[{i}].cidr"), format!("route {p}"))
                } else {
                    let other = spec.vpc(side.other());
                    (list, format!("automatic route {p} (a subnet of {other:?})"))
                }
            };
            let mut clash = |what: String| {
                let (field, label) = field_and_label();
                v.push(Violation::new(field, format!("{label} overlaps {what}")))
            };
            if r.policy == RoutePolicy::DstIp {
                // Automatic routes against own subnets are the subnet overlap reported on
                // peering.remote_vpc already.
                if explicit {
                    for s in self.subnets.iter().filter(|s| overlaps(s, &p)) {
                        clash(format!("subnet {s} of {vpc:?} itself"));
                    }
                }
                for (n, port) in self.port_nets(&p) {
                    clash(format!("network {n} of port {port:?} of {vpc:?}"));
                }
                for (n, peering) in self.others.links(self.index, &p, self.me) {
                    clash(format!("link {n} of peering {peering:?} in {vpc:?}"));
                }
            }
            for (o, peering) in self.others.routes(self.index, &p, r.policy, self.me) {
                clash(format!(
                    "route {} that {vpc:?} sends to peering {peering:?}; routes would be ambiguous",
                    o.prefix
                ));
            }
        }
    }
}

/// One peering per VPC pair, and port names unique among our peerings.
fn check_names(spec: &PeeringSpec, mine: &[String; 2], others: Others<'_>, v: &mut Vec<Violation>) {
    let candidates = others.name_candidates(&spec.name, mine, &spec.local_vpc, &spec.remote_vpc);
    for pos in candidates {
        let name = others.name(pos);
        let (o_local, o_remote) = others.pair(pos);
        let touches = |vpc: &str| o_local == vpc || o_remote == vpc;
        if touches(&spec.local_vpc) && touches(&spec.remote_vpc) {
            v.push(Violation::new(
                vpc_field(Side::Remote),
                format!(
                    "{:?} and {:?} are already peered by peering {name:?}",
                    spec.local_vpc, spec.remote_vpc
                ),
            ));
            continue;
        }
        let theirs = port_names(o_local, o_remote);
        for (side, mine) in Side::BOTH.into_iter().zip(mine) {
            if theirs.contains(mine) {
                v.push(Violation::new(
                    vpc_field(side),
                    format!("port name {mine:?} is already used by peering {name:?}"),
                ));
            }
        }
    }
}

/// Our port names must not be held in NB by anyone but this peering: a foreign port (Kube-OVN
/// names subnet ports `<vpc>-<subnet>`) or another peering's (possibly stale) port.
fn check_nb_ports(
    spec: &PeeringSpec,
    mine: &[String; 2],
    topo: &(impl Topology + ?Sized),
    v: &mut Vec<Violation>,
) {
    for (side, mine) in Side::BOTH.into_iter().zip(mine) {
        let mut owner = None;
        topo.visit_port_named(mine, &mut |port| {
            if port.peering != Some(spec.name.as_str()) {
                owner = Some(holder(port.peering, port.instance));
            }
        });
        let Some(owner) = owner else {
            continue;
        };
        let router = topo
            .router_of_port(mine)
            .map_or_else(|| "no router".to_string(), |r| format!("router {r:?}"));
        v.push(Violation::new(
            vpc_field(side),
            format!("port name {mine:?} is taken by port {mine:?} of {router}, {owner}"),
        ));
    }
}

/// Who holds a row, for a refusal: its peering and, when the row says, the ovn-peerd
/// deployment that wrote it (several deployments may share one NB).
fn holder(peering: Option<&str>, instance: Option<&str>) -> String {
    match (peering, instance) {
        (Some(p), Some(i)) => format!("of peering {p:?} of ovn-peerd deployment {i}"),
        (Some(p), None) => format!("of peering {p:?}"),
        (None, Some(i)) => format!("of ovn-peerd deployment {i}"),
        (None, None) => "not owned by ovn-peerd".to_string(),
    }
}

/// Port names a peering of these VPCs holds in the deployment: `<local>-<remote>` and
/// `<remote>-<local>`.
pub fn port_names(local_vpc: &str, remote_vpc: &str) -> [String; 2] {
    [
        port_name(local_vpc, remote_vpc),
        port_name(remote_vpc, local_vpc),
    ]
}

/// Subnets of every router named `vpc` (none when missing), memoised per call.
fn subnets_by_name(
    topo: &(impl Topology + ?Sized),
    vpc: &str,
    cache: &mut BTreeMap<String, Vec<IpNet>>,
) -> Vec<IpNet> {
    cache
        .entry(vpc.to_string())
        .or_insert_with(|| topo.subnets_named(vpc))
        .clone()
}

fn is_peer(p: &PortView) -> bool {
    p.peer.as_deref().is_some_and(|peer| !peer.is_empty())
}

fn parse_networks(p: &PortView) -> Vec<IpNet> {
    p.networks
        .iter()
        .filter_map(|n| n.parse::<IpNet>().ok())
        .map(|n| n.trunc())
        .collect()
}

fn vpc_field(side: Side) -> String {
    format!("peering.{}_vpc", side.as_str())
}

#[cfg(test)]
mod tests;
