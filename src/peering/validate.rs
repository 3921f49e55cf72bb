//! Request validation: everything about a peering that can be judged from the request alone
//! (INVALID_ARGUMENT). Checks that need NB or other peerings live in
//! [`super::topology`].
//!
//! Every rule runs and every violation is reported, each naming its request field, so a
//! client fixes a request in one round trip.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use ipnet::IpNet;

use super::{
    overlaps, ConnectAddrs, Family, PeeringSpec, Refusal, RefusalKind, RoutePolicy, RouteSpec,
    Side, Violation,
};

/// Longest peering name (a DNS label).
pub const MAX_NAME_LEN: usize = 63;
/// Longest VPC name, in bytes.
pub use super::MAX_VPC_LEN;
/// Most explicit routes on one side.
pub const MAX_ROUTES_PER_SIDE: usize = 256;
/// Accepted IPv4 link prefix lengths. /31 is a point-to-point link (RFC 3021) with no network
/// or broadcast address; /32 leaves no room for two ports.
pub const V4_CONNECT_PREFIX: RangeInclusive<u8> = 16..=31;
/// Accepted IPv6 link prefix lengths. /127 is point-to-point (RFC 6164).
pub const V6_CONNECT_PREFIX: RangeInclusive<u8> = 64..=127;

/// `RoutePolicy` numbering of the proto enum (prost hands enums over as `i32`).
pub const POLICY_UNSPECIFIED: i32 = 0;
/// `ROUTE_POLICY_DST_IP`.
pub const POLICY_DST_IP: i32 = 1;
/// `ROUTE_POLICY_SRC_IP`.
pub const POLICY_SRC_IP: i32 = 2;

/// One route as the API received it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UncheckedRoute {
    /// The prefix text, e.g. `"10.1.0.0/16"`.
    pub cidr: String,
    /// The proto enum value ([`POLICY_UNSPECIFIED`] = dst-ip).
    pub policy: i32,
}

/// A peering as the API received it: plain strings, nothing checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UncheckedPeering {
    /// `peering.name`.
    pub name: String,
    /// `peering.local_vpc`.
    pub local_vpc: String,
    /// `peering.remote_vpc`.
    pub remote_vpc: String,
    /// `peering.local_connect_ip` (empty with `remote_connect_ip` = allocate).
    pub local_connect_ip: String,
    /// `peering.remote_connect_ip`.
    pub remote_connect_ip: String,
    /// `peering.local_routes`.
    pub local_routes: Vec<UncheckedRoute>,
    /// `peering.remote_routes`.
    pub remote_routes: Vec<UncheckedRoute>,
}

/// A valid request. `link` is `None` when the service must allocate one (see
/// [`ValidatedPeering::link_families`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedPeering {
    /// The name.
    pub name: String,
    /// The first VPC.
    pub local_vpc: String,
    /// The second VPC.
    pub remote_vpc: String,
    /// `(local, remote)` connect addresses as requested, or `None` = allocate.
    pub link: Option<(ConnectAddrs, ConnectAddrs)>,
    /// Explicit routes installed in `local_vpc` (empty = automatic).
    pub local_routes: Vec<RouteSpec>,
    /// Explicit routes installed in `remote_vpc` (empty = automatic).
    pub remote_routes: Vec<RouteSpec>,
}

impl ValidatedPeering {
    /// The families the link must have: those requested, or for an allocated link IPv4,
    /// plus IPv6 when an explicit route is IPv6 (it needs an IPv6 nexthop). Automatic routes
    /// only cover the families the link has.
    pub fn link_families(&self) -> Vec<Family> {
        if let Some((local, _)) = &self.link {
            return local.families();
        }
        let mut families = vec![Family::V4];
        let v6_route = self
            .local_routes
            .iter()
            .chain(&self.remote_routes)
            .any(|r| Family::of(&r.prefix) == Family::V6);
        if v6_route {
            families.push(Family::V6);
        }
        families
    }

    /// The complete spec with the requested link, or `None` when one must be allocated.
    pub fn spec(&self) -> Option<PeeringSpec> {
        let (local, remote) = self.link?;
        Some(self.with_link(local, remote))
    }

    /// The complete spec with an allocated link.
    pub fn with_link(&self, local: ConnectAddrs, remote: ConnectAddrs) -> PeeringSpec {
        PeeringSpec {
            name: self.name.clone(),
            local_vpc: self.local_vpc.clone(),
            remote_vpc: self.remote_vpc.clone(),
            local_connect: local,
            remote_connect: remote,
            local_routes: self.local_routes.clone(),
            remote_routes: self.remote_routes.clone(),
        }
    }
}

/// Checks a request; on refusal every violation is listed (kind INVALID_ARGUMENT).
pub fn validate_spec(input: &UncheckedPeering) -> Result<ValidatedPeering, Refusal> {
    let mut v = Vec::new();
    check_name(&input.name, &mut v);
    check_vpc("peering.local_vpc", &input.local_vpc, &mut v);
    check_vpc("peering.remote_vpc", &input.remote_vpc, &mut v);
    if !input.local_vpc.is_empty() && input.local_vpc == input.remote_vpc {
        v.push(Violation::new(
            "peering.remote_vpc",
            "must differ from peering.local_vpc: a VPC cannot peer with itself",
        ));
    }
    let link = check_link(&input.local_connect_ip, &input.remote_connect_ip, &mut v);
    let local_routes = check_routes(Side::Local, &input.local_routes, link.as_ref(), &mut v);
    let remote_routes = check_routes(Side::Remote, &input.remote_routes, link.as_ref(), &mut v);
    let validated = ValidatedPeering {
        name: input.name.clone(),
        local_vpc: input.local_vpc.clone(),
        remote_vpc: input.remote_vpc.clone(),
        link,
        local_routes,
        remote_routes,
    };
    Refusal::check(RefusalKind::InvalidArgument, v, validated)
}

fn check_name(name: &str, v: &mut Vec<Violation>) {
    const FIELD: &str = "peering.name";
    const RULE: &str = "1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit";
    let bytes = name.as_bytes();
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("is longer than 63 characters")
    } else if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        Some("has a character other than a-z, 0-9 and '-'")
    } else if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        Some("starts or ends with '-'")
    } else {
        None
    };
    if let Some(p) = problem {
        v.push(Violation::new(
            FIELD,
            format!("{p}; a name is a DNS label: {RULE}"),
        ));
    }
}

fn check_vpc(field: &str, vpc: &str, v: &mut Vec<Violation>) {
    if vpc.is_empty() {
        v.push(Violation::new(
            field,
            "is empty; name an OVN logical router",
        ));
    } else if vpc.len() > MAX_VPC_LEN {
        v.push(Violation::new(
            field,
            format!("is longer than {MAX_VPC_LEN} bytes"),
        ));
    } else if vpc.chars().any(|c| c.is_control() || c == ',') {
        v.push(Violation::new(
            field,
            "contains a control character or a comma",
        ));
    }
}

/// Checks the two connect addresses; `Some` only when both are given and valid.
fn check_link(
    local_text: &str,
    remote_text: &str,
    v: &mut Vec<Violation>,
) -> Option<(ConnectAddrs, ConnectAddrs)> {
    const LOCAL: &str = "peering.local_connect_ip";
    const REMOTE: &str = "peering.remote_connect_ip";
    match (local_text.is_empty(), remote_text.is_empty()) {
        (true, true) => return None,
        (false, true) => {
            v.push(Violation::new(REMOTE, format!("must be set when {LOCAL} is set (or leave both empty to have a link allocated)")));
        }
        (true, false) => {
            v.push(Violation::new(LOCAL, format!("must be set when {REMOTE} is set (or leave both empty to have a link allocated)")));
        }
        (false, false) => {}
    }
    let local = parse_connect(LOCAL, local_text, v);
    let remote = parse_connect(REMOTE, remote_text, v);
    let (local, remote) = (local?, remote?);
    if local.families() != remote.families() {
        v.push(Violation::new(
            REMOTE,
            format!(
                "has address families {} but {LOCAL} has {}; both ports need the same families",
                family_list(&remote),
                family_list(&local)
            ),
        ));
        return None;
    }
    let before = v.len();
    for family in local.families() {
        let (Some(l), Some(r)) = (local.get(family), remote.get(family)) else {
            continue;
        };
        if l.trunc() != r.trunc() {
            v.push(Violation::new(
                REMOTE,
                format!("{r} is not in the same subnet as {LOCAL}'s {l}; both ends of a link share one subnet"),
            ));
        } else if l.addr() == r.addr() {
            v.push(Violation::new(
                REMOTE,
                format!("{r} equals {LOCAL}; the two ports need distinct addresses"),
            ));
        }
    }
    (v.len() == before).then_some((local, remote))
}

fn family_list(c: &ConnectAddrs) -> String {
    let names: Vec<&str> = c.families().into_iter().map(Family::name).collect();
    names.join("+")
}

/// Parses one connect address string and checks each address on its own.
fn parse_connect(field: &str, text: &str, v: &mut Vec<Violation>) -> Option<ConnectAddrs> {
    if text.is_empty() {
        return None;
    }
    let addrs: ConnectAddrs = match text.parse() {
        Ok(a) => a,
        Err(e) => {
            v.push(Violation::new(field, e.to_string()));
            return None;
        }
    };
    let before = v.len();
    for addr in addrs.addrs() {
        if let Some(problem) = host_problem(&addr) {
            v.push(Violation::new(field, format!("{addr}: {problem}")));
        }
    }
    (v.len() == before).then_some(addrs)
}

/// Why `addr` (host address + link prefix) cannot be a port address, if it cannot.
fn host_problem(addr: &IpNet) -> Option<String> {
    let (range, family) = match addr {
        IpNet::V4(_) => (V4_CONNECT_PREFIX, Family::V4),
        IpNet::V6(_) => (V6_CONNECT_PREFIX, Family::V6),
    };
    let len = addr.prefix_len();
    if !range.contains(&len) {
        return Some(format!(
            "{} link prefix length must be /{} to /{}",
            family.name(),
            range.start(),
            range.end()
        ));
    }
    let ip = addr.addr();
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return Some("is not a unicast host address".to_string());
    }
    let point_to_point = len == addr.max_prefix_len() - 1;
    if point_to_point {
        return None;
    }
    if ip == addr.network() {
        return Some(match family {
            Family::V4 => "is the network address of its subnet".to_string(),
            Family::V6 => "is the subnet-router anycast address (all-zero host part)".to_string(),
        });
    }
    if family == Family::V4 && ip == addr.broadcast() {
        return Some("is the broadcast address of its subnet".to_string());
    }
    None
}

fn check_routes(
    side: Side,
    routes: &[UncheckedRoute],
    link: Option<&(ConnectAddrs, ConnectAddrs)>,
    v: &mut Vec<Violation>,
) -> Vec<RouteSpec> {
    let list = format!("peering.{}_routes", side.as_str());
    if routes.len() > MAX_ROUTES_PER_SIDE {
        v.push(Violation::new(
            &list,
            format!(
                "has {} routes; at most {MAX_ROUTES_PER_SIDE} are allowed",
                routes.len()
            ),
        ));
        return Vec::new();
    }
    // The port the routes leave through is the other side's address: same families and link.
    let link_addrs = link.map(|(l, _)| l);
    let mut seen: BTreeMap<RouteSpec, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let cidr_field = format!("{list}[{i}].cidr");
        let policy = match r.policy {
            POLICY_UNSPECIFIED | POLICY_DST_IP => Some(RoutePolicy::DstIp),
            POLICY_SRC_IP => Some(RoutePolicy::SrcIp),
            other => {
                v.push(Violation::new(
                    format!("{list}[{i}].policy"),
                    format!("{other} is not a known route policy"),
                ));
                None
            }
        };
        let prefix: IpNet = match r.cidr.parse() {
            Ok(p) => p,
            Err(_) => {
                let hint = if r.cidr.is_empty() {
                    "is empty".to_string()
                } else {
                    format!("{:?} is not a CIDR prefix", r.cidr)
                };
                v.push(Violation::new(
                    cidr_field,
                    format!("{hint}, e.g. 10.1.0.0/16 or fd10::/64"),
                ));
                continue;
            }
        };
        if prefix != prefix.trunc() {
            v.push(Violation::new(
                cidr_field,
                format!(
                    "{prefix} has host bits set; did you mean {}?",
                    prefix.trunc()
                ),
            ));
            continue;
        }
        if let Some(addrs) = link_addrs {
            let family = Family::of(&prefix);
            match addrs.get(family) {
                None => {
                    v.push(Violation::new(
                        cidr_field,
                        format!(
                            "is {} but the link has no {} address",
                            family.name(),
                            family.name()
                        ),
                    ));
                    continue;
                }
                Some(a) if overlaps(&a.trunc(), &prefix) => {
                    v.push(Violation::new(
                        cidr_field,
                        format!("{prefix} overlaps the peering's own link {}", a.trunc()),
                    ));
                    continue;
                }
                Some(_) => {}
            }
        }
        let Some(policy) = policy else { continue };
        let route = RouteSpec { prefix, policy };
        if let Some(first) = seen.insert(route, i) {
            v.push(Violation::new(
                cidr_field,
                format!("repeats {list}[{first}]"),
            ));
            continue;
        }
        out.push(route);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_input() -> UncheckedPeering {
        UncheckedPeering {
            name: "vpc-1-to-vpc-2".into(),
            local_vpc: "vpc-1".into(),
            remote_vpc: "vpc-2".into(),
            local_connect_ip: "169.254.0.1/30".into(),
            remote_connect_ip: "169.254.0.2/30".into(),
            local_routes: vec![route("172.31.0.0/16", POLICY_UNSPECIFIED)],
            remote_routes: vec![],
        }
    }

    fn route(cidr: &str, policy: i32) -> UncheckedRoute {
        UncheckedRoute {
            cidr: cidr.into(),
            policy,
        }
    }

    /// The fields named by the refusal of `input` (asserting it is INVALID_ARGUMENT).
    fn fields(input: &UncheckedPeering) -> Vec<String> {
        let refusal = validate_spec(input).expect_err("should be refused");
        assert_eq!(refusal.kind, RefusalKind::InvalidArgument);
        refusal.violations.into_iter().map(|v| v.field).collect()
    }

    fn refused_on(field: &str, f: impl FnOnce(&mut UncheckedPeering)) {
        let mut input = ok_input();
        f(&mut input);
        assert_eq!(fields(&input), vec![field.to_string()], "input: {input:?}");
    }

    #[test]
    fn accepts_seed_example() {
        let p = validate_spec(&ok_input()).unwrap();
        let spec = p.spec().unwrap();
        assert_eq!(spec.local_connect.to_string(), "169.254.0.1/30");
        assert_eq!(
            spec.local_routes,
            vec![RouteSpec::dst("172.31.0.0/16".parse().unwrap())]
        );
        assert_eq!(p.link_families(), vec![Family::V4]);
    }

    #[test]
    fn accepts_dual_stack_and_point_to_point() {
        let mut i = ok_input();
        i.local_connect_ip = "169.254.0.0/31,fd00::/127".into();
        i.remote_connect_ip = "fd00::1/127,169.254.0.1/31".into();
        i.remote_routes = vec![route("fd10::/64", POLICY_SRC_IP)];
        let p = validate_spec(&i).unwrap();
        assert_eq!(p.link_families(), vec![Family::V4, Family::V6]);
        assert_eq!(p.remote_routes[0].policy, RoutePolicy::SrcIp);
    }

    #[test]
    fn empty_link_means_allocate_with_families_from_routes() {
        let mut i = ok_input();
        i.local_connect_ip.clear();
        i.remote_connect_ip.clear();
        let p = validate_spec(&i).unwrap();
        assert!(p.link.is_none() && p.spec().is_none());
        assert_eq!(p.link_families(), vec![Family::V4]);
        i.remote_routes = vec![route("fd10::/64", POLICY_DST_IP)];
        assert_eq!(
            validate_spec(&i).unwrap().link_families(),
            vec![Family::V4, Family::V6]
        );
    }

    #[test]
    fn name_rules() {
        for bad in [
            "",
            "Upper",
            "under_score",
            "-lead",
            "trail-",
            "dot.ted",
            &"a".repeat(64),
        ] {
            refused_on("peering.name", |i| i.name = bad.to_string());
        }
        for good in ["a", "0", "a-b", &"a".repeat(63)] {
            let mut i = ok_input();
            i.name = good.to_string();
            assert!(validate_spec(&i).is_ok(), "{good}");
        }
    }

    #[test]
    fn vpc_rules() {
        refused_on("peering.local_vpc", |i| i.local_vpc.clear());
        refused_on("peering.remote_vpc", |i| {
            i.remote_vpc = "x".repeat(MAX_VPC_LEN + 1)
        });
        refused_on("peering.local_vpc", |i| i.local_vpc = "a,b".into());
        refused_on("peering.remote_vpc", |i| i.remote_vpc = "a\nb".into());
    }

    #[test]
    fn self_peering() {
        refused_on("peering.remote_vpc", |i| i.remote_vpc = "vpc-1".into());
    }

    #[test]
    fn malformed_connect_address() {
        refused_on("peering.local_connect_ip", |i| {
            i.local_connect_ip = "169.254.0.1".into()
        });
        refused_on("peering.remote_connect_ip", |i| {
            i.remote_connect_ip = "nonsense/30".into()
        });
    }

    #[test]
    fn only_one_connect_address() {
        refused_on("peering.remote_connect_ip", |i| i.remote_connect_ip.clear());
        refused_on("peering.local_connect_ip", |i| i.local_connect_ip.clear());
    }

    #[test]
    fn connect_addresses_in_different_subnets() {
        refused_on("peering.remote_connect_ip", |i| {
            i.remote_connect_ip = "169.254.0.6/30".into()
        });
        refused_on("peering.remote_connect_ip", |i| {
            i.remote_connect_ip = "169.254.0.2/29".into()
        });
    }

    #[test]
    fn connect_addresses_equal() {
        refused_on("peering.remote_connect_ip", |i| {
            i.remote_connect_ip = "169.254.0.1/30".into()
        });
    }

    #[test]
    fn connect_network_and_broadcast_addresses() {
        refused_on("peering.local_connect_ip", |i| {
            i.local_connect_ip = "169.254.0.0/30".into()
        });
        refused_on("peering.local_connect_ip", |i| {
            i.local_connect_ip = "169.254.0.3/30".into()
        });
        refused_on("peering.remote_connect_ip", |i| {
            i.local_connect_ip = "fd00::1/126".into();
            i.remote_connect_ip = "fd00::/126".into();
            i.local_routes.clear();
        });
    }

    #[test]
    fn connect_not_unicast() {
        refused_on("peering.local_connect_ip", |i| {
            i.local_connect_ip = "224.0.0.1/30".into()
        });
    }

    #[test]
    fn connect_prefix_range() {
        refused_on("peering.local_connect_ip", |i| {
            i.local_connect_ip = "169.254.0.1/32".into();
        });
        refused_on("peering.local_connect_ip", |i| {
            i.local_connect_ip = "10.0.0.1/8".into()
        });
        refused_on("peering.local_connect_ip", |i| {
            i.local_connect_ip = "fd00::1/128".into();
            i.remote_connect_ip = "fd00::2/126".into();
            i.local_routes.clear();
        });
        // Both sides wrong: both named.
        let mut i = ok_input();
        i.local_connect_ip = "169.254.0.1/32".into();
        i.remote_connect_ip = "169.254.0.2/32".into();
        assert_eq!(
            fields(&i),
            vec!["peering.local_connect_ip", "peering.remote_connect_ip"]
        );
    }

    #[test]
    fn connect_family_mismatch() {
        refused_on("peering.remote_connect_ip", |i| {
            i.remote_connect_ip = "fd00::2/126".into();
        });
        refused_on("peering.remote_connect_ip", |i| {
            i.local_connect_ip = "169.254.0.1/30,fd00::1/126".into();
        });
    }

    #[test]
    fn connect_two_of_one_family() {
        refused_on("peering.local_connect_ip", |i| {
            i.local_connect_ip = "169.254.0.1/30,169.254.0.5/30".into();
        });
    }

    #[test]
    fn malformed_route_cidr() {
        refused_on("peering.local_routes[0].cidr", |i| {
            i.local_routes[0].cidr = "10.0.0.0".into()
        });
        refused_on("peering.local_routes[0].cidr", |i| {
            i.local_routes[0].cidr.clear()
        });
    }

    #[test]
    fn route_host_bits() {
        refused_on("peering.remote_routes[1].cidr", |i| {
            i.remote_routes = vec![route("10.0.0.0/16", 0), route("10.1.0.1/16", 0)];
        });
    }

    #[test]
    fn route_unknown_policy() {
        refused_on("peering.local_routes[0].policy", |i| {
            i.local_routes[0].policy = 7
        });
    }

    #[test]
    fn route_family_without_link_address() {
        refused_on("peering.local_routes[0].cidr", |i| {
            i.local_routes[0].cidr = "fd10::/64".into()
        });
    }

    #[test]
    fn route_overlapping_own_link() {
        refused_on("peering.local_routes[0].cidr", |i| {
            i.local_routes[0].cidr = "169.254.0.0/16".into()
        });
    }

    #[test]
    fn duplicate_route() {
        refused_on("peering.local_routes[1].cidr", |i| {
            i.local_routes.push(route("172.31.0.0/16", POLICY_DST_IP));
        });
        // Same prefix, other policy: two distinct routes.
        let mut i = ok_input();
        i.local_routes.push(route("172.31.0.0/16", POLICY_SRC_IP));
        assert!(validate_spec(&i).is_ok());
    }

    #[test]
    fn too_many_routes() {
        refused_on("peering.remote_routes", |i| {
            i.remote_routes = (0..=MAX_ROUTES_PER_SIDE)
                .map(|n| route(&format!("10.{}.{}.0/24", n / 256, n % 256), 0))
                .collect();
        });
    }

    #[test]
    fn collects_every_violation() {
        let input = UncheckedPeering {
            name: "Bad".into(),
            local_vpc: "".into(),
            remote_vpc: "v".into(),
            local_connect_ip: "169.254.0.1/30".into(),
            remote_connect_ip: "".into(),
            local_routes: vec![route("x", 0), route("10.0.0.1/8", 9)],
            remote_routes: vec![],
        };
        assert_eq!(
            fields(&input),
            vec![
                "peering.name",
                "peering.local_vpc",
                "peering.remote_connect_ip",
                "peering.local_routes[0].cidr",
                "peering.local_routes[1].policy",
                "peering.local_routes[1].cidr",
            ]
        );
    }
}
