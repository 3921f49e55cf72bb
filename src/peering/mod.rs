//! Pure peering rules: the domain types of a peering and every decision about one that can be
//! made on plain data.
//!
//! This module owns request validation ([`validate`]), interconnect link allocation
//! ([`links`]), the topology preconditions ([`topology`]), the Northbound rows a peering
//! should produce ([`desired`]), which rows are ours to change ([`owner`]) and the plan that
//! brings actual rows to desired ones ([`diff`]). It must not do I/O, block, spawn or await: callers hand it snapshots (NB
//! routers through the [`topology::Topology`] trait, stored peerings as [`PeeringSpec`]s) and
//! act on what it returns. Refusals carry the offending request field
//! (`peering.local_routes[2].cidr`) so the API layer can map them to
//! `google.rpc.BadRequest` / `google.rpc.PreconditionFailure` without re-deriving anything.

pub mod desired;
pub mod diff;
pub mod input;
pub mod labels;
pub mod links;
pub mod owner;
pub mod topology;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Longest VPC name, in bytes: one limit for every request that names a VPC.
pub const MAX_VPC_LEN: usize = 200;

/// `external_ids` key marking a Northbound row as written by ovn-peerd; value [`OWNER_VALUE`].
pub const OWNER_KEY: &str = "ovn-peerd:owner";
/// The value of [`OWNER_KEY`] on rows we own.
pub const OWNER_VALUE: &str = "ovn-peerd";
/// `external_ids` key holding the name of the peering a row belongs to.
pub const PEERING_KEY: &str = "ovn-peerd:peering";
/// `external_ids` key holding the peering generation the row was written for.
pub const GENERATION_KEY: &str = "ovn-peerd:generation";
/// `external_ids` key holding the side ([`Side::as_str`]) of the peering the row belongs to.
pub const SIDE_KEY: &str = "ovn-peerd:side";
pub use owner::INSTANCE_KEY;

/// A row's `external_ids`, however they are stored (a desired row's `BTreeMap`, the NB
/// replica's compact map): what the ownership rules read.
pub trait ExternalIds: std::fmt::Debug {
    fn id(&self, key: &str) -> Option<&str>;
    /// A plain copy (to edit, e.g. our markers merged into a row's ids).
    fn to_map(&self) -> BTreeMap<String, String>;
}

impl ExternalIds for BTreeMap<String, String> {
    fn id(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
    fn to_map(&self) -> BTreeMap<String, String> {
        self.clone()
    }
}

/// Whether a row's `external_ids` mark it as ours. Rows that are not are never changed.
pub fn is_owned(external_ids: &(impl ExternalIds + ?Sized)) -> bool {
    external_ids.id(OWNER_KEY) == Some(OWNER_VALUE)
}

/// Whether a row is this deployment's (`instance`: its id, `None` when unknown): marked as
/// ovn-peerd's and not by another deployment (a row without an instance mark, written by an
/// older version, belongs to the holder of its peering name), as the rules read it.
pub fn is_ours(external_ids: &(impl ExternalIds + ?Sized), instance: Option<&str>) -> bool {
    is_owned(external_ids)
        && match (instance, external_ids.id(INSTANCE_KEY)) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => true,
        }
}

/// One of the two VPCs of a peering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// `local_vpc`.
    Local,
    /// `remote_vpc`.
    Remote,
}

impl Side {
    /// Both sides, local first.
    pub const BOTH: [Side; 2] = [Side::Local, Side::Remote];

    /// `"local"` / `"remote"`: the prefix of the request fields of this side and the value
    /// of [`SIDE_KEY`].
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Remote => "remote",
        }
    }

    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Local => Side::Remote,
            Side::Remote => Side::Local,
        }
    }
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of a network.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// `"IPv4"` / `"IPv6"`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// What a static route matches on (NB `Logical_Router_Static_Route.policy`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum RoutePolicy {
    /// Destination address (OVN's default when the column is empty).
    #[default]
    DstIp,
    /// Source address.
    SrcIp,
}

impl RoutePolicy {
    /// The NB column value: `"dst-ip"` / `"src-ip"`.
    pub fn as_ovn_str(self) -> &'static str {
        match self {
            RoutePolicy::DstIp => "dst-ip",
            RoutePolicy::SrcIp => "src-ip",
        }
    }

    /// Reads the NB column; empty (absent) means `dst-ip`. `None` for an unknown value.
    pub fn from_ovn(policy: Option<&str>) -> Option<RoutePolicy> {
        match policy {
            None | Some("") | Some("dst-ip") => Some(RoutePolicy::DstIp),
            Some("src-ip") => Some(RoutePolicy::SrcIp),
            Some(_) => None,
        }
    }
}

/// A route one side sends to the other: a prefix without host bits and a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RouteSpec {
    /// The prefix, host bits clear.
    pub prefix: IpNet,
    /// What the route matches on.
    pub policy: RoutePolicy,
}

impl RouteSpec {
    /// A dst-ip route for `prefix` (host bits are cleared).
    pub fn dst(prefix: IpNet) -> RouteSpec {
        RouteSpec {
            prefix: prefix.trunc(),
            policy: RoutePolicy::DstIp,
        }
    }
}

/// The interconnect address(es) of one side's port: a host address with the link's prefix
/// length, at most one per family. Written as Kube-OVN does: `"169.254.0.1/30,fd00::1/126"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectAddrs {
    /// The IPv4 address and link prefix length.
    pub v4: Option<Ipv4Net>,
    /// The IPv6 address and link prefix length.
    pub v6: Option<Ipv6Net>,
}

/// Why a connect address string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectAddrsError {
    /// The string is empty.
    #[error("is empty")]
    Empty,
    /// One comma-separated item is not `address/prefix`.
    #[error("{0:?} is not an address with prefix length, e.g. 169.254.0.1/30 or fd00::1/126")]
    Malformed(String),
    /// Two addresses of one family.
    #[error("has more than one {} address", .0.name())]
    DuplicateFamily(Family),
    /// More than two items.
    #[error("has more than two addresses (at most one IPv4 and one IPv6)")]
    TooMany,
}

impl ConnectAddrs {
    /// Whether neither family is set.
    pub fn is_empty(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }

    /// The addresses (host address + prefix length), IPv4 first.
    pub fn addrs(&self) -> Vec<IpNet> {
        self.v4
            .map(IpNet::V4)
            .into_iter()
            .chain(self.v6.map(IpNet::V6))
            .collect()
    }

    /// The link networks (host bits cleared), IPv4 first.
    pub fn networks(&self) -> Vec<IpNet> {
        self.addrs().iter().map(IpNet::trunc).collect()
    }

    /// The families present, IPv4 first.
    pub fn families(&self) -> Vec<Family> {
        self.addrs().iter().map(Family::of).collect()
    }

    /// The address (host address + prefix length) of a family.
    pub fn get(&self, family: Family) -> Option<IpNet> {
        match family {
            Family::V4 => self.v4.map(IpNet::V4),
            Family::V6 => self.v6.map(IpNet::V6),
        }
    }

    /// The bare host address of a family: a route's nexthop.
    pub fn host(&self, family: Family) -> Option<IpAddr> {
        self.get(family).map(|n| n.addr())
    }

    /// Sets the address of `addr`'s family, replacing any.
    pub fn set(&mut self, addr: IpNet) {
        match addr {
            IpNet::V4(a) => self.v4 = Some(a),
            IpNet::V6(a) => self.v6 = Some(a),
        }
    }
}

impl FromStr for ConnectAddrs {
    type Err = ConnectAddrsError;

    /// Parses `"a/p"` or `"a/p,b/p"` strictly: no blanks, every item with a prefix length.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ConnectAddrsError::Empty);
        }
        let items: Vec<&str> = s.split(',').collect();
        if items.len() > 2 {
            return Err(ConnectAddrsError::TooMany);
        }
        let mut out = ConnectAddrs::default();
        for item in items {
            let net: IpNet = item
                .parse()
                .map_err(|_| ConnectAddrsError::Malformed(item.to_string()))?;
            if out.get(Family::of(&net)).is_some() {
                return Err(ConnectAddrsError::DuplicateFamily(Family::of(&net)));
            }
            out.set(net);
        }
        Ok(out)
    }
}

impl fmt::Display for ConnectAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.addrs().iter().map(IpNet::to_string).collect();
        f.write_str(&items.join(","))
    }
}

/// A complete, validated peering: what the store keeps and the worker converges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeeringSpec {
    /// Unique name (a DNS label).
    pub name: String,
    /// The first VPC (NB `Logical_Router` name).
    pub local_vpc: String,
    /// The second VPC.
    pub remote_vpc: String,
    /// `local_vpc`'s port addresses.
    pub local_connect: ConnectAddrs,
    /// `remote_vpc`'s port addresses; same families and link networks as `local_connect`.
    pub remote_connect: ConnectAddrs,
    /// Routes installed in `local_vpc` via `remote_connect`; empty = automatic.
    pub local_routes: Vec<RouteSpec>,
    /// Routes installed in `remote_vpc` via `local_connect`; empty = automatic.
    pub remote_routes: Vec<RouteSpec>,
}

impl PeeringSpec {
    /// The VPC of a side.
    pub fn vpc(&self, side: Side) -> &str {
        match side {
            Side::Local => &self.local_vpc,
            Side::Remote => &self.remote_vpc,
        }
    }

    /// The connect addresses of a side's port.
    pub fn connect(&self, side: Side) -> &ConnectAddrs {
        match side {
            Side::Local => &self.local_connect,
            Side::Remote => &self.remote_connect,
        }
    }

    /// The explicit routes installed in a side's VPC (empty = automatic).
    pub fn routes(&self, side: Side) -> &[RouteSpec] {
        match side {
            Side::Local => &self.local_routes,
            Side::Remote => &self.remote_routes,
        }
    }

    /// The side on which `vpc` takes part, if it does.
    pub fn side_of(&self, vpc: &str) -> Option<Side> {
        Side::BOTH.into_iter().find(|s| self.vpc(*s) == vpc)
    }
}

/// One broken rule, naming the request field it concerns (`peering.local_connect_ip`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The request field path, e.g. `peering.local_routes[2].cidr`.
    pub field: String,
    /// What is wrong, for humans.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Violation {
        Violation {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Which gRPC status a refusal maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request itself is wrong (`google.rpc.BadRequest`).
    InvalidArgument,
    /// The request is fine but the world is not (`google.rpc.PreconditionFailure`).
    FailedPrecondition,
}

/// A refused peering with every violation found (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// INVALID_ARGUMENT or FAILED_PRECONDITION.
    pub kind: RefusalKind,
    /// Every violation, in the order the rules were checked.
    pub violations: Vec<Violation>,
}

impl Refusal {
    /// A refusal with one violation.
    pub fn single(
        kind: RefusalKind,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Refusal {
        Refusal {
            kind,
            violations: vec![Violation::new(field, description)],
        }
    }

    /// `Err` of kind `kind` when there are violations, `Ok(value)` otherwise.
    pub fn check<T>(kind: RefusalKind, violations: Vec<Violation>, value: T) -> Result<T, Refusal> {
        if violations.is_empty() {
            Ok(value)
        } else {
            Err(Refusal { kind, violations })
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.violations.iter().map(Violation::to_string).collect();
        f.write_str(&items.join("; "))
    }
}

impl std::error::Error for Refusal {}

/// The name of `this_vpc`'s port towards `other_vpc` (Kube-OVN's naming: `vpc-1-vpc-2`).
/// Its peer is `port_name(other_vpc, this_vpc)`.
pub fn port_name(this_vpc: &str, other_vpc: &str) -> String {
    format!("{this_vpc}-{other_vpc}")
}

/// IPv6 link-local unicast space. Every OVN router port holds an address in it (fe80::/64,
/// derived from its MAC), so a nexthop in it names no port by itself: every route we install
/// names its output port. Addresses in it are never forwarded by routers (RFC 4291).
pub const V6_LINK_LOCAL: Ipv6Net =
    match Ipv6Net::new(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10) {
        Ok(n) => n,
        Err(_) => panic!("fe80::/10 is a valid prefix"),
    };

/// Whether `net` lies within IPv6 link-local space (fe80::/10).
pub fn is_link_local_v6(net: &IpNet) -> bool {
    match net {
        IpNet::V6(n) => V6_LINK_LOCAL.contains(n),
        IpNet::V4(_) => false,
    }
}

/// Whether two networks share any address (false across families).
pub(crate) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_addrs_parse_and_print_single_and_dual_stack() {
        let v4: ConnectAddrs = "169.254.0.1/30".parse().unwrap();
        assert_eq!(v4.families(), vec![Family::V4]);
        assert_eq!(v4.to_string(), "169.254.0.1/30");
        assert_eq!(
            v4.networks(),
            vec!["169.254.0.0/30".parse::<IpNet>().unwrap()]
        );

        let v6: ConnectAddrs = "fd00::1/126".parse().unwrap();
        assert_eq!(v6.families(), vec![Family::V6]);
        assert_eq!(v6.to_string(), "fd00::1/126");

        let dual: ConnectAddrs = "fd00::1/126,169.254.0.1/30".parse().unwrap();
        // Printed IPv4 first, whatever the input order.
        assert_eq!(dual.to_string(), "169.254.0.1/30,fd00::1/126");
        assert_eq!(dual.host(Family::V6), Some("fd00::1".parse().unwrap()));
        assert_eq!(dual.to_string().parse::<ConnectAddrs>().unwrap(), dual);
    }

    #[test]
    fn connect_addrs_reject_bad_syntax() {
        let err = |s: &str| s.parse::<ConnectAddrs>().unwrap_err();
        assert_eq!(err(""), ConnectAddrsError::Empty);
        assert!(matches!(
            err("169.254.0.1"),
            ConnectAddrsError::Malformed(_)
        ));
        assert!(matches!(
            err("169.254.0.1/33"),
            ConnectAddrsError::Malformed(_)
        ));
        assert!(matches!(
            err("169.254.0.1/30, fd00::1/126"),
            ConnectAddrsError::Malformed(_)
        ));
        assert!(matches!(
            err("169.254.0.1/30,"),
            ConnectAddrsError::Malformed(_)
        ));
        assert_eq!(
            err("169.254.0.1/30,169.254.0.5/30"),
            ConnectAddrsError::DuplicateFamily(Family::V4)
        );
        assert_eq!(err("a,b,c"), ConnectAddrsError::TooMany);
    }

    #[test]
    fn route_policy_ovn_strings() {
        assert_eq!(RoutePolicy::DstIp.as_ovn_str(), "dst-ip");
        assert_eq!(RoutePolicy::SrcIp.as_ovn_str(), "src-ip");
        assert_eq!(RoutePolicy::from_ovn(None), Some(RoutePolicy::DstIp));
        assert_eq!(RoutePolicy::from_ovn(Some("")), Some(RoutePolicy::DstIp));
        assert_eq!(
            RoutePolicy::from_ovn(Some("src-ip")),
            Some(RoutePolicy::SrcIp)
        );
        assert_eq!(RoutePolicy::from_ovn(Some("bogus")), None);
    }

    #[test]
    fn refusal_display_lists_every_violation() {
        let r = Refusal {
            kind: RefusalKind::InvalidArgument,
            violations: vec![
                Violation::new("peering.name", "is empty"),
                Violation::new("peering.local_vpc", "is empty"),
            ],
        };
        assert_eq!(
            r.to_string(),
            "peering.name: is empty; peering.local_vpc: is empty"
        );
        assert!(Refusal::check(RefusalKind::InvalidArgument, vec![], 1).is_ok());
        let one = Refusal::single(RefusalKind::FailedPrecondition, "peering.name", "taken");
        assert_eq!(one.to_string(), "peering.name: taken");
    }

    #[test]
    fn ownership_marker() {
        let mut ids = BTreeMap::new();
        assert!(!is_owned(&ids));
        ids.insert(OWNER_KEY.to_string(), "kube-ovn".to_string());
        assert!(!is_owned(&ids));
        ids.insert(OWNER_KEY.to_string(), OWNER_VALUE.to_string());
        assert!(is_owned(&ids));
    }

    #[test]
    fn link_local_v6() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        assert!(is_link_local_v6(&n("fe80::a:1/64")));
        assert!(is_link_local_v6(&n("febf:1::/64")));
        assert!(!is_link_local_v6(&n("fec0::/64")));
        assert!(!is_link_local_v6(&n("fe80::/9")));
        assert!(!is_link_local_v6(&n("fd00::1/126")));
        assert!(!is_link_local_v6(&n("169.254.0.1/30")));
    }

    #[test]
    fn overlap_is_symmetric_and_family_aware() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        assert!(overlaps(&n("10.0.0.0/8"), &n("10.1.0.0/16")));
        assert!(overlaps(&n("10.1.0.0/16"), &n("10.0.0.0/8")));
        assert!(!overlaps(&n("10.0.0.0/16"), &n("10.1.0.0/16")));
        assert!(!overlaps(&n("0.0.0.0/0"), &n("::/0")));
    }
}
