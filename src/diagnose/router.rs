//! Router-wide rows and settings of one side: `Logical_Router_Policy` rows and options.
//!
//! Router policies run after routing (OVN's `lr_in_policy` stage) and override it: a
//! `reroute` or `drop` policy that can match the peering's traffic wins over our static
//! routes, whatever its priority relative to other policies.

use super::matcher::{can_match, parse, Traffic};
use super::{Finding, Severity, SideView};
use crate::peering::Family;

/// The option that breaks cross-VPC forwarding when false (kube-ovn #6882, ovn-notes §1).
pub const ALWAYS_LEARN: &str = "always_learn_from_arp_request";

/// `router_policy`: no reroute/drop policy can match the peering's traffic; a policy of
/// those actions whose match cannot be read is a warning naming it.
pub(super) fn policies(v: &SideView<'_>) -> Finding {
    let who = v.who();
    let mut errors = Vec::new();
    let mut unread = Vec::new();
    for p in &v.router.policies {
        let action = p.action.to_ascii_lowercase();
        if action != "reroute" && action != "drop" {
            continue;
        }
        let clauses = match parse(&p.r#match) {
            Ok(c) => c,
            Err(why) => {
                unread.push((p, why));
                continue;
            }
        };
        let mut hit = None;
        for family in [Family::V4, Family::V6] {
            let of = |nets: &[ipnet::IpNet]| -> Vec<ipnet::IpNet> {
                nets.iter()
                    .filter(|n| Family::of(n) == family)
                    .copied()
                    .collect()
            };
            let (peer, own) = (of(&v.peer_nets), of(&v.own_nets));
            let outbound = Traffic {
                family,
                src: &own,
                dst: &peer,
                port: &v.port_name,
                inport_is: false,
            };
            let inbound = Traffic {
                family,
                src: &peer,
                dst: &own,
                port: &v.port_name,
                inport_is: true,
            };
            if can_match(&clauses, outbound) {
                hit = Some(format!("traffic from {:?} to the peer", v.vpc));
            } else if can_match(&clauses, inbound) {
                hit = Some(format!("traffic from the peer to {:?}", v.vpc));
            }
            if hit.is_some() {
                break;
            }
        }
        if let Some(what) = hit {
            errors.push((p, format!("{} {action}s {what}", p.label())));
        }
    }
    if !errors.is_empty() {
        let mut rows: Vec<String> = errors.iter().map(|(p, _)| p.label()).collect();
        rows.extend(unread.iter().map(|(p, _)| p.label()));
        let msgs: Vec<&str> = errors.iter().map(|(_, m)| m.as_str()).collect();
        return Finding::new(
            "router_policy",
            Severity::Error,
            format!(
                "{who}: {}: router policies override static routes",
                msgs.join("; ")
            ),
            rows,
        );
    }
    if !unread.is_empty() {
        let msgs: Vec<String> = unread
            .iter()
            .map(|(p, why)| format!("{} ({why})", p.label()))
            .collect();
        return Finding::new(
            "router_policy",
            Severity::Warning,
            format!(
                "{who}: cannot tell whether these policies match the peering's traffic: {}",
                msgs.join("; ")
            ),
            unread.iter().map(|(p, _)| p.label()).collect(),
        );
    }
    Finding::new(
        "router_policy",
        Severity::Ok,
        format!(
            "{who}: no reroute or drop policy matches the peering's traffic ({} polic{} read)",
            v.router.policies.len(),
            if v.router.policies.len() == 1 {
                "y"
            } else {
                "ies"
            }
        ),
        vec![v.router.label()],
    )
}

/// `router_options`: none of the options known to break peering.
pub(super) fn options(v: &SideView<'_>) -> Finding {
    let who = v.who();
    if v.router.options.get(ALWAYS_LEARN).map(String::as_str) == Some("false") {
        return Finding::new(
            "router_options",
            Severity::Error,
            format!(
                "{who}: options:{ALWAYS_LEARN}=false on router {:?} mis-forwards cross-VPC traffic (kube-ovn #6882): remove it on peered routers",
                v.vpc
            ),
            vec![v.router.label()],
        );
    }
    Finding::new(
        "router_options",
        Severity::Ok,
        format!("{who}: no router option known to break peering"),
        vec![v.router.label()],
    )
}
