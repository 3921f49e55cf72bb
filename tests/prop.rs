//! Property tests of the pure parts (issue 15): the JSON-RPC framing decoder, request
//! validation and the diff planner, on generated input. No I/O: a binary of its own, so it
//! runs without Postgres or OVN.
//!
//! Each property runs `PROPTEST_CASES` cases (256 by default, a few seconds in CI). A longer
//! fuzz run is documented in README's test section. A failure prints the shrunk input and
//! proptest records its seed in `tests/prop.proptest-regressions`, replayed first next time.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use proptest::prelude::*;
use serde_json::{json, Value};

use ovn_peerd::ovsdb::jsonrpc::{encode, FrameDecoder, FrameError, Message};
use ovn_peerd::peering::desired::{desired_from_facts, DesiredPeering};
use ovn_peerd::peering::diff::{
    peerings_in_sync, plan, ActualPort, ActualRoute, ActualRows, Change, MarkedRow, Outcome,
    RouterId,
};
use ovn_peerd::peering::topology::TopologyFacts;
use ovn_peerd::peering::validate::{validate_spec, UncheckedPeering, UncheckedRoute};
use ovn_peerd::peering::{PeeringSpec, RoutePolicy, RouteSpec};

// ---------------------------------------------------------------------------------------
// JSON-RPC framing
// ---------------------------------------------------------------------------------------

/// Big enough that `TooLarge` never depends on where the input was split.
const MAX_FRAME: usize = 1 << 24;

/// Feeds `chunks` one by one and takes out every message after each; stops at the first
/// error (the connection drops there).
fn decode_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Message>, Option<FrameError>) {
    let mut d = FrameDecoder::new(MAX_FRAME);
    let mut out = Vec::new();
    for chunk in chunks {
        d.extend(chunk);
        loop {
            match d.next_message() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// `data` cut at the given points (sorted, deduplicated, within bounds).
fn split_at_points(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for p in points.into_iter().chain([data.len()]) {
        out.push(data[prev..p].to_vec());
        prev = p;
    }
    out
}

/// JSON strings with what makes framing hard: braces, brackets, quotes, backslashes,
/// escapes and multi-byte UTF-8.
fn tricky_string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just("\\\"".to_string()),
            Just("é€😀".to_string()),
            Just("\n".to_string()),
            "[a-z0-9 :,]{0,4}",
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(tricky_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn message() -> impl Strategy<Value = Message> {
    let id = prop_oneof![
        any::<u32>().prop_map(|n| json!(n)),
        tricky_string().prop_map(Value::String)
    ];
    prop_oneof![
        (tricky_string(), json_value(), id.clone())
            .prop_map(|(method, params, id)| Message::Request { method, params, id }),
        (tricky_string(), json_value())
            .prop_map(|(method, params)| Message::Notification { method, params }),
        (id, json_value(), json_value()).prop_map(|(id, result, error)| Message::Response {
            id,
            result,
            error
        }),
    ]
}

/// Whitespace OVSDB peers may put between messages.
fn separator() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![b' ', b'\n', b'\r', b'\t']), 0..3)
}

/// Bytes biased towards JSON's structural characters, so that the scanner's depth, string
/// and escape states are all reached, plus any byte at all.
fn json_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(b"{}[]\"\\ :,\nab1".to_vec()),
            1 => any::<u8>(),
        ],
        0..200,
    )
}

proptest! {
    /// Well-formed messages, back to back, split anywhere: the same messages, in order, as
    /// unsplit, and as sent.
    #[test]
    fn prop_framing_split_anywhere_yields_the_same_messages(
        msgs in prop::collection::vec((message(), separator()), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut stream = Vec::new();
        for (m, sep) in &msgs {
            stream.extend(encode(m));
            stream.extend(sep);
        }
        let whole = decode_chunks([stream.as_slice()]);
        let sent: Vec<Message> = msgs.iter().map(|(m, _)| m.clone()).collect();
        prop_assert_eq!(&whole, &(sent, None));
        let parts = split_at_points(&stream, &cuts);
        let split = decode_chunks(parts.iter().map(Vec::as_slice));
        prop_assert_eq!(split, whole);
        // One byte at a time: the most splits there can be.
        let bytewise = decode_chunks(stream.chunks(1));
        prop_assert_eq!(bytewise, decode_chunks([stream.as_slice()]));
    }

    /// Any bytes, split anywhere: no panic, and the same messages and first error as unsplit.
    #[test]
    fn prop_framing_arbitrary_bytes_never_panic_and_split_changes_nothing(
        prefix in prop::collection::vec((message(), separator()), 0..3),
        noise in json_ish_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut stream = Vec::new();
        for (m, sep) in &prefix {
            stream.extend(encode(m));
            stream.extend(sep);
        }
        stream.extend(&noise);
        let whole = decode_chunks([stream.as_slice()]);
        let parts = split_at_points(&stream, &cuts);
        let split = decode_chunks(parts.iter().map(Vec::as_slice));
        prop_assert_eq!(&split, &whole);
        let bytewise = decode_chunks(stream.chunks(1));
        prop_assert_eq!(&bytewise, &whole);
    }
}

// ---------------------------------------------------------------------------------------
// Request validation
// ---------------------------------------------------------------------------------------

/// Text that is sometimes a valid CIDR or address, often nearly one, sometimes anything.
fn cidr_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=40)
            .prop_map(|(a, p)| format!("{}.{}.{}.{}/{p}", a[0], a[1], a[2], a[3])),
        (any::<[u16; 8]>(), 0u8..=140).prop_map(|(a, p)| {
            let ip = std::net::Ipv6Addr::from(a);
            format!("{ip}/{p}")
        }),
        (0u8..=255, 0u8..=3).prop_map(|(x, p)| format!("169.254.0.{x}/{}", 28 + p)),
        (0u16..=0xffff, 0u8..=3).prop_map(|(x, p)| format!("fe80::{x:x}/{}", 124 + p)),
        any::<[u8; 4]>().prop_map(|a| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])),
        prop::sample::select(vec![
            "",
            " ",
            "/",
            "/24",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "1.2.3.4/33",
            "::/129",
            "10.0.0.0/8,fd00::/64",
            "169.254.0.1/30,fd00::1/126",
            "a,b",
            ",",
            "10.0.0.1/30,",
        ])
        .prop_map(String::from),
        "\\PC{0,20}",
    ]
}

/// Names: valid labels, nearly valid ones, and anything.
fn name_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9][a-z0-9-]{0,70}",
        "[a-zA-Z0-9_.-]{0,10}",
        "\\PC{0,30}",
        Just(String::new()),
        Just("x".repeat(201)),
    ]
}

fn route_ish() -> impl Strategy<Value = UncheckedRoute> {
    (
        cidr_ish(),
        prop_oneof![
            Just(Ok(RoutePolicy::DstIp)),
            Just(Ok(RoutePolicy::SrcIp)),
            any::<i32>().prop_map(Err)
        ],
    )
        .prop_map(|(cidr, policy)| UncheckedRoute { cidr, policy })
}

fn peering_ish() -> impl Strategy<Value = UncheckedPeering> {
    (
        name_ish(),
        name_ish(),
        prop_oneof![name_ish(), Just("vpc-1".to_string())],
        cidr_ish(),
        cidr_ish(),
        prop::collection::vec(route_ish(), 0..4),
        prop::collection::vec(route_ish(), 0..4),
    )
        .prop_map(
            |(name, local_vpc, remote_vpc, lc, rc, lr, rr)| UncheckedPeering {
                name,
                local_vpc,
                remote_vpc,
                local_connect_ip: lc,
                remote_connect_ip: rc,
                local_routes: lr,
                remote_routes: rr,
            },
        )
}

/// Whether `field` names a field of this request (routes by an index it has).
fn names_a_request_field(field: &str, p: &UncheckedPeering) -> bool {
    const SCALARS: [&str; 7] = [
        "peering.name",
        "peering.local_vpc",
        "peering.remote_vpc",
        "peering.local_connect_ip",
        "peering.remote_connect_ip",
        "peering.local_routes",
        "peering.remote_routes",
    ];
    if SCALARS.contains(&field) {
        return true;
    }
    for (list, routes) in [
        ("peering.local_routes", &p.local_routes),
        ("peering.remote_routes", &p.remote_routes),
    ] {
        let Some(rest) = field.strip_prefix(list).and_then(|r| r.strip_prefix('[')) else {
            continue;
        };
        let Some((index, member)) = rest.split_once("].") else {
            return false;
        };
        return matches!(member, "cidr" | "policy")
            && index.parse::<usize>().is_ok_and(|i| i < routes.len());
    }
    false
}

proptest! {
    /// Never panics; a refusal lists at least one violation, each naming a field of the
    /// request and saying what is wrong; an acceptance keeps what was asked.
    #[test]
    fn prop_validation_never_panics_and_every_refusal_names_a_field(p in peering_ish()) {
        match validate_spec(&p) {
            Err(refusal) => {
                prop_assert!(!refusal.violations.is_empty());
                for v in &refusal.violations {
                    prop_assert!(names_a_request_field(&v.field, &p), "{:?} for {:?}", v, p);
                    prop_assert!(!v.description.trim().is_empty(), "{:?}", v);
                }
            }
            Ok(ok) => {
                prop_assert_eq!(&ok.name, &p.name);
                prop_assert!(!ok.name.is_empty() && ok.name.len() <= 63);
                prop_assert_ne!(&ok.local_vpc, &ok.remote_vpc);
                prop_assert!(!ok.local_vpc.is_empty() && !ok.remote_vpc.is_empty());
                prop_assert!(ok.local_routes.len() <= p.local_routes.len());
                prop_assert!(ok.remote_routes.len() <= p.remote_routes.len());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The diff planner
// ---------------------------------------------------------------------------------------

/// splitmix64: the scenario is built from one seed, so a failure names it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const VPCS: u64 = 6;

fn router_id(i: u64) -> String {
    format!("router-{i}")
}

/// Up to four desired peerings over six VPCs (distinct pairs), each with 0..3 routes a side.
fn desired_peerings(rng: &mut Rng) -> Vec<DesiredPeering> {
    let mut pairs = BTreeSet::new();
    let mut out = Vec::new();
    for n in 0..rng.below(5) {
        let a = rng.below(VPCS);
        let b = (a + 1 + rng.below(VPCS - 1)) % VPCS;
        if !pairs.insert((a.min(b), a.max(b))) {
            continue;
        }
        let spec = PeeringSpec {
            name: format!("p{n}"),
            local_vpc: format!("vpc-{a}"),
            remote_vpc: format!("vpc-{b}"),
            local_connect: format!("169.254.{n}.1/30").parse().unwrap(),
            remote_connect: format!("169.254.{n}.2/30").parse().unwrap(),
            local_routes: vec![],
            remote_routes: vec![],
        };
        let routes = |rng: &mut Rng| -> Vec<RouteSpec> {
            let mut set = BTreeSet::new();
            for _ in 0..rng.below(4) {
                let prefix: IpNet = format!("10.{}.{}.0/24", rng.below(3), rng.below(3))
                    .parse()
                    .unwrap();
                let policy = if rng.chance(20) {
                    RoutePolicy::SrcIp
                } else {
                    RoutePolicy::DstIp
                };
                set.insert(RouteSpec { prefix, policy });
            }
            set.into_iter().collect()
        };
        let facts = TopologyFacts {
            local_router_id: router_id(a),
            remote_router_id: router_id(b),
            local_subnets: vec![],
            remote_subnets: vec![],
            local_routes: routes(rng),
            remote_routes: routes(rng),
        };
        let generation = 1 + rng.below(3) as i64;
        out.push(desired_from_facts(&spec, generation, &facts));
        if rng.chance(15) {
            // Another peering wanting the same port names (one of the two is blocked).
            let twin = PeeringSpec {
                name: format!("p{n}twin"),
                ..spec
            };
            out.push(desired_from_facts(&twin, generation, &facts));
        }
    }
    out
}

fn owned_ids(peering: &str, generation: u64, side: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("ovn-peerd:owner".to_string(), "ovn-peerd".to_string()),
        ("ovn-peerd:peering".to_string(), peering.to_string()),
        ("ovn-peerd:generation".to_string(), generation.to_string()),
        ("ovn-peerd:side".to_string(), side.to_string()),
    ])
}

/// What NB might hold: the desired rows, some missing, some drifted, duplicated or on the
/// wrong router, rows of peerings no longer desired, and rows that are not ours.
fn actual_rows(rng: &mut Rng, desired: &[DesiredPeering]) -> ActualRows {
    let mut ports: Vec<ActualPort> = Vec::new();
    let mut routes = Vec::new();
    let mut next_id = 0;
    let mut id = |kind: &str| {
        next_id += 1;
        format!("{kind}-{next_id:04}")
    };
    // Rows of another deployment carrying a peering's mark (blue/green sharing names).
    let mut foreign_ports = BTreeMap::new();
    let not_ours = |ids: &BTreeMap<String, String>| {
        let mut ids = ids.clone();
        ids.remove("ovn-peerd:owner");
        ids
    };
    let mut names = BTreeSet::new();
    for d in desired {
        // Most peerings are exactly in NB after a restart: some here too.
        let clean = rng.chance(40);
        for p in &d.ports {
            if !names.insert(p.name.clone()) {
                continue; // a twin's: the first peering's (present or not) is what NB has
            }
            if rng.chance(5) {
                // Another deployment's port holds the wanted name.
                foreign_ports.insert(p.name.clone(), "another deployment".into());
                ports.push(ActualPort {
                    id: id("foreign-port"),
                    router_id: p.router_id.clone(),
                    name: p.name.clone(),
                    mac: p.mac.clone(),
                    networks: p.networks.clone(),
                    peer: Some(p.peer.clone()),
                    external_ids: not_ours(&p.external_ids),
                    ..Default::default()
                });
                continue;
            }
            if rng.chance(if clean { 0 } else { 20 }) {
                continue; // missing
            }
            let mut a = ActualPort {
                id: id("port"),
                router_id: p.router_id.clone(),
                name: p.name.clone(),
                mac: p.mac.clone(),
                networks: p.networks.clone(),
                peer: Some(p.peer.clone()),
                external_ids: p.external_ids.clone(),
                ..Default::default()
            };
            match if clean { 8 } else { rng.below(9) } {
                0 => a.mac = a.mac.to_uppercase(),
                1 => a.mac = "0a:00:00:00:00:01".into(),
                2 => a.networks = vec!["169.254.99.1/30".into()],
                3 => a.peer = None,
                4 => a.peer = Some("elsewhere".into()),
                5 => {
                    a.external_ids
                        .insert("ovn-peerd:generation".into(), "0".into());
                }
                6 => {
                    a.external_ids.insert("operator:note".into(), "keep".into());
                }
                7 => a.router_id = router_id((rng.below(VPCS) + 1) % VPCS),
                _ => {}
            }
            ports.push(a);
        }
        for r in &d.routes {
            if rng.chance(10) {
                // Another deployment's copy of the route.
                routes.push(ActualRoute {
                    id: id("foreign-route"),
                    router_id: r.router_id.clone(),
                    ip_prefix: r.ip_prefix.clone(),
                    nexthop: r.nexthop.clone(),
                    policy: Some(r.policy),
                    output_port: Some(r.output_port.clone()),
                    route_table: r.route_table.clone(),
                    external_ids: not_ours(&r.external_ids),
                    ..Default::default()
                });
            }
            if rng.chance(if clean { 0 } else { 20 }) {
                continue;
            }
            let mut a = ActualRoute {
                id: id("route"),
                router_id: r.router_id.clone(),
                ip_prefix: r.ip_prefix.clone(),
                nexthop: r.nexthop.clone(),
                policy: Some(r.policy),
                output_port: Some(r.output_port.clone()),
                route_table: r.route_table.clone(),
                external_ids: r.external_ids.clone(),
                ..Default::default()
            };
            match if clean { 8 } else { rng.below(9) } {
                0 => a.output_port = None,
                1 => a.output_port = Some("elsewhere".into()),
                2 => a.nexthop = "169.254.77.2".into(),
                3 => {
                    a.external_ids
                        .insert("ovn-peerd:generation".into(), "0".into());
                }
                // The same prefix with host bits set: the same route.
                4 => a.ip_prefix = a.ip_prefix.replace(".0/", ".9/"),
                5 => a.policy = None,
                6 => a.route_table = "other".into(),
                7 => {
                    let mut dup = a.clone();
                    dup.id = id("route");
                    routes.push(dup);
                }
                _ => {}
            }
            routes.push(a);
        }
    }
    // Rows of peerings that are no longer desired (some share a port name with a desired one).
    for n in 0..rng.below(3) {
        let name = format!("gone{n}");
        let (a, b) = (rng.below(VPCS), rng.below(VPCS));
        let ids = owned_ids(&name, 1, "local");
        let port_name = format!("vpc-{a}-vpc-{b}");
        if ports.iter().any(|p| p.name == port_name) {
            continue; // NB's port names are unique
        }
        ports.push(ActualPort {
            id: id("port"),
            router_id: router_id(a),
            name: format!("vpc-{a}-vpc-{b}"),
            mac: "0a:00:00:00:00:02".into(),
            networks: vec!["169.254.200.1/30".into()],
            peer: Some(format!("vpc-{b}-vpc-{a}")),
            external_ids: ids.clone(),
            ..Default::default()
        });
        routes.push(ActualRoute {
            id: id("route"),
            router_id: router_id(a),
            ip_prefix: "10.9.9.0/24".into(),
            nexthop: "169.254.200.2".into(),
            policy: Some(RoutePolicy::DstIp),
            output_port: Some(format!("vpc-{a}-vpc-{b}")),
            route_table: String::new(),
            external_ids: ids,
            ..Default::default()
        });
    }
    // Rows that are not ours: never changed, whatever they look like (some carry our
    // peering marker without the owner mark, some hold a desired port's name).
    for _ in 0..rng.below(4) {
        let a = rng.below(VPCS);
        let name = if rng.chance(30) {
            format!("vpc-{a}-vpc-{}", rng.below(VPCS))
        } else {
            format!("lrp-{}", rng.below(100))
        };
        if ports.iter().any(|p| p.name == name) {
            continue; // NB's port names are unique
        }
        let mut ids = BTreeMap::new();
        if rng.chance(50) {
            ids.insert("ovn-peerd:peering".to_string(), "p0".to_string());
        }
        foreign_ports.insert(name.clone(), format!("router {}", router_id(a)));
        ports.push(ActualPort {
            id: id("foreign-port"),
            router_id: router_id(a),
            name,
            mac: "0a:00:00:00:00:03".into(),
            networks: vec!["10.50.0.1/24".into()],
            peer: None,
            external_ids: ids.clone(),
            ..Default::default()
        });
        routes.push(ActualRoute {
            id: id("foreign-route"),
            router_id: router_id(a),
            ip_prefix: "10.0.0.0/24".into(),
            nexthop: "169.254.0.2".into(),
            policy: Some(RoutePolicy::DstIp),
            output_port: None,
            route_table: String::new(),
            external_ids: ids,
            ..Default::default()
        });
    }
    // The planner must not depend on the order NB lists rows in.
    for i in (1..ports.len()).rev() {
        ports.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for i in (1..routes.len()).rev() {
        routes.swap(i, rng.below(i as u64 + 1) as usize);
    }
    ActualRows {
        ports,
        routes,
        foreign_ports,
    }
}

fn is_ours(ids: &BTreeMap<String, String>) -> bool {
    ids.get("ovn-peerd:owner").map(String::as_str) == Some("ovn-peerd")
}

/// Applies the plan's changes, in order, as one NB transaction would; panics on a change to
/// a row that does not exist or is not ours.
fn apply(actual: &ActualRows, changes: &[Change]) -> ActualRows {
    let mut out = actual.clone();
    let mut created = 0;
    for c in changes {
        match c {
            Change::CreatePort { port, .. } => {
                created += 1;
                out.ports.push(ActualPort {
                    id: format!("new-port-{created}"),
                    router_id: port.router_id.clone(),
                    name: port.name.clone(),
                    mac: port.mac.clone(),
                    networks: port.networks.clone(),
                    peer: Some(port.peer.clone()),
                    external_ids: port.external_ids.clone(),
                    ..Default::default()
                });
            }
            Change::UpdatePort {
                id,
                mac,
                networks,
                peer,
                external_ids,
                ..
            } => {
                let p = out.ports.iter_mut().find(|p| &p.id == id).expect("port");
                assert!(is_ours(&p.external_ids), "updates a port not ours: {p:?}");
                if let Some(v) = mac {
                    p.mac = v.clone();
                }
                if let Some(v) = networks {
                    p.networks = v.clone();
                }
                if let Some(v) = peer {
                    p.peer = Some(v.clone());
                }
                if let Some(v) = external_ids {
                    p.external_ids = v.clone();
                }
            }
            Change::DeletePort { id, .. } => {
                let i = out.ports.iter().position(|p| &p.id == id).expect("port");
                assert!(
                    is_ours(&out.ports[i].external_ids),
                    "deletes a port not ours"
                );
                out.ports.remove(i);
            }
            Change::CreateRoute { route, .. } => {
                created += 1;
                out.routes.push(ActualRoute {
                    id: format!("new-route-{created}"),
                    router_id: route.router_id.clone(),
                    ip_prefix: route.ip_prefix.clone(),
                    nexthop: route.nexthop.clone(),
                    policy: Some(route.policy),
                    output_port: Some(route.output_port.clone()),
                    route_table: route.route_table.clone(),
                    external_ids: route.external_ids.clone(),
                    ..Default::default()
                });
            }
            Change::UpdateRoute {
                id,
                output_port,
                external_ids,
                ..
            } => {
                let r = out.routes.iter_mut().find(|r| &r.id == id).expect("route");
                assert!(is_ours(&r.external_ids), "updates a route not ours: {r:?}");
                if let Some(v) = output_port {
                    r.output_port = Some(v.clone());
                }
                if let Some(v) = external_ids {
                    r.external_ids = v.clone();
                }
            }
            Change::DeleteRoute { id, .. } => {
                let i = out.routes.iter().position(|r| &r.id == id).expect("route");
                assert!(
                    is_ours(&out.routes[i].external_ids),
                    "deletes a route not ours"
                );
                out.routes.remove(i);
            }
        }
    }
    out
}

/// Our markers only (an operator's keys on our rows are kept and not compared).
fn our_keys(ids: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    ids.iter()
        .filter(|(k, _)| k.starts_with("ovn-peerd:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

type PortKey = (
    String,
    String,
    String,
    BTreeSet<String>,
    Option<String>,
    BTreeMap<String, String>,
);
type RouteKey = (
    String,
    IpNet,
    String,
    Option<RoutePolicy>,
    Option<String>,
    String,
    BTreeMap<String, String>,
);

fn port_key(p: &ActualPort) -> PortKey {
    (
        p.router_id.clone(),
        p.name.clone(),
        p.mac.to_lowercase(),
        p.networks.iter().cloned().collect(),
        p.peer.clone(),
        our_keys(&p.external_ids),
    )
}

fn route_key(r: &ActualRoute) -> RouteKey {
    let prefix: IpNet = r.ip_prefix.parse().expect("prefix");
    (
        r.router_id.clone(),
        prefix.trunc(),
        r.nexthop.clone(),
        r.policy,
        r.output_port.clone(),
        r.route_table.clone(),
        our_keys(&r.external_ids),
    )
}

fn owner_of(ids: &BTreeMap<String, String>) -> Option<&str> {
    is_ours(ids)
        .then(|| ids.get("ovn-peerd:peering").map(String::as_str))
        .flatten()
}

/// Owned rows of `peering`, as sorted keys (duplicates kept).
fn rows_of(rows: &ActualRows, peering: &str) -> (Vec<PortKey>, Vec<RouteKey>) {
    let mut ports: Vec<PortKey> = rows
        .ports
        .iter()
        .filter(|p| owner_of(&p.external_ids) == Some(peering))
        .map(port_key)
        .collect();
    let mut routes: Vec<RouteKey> = rows
        .routes
        .iter()
        .filter(|r| owner_of(&r.external_ids) == Some(peering))
        .map(route_key)
        .collect();
    ports.sort();
    routes.sort();
    (ports, routes)
}

fn desired_rows(d: &DesiredPeering) -> (Vec<PortKey>, Vec<RouteKey>) {
    let mut ports: Vec<PortKey> = d
        .ports
        .iter()
        .map(|p| {
            (
                p.router_id.clone(),
                p.name.clone(),
                p.mac.to_lowercase(),
                p.networks.iter().cloned().collect(),
                Some(p.peer.clone()),
                p.external_ids.clone(),
            )
        })
        .collect();
    let mut routes: Vec<RouteKey> = d
        .routes
        .iter()
        .map(|r| {
            (
                r.router_id.clone(),
                r.ip_prefix.parse::<IpNet>().unwrap().trunc(),
                r.nexthop.clone(),
                Some(r.policy),
                Some(r.output_port.clone()),
                r.route_table.clone(),
                r.external_ids.clone(),
            )
        })
        .collect();
    ports.sort();
    routes.sort();
    (ports, routes)
}

fn foreign(rows: &ActualRows) -> (Vec<ActualPort>, Vec<ActualRoute>) {
    let mut ports: Vec<ActualPort> = rows
        .ports
        .iter()
        .filter(|p| !is_ours(&p.external_ids))
        .cloned()
        .collect();
    let mut routes: Vec<ActualRoute> = rows
        .routes
        .iter()
        .filter(|r| !is_ours(&r.external_ids))
        .cloned()
        .collect();
    ports.sort_by(|a, b| a.id.cmp(&b.id));
    routes.sort_by(|a, b| a.id.cmp(&b.id));
    (ports, routes)
}

proptest! {
    /// Applying the plan to the actual rows yields exactly the desired rows of every peering
    /// it does not block; blocked ones, rows kept on purpose (`untouched`) and rows that are
    /// not ours are left as they were; owned rows of other peerings are gone; and planning
    /// again finds nothing to do.
    #[test]
    fn prop_diff_plan_applied_to_the_actual_rows_yields_the_desired_rows(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let desired = desired_peerings(&mut rng);
        let actual = actual_rows(&mut rng, &desired);
        let untouched: BTreeSet<String> =
            (0..3).filter(|_| rng.chance(30)).map(|n| format!("gone{n}")).collect();
        let p = plan(&desired, &untouched, &actual);
        let after = apply(&actual, &p.changes);

        prop_assert_eq!(foreign(&after), foreign(&actual), "rows not ours changed");
        let mut kept: BTreeSet<String> = untouched.clone();
        for d in &desired {
            let outcome = p.outcomes.get(&d.name).cloned();
            prop_assert!(outcome.is_some(), "no outcome for {}", d.name);
            if let Some(Outcome::Blocked(_)) = outcome {
                kept.insert(d.name.clone());
                continue;
            }
            prop_assert_eq!(rows_of(&after, &d.name), desired_rows(d), "rows of {}", d.name);
        }
        // Rows kept on purpose stay; other owned rows belong to a desired peering or are gone.
        let desired_names: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
        let owners: BTreeSet<String> = after
            .ports
            .iter()
            .map(|p| &p.external_ids)
            .chain(after.routes.iter().map(|r| &r.external_ids))
            .filter_map(owner_of)
            .map(String::from)
            .collect();
        for o in &owners {
            prop_assert!(
                desired_names.contains(o.as_str()) || kept.contains(o),
                "rows of {} left behind", o
            );
        }
        for k in &kept {
            if !desired_names.contains(k.as_str()) || matches!(p.outcomes.get(k), Some(Outcome::Blocked(_))) {
                prop_assert_eq!(rows_of(&after, k), rows_of(&actual, k), "rows of kept {}", k);
            }
        }
        // A fixed point: nothing left to do.
        let again = plan(&desired, &untouched, &after);
        prop_assert_eq!(again.changes, vec![]);
    }
}

/// The rows of `rows` carrying `peering`'s mark, as the replica gives them to
/// [`peerings_in_sync`].
fn marked_rows<'a>(rows: &'a ActualRows, peering: &str) -> Vec<MarkedRow<'a>> {
    let marked = |ids: &BTreeMap<String, String>| {
        ids.get("ovn-peerd:peering").map(String::as_str) == Some(peering)
    };
    let ports = rows
        .ports
        .iter()
        .filter(|p| marked(&p.external_ids))
        .map(|p| MarkedRow::Port {
            ours: is_ours(&p.external_ids),
            router: Some(RouterId::Text(&p.router_id)),
            columns: p.columns(),
        });
    let routes = rows
        .routes
        .iter()
        .filter(|r| marked(&r.external_ids))
        .map(|r| MarkedRow::Route {
            ours: is_ours(&r.external_ids),
            router: Some(RouterId::Text(&r.router_id)),
            columns: r.columns(),
        });
    ports.chain(routes).collect()
}

proptest! {
    /// Leaving out the peerings `peerings_in_sync` picks, and their owned rows, changes
    /// nothing the plan decides: the plan over the rest is the plan over everything, and that
    /// finds each picked peering in sync. (What a full pass does after a restart.)
    #[test]
    fn prop_in_sync_selection_changes_no_plan(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let desired = desired_peerings(&mut rng);
        let actual = actual_rows(&mut rng, &desired);
        let untouched: BTreeSet<String> =
            (0..3).filter(|_| rng.chance(30)).map(|n| format!("gone{n}")).collect();
        let all = plan(&desired, &untouched, &actual);

        let in_sync = peerings_in_sync(&desired, |name| marked_rows(&actual, name));
        let rest: Vec<DesiredPeering> =
            desired.iter().filter(|d| !in_sync.contains(&d.name)).cloned().collect();
        let theirs = |ids: &BTreeMap<String, String>| {
            owner_of(ids).is_some_and(|o| in_sync.contains(o))
        };
        let rows = ActualRows {
            ports: actual.ports.iter().filter(|p| !theirs(&p.external_ids)).cloned().collect(),
            routes: actual.routes.iter().filter(|r| !theirs(&r.external_ids)).cloned().collect(),
            foreign_ports: actual.foreign_ports.clone(),
        };
        let mut part = plan(&rest, &untouched, &rows);
        for name in &in_sync {
            prop_assert_eq!(all.outcomes.get(name), Some(&Outcome::InSync), "{} picked", name);
            part.outcomes.insert(name.clone(), Outcome::InSync);
        }
        prop_assert_eq!(part, all);
    }
}
