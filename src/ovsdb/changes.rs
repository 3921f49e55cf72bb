//! One replica update's row changes as its listeners receive them ([`super::CacheEvent`]):
//! each with the router and port names its row had just before the update.
//!
//! A monitor update names rows by uuid and, for a row that went, carries nothing else: the
//! router that held a deleted port, a renamed router's or port's old name are only in the
//! snapshot before the update. The connection's reader holds that snapshot when it publishes
//! the update, so it reads them there, once; a listener then needs no map of its own of every
//! router's name and every row's holder to remember them (the NB listener's was ≈65 MB at
//! 100,000 peerings: README, *Memory at 100,000 peerings: the NB listener's map*). What a row
//! is now, a listener reads in the replica itself ([`RowNames::read`]), for the few changes
//! it cares about, not the reader for every change (the worker's own echoes included:
//! `examples/replica_bytes.rs` times both). An inserted row had nothing before: it is not
//! looked up. The names of a change are inline (one router, one port): a generation bump of
//! every peer port allocates nothing per change but the change itself.

use std::ops::Deref;

use compact_str::CompactString;
use smallvec::SmallVec;

use super::cache::{ChangeKind, NbCache, RowChange};
use super::model::Table;

/// The names a changed row touches in one snapshot of the replica (each once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowNames {
    /// A router: its own name. A port or a route: the names of the routers listing it (one,
    /// unless NB shares the row). Empty for a row the snapshot lacks, and for a port or route
    /// no router lists.
    pub routers: SmallVec<[CompactString; 1]>,
    /// A port: its own name. None for routers and routes.
    pub port: Option<CompactString>,
}

impl RowNames {
    /// What `change`'s row touches in `nb`.
    pub fn read(nb: &NbCache, change: &RowChange) -> Self {
        let uuid = change.uuid;
        let mut names = RowNames::default();
        match change.table {
            Table::LogicalRouter => {
                names
                    .routers
                    .extend(nb.router(uuid).map(|r| r.name.clone()));
                return names;
            }
            Table::LogicalRouterPort => names.port = nb.port(uuid).map(|p| p.name.clone()),
            Table::LogicalRouterStaticRoute => {}
        }
        for holder in nb.routers_holding(uuid) {
            if let Some(r) = nb.router(holder) {
                if !names.routers.contains(&r.name) {
                    names.routers.push(r.name.clone());
                }
            }
        }
        names
    }
}

/// The changes of one update, in the update's order, each with the [`RowNames`] of its row
/// before the update (none for an insert). Derefs to the bare changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    rows: Vec<RowChange>,
    was: Vec<RowNames>,
}

impl Changes {
    /// `rows`, the changes of the update applied to `before`, with what their rows were there.
    pub fn read(before: &NbCache, rows: Vec<RowChange>) -> Self {
        let was = rows
            .iter()
            .map(|c| match c.kind {
                ChangeKind::Insert => RowNames::default(),
                ChangeKind::Modify | ChangeKind::Delete => RowNames::read(before, c),
            })
            .collect();
        Changes { rows, was }
    }

    /// Each change with the names its row had before the update.
    pub fn iter(&self) -> impl Iterator<Item = (&RowChange, &RowNames)> {
        self.rows.iter().zip(&self.was)
    }
}

impl Deref for Changes {
    type Target = [RowChange];
    fn deref(&self) -> &[RowChange] {
        &self.rows
    }
}

impl FromIterator<(RowChange, RowNames)> for Changes {
    fn from_iter<I: IntoIterator<Item = (RowChange, RowNames)>>(iter: I) -> Self {
        let (rows, was) = iter.into_iter().unzip();
        Changes { rows, was }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::ovsdb::cache::tests::{types, ApplyValue};
    use crate::ovsdb::cache::UpdateFormat;

    fn u(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    pub(crate) fn s(n: u128) -> String {
        u(n).to_string()
    }

    /// Applies `update` to `nb` (the snapshot before it kept, as the client does) and reads
    /// its changes.
    pub(crate) fn step(nb: &mut NbCache, update: serde_json::Value) -> Changes {
        step_in(UpdateFormat::V2, nb, update)
    }

    /// [`step`] for an update in `format` (V1: the `monitor` method's `update`, old/new rows).
    fn step_in(format: UpdateFormat, nb: &mut NbCache, update: serde_json::Value) -> Changes {
        let before = nb.clone();
        let rows = nb.apply_v(&types(), format, &update).unwrap();
        Changes::read(&before, rows)
    }

    /// A change's kind and the names it touches, as a listener reads them: what its row was
    /// before the update, and what it is in `now`.
    fn names_of(
        changes: &Changes,
        now: &NbCache,
        uuid: Uuid,
    ) -> (ChangeKind, Vec<String>, Vec<String>) {
        let (c, was) = changes.iter().find(|(c, _)| c.uuid == uuid).unwrap();
        let is = RowNames::read(now, c);
        let (mut routers, mut ports) = (Vec::new(), Vec::new());
        for names in [was, &is] {
            for r in &names.routers {
                if !routers.contains(&r.to_string()) {
                    routers.push(r.to_string());
                }
            }
            for p in names.port.iter() {
                if !ports.contains(&p.to_string()) {
                    ports.push(p.to_string());
                }
            }
        }
        (c.kind, routers, ports)
    }

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// Router r1 (1) holding port "r1-p" (11) and route 12; router r2 (2) holding port "r2-p" (21).
    fn nb() -> NbCache {
        let mut nb = NbCache::new(None);
        step(
            &mut nb,
            json!({
                "Logical_Router_Port": {
                    s(11): {"insert": {"name": "r1-p", "mac": "m", "networks": "10.1.0.1/24"}},
                    s(21): {"insert": {"name": "r2-p", "mac": "m", "networks": "10.2.0.1/24"}}},
                "Logical_Router_Static_Route": {
                    s(12): {"insert": {"ip_prefix": "10.9.0.0/16", "nexthop": "10.1.0.9"}}},
                "Logical_Router": {
                    s(1): {"insert": {"name": "r1", "ports": ["uuid", s(11)],
                        "static_routes": ["uuid", s(12)]}},
                    s(2): {"insert": {"name": "r2", "ports": ["uuid", s(21)]}}}}),
        );
        nb
    }

    #[test]
    fn a_row_modified_in_place_names_its_router_and_its_name() {
        let mut nb = nb();
        let c = step(
            &mut nb,
            json!({
                "Logical_Router_Port": {s(11): {"modify": {"enabled": true}}},
                "Logical_Router_Static_Route": {s(12): {"modify": {"nexthop": "10.1.0.8"}}},
                "Logical_Router": {s(2): {"modify": {"options": ["map", [["k", "v"]]]}}}}),
        );
        assert_eq!(
            names_of(&c, &nb, u(11)),
            (ChangeKind::Modify, v(&["r1"]), v(&["r1-p"]))
        );
        assert_eq!(
            names_of(&c, &nb, u(12)),
            (ChangeKind::Modify, v(&["r1"]), v(&[]))
        );
        assert_eq!(
            names_of(&c, &nb, u(2)),
            (ChangeKind::Modify, v(&["r2"]), v(&[]))
        );
        assert_eq!(c.len(), 3, "derefs to the bare changes");
    }

    /// What only the snapshot before the update still knows: old names, and the router of a
    /// row that went or moved.
    #[test]
    fn renames_moves_and_deletes_name_what_was_and_what_is() {
        let mut nb = nb();
        // Both renamed.
        let c = step(
            &mut nb,
            json!({
                "Logical_Router_Port": {s(11): {"modify": {"name": "r1-q"}}},
                "Logical_Router": {s(1): {"modify": {"name": "r1-new"}}}}),
        );
        assert_eq!(names_of(&c, &nb, u(1)).1, ["r1", "r1-new"]);
        assert_eq!(names_of(&c, &nb, u(11)).1, ["r1", "r1-new"]);
        assert_eq!(names_of(&c, &nb, u(11)).2, ["r1-p", "r1-q"]);
        // The port moved from r1-new to r2 by hand: the port itself is unchanged, the routers'
        // changes name both.
        let c = step(
            &mut nb,
            json!({"Logical_Router": {
                s(1): {"modify": {"ports": ["uuid", s(11)]}},
                s(2): {"modify": {"ports": ["uuid", s(11)]}}}}),
        );
        assert_eq!(names_of(&c, &nb, u(1)).1, ["r1-new"]);
        assert_eq!(names_of(&c, &nb, u(2)).1, ["r2"]);
        assert_eq!(nb.routers_holding(u(11)).collect::<Vec<_>>(), [u(2)]);
        // r2 deleted with its ports (NB collects them in the same update): the names it had.
        let c = step(
            &mut nb,
            json!({
                "Logical_Router": {s(2): {"delete": null}},
                "Logical_Router_Port": {s(11): {"delete": null}, s(21): {"delete": null}}}),
        );
        assert_eq!(
            names_of(&c, &nb, u(2)),
            (ChangeKind::Delete, v(&["r2"]), v(&[]))
        );
        assert_eq!(
            names_of(&c, &nb, u(11)),
            (ChangeKind::Delete, v(&["r2"]), v(&["r1-q"]))
        );
        assert_eq!(
            names_of(&c, &nb, u(21)),
            (ChangeKind::Delete, v(&["r2"]), v(&["r2-p"]))
        );
        // A route removed from its router: collected, named by the router it had.
        let c = step(
            &mut nb,
            json!({
                "Logical_Router": {s(1): {"modify": {"static_routes": ["uuid", s(12)]}}},
                "Logical_Router_Static_Route": {s(12): {"delete": null}}}),
        );
        assert_eq!(
            names_of(&c, &nb, u(12)),
            (ChangeKind::Delete, v(&["r1-new"]), v(&[]))
        );
    }

    #[test]
    fn a_row_inserted_with_its_routers_mutation_names_that_router() {
        let mut nb = nb();
        let c = step(
            &mut nb,
            json!({
                "Logical_Router_Port": {s(22): {"insert": {"name": "vpc-a-vpc-b", "mac": "m",
                    "networks": "169.254.0.1/30"}}},
                "Logical_Router": {s(2): {"modify": {"ports": ["uuid", s(22)]}}}}),
        );
        assert_eq!(
            names_of(&c, &nb, u(22)),
            (ChangeKind::Insert, v(&["r2"]), v(&["vpc-a-vpc-b"]))
        );
    }

    /// The same through the v1 `update` of the `monitor` method (a server without
    /// `monitor_cond`): a modify carries the whole new row under `new` (a router's `ports`
    /// as the full set, re-indexed whole) and the changed columns' old values under `old`; a
    /// delete only `old`. Each change still names what its row was in the snapshot before its
    /// update, including after a move the previous update made.
    #[test]
    fn v1_updates_name_what_was_and_what_is() {
        let v1 = |nb: &mut NbCache, update| step_in(UpdateFormat::V1, nb, update);
        let router = |name: &str, ports: &[u128], routes: &[u128]| {
            let set = |uuids: &[u128]| {
                json!([
                    "set",
                    uuids
                        .iter()
                        .map(|n| json!(["uuid", s(*n)]))
                        .collect::<Vec<_>>()
                ])
            };
            json!({"name": name, "ports": set(ports), "static_routes": set(routes)})
        };
        let port = |name: &str| json!({"name": name, "mac": "m", "networks": "10.1.0.1/24"});
        let mut nb = NbCache::new(None);
        let c = v1(
            &mut nb,
            json!({
                "Logical_Router_Port": {s(11): {"new": port("r1-p")}, s(21): {"new": port("r2-p")}},
                "Logical_Router_Static_Route": {
                    s(12): {"new": {"ip_prefix": "10.9.0.0/16", "nexthop": "10.1.0.9"}}},
                "Logical_Router": {
                    s(1): {"new": router("r1", &[11], &[12])},
                    s(2): {"new": router("r2", &[21], &[])}}}),
        );
        assert_eq!(
            names_of(&c, &nb, u(11)),
            (ChangeKind::Insert, v(&["r1"]), v(&["r1-p"]))
        );
        // Both renamed.
        let c = v1(
            &mut nb,
            json!({
                "Logical_Router_Port": {s(11): {"old": {"name": "r1-p"}, "new": port("r1-q")}},
                "Logical_Router": {
                    s(1): {"old": {"name": "r1"}, "new": router("r1-new", &[11], &[12])}}}),
        );
        assert_eq!(
            names_of(&c, &nb, u(11)),
            (
                ChangeKind::Modify,
                v(&["r1", "r1-new"]),
                v(&["r1-p", "r1-q"])
            )
        );
        assert_eq!(names_of(&c, &nb, u(1)).1, ["r1", "r1-new"]);
        // The port moved from r1-new to r2 by hand: the routers' changes name each its own.
        let c = v1(
            &mut nb,
            json!({"Logical_Router": {
                s(1): {"old": {"ports": ["uuid", s(11)]}, "new": router("r1-new", &[], &[12])},
                s(2): {"old": {"ports": ["uuid", s(21)]}, "new": router("r2", &[11, 21], &[])}}}),
        );
        assert_eq!(names_of(&c, &nb, u(1)).1, ["r1-new"]);
        assert_eq!(names_of(&c, &nb, u(2)).1, ["r2"]);
        // r2 deleted with its ports, the moved one included: the router they had, r2.
        let c = v1(
            &mut nb,
            json!({
                "Logical_Router": {s(2): {"old": router("r2", &[11, 21], &[])}},
                "Logical_Router_Port": {s(11): {"old": port("r1-q")}, s(21): {"old": port("r2-p")}}}),
        );
        assert_eq!(
            names_of(&c, &nb, u(2)),
            (ChangeKind::Delete, v(&["r2"]), v(&[]))
        );
        assert_eq!(
            names_of(&c, &nb, u(11)),
            (ChangeKind::Delete, v(&["r2"]), v(&["r1-q"]))
        );
        // A route removed from its router: named by the router it had.
        let c = v1(
            &mut nb,
            json!({
                "Logical_Router": {s(1): {"old": {"static_routes": ["uuid", s(12)]},
                    "new": router("r1-new", &[], &[])}},
                "Logical_Router_Static_Route": {s(12): {"old": {"ip_prefix": "10.9.0.0/16"}}}}),
        );
        assert_eq!(
            names_of(&c, &nb, u(12)),
            (ChangeKind::Delete, v(&["r1-new"]), v(&[]))
        );
    }
}
