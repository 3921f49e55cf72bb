//! The static routes of one side's router: ours are installed, and no foreign route takes
//! the peering's traffic elsewhere.
//!
//! How OVN ranks routes (ovn-northd `build_route_match`): one longest-prefix-match table in
//! which a route's priority grows with its prefix length, a dst-ip route ranking just above a
//! src-ip route of the same length. So a foreign dst-ip route more specific than ours takes
//! that part of the prefix, one with the same prefix forms an ECMP group with ours, and a
//! src-ip route longer than ours whose prefix overlaps the traffic's sources takes it
//! (kube-ovn #1981: replies sent to a NAT gateway).

use ipnet::IpNet;

use super::{wanted_label, Finding, RouteRow, Severity, SideView};
use crate::peering::{overlaps, RoutePolicy};

/// `routes_installed`: every route the peering wants here is held, with its output_port.
pub(super) fn installed(v: &SideView<'_>, me: &str) -> Finding {
    let who = v.who();
    let mut missing = Vec::new();
    let mut wrong_port = Vec::new();
    let mut rows = Vec::new();
    for w in &v.wanted {
        let want_key = (
            w.policy,
            w.ip_prefix.parse::<IpNet>().ok().map(|n| n.trunc()),
        );
        let held: Vec<&RouteRow> = v
            .router
            .routes
            .iter()
            .filter(|r| {
                r.is_of(me)
                    && r.route_table == w.route_table
                    && r.nexthop == w.nexthop
                    && r.key().map(|(p, n)| (p, Some(n))) == Some(want_key)
            })
            .collect();
        match held
            .iter()
            .find(|r| r.output_port.as_deref() == Some(&w.output_port))
        {
            Some(r) => rows.push(r.label()),
            None => match held.first() {
                Some(r) => {
                    wrong_port.push(format!(
                        "{} has output_port {} instead of {:?}",
                        r.label(),
                        r.output_port
                            .as_deref()
                            .map_or("(none)".to_string(), |p| format!("{p:?}")),
                        w.output_port
                    ));
                    rows.push(r.label());
                }
                None => missing.push(wanted_label(w)),
            },
        }
    }
    if v.wanted.is_empty() {
        return Finding::new(
            "routes_installed",
            Severity::Warning,
            format!(
                "{who}: the peering routes nothing into {:?} (the other VPC has no subnet of the link's families?)",
                v.vpc
            ),
            vec![v.router.label()],
        );
    }
    if missing.is_empty() && wrong_port.is_empty() {
        return Finding::new(
            "routes_installed",
            Severity::Ok,
            format!("{who}: all {} route(s) installed", v.wanted.len()),
            rows,
        );
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing: {}", missing.join("; ")));
        rows.insert(0, v.router.label());
    }
    if !wrong_port.is_empty() {
        parts.push(wrong_port.join("; "));
    }
    Finding::new(
        "routes_installed",
        Severity::Error,
        format!("{who}: {}", parts.join("; ")),
        rows,
    )
}

/// Foreign routes (not this peering's) of this router with a readable key.
fn foreign<'a>(
    v: &'a SideView<'_>,
    me: &'a str,
) -> impl Iterator<Item = (&'a RouteRow, RoutePolicy, IpNet)> {
    v.router
        .routes
        .iter()
        .filter(move |r| !r.is_of(me))
        .filter_map(|r| r.key().map(|(p, n)| (r, p, n)))
}

/// Our wanted routes' (policy, prefix, table).
fn ours<'a>(v: &'a SideView<'_>) -> impl Iterator<Item = (RoutePolicy, IpNet, &'a str)> {
    v.wanted.iter().filter_map(|w| {
        let net = w.ip_prefix.parse::<IpNet>().ok()?.trunc();
        Some((w.policy, net, w.route_table.as_str()))
    })
}

/// `ecmp_conflict`: no foreign route with one of our prefixes (same policy and table).
pub(super) fn ecmp(v: &SideView<'_>, me: &str) -> Finding {
    let mut hits = Vec::new();
    for (policy, net, table) in ours(v) {
        for (r, p, n) in foreign(v, me) {
            if p == policy && n == net && r.route_table == table {
                hits.push((net, r));
            }
        }
    }
    let who = v.who();
    if hits.is_empty() {
        return ok(
            "ecmp_conflict",
            format!("{who}: no foreign route shares a prefix with ours"),
            v,
        );
    }
    let what: Vec<String> = hits
        .iter()
        .map(|(net, r)| format!("{} shares {net} with ours", r.label()))
        .collect();
    Finding::new(
        "ecmp_conflict",
        Severity::Error,
        format!(
            "{who}: {}: OVN makes an ECMP group of them and sends part of the traffic elsewhere",
            what.join("; ")
        ),
        hits.iter().map(|(_, r)| r.label()).collect(),
    )
}

/// `more_specific_route`: no foreign dst-ip route inside one of our dst-ip prefixes.
pub(super) fn more_specific(v: &SideView<'_>, me: &str) -> Finding {
    let mut hits = Vec::new();
    for (policy, net, _) in ours(v).filter(|(p, _, _)| *p == RoutePolicy::DstIp) {
        for (r, p, n) in foreign(v, me) {
            if p == policy && n.prefix_len() > net.prefix_len() && net.contains(&n) {
                hits.push((net, n, r));
            }
        }
    }
    let who = v.who();
    if hits.is_empty() {
        return ok(
            "more_specific_route",
            format!("{who}: no foreign route is more specific than a prefix we route"),
            v,
        );
    }
    let what: Vec<String> = hits
        .iter()
        .map(|(net, n, r)| format!("{} captures {n} of our {net}", r.label()))
        .collect();
    Finding::new(
        "more_specific_route",
        Severity::Error,
        format!("{who}: {}", what.join("; ")),
        hits.iter().map(|(_, _, r)| r.label()).collect(),
    )
}

/// `src_ip_route`: no foreign src-ip route, longer than one of our dst-ip routes, whose
/// prefix overlaps this VPC's subnets (the sources of the peering's traffic leaving here).
pub(super) fn src_ip(v: &SideView<'_>, me: &str) -> Finding {
    let mut hits = Vec::new();
    for (r, _, n) in foreign(v, me).filter(|(_, p, _)| *p == RoutePolicy::SrcIp) {
        let Some(src) = v.own_nets.iter().find(|s| overlaps(s, &n)) else {
            continue;
        };
        let outranked: Vec<IpNet> = ours(v)
            .filter(|(policy, net, _)| {
                *policy == RoutePolicy::DstIp
                    && net.prefix_len() < n.prefix_len()
                    && crate::peering::Family::of(net) == crate::peering::Family::of(&n)
            })
            .map(|(_, net, _)| net)
            .collect();
        if !outranked.is_empty() {
            let nets: Vec<String> = outranked.iter().map(ToString::to_string).collect();
            hits.push((
                r,
                format!(
                    "{} matches sources in {src} and outranks our route(s) to {} (longer prefix): traffic and replies from {:?} to the peer go to {} instead",
                    r.label(),
                    nets.join(", "),
                    v.vpc,
                    r.nexthop
                ),
            ));
        }
    }
    let who = v.who();
    if hits.is_empty() {
        return ok(
            "src_ip_route",
            format!("{who}: no src-ip route captures the peering's traffic"),
            v,
        );
    }
    Finding::new(
        "src_ip_route",
        Severity::Error,
        format!(
            "{who}: {}",
            hits.iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        hits.iter().map(|(r, _)| r.label()).collect(),
    )
}

fn ok(check: &'static str, message: String, v: &SideView<'_>) -> Finding {
    Finding::new(check, Severity::Ok, message, vec![v.router.label()])
}
