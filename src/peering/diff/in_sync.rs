//! Whether NB already holds exactly one peering's rows, decided on borrowed columns: the
//! question a full pass asks of every peering, answered without copying a row.
//!
//! [`in_sync`] says yes exactly when [`plan`](super::plan) of that peering alone over those
//! rows plans nothing and finds it [`Outcome::InSync`](super::Outcome::InSync): the same
//! comparisons (`port_delta`, `route_delta`, `route_identity_eq`), the same one-row-per-wanted-row
//! matching. What `plan` decides across peerings (a port name claimed by two, a foreign
//! port in the way) is the caller's to rule out before asking.

use uuid::Uuid;

use super::{port_delta, route_delta, route_identity_eq, PortColumns, RouteColumns};
use crate::peering::desired::DesiredPeering;

/// The router whose `ports` or `static_routes` hold a row, as the caller knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterId<'a> {
    /// Its row UUID (the NB replica).
    Uuid(Uuid),
    /// Its UUID as text (an [`ActualPort`](super::ActualPort)).
    Text(&'a str),
}

impl RouterId<'_> {
    /// Whether it is the router a desired row names (`router_id`, a UUID as text).
    fn is(&self, want: &str) -> bool {
        match self {
            RouterId::Uuid(u) => Uuid::try_parse(want).is_ok_and(|w| w == *u),
            RouterId::Text(t) => *t == want,
        }
    }
}

/// An owned, attached port row of the peering.
#[derive(Debug, Clone, Copy)]
pub struct PortRow<'a> {
    /// The router holding it.
    pub router: RouterId<'a>,
    /// Its columns.
    pub columns: PortColumns<'a>,
}

/// An owned, attached route row of the peering.
#[derive(Debug, Clone, Copy)]
pub struct RouteRow<'a> {
    /// The router holding it.
    pub router: RouterId<'a>,
    /// Its columns.
    pub columns: RouteColumns<'a>,
}

/// Whether `ports` and `routes`, every owned row attached to a router that carries `d`'s
/// peering mark, are exactly what `d` wants: one row per wanted row, on its router, with no
/// column to update, and no row left over (a duplicate or a stale route would be deleted).
pub fn in_sync(d: &DesiredPeering, ports: &[PortRow<'_>], routes: &[RouteRow<'_>]) -> bool {
    if ports.len() != d.ports.len() || routes.len() != d.routes.len() {
        return false;
    }
    // Wanted rows pairwise distinct: then each matching exactly one row is a one-to-one match
    // (identities are equivalences), and with equal counts no row is left over.
    let distinct_ports = d
        .ports
        .iter()
        .enumerate()
        .all(|(i, a)| d.ports[..i].iter().all(|b| b.name != a.name));
    let distinct_routes = d.routes.iter().enumerate().all(|(i, a)| {
        d.routes[..i]
            .iter()
            .all(|b| b.router_id != a.router_id || !route_identity_eq(&desired_as_row(b), a))
    });
    if !distinct_ports || !distinct_routes {
        return false;
    }
    let ports_ok = d.ports.iter().all(|want| {
        let mut same = ports.iter().filter(|p| p.columns.name == want.name);
        match (same.next(), same.next()) {
            (Some(p), None) => {
                p.router.is(&want.router_id) && port_delta(&p.columns, want).is_empty()
            }
            _ => false,
        }
    });
    ports_ok
        && d.routes.iter().all(|want| {
            let mut same = routes
                .iter()
                .filter(|r| r.router.is(&want.router_id) && route_identity_eq(&r.columns, want));
            match (same.next(), same.next()) {
                (Some(r), None) => route_delta(&r.columns, want).is_empty(),
                _ => false,
            }
        })
}

/// A desired route seen as a row, to compare two desired routes by identity.
fn desired_as_row(r: &crate::peering::desired::DesiredRoute) -> RouteColumns<'_> {
    RouteColumns {
        ip_prefix: &r.ip_prefix,
        nexthop: &r.nexthop,
        policy: Some(r.policy),
        output_port: Some(&r.output_port),
        route_table: &r.route_table,
        has_options: false,
        bfd: false,
        external_ids: &r.external_ids,
    }
}
