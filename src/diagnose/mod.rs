//! DiagnosePeering's checks: pure functions over a [`Snapshot`] of what NB holds around one
//! peering and the rows the peering wants there. No I/O: the API gathers the snapshot
//! (`src/api/diagnose.rs`) and runs [`diagnose`] off the async workers.
//!
//! Each check has a stable name (the `check` of the API's `Finding`, listed in the proto);
//! global checks give one finding, per-side checks one per side, the message starting with
//! the side's VPC. A side whose router cannot be resolved gives only `router_exists`; a side
//! whose peer port is missing skips the checks of that port. Every finding names the NB rows
//! involved as `<table> <uuid> (<readable name>)`.
//!
//! The peering's traffic in a side's router S (peer P): packets from S's subnets to P's
//! (outbound: entering by any port but the peer port, routed by our dst-ip routes; replies
//! included) and packets from P's subnets to S's (inbound: entering by the peer port). P's
//! subnets are the prefixes our routes in S send to the peer; S's are those of our routes in P.

mod global;
pub mod matcher;
mod ports;
mod router;
mod routes;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::peering::desired::{DesiredPeering, DesiredRoute};
use crate::peering::{port_name, RoutePolicy, Side};
use crate::store::PeeringState;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The check passed.
    Ok,
    /// Worth a look; traffic may still flow.
    Warning,
    /// The peering's traffic is (at least partly) broken by what it names.
    Error,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The check's stable name.
    pub check: &'static str,
    /// How bad.
    pub severity: Severity,
    /// What was found.
    pub message: String,
    /// The NB rows involved (see [`RouterRow::label`] and friends).
    pub nb_rows: Vec<String>,
    /// The side's VPC of a per-side check; `None` for a global one.
    pub vpc: Option<String>,
}

impl Finding {
    fn new(check: &'static str, severity: Severity, message: String, nb_rows: Vec<String>) -> Self {
        Finding {
            check,
            severity,
            message,
            nb_rows,
            vpc: None,
        }
    }

    /// This finding with what it says about the side's VPC left out: for a caller who may
    /// see the peering but not that VPC's router (a tenant owning only the other side).
    pub fn withheld(self) -> Self {
        let vpc = self.vpc.clone().unwrap_or_default();
        Finding {
            message: format!("{vpc}: details withheld: the VPC is not the caller's"),
            nb_rows: Vec::new(),
            ..self
        }
    }
}

/// Everything the checks read.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The stored peering.
    pub peering: PeeringFacts,
    /// The rows it wants (as the worker derives them, or as it would want them if it passed
    /// the rules: see `refusal`).
    pub wanted: DesiredPeering,
    /// Why the peering fails the rules now, if it does.
    pub refusal: Option<String>,
    /// Local side, then remote side.
    pub sides: [SideSnapshot; 2],
    /// `NB_Global`'s configuration sequence numbers; `None` when NB has no such row.
    pub nb_global: Option<NbCfg>,
}

/// The stored peering's state.
#[derive(Debug, Clone)]
pub struct PeeringFacts {
    pub name: String,
    pub state: PeeringState,
    pub state_message: String,
    pub generation: i64,
    pub observed_generation: i64,
}

/// One side of the peering as NB holds it.
#[derive(Debug, Clone)]
pub struct SideSnapshot {
    /// The side's VPC (router name).
    pub vpc: String,
    /// Its one router, or why there is not exactly one.
    pub router: Result<RouterRow, String>,
    /// The port named as this side's peer port, on whatever router holds it.
    pub port: Option<PortRow>,
}

/// A `Logical_Router` with what the checks read of it.
#[derive(Debug, Clone, Default)]
pub struct RouterRow {
    pub uuid: String,
    pub name: String,
    pub options: BTreeMap<String, String>,
    pub routes: Vec<RouteRow>,
    pub policies: Vec<PolicyRow>,
}

/// A `Logical_Router_Port`.
#[derive(Debug, Clone, Default)]
pub struct PortRow {
    pub uuid: String,
    pub name: String,
    pub networks: Vec<String>,
    pub peer: Option<String>,
    pub enabled: Option<bool>,
    /// UUID of the router holding it (`None`: no router references it).
    pub router_uuid: Option<String>,
    /// The router's name.
    pub router_name: Option<String>,
    /// The peering an ovn-peerd row belongs to; `None` for a row ovn-peerd does not own.
    pub peering: Option<String>,
}

/// A `Logical_Router_Static_Route`.
#[derive(Debug, Clone, Default)]
pub struct RouteRow {
    pub uuid: String,
    pub ip_prefix: String,
    pub nexthop: String,
    /// `None` = dst-ip.
    pub policy: Option<String>,
    pub output_port: Option<String>,
    pub route_table: String,
    /// As [`PortRow::peering`].
    pub peering: Option<String>,
}

/// A `Logical_Router_Policy`.
#[derive(Debug, Clone, Default)]
pub struct PolicyRow {
    pub uuid: String,
    pub priority: i64,
    pub r#match: String,
    pub action: String,
}

/// `NB_Global`'s sequence numbers.
#[derive(Debug, Clone, Default)]
pub struct NbCfg {
    pub uuid: String,
    pub nb_cfg: i64,
    pub sb_cfg: i64,
    pub hv_cfg: i64,
}

impl RouterRow {
    /// `Logical_Router <uuid> (<name>)`.
    pub fn label(&self) -> String {
        format!("Logical_Router {} ({})", self.uuid, self.name)
    }
}

impl PortRow {
    /// `Logical_Router_Port <uuid> (<name>)`.
    pub fn label(&self) -> String {
        format!("Logical_Router_Port {} ({})", self.uuid, self.name)
    }
}

impl RouteRow {
    /// `Logical_Router_Static_Route <uuid> (<prefix> via <nexthop>[, src-ip][, table t])`.
    pub fn label(&self) -> String {
        let mut s = format!(
            "Logical_Router_Static_Route {} ({} via {}",
            self.uuid, self.ip_prefix, self.nexthop
        );
        if self.policy.as_deref() == Some("src-ip") {
            s.push_str(", src-ip");
        }
        if !self.route_table.is_empty() {
            s.push_str(&format!(", table {}", self.route_table));
        }
        s.push(')');
        s
    }

    /// (policy, prefix with host bits cleared) as OVN compares routes; `None` when unreadable.
    fn key(&self) -> Option<(RoutePolicy, IpNet)> {
        let policy = RoutePolicy::from_ovn(self.policy.as_deref())?;
        Some((policy, parse_prefix(&self.ip_prefix)?))
    }

    fn is_of(&self, peering: &str) -> bool {
        self.peering.as_deref() == Some(peering)
    }
}

impl PolicyRow {
    /// `Logical_Router_Policy <uuid> (priority <p>, <action> if <match>)`.
    pub fn label(&self) -> String {
        format!(
            "Logical_Router_Policy {} (priority {}, {} if {})",
            self.uuid, self.priority, self.action, self.r#match
        )
    }
}

impl NbCfg {
    fn label(&self) -> String {
        format!("NB_Global {}", self.uuid)
    }
}

/// A prefix as NB may write it: `10.0.0.0/8` or a bare address (a host route); host bits
/// cleared.
fn parse_prefix(s: &str) -> Option<IpNet> {
    match s.parse::<IpNet>() {
        Ok(net) => Some(net.trunc()),
        Err(_) => Some(IpNet::from(s.parse::<std::net::IpAddr>().ok()?)),
    }
}

/// A wanted route's label, for a route NB does not hold.
fn wanted_label(r: &DesiredRoute) -> String {
    format!(
        "{} via {} ({}, output_port {})",
        r.ip_prefix,
        r.nexthop,
        r.policy.as_ovn_str(),
        r.output_port
    )
}

/// One side as the per-side checks see it: its router, the routes the peering wants there
/// and the prefixes of each traffic direction.
struct SideView<'a> {
    side: Side,
    vpc: &'a str,
    router: &'a RouterRow,
    /// This side's peer port name.
    port_name: String,
    /// The routes the peering wants in this router.
    wanted: Vec<&'a DesiredRoute>,
    /// The other VPC's prefixes (dst-ip routes we install here).
    peer_nets: Vec<IpNet>,
    /// This VPC's prefixes (dst-ip routes we install in the other router).
    own_nets: Vec<IpNet>,
}

impl SideView<'_> {
    /// `vpc-1 (local)`, the start of every per-side message.
    fn who(&self) -> String {
        format!("{} ({})", self.vpc, self.side.as_str())
    }
}

fn dst_nets<'a>(routes: impl Iterator<Item = &'a DesiredRoute>) -> Vec<IpNet> {
    routes
        .filter(|r| r.policy == RoutePolicy::DstIp)
        .filter_map(|r| parse_prefix(&r.ip_prefix))
        .collect()
}

/// The findings of a peering that never reaches NB ([`PeeringState::in_northbound`] is false:
/// a cross-tenant request, a rejected or an expired one): its state only, since NB holds
/// nothing of it to check.
pub fn diagnose_outside_nb(peering: &PeeringFacts) -> Vec<Finding> {
    vec![global::peering_state(peering)]
}

/// Every check, in a stable order: global ones, then each side's.
pub fn diagnose(snap: &Snapshot) -> Vec<Finding> {
    let mut out = vec![
        global::peering_state(&snap.peering),
        global::desired_rows(snap),
        global::northd_sync(snap.nb_global.as_ref()),
    ];
    for (i, side) in Side::BOTH.into_iter().enumerate() {
        let start = out.len();
        side_checks(snap, i, side, &mut out);
        for f in &mut out[start..] {
            f.vpc = Some(snap.sides[i].vpc.clone());
        }
    }
    out
}

/// The per-side checks of side `i`.
fn side_checks(snap: &Snapshot, i: usize, side: Side, out: &mut Vec<Finding>) {
    let s = &snap.sides[i];
    let other_vpc = &snap.sides[1 - i].vpc;
    let router = match &s.router {
        Ok(r) => r,
        Err(why) => {
            out.push(Finding::new(
                "router_exists",
                Severity::Error,
                format!("{} ({}): {why}", s.vpc, side.as_str()),
                Vec::new(),
            ));
            return;
        }
    };
    let in_router = |vpc: &str| {
        snap.wanted
            .routes
            .iter()
            .filter(move |r| r.router == vpc)
            .collect::<Vec<_>>()
    };
    let view = SideView {
        side,
        vpc: &s.vpc,
        router,
        port_name: port_name(&s.vpc, other_vpc),
        wanted: in_router(&s.vpc),
        peer_nets: dst_nets(in_router(&s.vpc).into_iter()),
        own_nets: dst_nets(in_router(other_vpc).into_iter()),
    };
    out.push(Finding::new(
        "router_exists",
        Severity::Ok,
        format!("{}: router found", view.who()),
        vec![router.label()],
    ));
    ports::check(&view, snap, s.port.as_ref(), other_vpc, out);
    out.push(routes::installed(&view, &snap.peering.name));
    out.push(routes::ecmp(&view, &snap.peering.name));
    out.push(routes::more_specific(&view, &snap.peering.name));
    out.push(routes::src_ip(&view, &snap.peering.name));
    out.push(router::policies(&view));
    out.push(router::options(&view));
}
