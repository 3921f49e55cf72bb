//! What a foreign NB change touches: the routers (VPC names) and port names whose peerings
//! must be judged again, so that a change made by someone else costs a narrow pass over
//! those peerings instead of a full pass over every one.
//!
//! A change touches the names its row had just before its update (handed by the replica with
//! the change, [`Changes`]) and the names it has in the replica now: a router's name, the
//! routers listing a port or route, a port's name. So a router renamed or deleted touches its
//! old name and its new one, a port or route that went or moved touches the router that held
//! it, and a port's name (ours live in a namespace shared by all routers) touches the
//! peerings that hold that name, wherever the port is. A port or route inserted and gone
//! again by the time the listener reads the replica touches nothing: the later update that
//! deleted it carries the names it had then (a listener too far behind to get it is told
//! `Lagged` and makes a full pass). A port or route that no router listed, before and now
//! although it is there, cannot be placed: a full pass is then the safe answer.

use std::collections::BTreeSet;

use crate::ovsdb::{ChangeKind, Changes, NbCache, RowChange, RowNames, Table};

/// What a batch of foreign changes touches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Router names: the peerings of these VPCs are judged again.
    pub vpcs: BTreeSet<String>,
    /// Port names: the peerings holding these names are judged again.
    pub ports: BTreeSet<String>,
}

/// What the changes marked `foreign` touch, before their update and in `now`; `None` when one
/// of them cannot be placed.
pub fn touched(
    changes: &Changes,
    now: &NbCache,
    foreign: impl Fn(&RowChange) -> bool,
) -> Option<Touched> {
    let mut touched = Touched::default();
    for (c, was) in changes.iter().filter(|(c, _)| foreign(c)) {
        let is = RowNames::read(now, c);
        if c.table != Table::LogicalRouter && was.routers.is_empty() && is.routers.is_empty() {
            if c.kind == ChangeKind::Insert && !present(now, c) {
                // Gone since: its delete names where it was.
                continue;
            }
            return None;
        }
        for names in [was, &is] {
            touched
                .vpcs
                .extend(names.routers.iter().map(|n| n.to_string()));
            touched
                .ports
                .extend(names.port.iter().map(|n| n.to_string()));
        }
    }
    Some(touched)
}

/// Whether `c`'s row is in `nb`.
fn present(nb: &NbCache, c: &RowChange) -> bool {
    match c.table {
        Table::LogicalRouter => nb.router(c.uuid).is_some(),
        Table::LogicalRouterPort => nb.port(c.uuid).is_some(),
        Table::LogicalRouterStaticRoute => nb.static_route(c.uuid).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::ovsdb::changes::tests::{s, step};

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Only the change of row `n` is foreign.
    fn only(n: u128) -> impl Fn(&RowChange) -> bool {
        move |c| c.uuid == Uuid::from_u128(n)
    }

    /// Routers r1 (1), r2 (2) holding port "p" (11), r3 (3), r4 (4) holding route 12, "ours"
    /// (5) holding port "ours-p" (13).
    fn nb() -> NbCache {
        let mut nb = NbCache::default();
        step(
            &mut nb,
            json!({
                "Logical_Router_Port": {
                    s(11): {"insert": {"name": "p", "mac": "m", "networks": "10.2.0.1/24"}},
                    s(13): {"insert": {"name": "ours-p", "mac": "m", "networks": "10.5.0.1/24"}}},
                "Logical_Router_Static_Route": {
                    s(12): {"insert": {"ip_prefix": "10.9.0.0/16", "nexthop": "10.4.0.9"}}},
                "Logical_Router": {
                    s(1): {"insert": {"name": "r1"}},
                    s(2): {"insert": {"name": "r2", "ports": ["uuid", s(11)]}},
                    s(3): {"insert": {"name": "r3"}},
                    s(4): {"insert": {"name": "r4", "static_routes": ["uuid", s(12)]}},
                    s(5): {"insert": {"name": "ours", "ports": ["uuid", s(13)]}}}}),
        );
        nb
    }

    /// A renamed router (1), a port renamed and moved from r2 to r3 (11), a route (12); port 13
    /// is ours.
    #[test]
    fn foreign_changes_touch_every_name_they_had_and_have() {
        let mut nb = nb();
        let changes = step(
            &mut nb,
            json!({
                "Logical_Router": {
                    s(1): {"modify": {"name": "r1-new"}},
                    s(2): {"modify": {"ports": ["uuid", s(11)]}},
                    s(3): {"modify": {"ports": ["uuid", s(11)]}}},
                "Logical_Router_Port": {
                    s(11): {"modify": {"name": "p-new"}},
                    s(13): {"modify": {"enabled": true}}},
                "Logical_Router_Static_Route": {s(12): {"modify": {"nexthop": "10.4.0.8"}}}}),
        );
        assert_eq!(
            touched(&changes, &nb, |c| c.uuid != Uuid::from_u128(13)),
            Some(Touched {
                vpcs: set(&["r1", "r1-new", "r2", "r3", "r4"]),
                ports: set(&["p", "p-new"]),
            })
        );
        // The port alone: where it was and where it is.
        assert_eq!(
            touched(&changes, &nb, only(11)),
            Some(Touched {
                vpcs: set(&["r2", "r3"]),
                ports: set(&["p", "p-new"]),
            })
        );
        // Our own echo touches nothing.
        assert_eq!(touched(&changes, &nb, |_| false), Some(Touched::default()));
    }

    /// An inserted port had nothing before: its router and name are read in the replica now.
    /// Inserted and deleted again before the listener reads the replica: it touches nothing,
    /// its delete names where it was.
    #[test]
    fn an_inserted_row_is_read_now_and_one_gone_since_is_named_by_its_delete() {
        let mut nb = nb();
        let add = |nb: &mut NbCache, n: u128, name: &str| {
            step(
                nb,
                json!({
                    "Logical_Router_Port": {s(n): {"insert": {"name": name, "mac": "m",
                        "networks": "169.254.0.1/30"}}},
                    "Logical_Router": {s(2): {"modify": {"ports": ["uuid", s(n)]}}}}),
            )
        };
        let inserted = add(&mut nb, 21, "q");
        assert_eq!(
            touched(&inserted, &nb, only(21)),
            Some(Touched {
                vpcs: set(&["r2"]),
                ports: set(&["q"]),
            })
        );
        let inserted = add(&mut nb, 22, "gone");
        let deleted = step(
            &mut nb,
            json!({
                "Logical_Router": {s(2): {"modify": {"ports": ["uuid", s(22)]}}},
                "Logical_Router_Port": {s(22): {"delete": null}}}),
        );
        assert_eq!(touched(&inserted, &nb, only(22)), Some(Touched::default()));
        assert_eq!(
            touched(&deleted, &nb, only(22)),
            Some(Touched {
                vpcs: set(&["r2"]),
                ports: set(&["gone"]),
            })
        );
    }

    /// A port that is there but that no router lists, before its update or now (NB collects
    /// such rows; a client may still see one): a full pass.
    #[test]
    fn a_row_there_that_no_router_lists_asks_for_a_full_pass() {
        let mut nb = nb();
        let port = json!({"name": "orphan", "mac": "m", "networks": "10.7.0.1/24"});
        let inserted = step(
            &mut nb,
            json!({"Logical_Router_Port": {s(31): {"insert": port}}}),
        );
        assert_eq!(touched(&inserted, &nb, only(31)), None);
        let modified = step(
            &mut nb,
            json!({"Logical_Router_Port": {s(31): {"modify": {"enabled": true}}}}),
        );
        assert_eq!(touched(&modified, &nb, only(31)), None);
        // Not foreign: nothing to place.
        assert_eq!(touched(&modified, &nb, |_| false), Some(Touched::default()));
    }
}
