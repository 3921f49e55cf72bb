//! What a foreign NB change touches: the routers (VPC names) and port names whose peerings
//! must be judged again, so that a change made by someone else costs a narrow pass over
//! those peerings instead of a full pass over every one.
//!
//! A change touches the names its row had just before its update (handed by the replica with
//! the change, [`Changes`]) and the names it has in the replica now: a router's name, the
//! routers listing a port or route, a port's name. So a router renamed or deleted touches its
//! old name and its new one, a port or route that went or moved touches the router that held
//! it, and a port's name (ours live in a namespace shared by all routers) touches the
//! peerings that hold that name, wherever the port is. A port or route that no router listed,
//! before or now, cannot be placed: a full pass is then the safe answer.

use std::collections::BTreeSet;

use crate::ovsdb::{Changes, NbCache, RowChange, Table};

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
        let mut names = was.clone();
        names.add(now, c);
        if c.table != Table::LogicalRouter && names.routers.is_empty() {
            return None;
        }
        touched
            .vpcs
            .extend(names.routers.iter().map(|n| n.to_string()));
        touched
            .ports
            .extend(names.ports.iter().map(|n| n.to_string()));
    }
    Some(touched)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use serde_json::json;

    use super::*;
    use crate::ovsdb::cache::tests::{types, ApplyValue};
    use crate::ovsdb::cache::UpdateFormat;
    use crate::ovsdb::{ChangeKind, RowNames};

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn change(n: u128, table: Table, routers: &[&str], ports: &[&str]) -> (RowChange, RowNames) {
        let names = |v: &[&str]| v.iter().map(|s| (*s).into()).collect();
        (
            RowChange {
                table,
                uuid: Uuid::from_u128(n),
                kind: ChangeKind::Modify,
            },
            RowNames {
                routers: names(routers),
                ports: names(ports),
            },
        )
    }

    /// A renamed router (1), a port moved between routers (2), a route (3); port 4 is ours.
    fn changes() -> Changes {
        [
            change(1, Table::LogicalRouter, &["r1", "r1-new"], &[]),
            change(2, Table::LogicalRouterPort, &["r2", "r3"], &["p", "p-new"]),
            change(3, Table::LogicalRouterStaticRoute, &["r4"], &[]),
            change(4, Table::LogicalRouterPort, &["ours"], &["ours-p"]),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn foreign_changes_touch_every_name_they_had_and_have() {
        let t = touched(&changes(), &NbCache::default(), |c| {
            c.uuid != Uuid::from_u128(4)
        });
        assert_eq!(
            t,
            Some(Touched {
                vpcs: set(&["r1", "r1-new", "r2", "r3", "r4"]),
                ports: set(&["p", "p-new"]),
            })
        );
        // Our own echo touches nothing.
        assert_eq!(
            touched(&changes(), &NbCache::default(), |_| false),
            Some(Touched::default())
        );
    }

    /// An inserted port had nothing before: its router and name are read in the replica now.
    #[test]
    fn what_a_row_is_now_is_read_in_the_replica() {
        let (port, router) = (Uuid::from_u128(11), Uuid::from_u128(1));
        let mut now = NbCache::default();
        now.apply_v(
            &types(),
            UpdateFormat::V2,
            &json!({
                "Logical_Router_Port": {port.to_string(): {"insert": {"name": "r1-p", "mac": "m",
                    "networks": "10.1.0.1/24"}}},
                "Logical_Router": {router.to_string(): {"insert": {"name": "r1",
                    "ports": ["uuid", port.to_string()]}}}}),
        )
        .unwrap();
        let inserted: Changes = [change(11, Table::LogicalRouterPort, &[], &[])]
            .into_iter()
            .collect();
        assert_eq!(
            touched(&inserted, &now, |_| true),
            Some(Touched {
                vpcs: set(&["r1"]),
                ports: set(&["r1-p"]),
            })
        );
        // Nothing before, nothing now: a full pass.
        assert_eq!(touched(&inserted, &NbCache::default(), |_| true), None);
    }

    #[test]
    fn a_row_no_router_listed_asks_for_a_full_pass() {
        let mut rows: Vec<_> = changes()
            .iter()
            .map(|(c, n)| (c.clone(), n.clone()))
            .collect();
        rows.push(change(5, Table::LogicalRouterStaticRoute, &[], &[]));
        let changes: Changes = rows.into_iter().collect();
        assert_eq!(touched(&changes, &NbCache::default(), |_| true), None);
        // Not foreign: nothing to place.
        assert_eq!(
            touched(&changes, &NbCache::default(), |c| c.uuid
                != Uuid::from_u128(5))
            .map(|t| t.vpcs.len()),
            Some(6)
        );
    }
}
