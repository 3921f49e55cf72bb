//! What the rules read of NB rows, owned: a port, a route, a router (the trait
//! [`super::Topology`] hands them out; tests build them by hand).

use ipnet::IpNet;

use super::{holder, Topology};
use crate::peering::RoutePolicy;

/// A `Logical_Router_Port` as far as peering cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortView {
    /// `name` (unique across NB).
    pub name: String,
    /// `networks`, e.g. `"10.0.0.1/24"`.
    pub networks: Vec<String>,
    /// `peer`: set on router-to-router ports.
    pub peer: Option<String>,
    /// `gateway_chassis` non-empty or `ha_chassis_group` set.
    pub is_gateway: bool,
    /// The peering named in `external_ids` when ovn-peerd owns the row (`Some("")` for an
    /// owned row without a peering name); `None` for a row ovn-peerd does not own.
    pub peering: Option<String>,
    /// The deployment that wrote an owned row (`ovn-peerd:instance`), when it says.
    pub instance: Option<String>,
}

/// A `Logical_Router_Static_Route` as installed in NB, for the ECMP rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteView {
    /// The row UUID.
    pub id: String,
    /// `ip_prefix` as NB holds it (host bits and prefix length as written).
    pub ip_prefix: String,
    /// `nexthop`.
    pub nexthop: String,
    /// `policy` (`None` = dst-ip).
    pub policy: Option<String>,
    /// `route_table` ("" = the main table).
    pub route_table: String,
    /// As [`PortView::peering`].
    pub peering: Option<String>,
    /// As [`PortView::instance`].
    pub instance: Option<String>,
}

impl RouteView {
    /// `(policy, prefix)` as `ovn-nbctl lr-route-add` compares routes (host bits cleared, a
    /// bare address is a host route); `None` when NB holds something we cannot read.
    pub fn key(&self) -> Option<(RoutePolicy, IpNet)> {
        route_key(self.policy.as_deref(), &self.ip_prefix)
    }

    pub(super) fn describe(&self, vpc: &str) -> String {
        let owner = holder(self.peering.as_deref(), self.instance.as_deref());
        format!(
            "route {} via {} (row {}, {owner}) in router {vpc:?}",
            self.ip_prefix, self.nexthop, self.id
        )
    }
}

/// A route's `(policy, prefix)` as [`RouteView::key`] reads it.
pub(super) fn route_key(policy: Option<&str>, ip_prefix: &str) -> Option<(RoutePolicy, IpNet)> {
    let policy = RoutePolicy::from_ovn(policy)?;
    let prefix = match ip_prefix.parse::<IpNet>() {
        Ok(net) => net.trunc(),
        Err(_) => IpNet::from(ip_prefix.parse::<std::net::IpAddr>().ok()?),
    };
    Some((policy, prefix))
}

/// A `Logical_Router` as far as peering cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterView {
    /// The row UUID.
    pub id: String,
    /// `name` (not unique in NB).
    pub name: String,
    /// Its ports.
    pub ports: Vec<PortView>,
    /// Its static routes, all route tables.
    pub routes: Vec<RouteView>,
}

impl Topology for [RouterView] {
    fn routers_named(&self, name: &str) -> Vec<RouterView> {
        self.iter().filter(|r| r.name == name).cloned().collect()
    }

    fn port_named(&self, name: &str) -> Option<PortView> {
        self.iter()
            .flat_map(|r| &r.ports)
            .find(|p| p.name == name)
            .cloned()
    }

    fn router_of_port(&self, port: &str) -> Option<String> {
        self.iter()
            .find(|r| r.ports.iter().any(|p| p.name == port))
            .map(|r| r.name.clone())
    }
}

impl Topology for Vec<RouterView> {
    fn routers_named(&self, name: &str) -> Vec<RouterView> {
        self.as_slice().routers_named(name)
    }

    fn port_named(&self, name: &str) -> Option<PortView> {
        self.as_slice().port_named(name)
    }

    fn router_of_port(&self, port: &str) -> Option<String> {
        self.as_slice().router_of_port(port)
    }
}
