//! A router's rows read in place ([`super::Topology::visit_routers_named`]): what the rules
//! read of a port or a route, borrowed from wherever NB is held, so that resolving a hub's
//! router (a port and a route per spoke) copies nothing but the few facts the rules keep.

use std::fmt;

use ipnet::IpNet;
use uuid::Uuid;

use super::{PortView, RouteView, RouterView};
use crate::peering::RoutePolicy;

/// A row's UUID as its holder has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowId<'a> {
    /// As text (a [`RouterView`]).
    Text(&'a str),
    /// As a UUID (the NB replica).
    Uuid(Uuid),
}

impl fmt::Display for RowId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowId::Text(t) => f.write_str(t),
            RowId::Uuid(u) => u.fmt(f),
        }
    }
}

/// A [`RowId`], owned: kept beside what the rules keep of a row, to find that row again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowKey {
    /// As [`RowId::Text`].
    Text(Box<str>),
    /// As [`RowId::Uuid`].
    Uuid(Uuid),
}

impl RowKey {
    /// Borrowed.
    pub fn as_id(&self) -> RowId<'_> {
        match self {
            RowKey::Text(t) => RowId::Text(t),
            RowKey::Uuid(u) => RowId::Uuid(*u),
        }
    }
}

impl From<RowId<'_>> for RowKey {
    fn from(id: RowId<'_>) -> Self {
        match id {
            RowId::Text(t) => RowKey::Text(t.into()),
            RowId::Uuid(u) => RowKey::Uuid(u),
        }
    }
}

impl fmt::Display for RowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_id().fmt(f)
    }
}

/// A `Logical_Router_Port`, borrowed: the fields of a [`PortView`].
#[derive(Debug, Clone, Copy)]
pub struct PortRef<'a> {
    /// `name`.
    pub name: &'a str,
    /// `networks`.
    pub networks: &'a [String],
    /// `peer`.
    pub peer: Option<&'a str>,
    /// As [`PortView::is_gateway`].
    pub is_gateway: bool,
    /// As [`PortView::peering`].
    pub peering: Option<&'a str>,
    /// As [`PortView::instance`].
    pub instance: Option<&'a str>,
}

impl PortRef<'_> {
    /// A router-to-router port (`peer` set and not empty).
    pub fn is_peer(&self) -> bool {
        self.peer.is_some_and(|p| !p.is_empty())
    }

    /// Its networks, host bits cleared (unparseable ones skipped).
    pub fn nets(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.networks
            .iter()
            .filter_map(|n| n.parse::<IpNet>().ok())
            .map(|n| n.trunc())
    }
}

impl<'a> From<&'a PortView> for PortRef<'a> {
    fn from(p: &'a PortView) -> Self {
        PortRef {
            name: &p.name,
            networks: &p.networks,
            peer: p.peer.as_deref(),
            is_gateway: p.is_gateway,
            peering: p.peering.as_deref(),
            instance: p.instance.as_deref(),
        }
    }
}

/// A `Logical_Router_Static_Route`, borrowed: the fields of a [`RouteView`].
#[derive(Debug, Clone, Copy)]
pub struct RouteRef<'a> {
    /// The row UUID.
    pub id: RowId<'a>,
    /// `ip_prefix`.
    pub ip_prefix: &'a str,
    /// `nexthop`.
    pub nexthop: &'a str,
    /// `policy`.
    pub policy: Option<&'a str>,
    /// `route_table`.
    pub route_table: &'a str,
    /// As [`RouteView::peering`].
    pub peering: Option<&'a str>,
    /// As [`RouteView::instance`].
    pub instance: Option<&'a str>,
}

impl RouteRef<'_> {
    /// As [`RouteView::key`].
    pub fn key(&self) -> Option<(RoutePolicy, IpNet)> {
        super::route_key(self.policy, self.ip_prefix)
    }

    /// An owned copy.
    pub fn to_view(&self) -> RouteView {
        RouteView {
            id: self.id.to_string(),
            ip_prefix: self.ip_prefix.to_string(),
            nexthop: self.nexthop.to_string(),
            policy: self.policy.map(str::to_string),
            route_table: self.route_table.to_string(),
            peering: self.peering.map(str::to_string),
            instance: self.instance.map(str::to_string),
        }
    }
}

impl<'a> From<&'a RouteView> for RouteRef<'a> {
    fn from(r: &'a RouteView) -> Self {
        RouteRef {
            id: RowId::Text(&r.id),
            ip_prefix: &r.ip_prefix,
            nexthop: &r.nexthop,
            policy: r.policy.as_deref(),
            route_table: &r.route_table,
            peering: r.peering.as_deref(),
            instance: r.instance.as_deref(),
        }
    }
}

/// One router, read in place: its id, name, and each port and route in order.
pub trait RouterRows {
    /// The row UUID, as text.
    fn id(&self) -> String;
    /// `name`.
    fn name(&self) -> &str;
    /// Each port, in the router's order.
    fn each_port(&self, f: &mut dyn FnMut(PortRef<'_>));
    /// Each static route (all route tables), in the router's order.
    fn each_route(&self, f: &mut dyn FnMut(RouteRef<'_>));
    /// When the topology it came from answers [`Topology::visit_ports_overlapping`] and
    /// [`Topology::visit_routes_with_prefix`] by lookups (a replica that indexes its routers'
    /// rows): how many ports and routes it holds. A big resolved router (a hub's: a port and a
    /// route per spoke) then keeps none of its rows and asks them per question, instead of
    /// being read whole per create and per narrow pass. Told by the router being resolved, not
    /// asked of the topology by name again (a full pass resolves 200,000 routers). Default:
    /// `None`, the rows are read once and kept.
    fn indexed_rows(&self) -> Option<usize> {
        None
    }
}

impl RouterRows for RouterView {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn each_port(&self, f: &mut dyn FnMut(PortRef<'_>)) {
        self.ports.iter().for_each(|p| f(p.into()));
    }

    fn each_route(&self, f: &mut dyn FnMut(RouteRef<'_>)) {
        self.routes.iter().for_each(|r| f(r.into()));
    }
}
