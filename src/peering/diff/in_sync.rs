//! Whether NB already holds exactly one peering's rows, decided on borrowed columns: the
//! question a full pass asks of every peering, answered without copying a row.
//!
//! [`in_sync`] says yes exactly when [`plan`](super::plan) of that peering alone over those
//! rows plans nothing and finds it [`Outcome::InSync`](super::Outcome::InSync): the same
//! comparisons (`port_delta`, `route_delta`, `route_identity_eq`), the same one-row-per-wanted-row
//! matching. What `plan` decides across peerings (a port name claimed by two, a foreign
//! port in the way) is ruled out by [`peerings_in_sync`], which asks it of every peering.

use std::collections::{HashMap, HashSet};

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
    /// Whether it is the router a desired row names (`router_id`, a UUID as text): the text
    /// compared as `plan` compares it, with the UUID in its canonical (lower-case, hyphenated)
    /// form; no allocation.
    fn is(&self, want: &str) -> bool {
        match self {
            RouterId::Uuid(u) => *u.hyphenated().encode_lower(&mut Uuid::encode_buffer()) == *want,
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

/// A row carrying a peering's mark, as the caller holds it.
#[derive(Debug, Clone, Copy)]
pub enum MarkedRow<'a> {
    /// A `Logical_Router_Port`.
    Port {
        /// Whether it is this deployment's (the plan sees it); otherwise the plan ignores it,
        /// or blocks the peering if it holds a wanted name (then no owned row can hold that
        /// name, NB names being unique, and the count fails).
        ours: bool,
        /// The router holding it; `None` when detached (the plan never sees it).
        router: Option<RouterId<'a>>,
        /// Its columns.
        columns: PortColumns<'a>,
    },
    /// A `Logical_Router_Static_Route`.
    Route {
        /// As for a port; a route that is not ours the plan ignores.
        ours: bool,
        /// The router holding it; `None` when detached.
        router: Option<RouterId<'a>>,
        /// Its columns.
        columns: RouteColumns<'a>,
    },
}

/// The names of the `desired` peerings [`in_sync`] holds exactly, `rows_of(name)` giving every
/// row carrying that peering's mark. A peering is left out (the plan decides it) when another
/// desired peering wants one of its port names or has its name, or a row with its mark is
/// ours but detached.
/// Rows that are not ours are skipped: the plan does not see them (they are not copied for
/// it) and one holding a wanted port name makes the counts differ. Then `plan` over the other
/// peerings and the rows of none of these plans exactly what it plans over everything, and
/// finds these in sync (the property `prop_in_sync_selection_changes_no_plan`).
pub fn peerings_in_sync<'a, I>(
    desired: &[DesiredPeering],
    mut rows_of: impl FnMut(&str) -> I,
) -> HashSet<String>
where
    I: IntoIterator<Item = MarkedRow<'a>>,
{
    // A port name two desired peerings want is the plan's to settle (one of them is blocked).
    let mut wanted: HashMap<&str, usize> = HashMap::new();
    for p in desired.iter().flat_map(|d| &d.ports) {
        *wanted.entry(p.name.as_str()).or_default() += 1;
    }
    // A name desired twice (never from Postgres, where it is the key): `plan` keeps the first.
    let mut names: HashMap<&str, usize> = HashMap::new();
    for d in desired {
        *names.entry(d.name.as_str()).or_default() += 1;
    }
    let mut out = HashSet::new();
    for d in desired {
        if names[d.name.as_str()] > 1 || d.ports.iter().any(|p| wanted[p.name.as_str()] > 1) {
            continue;
        }
        if holds_exactly(d, rows_of(&d.name)) {
            out.insert(d.name.clone());
        }
    }
    out
}

/// What [`peerings_in_sync`] asks of one peering `d` whose name and port names no other
/// desired peering has: whether `rows` (every row carrying its mark) hold it exactly.
/// Rows that are not ours are skipped; a detached row of ours says no (the plan decides).
pub fn holds_exactly<'a>(
    d: &DesiredPeering,
    rows: impl IntoIterator<Item = MarkedRow<'a>>,
) -> bool {
    let (mut ports, mut routes) = (Vec::new(), Vec::new());
    for row in rows {
        match row {
            MarkedRow::Port { ours: false, .. } | MarkedRow::Route { ours: false, .. } => {}
            // Detached: the plan ignores it, so do not decide.
            MarkedRow::Port { router: None, .. } | MarkedRow::Route { router: None, .. } => {
                return false
            }
            MarkedRow::Port {
                router: Some(router),
                columns,
                ..
            } => ports.push(PortRow { router, columns }),
            MarkedRow::Route {
                router: Some(router),
                columns,
                ..
            } => routes.push(RouteRow { router, columns }),
        }
    }
    in_sync(d, &ports, &routes)
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
