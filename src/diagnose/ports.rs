//! The peer port of one side: it exists on the side's router, names the other side's port
//! as its `peer`, is enabled and carries the link addresses.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::{Finding, PortRow, Severity, SideView, Snapshot};

/// `peer_port_exists`, then (when it exists) `peer_port_peer`, `peer_port_enabled` and
/// `peer_port_networks`.
pub(super) fn check(
    v: &SideView<'_>,
    snap: &Snapshot,
    port: Option<&PortRow>,
    other_vpc: &str,
    out: &mut Vec<Finding>,
) {
    let who = v.who();
    let Some(port) = port else {
        out.push(Finding::new(
            "peer_port_exists",
            Severity::Error,
            format!(
                "{who}: no Logical_Router_Port {:?} in router {:?}: traffic to {other_vpc:?} has no way out",
                v.port_name, v.vpc
            ),
            vec![v.router.label()],
        ));
        return;
    };
    let mut exists = Finding::new(
        "peer_port_exists",
        Severity::Ok,
        format!("{who}: port {:?} is on router {:?}", port.name, v.vpc),
        vec![port.label()],
    );
    if port.router_uuid.as_deref() != Some(v.router.uuid.as_str()) {
        exists.severity = Severity::Error;
        exists.message = match &port.router_name {
            Some(r) => format!(
                "{who}: port {:?} is on router {r:?}, not on {:?}",
                port.name, v.vpc
            ),
            None => format!("{who}: port {:?} is on no router", port.name),
        };
        exists.nb_rows.push(v.router.label());
    } else if port.peering.as_deref() != Some(snap.peering.name.as_str()) {
        exists.severity = Severity::Warning;
        exists.message = match &port.peering {
            Some(p) => format!(
                "{who}: port {:?} is ovn-peerd's row of peering {p:?}, not of this one",
                port.name
            ),
            None => format!(
                "{who}: port {:?} is not ovn-peerd's row (no owner mark): someone else made or took it over",
                port.name
            ),
        };
    }
    out.push(exists);

    let want_peer = crate::peering::port_name(other_vpc, v.vpc);
    out.push(if port.peer.as_deref() == Some(want_peer.as_str()) {
        Finding::new(
            "peer_port_peer",
            Severity::Ok,
            format!("{who}: port {:?} has peer={want_peer:?}", port.name),
            vec![port.label()],
        )
    } else {
        Finding::new(
            "peer_port_peer",
            Severity::Error,
            format!(
                "{who}: port {:?} has peer={} instead of {want_peer:?}: the two routers are not linked",
                port.name,
                port.peer
                    .as_deref()
                    .map_or("(none)".to_string(), |p| format!("{p:?}"))
            ),
            vec![port.label()],
        )
    });

    out.push(if port.enabled == Some(false) {
        Finding::new(
            "peer_port_enabled",
            Severity::Error,
            format!(
                "{who}: port {:?} is disabled (enabled=false): it drops every packet",
                port.name
            ),
            vec![port.label()],
        )
    } else {
        Finding::new(
            "peer_port_enabled",
            Severity::Ok,
            format!("{who}: port {:?} is enabled", port.name),
            vec![port.label()],
        )
    });

    let wanted = snap.wanted.ports.iter().find(|p| p.name == v.port_name);
    let want: BTreeSet<String> = wanted
        .map(|p| p.networks.iter().map(|n| normalize(n)).collect())
        .unwrap_or_default();
    let have: BTreeSet<String> = port.networks.iter().map(|n| normalize(n)).collect();
    out.push(if want == have {
        Finding::new(
            "peer_port_networks",
            Severity::Ok,
            format!(
                "{who}: port {:?} carries the link address(es) {}",
                port.name,
                join(&have)
            ),
            vec![port.label()],
        )
    } else {
        Finding::new(
            "peer_port_networks",
            Severity::Error,
            format!(
                "{who}: port {:?} has networks {} instead of the link address(es) {}: routes via the link's next hop do not resolve",
                port.name,
                join(&have),
                join(&want)
            ),
            vec![port.label()],
        )
    });
}

/// `169.254.0.1/30` as `ipnet` prints it (so `fd00::01/126` equals `fd00::1/126`).
fn normalize(n: &str) -> String {
    n.parse::<IpNet>()
        .map_or_else(|_| n.to_string(), |n| n.to_string())
}

fn join(s: &BTreeSet<String>) -> String {
    if s.is_empty() {
        return "(none)".into();
    }
    s.iter().cloned().collect::<Vec<_>>().join(", ")
}
