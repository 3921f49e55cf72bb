//! The index against what it replaces: hand-made hubs, and random lists of peerings whose
//! every lookup is compared with a scan of the list.

use super::*;
use crate::peering::topology::{check_topology_in, PortView, RouterView};

fn n(s: &str) -> IpNet {
    s.parse().unwrap()
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

mod against_a_scan {
    //! Every lookup of the index equals a scan of the list it was built from: random lists
    //! over a few VPCs whose names make port names collide (`a` + `b-c` and `a-b` + `c` both
    //! name a port `a-b-c`), links and routes drawn from nesting prefixes, repeated names and
    //! self-peerings, routers missing or ambiguous.

    use proptest::prelude::*;

    use super::*;
    use crate::peering::topology::{port_names, Topology};
    use crate::peering::{overlaps, Side};

    const VPCS: [&str; 5] = ["a", "a-b", "b", "b-c", "c"];
    const NETS: [&str; 8] = [
        "10.0.0.0/8",
        "10.0.0.0/24",
        "10.0.0.0/30",
        "10.0.0.4/30",
        "10.1.0.0/16",
        "169.254.0.0/30",
        "169.254.0.0/29",
        "fd00::/64",
    ];

    fn net(i: usize) -> IpNet {
        NETS[i % NETS.len()].parse().unwrap()
    }

    /// A router per VPC with a subnet (none for `c`, two routers for `b-c`).
    fn topo(subnets: &[usize]) -> Vec<RouterView> {
        let mut t = Vec::new();
        for (i, vpc) in VPCS.iter().enumerate().filter(|(_, v)| **v != "c") {
            let mut r = router(vpc, &net(subnets[i]).to_string());
            r.id = format!("id-{i}");
            t.push(r);
        }
        t.push(router("b-c", "192.168.0.0/24"));
        t
    }

    /// Peering names whose bytes agree in their low 3 bits: under `cfg(test)` the index keeps
    /// 3 bits of a hash (FNV-1a: its low bits depend only on the bytes' low bits), so these
    /// four share one and every by-name lookup must check the name.
    const NAMES: [&str; 4] = ["p0", "p8", "pH", "pP"];

    fn arb_spec() -> impl Strategy<Value = PeeringSpec> {
        (
            0..4usize,
            0..VPCS.len(),
            0..VPCS.len(),
            (0..NETS.len(), 0..NETS.len()),
            prop::collection::vec((0..NETS.len(), any::<bool>()), 0..3),
        )
            .prop_map(|(name, l, r, (ln, rn), routes)| {
                let connect = |i: usize| {
                    let n = net(i);
                    format!("{}/{}", n.addr(), n.prefix_len()).parse().unwrap()
                };
                let routes: Vec<RouteSpec> = routes
                    .into_iter()
                    .map(|(i, src)| RouteSpec {
                        prefix: net(i),
                        policy: if src {
                            RoutePolicy::SrcIp
                        } else {
                            RoutePolicy::DstIp
                        },
                    })
                    .collect();
                PeeringSpec {
                    name: NAMES[name].into(),
                    local_vpc: VPCS[l].into(),
                    remote_vpc: VPCS[r].into(),
                    local_connect: connect(ln),
                    remote_connect: connect(rn),
                    local_routes: routes.clone(),
                    remote_routes: routes.into_iter().rev().collect(),
                }
            })
    }

    /// The sides of `o` in `vpc`, each VPC once (a self-peering has only its local side).
    fn sides_in(o: &PeeringSpec, vpc: &str) -> Vec<Side> {
        o.side_of(vpc).into_iter().collect()
    }

    fn scan_links(
        list: &[PeeringSpec],
        upto: usize,
        vpc: &str,
        q: &IpNet,
        me: &str,
    ) -> Vec<(IpNet, String)> {
        let mut out = Vec::new();
        for (p, o) in list.iter().enumerate().take(upto) {
            if o.name == me {
                continue;
            }
            for t in sides_in(o, vpc) {
                for n in o.connect(t).networks() {
                    if overlaps(&n, q) {
                        out.push((n, o.name.clone()));
                    }
                }
            }
            let _ = p;
        }
        out
    }

    fn installed(o: &PeeringSpec, t: Side, topo: &[RouterView]) -> Vec<RouteSpec> {
        let other = topo.subnets_named(o.vpc(t.other()));
        effective_routes(o.routes(t), &other, o.connect(t))
    }

    fn scan_routes(
        list: &[PeeringSpec],
        upto: usize,
        topo: &[RouterView],
        vpc: &str,
        q: &IpNet,
        policy: RoutePolicy,
        me: &str,
    ) -> Vec<(RouteSpec, String)> {
        let mut out = Vec::new();
        for o in list.iter().take(upto).filter(|o| o.name != me) {
            for t in sides_in(o, vpc) {
                for r in installed(o, t, topo) {
                    if r.policy == policy && overlaps(&r.prefix, q) {
                        out.push((r, o.name.clone()));
                    }
                }
            }
        }
        out
    }

    fn scan_candidates(list: &[PeeringSpec], upto: usize, me: &PeeringSpec) -> Vec<usize> {
        let mine = port_names(&me.local_vpc, &me.remote_vpc);
        (0..upto)
            .filter(|&p| list[p].name != me.name)
            .filter(|&p| {
                let o = &list[p];
                let theirs = port_names(&o.local_vpc, &o.remote_vpc);
                let same_pair = if me.local_vpc == me.remote_vpc {
                    o.local_vpc == me.local_vpc || o.remote_vpc == me.local_vpc
                } else {
                    pair(&o.local_vpc, &o.remote_vpc) == pair(&me.local_vpc, &me.remote_vpc)
                };
                mine.iter().any(|m| theirs.contains(m)) || same_pair
            })
            .collect()
    }

    fn scan_affected(
        list: &[PeeringSpec],
        topo: &[RouterView],
        spec: &PeeringSpec,
        also: &[IpNet],
    ) -> BTreeSet<usize> {
        let mine = port_names(&spec.local_vpc, &spec.remote_vpc);
        let mut nets: Vec<IpNet> = also.to_vec();
        for side in Side::BOTH {
            nets.extend(spec.connect(side).networks());
            nets.extend(installed(spec, side, topo).iter().map(|r| r.prefix));
        }
        let mut out = BTreeSet::new();
        for (p, o) in list.iter().enumerate().filter(|(_, o)| o.name != spec.name) {
            let theirs = port_names(&o.local_vpc, &o.remote_vpc);
            if mine.iter().any(|m| theirs.contains(m))
                || pair(&o.local_vpc, &o.remote_vpc) == pair(&spec.local_vpc, &spec.remote_vpc)
            {
                out.insert(p);
            }
            for vpc in [&spec.local_vpc, &spec.remote_vpc] {
                for t in sides_in(o, vpc) {
                    let mut theirs = o.connect(t).networks();
                    theirs.extend(installed(o, t, topo).iter().map(|r| r.prefix));
                    if theirs.iter().any(|n| nets.iter().any(|q| overlaps(n, q))) {
                        out.insert(p);
                    }
                }
            }
        }
        out
    }

    fn pair<'s>(a: &'s str, b: &'s str) -> (&'s str, &'s str) {
        if a <= b {
            (a, b)
        } else {
            (b, a)
        }
    }

    fn scan_claimed_only_by(list: &[PeeringSpec], vpc: &str, me: &str) -> Vec<String> {
        let claims = |o: &PeeringSpec, port: &str| {
            sides_in(o, vpc)
                .iter()
                .any(|t| port_name(vpc, o.vpc(t.other())) == port)
        };
        let mut out = Vec::new();
        for o in list.iter().filter(|o| o.name == me) {
            // Every VPC of it that is `vpc` (a self-peering once).
            let Some(t) = o.side_of(vpc) else { continue };
            let port = port_name(vpc, o.vpc(t.other()));
            if !list.iter().any(|x| x.name != me && claims(x, &port)) {
                out.push(port);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The index answers every question the rules ask exactly as a scan of the list.
        #[test]
        fn prop_index_lookups_equal_a_scan(
            list in prop::collection::vec(arb_spec(), 0..8),
            probe in arb_spec(),
            subnets in prop::collection::vec(0..NETS.len(), VPCS.len()),
            also in prop::collection::vec(0..NETS.len(), 0..2),
        ) {
            let topo = topo(&subnets);
            let index = PeerIndex::new(&list, &topo);
            let also: Vec<IpNet> = also.into_iter().map(net).collect();
            let want = scan_affected(&list, &topo, &probe, &also);
            prop_assert_eq!(index.affected_by(&probe, &topo, &also), want);
            for (pos, o) in list.iter().enumerate() {
                let ports = port_names(&o.local_vpc, &o.remote_vpc);
                let shared = o.local_vpc == o.remote_vpc
                    || list.iter().enumerate().filter(|(q, _)| *q != pos).any(|(_, x)| {
                        x.name == o.name
                            || port_names(&x.local_vpc, &x.remote_vpc)
                                .iter()
                                .any(|p| ports.contains(p))
                    });
                prop_assert_eq!(index.shares_a_name(pos), shared, "{}", o.name);
            }
            let names: Vec<String> = list.iter().map(|o| o.name.clone()).chain([probe.name.clone()]).collect();
            for upto in [0, list.len() / 2, list.len()] {
                let others = index.before(upto);
                let mut c = scan_candidates(&list, upto, &probe);
                c.sort_unstable();
                let ports = port_names(&probe.local_vpc, &probe.remote_vpc);
                prop_assert_eq!(
                    others.name_candidates(&probe.name, &ports, &probe.local_vpc, &probe.remote_vpc),
                    c
                );
                for vpc in VPCS.iter().chain(&["z"]) {
                    let v = index.vpc(&topo, vpc);
                    for me in &names {
                        for i in 0..NETS.len() {
                            let q = net(i);
                            let links: Vec<(IpNet, String)> = others
                                .links(&v, &q, me)
                                .into_iter()
                                .map(|(n, p)| (n, p.to_string()))
                                .collect();
                            prop_assert_eq!(links, scan_links(&list, upto, vpc, &q, me));
                            for policy in [RoutePolicy::DstIp, RoutePolicy::SrcIp] {
                                let routes: Vec<(RouteSpec, String)> = others
                                    .routes(&v, &q, policy, me)
                                    .into_iter()
                                    .map(|(r, p)| (r, p.to_string()))
                                    .collect();
                                prop_assert_eq!(
                                    routes,
                                    scan_routes(&list, upto, &topo, vpc, &q, policy, me)
                                );
                            }
                        }
                        prop_assert_eq!(
                            index.claimed_only_by(vpc, me),
                            scan_claimed_only_by(&list, vpc, me)
                        );
                    }
                }
            }
        }
    }
}
