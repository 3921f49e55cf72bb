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
    is_link_local_v6, overlaps, ConnectAddrs, Family, PeeringSpec, Refusal, RefusalKind,
    RoutePolicy, RouteSpec, Side, Violation,
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

/// One route as the API received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UncheckedRoute {
    /// The prefix text, e.g. `"10.1.0.0/16"`.
    pub cidr: String,
    /// The policy, or the API enum value that names none (kept for the refusal message).
    pub policy: Result<RoutePolicy, i32>,
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
    // Link-local addresses (fe80::/10, 169.254.0.0/16) need nothing more than any link: both
    // ends in one subnet, distinct addresses. That the nexthop is ambiguous among a router's
    // ports (each has its own fe80::/64 address) is handled by every route naming its port.
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
            Ok(p) => Some(p),
            Err(other) => {
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
        if is_link_local_v6(&prefix) {
            // Accepted, such a route would be ACTIVE and never carry a packet.
            v.push(Violation::new(
                cidr_field,
                format!("{prefix} is IPv6 link-local (fe80::/10), which routers never forward"),
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
mod tests;
