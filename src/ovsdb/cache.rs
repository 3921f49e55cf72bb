//! The in-memory replica of the monitored NB tables, its indexes, and applying monitor updates.
//!
//! Owns row storage and the `update`/`update2`/`update3` application rules:
//! `initial`/`insert` rows omit default-valued columns (we start from the *schema's* defaults,
//! e.g. `[""]` for a `min: 1` set); a `modify`
//! carries the new value for columns of at most one element (scalars *and* optional columns such
//! as `peer`: OVS only diffs "composite" types) and a *diff* for larger sets (symmetric
//! difference) and maps (same key+value = remove, other value = replace, new key = add). Diffs are not idempotent:
//! the caller applies each update exactly once. Sets are kept sorted.
//!
//! Storage is persistent maps (`imbl`): a clone is O(1) and shares every row with the
//! original, an update copies only the paths it touches. They are B-trees (`OrdMap`), not
//! HAMTs (`imbl::HashMap`): measured with 40,000 uuid keys, 40 heap bytes an entry instead of
//! 180 (a HAMT allocates every node with all 32 slots, and most deep nodes hold one or two),
//! and a copy-on-write update 1.4 µs instead of 4.2. Index values are inline or behind an
//! `Arc`: copying a path copies up to 64 entries of a node, which must cost a reference count
//! each, not a set's allocation. Index keys are [`CompactString`]s (a name of up to 24 bytes
//! is copied inline, no allocation; a longer one is a second heap copy, as a `String` was) and
//! index values [`Members`] (one member inline, a few in an exact slice, a B-tree past that),
//! not a `String` copy and an `Arc<BTreeSet>` (a 192-byte node) per name (README, *Memory at
//! 100,000 peerings*). Persistence is what lets the client publish
//! a new immutable snapshot after each update while readers keep working on older ones (see
//! `client`): nobody reads under a lock. Reading is plain `&self` methods.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use compact_str::CompactString;

/// Row storage and indexes: persistent, so [`NbCache::clone`] is O(1).
type PMap<K, V> = imbl::OrdMap<K, V>;

use uuid::Uuid;

use super::members::Members;
use super::model::{LogicalRouter, LogicalRouterPort, LogicalRouterStaticRoute, Model, Table};
use super::row_index::RowIndex;
use super::schema::TableSchema;
use super::strmap::StrMap;
use super::updates::{self, Refusal, RowOp};
use super::values::Datum;

/// The server's types of the columns we model, per table (decides scalar vs diff in `modify`).
pub type Types = HashMap<Table, TableSchema>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Insert,
    Modify,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowChange {
    pub table: Table,
    pub uuid: Uuid,
    pub kind: ChangeKind,
}

/// Monitor update formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateFormat {
    /// `monitor`: `{"old": .., "new": ..}` with full rows.
    V1,
    /// `monitor_cond`/`monitor_cond_since`: `initial`/`insert`/`modify`/`delete`.
    V2,
}

/// An update the cache cannot apply: the cache can no longer be trusted and must be rebuilt
/// from a full dump.
#[derive(Debug, thiserror::Error)]
#[error("{} monitor update for {table} {uuid}: {reason}", kind.label())]
pub struct UpdateError {
    pub kind: UpdateErrorKind,
    pub table: String,
    pub uuid: String,
    pub reason: String,
}

/// Why an update could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateErrorKind {
    /// Not a valid update (bad JSON shape, a value of the wrong type).
    Malformed,
    /// Valid, but inconsistent with what we hold: an insert of a row we already have, a
    /// modify or delete of one we do not (ovsdb-idl's "inconsistent" update). Our replica and
    /// the server's database have diverged.
    Diverged,
}

impl UpdateErrorKind {
    /// Metric label and log word.
    pub fn label(self) -> &'static str {
        match self {
            UpdateErrorKind::Malformed => "malformed",
            UpdateErrorKind::Diverged => "diverged",
        }
    }
}

/// Replica of `Logical_Router`, `Logical_Router_Port`, `Logical_Router_Static_Route`.
/// Cloning is O(1) (persistent maps): a clone is a snapshot that later updates of the
/// original never change.
#[derive(Debug, Clone, Default)]
pub struct NbCache {
    routers: PMap<Uuid, Arc<LogicalRouter>>,
    ports: PMap<Uuid, Arc<LogicalRouterPort>>,
    routes: PMap<Uuid, Arc<LogicalRouterStaticRoute>>,
    router_by_name: PMap<CompactString, Members<Uuid>>,
    port_by_name: PMap<CompactString, Uuid>,
    owner_key: Option<String>,
    by_owner: PMap<CompactString, Members<(Table, Uuid)>>,
    /// Which router holds each port and route; every router's subnets (`row_index`).
    rows: RowIndex,
}

impl NbCache {
    /// An empty cache indexing rows by `external_ids[owner_key]`.
    pub fn new(owner_key: Option<String>) -> Self {
        NbCache {
            owner_key,
            ..Default::default()
        }
    }

    /// An empty cache with the same configuration.
    pub fn empty_like(&self) -> Self {
        Self::new(self.owner_key.clone())
    }

    // ---- reads ----

    pub fn routers(&self) -> impl Iterator<Item = &LogicalRouter> {
        self.routers.values().map(|r| &**r)
    }
    pub fn router(&self, uuid: Uuid) -> Option<&LogicalRouter> {
        self.routers.get(&uuid).map(|r| &**r)
    }
    /// Router names are not unique in NB: all routers with this name.
    pub fn router_by_name(&self, name: &str) -> Vec<&LogicalRouter> {
        self.router_by_name
            .get(name)
            .into_iter()
            .flat_map(Members::iter)
            .filter_map(|u| self.router(*u))
            .collect()
    }
    pub fn ports(&self) -> impl Iterator<Item = &LogicalRouterPort> {
        self.ports.values().map(|p| &**p)
    }
    pub fn port(&self, uuid: Uuid) -> Option<&LogicalRouterPort> {
        self.ports.get(&uuid).map(|p| &**p)
    }
    pub fn port_by_name(&self, name: &str) -> Option<&LogicalRouterPort> {
        self.port_by_name.get(name).and_then(|u| self.port(*u))
    }
    pub fn static_routes(&self) -> impl Iterator<Item = &LogicalRouterStaticRoute> {
        self.routes.values().map(|r| &**r)
    }
    pub fn static_route(&self, uuid: Uuid) -> Option<&LogicalRouterStaticRoute> {
        self.routes.get(&uuid).map(|r| &**r)
    }
    /// Rows whose `external_ids[key] == value`; indexed when `key` is the configured owner key.
    pub fn rows_with_external_id(&self, key: &str, value: &str) -> BTreeSet<(Table, Uuid)> {
        if self.owner_key.as_deref() == Some(key) {
            return self
                .by_owner
                .get(value)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
        }
        let hit = |ids: &StrMap| ids.get(key).is_some_and(|v| v == value);
        let mut out = BTreeSet::new();
        out.extend(
            self.routers
                .values()
                .filter(|r| hit(&r.external_ids))
                .map(|r| (Table::LogicalRouter, r.uuid)),
        );
        out.extend(
            self.ports
                .values()
                .filter(|r| hit(&r.external_ids))
                .map(|r| (Table::LogicalRouterPort, r.uuid)),
        );
        out.extend(
            self.routes
                .values()
                .filter(|r| hit(&r.external_ids))
                .map(|r| (Table::LogicalRouterStaticRoute, r.uuid)),
        );
        out
    }
    /// The routers whose `ports` or `static_routes` list the row `uuid` (one, unless NB shares
    /// a row): indexed, not a walk over every router.
    pub fn routers_holding(&self, uuid: Uuid) -> impl Iterator<Item = Uuid> + '_ {
        self.rows.holders(uuid)
    }
    /// The subnets of router `uuid` (the networks of its ports that are neither peer nor
    /// gateway ports, host bits cleared), sorted, without duplicates: indexed, not a walk over
    /// its ports (a hub's router holds one per spoke).
    pub fn router_subnets(&self, uuid: Uuid) -> Vec<ipnet::IpNet> {
        self.rows.subnets_of(uuid)
    }
    /// Every (subnet, router) of NB whose subnet overlaps `net` (subnets as in
    /// [`Self::router_subnets`]), appended to `out`: a few range lookups.
    pub fn subnets_overlapping(&self, net: &ipnet::IpNet, out: &mut Vec<(ipnet::IpNet, Uuid)>) {
        self.rows.subnets_overlapping(net, out)
    }
    /// The peer and gateway ports of router `router` with a network overlapping `net` (each
    /// once, in uuid order): a few range lookups, not a walk over a hub's ports.
    pub fn router_ports_overlapping(&self, router: Uuid, net: &ipnet::IpNet) -> Vec<Uuid> {
        self.rows.ports_overlapping(router, net)
    }
    /// The static routes of router `router` whose `ip_prefix` is `net` (host bits cleared; a
    /// bare address as a host prefix): one range lookup.
    pub fn router_routes_with_prefix(&self, router: Uuid, net: &ipnet::IpNet) -> Vec<Uuid> {
        self.rows.routes_with_prefix(router, net)
    }
    /// The distinct values of the owner key present in the cache.
    pub fn owner_values(&self) -> impl Iterator<Item = &str> {
        self.by_owner.keys().map(CompactString::as_str)
    }
    pub fn len(&self) -> usize {
        self.routers.len() + self.ports.len() + self.routes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // ---- writes ----

    /// Applies one `table-updates` object (the `update*` notification or a monitor reply), as
    /// JSON text: parsed straight into typed rows (see `updates`), each applied as it is read.
    /// On an error `self` may hold part of the update: apply to a copy and publish it only on
    /// success (`state::Shared::update_replica`).
    pub fn apply(
        &mut self,
        types: &Types,
        format: UpdateFormat,
        updates: &str,
    ) -> Result<Vec<RowChange>, UpdateError> {
        let mut changes = Vec::new();
        updates::parse(updates, types, format, |table, ty, uuid, op| {
            let kind = match table {
                Table::LogicalRouter => self.apply_op::<LogicalRouter>(ty, uuid, op),
                Table::LogicalRouterPort => self.apply_op::<LogicalRouterPort>(ty, uuid, op),
                Table::LogicalRouterStaticRoute => {
                    self.apply_op::<LogicalRouterStaticRoute>(ty, uuid, op)
                }
            }?;
            changes.push(RowChange { table, uuid, kind });
            Ok(())
        })?;
        #[cfg(debug_assertions)]
        self.check_row_index();
        Ok(changes)
    }

    fn apply_op<M: Model + Indexed>(
        &mut self,
        ty: &TableSchema,
        uuid: Uuid,
        op: RowOp<'_>,
    ) -> Result<ChangeKind, Refusal> {
        let malformed = |r: String| (UpdateErrorKind::Malformed, r);
        let diverged = |r: &str| Err((UpdateErrorKind::Diverged, r.to_owned()));
        // ovsdb-idl's consistency rules: the server only inserts rows we do not hold and only
        // modifies or deletes rows we do. Anything else means we missed or doubled an update.
        let held = M::store(self).contains_key(&uuid);
        match (&op, held) {
            (RowOp::Insert(_), true) => return diverged("insert of a row already held"),
            (RowOp::Modify(..), false) => return diverged("modify of a row not held"),
            (RowOp::Delete, false) => return diverged("delete of a row not held"),
            _ => {}
        }
        match op {
            RowOp::Insert(cols) => {
                let mut row = M::default();
                row.set_uuid(uuid);
                // Omitted columns hold the schema default, which is not always Rust's.
                for (c, ct) in ty {
                    if ct.min > 0 {
                        row.set(c, ct.default_datum())
                            .map_err(|e| malformed(format!("default of column {c}: {e}")))?;
                    }
                }
                for (c, ct, d) in cols {
                    row.set(c, normalize(d, ct.is_map()))
                        .map_err(|e| malformed(format!("column {c}: {e}")))?;
                }
                self.put(row);
                Ok(ChangeKind::Insert)
            }
            RowOp::Modify(cols, diff) => {
                // A router's `ports`/`static_routes` changed by a diff: only the rows the diff
                // toggles are indexed again (`row_index`), not the hub's other 10,000. A V1
                // (`monitor` fallback) modify sends the whole new row, not a diff, so it
                // re-indexes the router whole (`deep`): every row of a hub, per modify.
                let deep = !(diff && M::TOGGLES);
                let row = self.remove_row::<M>(uuid, deep).ok_or_else(|| {
                    (UpdateErrorKind::Diverged, "modify of a row not held".into())
                })?;
                // Older snapshots may share the row: a modify edits a copy of it.
                let mut row = Arc::unwrap_or_clone(row);
                let mut toggled = Vec::new();
                let result = (|| {
                    for (c, ct, d) in cols {
                        let new = normalize(d, ct.is_map());
                        if !(diff && ct.is_composite()) {
                            row.set(c, new).map_err(|e| format!("column {c}: {e}"))?;
                            continue;
                        }
                        if let (false, Some(is_port)) = (deep, M::toggles(c)) {
                            toggled.push((is_port, uuids_of(&new)));
                        }
                        // In place: no copy of a hub router's 10,000 ports.
                        row.apply_diff(c, new)
                            .map_err(|e| format!("column {c}: {e}"))?;
                    }
                    Ok::<_, String>(())
                })();
                for (is_port, uuids) in &toggled {
                    row.toggled(self, *is_port, uuids);
                }
                self.put_row(row, deep);
                result.map(|()| ChangeKind::Modify).map_err(malformed)
            }
            RowOp::Delete => {
                self.remove::<M>(uuid);
                Ok(ChangeKind::Delete)
            }
        }
    }

    /// What changed from `self` to `new`, row by row (after a dump that replaced a replica
    /// that was still valid).
    pub fn changes_to(&self, new: &NbCache) -> Vec<RowChange> {
        let mut out = Vec::new();
        diff_rows::<LogicalRouter>(self, new, &mut out);
        diff_rows::<LogicalRouterPort>(self, new, &mut out);
        diff_rows::<LogicalRouterStaticRoute>(self, new, &mut out);
        out
    }

    fn put<M: Model + Indexed>(&mut self, row: M) {
        self.put_row(row, true)
    }

    /// `deep`: the row's entries in `row_index` too (a router's every row).
    fn put_row<M: Model + Indexed>(&mut self, row: M, deep: bool) {
        let (table, uuid) = (M::TABLE, row.uuid());
        if let Some(v) = owner_value(&self.owner_key, row.external_ids()) {
            match self.by_owner.get_mut(v) {
                Some(m) => m.insert((table, uuid)),
                None => {
                    self.by_owner.insert(v.into(), Members::One((table, uuid)));
                }
            }
        }
        row.index(self);
        if deep {
            row.index_rows(self);
        }
        M::store_mut(self).insert(uuid, Arc::new(row));
    }

    /// Takes the row out (a delete drops it: no copy even while a snapshot shares it).
    fn remove<M: Model + Indexed>(&mut self, uuid: Uuid) -> Option<Arc<M>> {
        self.remove_row(uuid, true)
    }

    fn remove_row<M: Model + Indexed>(&mut self, uuid: Uuid, deep: bool) -> Option<Arc<M>> {
        let row = M::store_mut(self).remove(&uuid)?;
        if let Some(v) = owner_value(&self.owner_key, row.external_ids()) {
            if let Some(m) = self.by_owner.get_mut(v) {
                if !m.remove(&(M::TABLE, uuid)) {
                    self.by_owner.remove(v);
                }
            }
        }
        row.unindex(self);
        if deep {
            row.unindex_rows(self);
        }
        Some(row)
    }

    /// Debug builds, small replicas: `row_index` as followed equals it made from scratch.
    #[cfg(debug_assertions)]
    fn check_row_index(&self) {
        if self.len() <= 4096 {
            let fresh =
                RowIndex::rebuilt(self.routers(), |u| self.port(u), |u| self.static_route(u));
            assert!(
                fresh == self.rows,
                "the replica's row index as followed differs from a rebuild"
            );
        }
    }
}

/// `ids[owner_key]`, when indexed (looked up by `&str`: a copy is made only for a new key).
fn owner_value<'a>(owner_key: &Option<String>, ids: &'a StrMap) -> Option<&'a str> {
    owner_key.as_deref().and_then(|k| ids.get(k))
}

fn diff_rows<M: Model + Indexed>(old: &NbCache, new: &NbCache, out: &mut Vec<RowChange>) {
    let (o, n) = (M::store(old), M::store(new));
    let change = |uuid: Uuid, kind| RowChange {
        table: M::TABLE,
        uuid,
        kind,
    };
    for (uuid, row) in n {
        match o.get(uuid) {
            None => out.push(change(*uuid, ChangeKind::Insert)),
            Some(was) if !Arc::ptr_eq(was, row) && was != row => {
                out.push(change(*uuid, ChangeKind::Modify))
            }
            Some(_) => {}
        }
    }
    out.extend(
        o.keys()
            .filter(|u| !n.contains_key(*u))
            .map(|u| change(*u, ChangeKind::Delete)),
    );
}

/// Sorts and dedups sets; turns an empty set into an empty map for map columns.
fn normalize(d: Datum, is_map: bool) -> Datum {
    match d {
        Datum::Set(v) if is_map && v.is_empty() => Datum::Map(vec![]),
        Datum::Set(v) => Datum::Set(v.into_iter().collect::<BTreeSet<_>>().into_iter().collect()),
        Datum::Map(m) => Datum::Map(
            m.into_iter()
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        ),
    }
}

/// Per-table storage and secondary indexes.
trait Indexed: Sized {
    fn store(c: &NbCache) -> &PMap<Uuid, Arc<Self>>;
    fn store_mut(c: &mut NbCache) -> &mut PMap<Uuid, Arc<Self>>;
    fn index(&self, _c: &mut NbCache) {}
    fn unindex(&self, _c: &mut NbCache) {}
    /// The row's entries in `row_index` (a router's: one per row it lists).
    fn index_rows(&self, _c: &mut NbCache) {}
    fn unindex_rows(&self, _c: &mut NbCache) {}
    /// Whether an `update2` diff of a column is applied to `row_index` by the rows it
    /// toggles ([`Self::toggled`]) instead of the row's entries removed and added whole.
    const TOGGLES: bool = false;
    /// `Some(is_port)` for a column whose diff is applied by [`Self::toggled`].
    fn toggles(_column: &str) -> Option<bool> {
        None
    }
    /// `self` after a diff that toggled `uuids` in its ports (`is_port`) or routes.
    fn toggled(&self, _c: &mut NbCache, _is_port: bool, _uuids: &[Uuid]) {}
}

/// The uuids of a set (a diff of a column of references).
fn uuids_of(d: &Datum) -> Vec<Uuid> {
    match d {
        Datum::Set(atoms) => atoms
            .iter()
            .filter_map(|a| match a {
                super::values::Atom::Uuid(u) => Some(*u),
                _ => None,
            })
            .collect(),
        Datum::Map(_) => Vec::new(),
    }
}

impl Indexed for LogicalRouter {
    fn store(c: &NbCache) -> &PMap<Uuid, Arc<Self>> {
        &c.routers
    }
    fn store_mut(c: &mut NbCache) -> &mut PMap<Uuid, Arc<Self>> {
        &mut c.routers
    }
    fn index(&self, c: &mut NbCache) {
        match c.router_by_name.get_mut(&self.name) {
            Some(m) => m.insert(self.uuid),
            None => {
                c.router_by_name
                    .insert(self.name.clone(), Members::One(self.uuid));
            }
        }
    }
    fn unindex(&self, c: &mut NbCache) {
        if let Some(m) = c.router_by_name.get_mut(&self.name) {
            if !m.remove(&self.uuid) {
                c.router_by_name.remove(&self.name);
            }
        }
    }
    fn index_rows(&self, c: &mut NbCache) {
        let (rows, ports, routes) = (&mut c.rows, &c.ports, &c.routes);
        rows.router_added(
            self,
            |u| ports.get(&u).map(|p| &**p),
            |u| routes.get(&u).map(|r| &**r),
        );
    }
    fn unindex_rows(&self, c: &mut NbCache) {
        let (rows, ports, routes) = (&mut c.rows, &c.ports, &c.routes);
        rows.router_removed(
            self,
            |u| ports.get(&u).map(|p| &**p),
            |u| routes.get(&u).map(|r| &**r),
        );
    }
    const TOGGLES: bool = true;
    fn toggles(column: &str) -> Option<bool> {
        match column {
            "ports" => Some(true),
            "static_routes" => Some(false),
            _ => None,
        }
    }
    fn toggled(&self, c: &mut NbCache, is_port: bool, uuids: &[Uuid]) {
        let (rows, ports, routes) = (&mut c.rows, &c.ports, &c.routes);
        rows.router_toggled(
            self,
            is_port,
            uuids,
            |u| ports.get(&u).map(|p| &**p),
            |u| routes.get(&u).map(|r| &**r),
        );
    }
}

impl Indexed for LogicalRouterPort {
    fn store(c: &NbCache) -> &PMap<Uuid, Arc<Self>> {
        &c.ports
    }
    fn store_mut(c: &mut NbCache) -> &mut PMap<Uuid, Arc<Self>> {
        &mut c.ports
    }
    fn index(&self, c: &mut NbCache) {
        c.port_by_name.insert(self.name.clone(), self.uuid);
    }
    fn unindex(&self, c: &mut NbCache) {
        if c.port_by_name.get(&self.name) == Some(&self.uuid) {
            c.port_by_name.remove(&self.name);
        }
    }
    fn index_rows(&self, c: &mut NbCache) {
        c.rows.port_added(self);
    }
    fn unindex_rows(&self, c: &mut NbCache) {
        c.rows.port_removed(self);
    }
}

impl Indexed for LogicalRouterStaticRoute {
    fn store(c: &NbCache) -> &PMap<Uuid, Arc<Self>> {
        &c.routes
    }
    fn store_mut(c: &mut NbCache) -> &mut PMap<Uuid, Arc<Self>> {
        &mut c.routes
    }
    fn index_rows(&self, c: &mut NbCache) {
        c.rows.route_added(self);
    }
    fn unindex_rows(&self, c: &mut NbCache) {
        c.rows.route_removed(self);
    }
}

#[cfg(test)]
mod index_props;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ovsdb::schema::DatabaseSchema;
    use serde_json::{json, Value};

    /// `apply` of a `Value`'s text.
    pub(crate) trait ApplyValue {
        fn apply_v(
            &mut self,
            t: &Types,
            f: UpdateFormat,
            v: &Value,
        ) -> Result<Vec<RowChange>, UpdateError>;
    }
    impl ApplyValue for NbCache {
        fn apply_v(
            &mut self,
            t: &Types,
            f: UpdateFormat,
            v: &Value,
        ) -> Result<Vec<RowChange>, UpdateError> {
            self.apply(t, f, &v.to_string())
        }
    }

    pub(crate) fn types() -> Types {
        let s = DatabaseSchema::parse(
            &serde_json::from_str(
                &std::fs::read_to_string(ovn_peerd_test_support::ovsdb::NB_SCHEMA)
                    .unwrap_or_default(),
            )
            .unwrap_or_else(|_| fallback_schema()),
        )
        .unwrap();
        Table::ALL
            .iter()
            .map(|t| (*t, s.check(t.name(), t.columns()).unwrap()))
            .collect()
    }

    fn fallback_schema() -> Value {
        json!({"name": "OVN_Northbound", "tables": {
            "Logical_Router": {"columns": {"name": {"type": "string"},
                "ports": {"type": {"key": "uuid", "min": 0, "max": "unlimited"}},
                "static_routes": {"type": {"key": "uuid", "min": 0, "max": "unlimited"}},
                "options": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "external_ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}}},
            "Logical_Router_Port": {"columns": {"name": {"type": "string"}, "mac": {"type": "string"},
                "networks": {"type": {"key": "string", "min": 1, "max": "unlimited"}},
                "peer": {"type": {"key": "string", "min": 0, "max": 1}},
                "enabled": {"type": {"key": "boolean", "min": 0, "max": 1}},
                "gateway_chassis": {"type": {"key": "uuid", "min": 0, "max": "unlimited"}},
                "ha_chassis_group": {"type": {"key": "uuid", "min": 0, "max": 1}},
                "options": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "external_ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}}},
            "Logical_Router_Static_Route": {"columns": {"ip_prefix": {"type": "string"}, "nexthop": {"type": "string"},
                "policy": {"type": {"key": "string", "min": 0, "max": 1}},
                "output_port": {"type": {"key": "string", "min": 0, "max": 1}},
                "route_table": {"type": "string"},
                "options": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "external_ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}}}}})
    }

    #[test]
    fn applies_update2_with_defaults_diffs_and_indexes() {
        let t = types();
        let mut c = NbCache::new(Some("owner".into()));
        let p = Uuid::from_u128(1);
        let r = Uuid::from_u128(2);
        let ch = c
            .apply_v(
                &t,
                UpdateFormat::V2,
                &json!({
                "Logical_Router_Port": {p.to_string(): {"initial": {"name": "lp", "mac": "m",
                    "networks": "10.0.0.1/24", "external_ids": ["map", [["owner", "x"]]]}}},
                "Logical_Router": {r.to_string(): {"insert": {"name": "r",
                    "ports": ["uuid", p.to_string()]}}}}),
            )
            .unwrap();
        assert_eq!(ch.len(), 2);
        let port = c.port_by_name("lp").unwrap();
        assert_eq!(*port.networks, ["10.0.0.1/24"]);
        assert_eq!(port.peer, None);
        assert_eq!(port.enabled, None);
        assert_eq!(*c.router_by_name("r")[0].ports, [p]);
        assert_eq!(c.rows_with_external_id("owner", "x").len(), 1);

        c.apply_v(
            &t,
            UpdateFormat::V2,
            &json!({"Logical_Router_Port": {p.to_string(): {"modify": {
            "networks": ["set", ["10.0.0.1/24", "fd00::1/64"]], "peer": "q", "name": "lp2",
            "external_ids": ["map", [["owner", "y"], ["k", "v"]]]}}}}),
        )
        .unwrap();
        let port = c.port(p).unwrap();
        assert_eq!(*port.networks, ["fd00::1/64"]);
        assert_eq!(port.peer.as_deref(), Some("q"));
        assert!(c.port_by_name("lp").is_none());
        assert_eq!(c.port_by_name("lp2").unwrap().uuid, p);
        assert!(c.rows_with_external_id("owner", "x").is_empty());
        assert_eq!(c.rows_with_external_id("owner", "y").len(), 1);
        assert_eq!(c.rows_with_external_id("k", "v").len(), 1);

        // An optional (0..1) column is not diffed: the modify carries the new value.
        c.apply_v(
            &t,
            UpdateFormat::V2,
            &json!({"Logical_Router_Port": {p.to_string(): {"modify": {
            "peer": "b"}}}}),
        )
        .unwrap();
        assert_eq!(c.port(p).unwrap().peer.as_deref(), Some("b"));
        c.apply_v(
            &t,
            UpdateFormat::V2,
            &json!({"Logical_Router_Port": {p.to_string(): {"modify": {
            "peer": ["set", []]}}}}),
        )
        .unwrap();
        assert_eq!(c.port(p).unwrap().peer, None);

        let ch = c
            .apply_v(
                &t,
                UpdateFormat::V2,
                &json!({"Logical_Router_Port": {p.to_string(): {"delete": null}}}),
            )
            .unwrap();
        assert_eq!(ch[0].kind, ChangeKind::Delete);
        assert!(c.port_by_name("lp2").is_none());
        assert!(c.owner_values().next().is_none());
    }

    /// A router and a route straight from the wire: omitted columns take the schema's
    /// defaults, a uuid set and a map take diffs, an unknown column is skipped, a weak uuid
    /// reference is kept, a delete drops the row and its index entries.
    #[test]
    fn typed_rows_with_defaults_diffs_and_references() {
        let t = types();
        let mut c = NbCache::new(Some("owner".into()));
        let (r, s, p1, p2, b) = (
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            Uuid::from_u128(3),
            Uuid::from_u128(4),
            Uuid::from_u128(5),
        );
        let ids = |pairs: &[(&str, &str)]| StrMap::from_iter(pairs.iter().copied());
        c.apply_v(
            &t,
            UpdateFormat::V2,
            &json!({
            "Logical_Router": {r.to_string(): {"initial": {"name": "r",
                "ports": ["set", [["uuid", p1.to_string()], ["uuid", p2.to_string()]]],
                "external_ids": ["map", [["owner", "x"], ["a", "1"], ["b", "2"]]],
                "enabled": true}}},
            "Logical_Router_Static_Route": {s.to_string(): {"initial": {
                "ip_prefix": "10.0.0.0/8", "bfd": ["uuid", b.to_string()]}}}}),
        )
        .unwrap();
        let router = c.router(r).unwrap();
        assert_eq!(*router.ports, [p1, p2]);
        assert!(router.static_routes.is_empty() && router.options.is_empty());
        assert_eq!(
            router.external_ids,
            ids(&[("a", "1"), ("b", "2"), ("owner", "x")])
        );
        let route = c.static_route(s).unwrap();
        assert_eq!(route.bfd, Some(b));
        // Defaults of omitted columns: "" for the strings, empty for the optional ones.
        assert_eq!(
            (
                route.nexthop.as_str(),
                route.route_table.as_str(),
                &route.policy
            ),
            ("", "", &None)
        );

        c.apply_v(
            &t,
            UpdateFormat::V2,
            &json!({"Logical_Router": {r.to_string(): {"modify": {
                "ports": ["set", [["uuid", p1.to_string()]]],
                "external_ids": ["map", [["a", "1"], ["b", "3"], ["c", "4"]]]}}},
            "Logical_Router_Static_Route": {s.to_string(): {"modify": {
                "bfd": ["set", []], "nexthop": "192.0.2.1"}}}}),
        )
        .unwrap();
        let router = c.router(r).unwrap();
        assert_eq!(*router.ports, [p2], "a uuid set's diff toggles its members");
        assert_eq!(
            router.external_ids,
            ids(&[("b", "3"), ("c", "4"), ("owner", "x")]),
            "a map's diff: same pair removes, other value replaces, new key adds"
        );
        let route = c.static_route(s).unwrap();
        assert_eq!((route.bfd, route.nexthop.as_str()), (None, "192.0.2.1"));

        c.apply_v(
            &t,
            UpdateFormat::V2,
            &json!({"Logical_Router": {r.to_string(): {"delete": null}}}),
        )
        .unwrap();
        assert!(c.router(r).is_none() && c.router_by_name("r").is_empty());
        assert!(c.rows_with_external_id("owner", "x").is_empty());
        assert_eq!(c.len(), 1);
    }

    /// Router names are not unique: the name index holds every router of a name, sorted, and
    /// keeps the others when one goes or is renamed; the owner index likewise per peering.
    #[test]
    fn indexes_hold_every_row_of_a_name_until_each_goes() {
        let t = types();
        let mut c = NbCache::new(Some("owner".into()));
        let [r1, r2, r3, p1, p2] = [5, 3, 4, 10, 11].map(Uuid::from_u128);
        let router = |n: &str| json!({"initial": {"name": n}});
        let port = |n: &str| json!({"initial": {"name": n, "mac": "m", "external_ids": ["map", [["owner", "x"]]]}});
        c.apply_v(
            &t,
            UpdateFormat::V2,
            &json!({
            "Logical_Router": {r1.to_string(): router("a"), r2.to_string(): router("a"),
                r3.to_string(): router("b")},
            "Logical_Router_Port": {p1.to_string(): port("p1"), p2.to_string(): port("p2")}}),
        )
        .unwrap();
        let uuids = |c: &NbCache, n: &str| {
            c.router_by_name(n)
                .iter()
                .map(|r| r.uuid)
                .collect::<Vec<_>>()
        };
        assert_eq!(uuids(&c, "a"), [r2, r1]);
        assert_eq!(
            c.rows_with_external_id("owner", "x"),
            BTreeSet::from([
                (Table::LogicalRouterPort, p1),
                (Table::LogicalRouterPort, p2)
            ])
        );
        let snapshot = c.clone();
        c.apply_v(
            &t,
            UpdateFormat::V2,
            &json!({
            "Logical_Router": {r1.to_string(): {"modify": {"name": "b"}}},
            "Logical_Router_Port": {p1.to_string(): {"delete": null}}}),
        )
        .unwrap();
        assert_eq!((uuids(&c, "a"), uuids(&c, "b")), (vec![r2], vec![r3, r1]));
        assert_eq!(
            c.rows_with_external_id("owner", "x"),
            BTreeSet::from([(Table::LogicalRouterPort, p2)])
        );
        // The snapshot's indexes are its own.
        assert_eq!(uuids(&snapshot, "a"), [r2, r1]);
        assert_eq!(snapshot.rows_with_external_id("owner", "x").len(), 2);
        c.apply_v(
            &t,
            UpdateFormat::V2,
            &json!({
            "Logical_Router": {r2.to_string(): {"delete": null}}}),
        )
        .unwrap();
        assert!(c.router_by_name("a").is_empty());
        assert!(
            c.router_by_name.get("a").is_none(),
            "an emptied name leaves the index"
        );
    }

    /// N rows under one index key (routers all named "", one owner value on N rows) take the
    /// B-tree form past a few: a dump of 20,000 applies in O(N log N), not O(N²) copies of a
    /// growing slice. Every row is indexed, a snapshot keeps its own members, and the forms
    /// shrink back as members go.
    #[test]
    fn many_rows_under_one_key_take_the_large_form() {
        let t = types();
        let mut c = NbCache::new(Some("owner".into()));
        let n = 20_000u128;
        let routers: serde_json::Map<String, Value> = (1..=n)
            .map(|i| {
                let r = json!({"initial": {"name": "", "external_ids": ["map", [["owner", "x"]]]}});
                (Uuid::from_u128(i).to_string(), r)
            })
            .collect();
        c.apply_v(&t, UpdateFormat::V2, &json!({ "Logical_Router": routers }))
            .unwrap();
        assert!(matches!(c.router_by_name.get(""), Some(Members::Many(_))));
        assert!(matches!(c.by_owner.get("x"), Some(Members::Many(_))));
        assert_eq!(c.router_by_name("").len(), n as usize);
        assert_eq!(c.rows_with_external_id("owner", "x").len(), n as usize);
        let snapshot = c.clone();
        let deletes: serde_json::Map<String, Value> = (2..=n)
            .map(|i| (Uuid::from_u128(i).to_string(), json!({"delete": null})))
            .collect();
        c.apply_v(&t, UpdateFormat::V2, &json!({ "Logical_Router": deletes }))
            .unwrap();
        assert_eq!(c.router_by_name("")[0].uuid, Uuid::from_u128(1));
        assert_eq!(c.rows_with_external_id("owner", "x").len(), 1);
        assert_eq!(snapshot.router_by_name("").len(), n as usize);
    }

    /// The rows were sized for jemalloc's size classes with their `Arc` (16 bytes): a router
    /// in 128 bytes, a port in 192 (README, *Memory at 100,000 peerings*). A field added or
    /// widened (a `Vec` for a boxed slice, a `String` for an inline string) shows here first.
    #[test]
    fn rows_fit_their_size_classes() {
        use std::mem::size_of;
        assert!(size_of::<LogicalRouter>() + 16 <= 128);
        assert!(size_of::<LogicalRouterPort>() + 16 <= 192);
        assert!(size_of::<LogicalRouterStaticRoute>() + 16 <= 224);
        assert_eq!(size_of::<CompactString>(), size_of::<String>());
    }

    #[test]
    fn malformed_updates_are_errors() {
        let t = types();
        let mut c = NbCache::new(None);
        for bad in [
            json!([1]),
            json!({"Logical_Router": {"not-a-uuid": {"insert": {}}}}),
            json!({"Logical_Router": {Uuid::nil().to_string(): {"modify": {"name": "x"}}}}),
            json!({"Logical_Router": {Uuid::nil().to_string(): {"insert": {"name": 5}}}}),
            json!({"Logical_Router": {Uuid::nil().to_string(): {"bogus": {}}}}),
        ] {
            assert!(c.apply_v(&t, UpdateFormat::V2, &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn v1_updates() {
        let t = types();
        let mut c = NbCache::new(None);
        let r = Uuid::from_u128(9);
        c.apply_v(
            &t,
            UpdateFormat::V1,
            &json!({"Logical_Router": {r.to_string(): {"new": {"name": "a",
            "ports": ["set", []], "options": ["map", []]}}}}),
        )
        .unwrap();
        c.apply_v(
            &t,
            UpdateFormat::V1,
            &json!({"Logical_Router": {r.to_string(): {"old": {"name": "a"},
            "new": {"name": "b", "ports": ["set", []], "options": ["map", []]}}}}),
        )
        .unwrap();
        assert_eq!(c.router(r).unwrap().name, "b");
        c.apply_v(
            &t,
            UpdateFormat::V1,
            &json!({"Logical_Router": {r.to_string(): {"old": {"name": "b"}}}}),
        )
        .unwrap();
        assert!(c.is_empty());
    }
}
