//! Typed rows of the NB tables we replicate, and their conversion from/to column values.
//!
//! Owns the list of modelled columns per table (what we monitor and check in the schema).
//! No peering rules here: these are plain mirrors of NB rows.
//!
//! Stored small (README, *Memory at 100,000 peerings*): strings are [`CompactString`]s (up to 24
//! bytes inline, no allocation: names, MACs, prefixes) except `networks` (the rules read it as
//! `&[String]`), sets are exact boxed slices.

use compact_str::CompactString;
use uuid::Uuid;

use super::schema::{AtomicType as T, ColumnSpec};
use super::strmap::StrMap;
use super::values::{Atom, Datum, Row};

/// A row type the cache can hold.
pub trait Model: Clone + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    const TABLE: Table;
    /// The columns we model (and monitor); all must exist in the server's schema.
    const COLUMNS: &'static [ColumnSpec];
    fn uuid(&self) -> Uuid;
    fn set_uuid(&mut self, uuid: Uuid);
    fn external_ids(&self) -> &StrMap;
    /// The current value of a modelled column.
    fn get(&self, column: &str) -> Option<Datum>;
    /// Sets a modelled column from its full value; unknown columns are ignored.
    fn set(&mut self, column: &str, value: Datum) -> Result<(), String>;
    /// Applies an `update2` diff (sorted and deduplicated) to a modelled set or map column, in
    /// place: a set's elements are toggled (symmetric difference); a map's pair equal to one
    /// held removes it, another value replaces, a new key adds.
    fn apply_diff(&mut self, column: &str, diff: Datum) -> Result<(), String>;

    /// All modelled columns, e.g. for an `insert` (refer to other new rows by editing the result).
    fn to_row(&self) -> Row {
        Self::COLUMNS
            .iter()
            .filter_map(|c| Some((c.name.to_owned(), self.get(c.name)?)))
            .collect()
    }
}

/// The tables we replicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    LogicalRouter,
    LogicalRouterPort,
    LogicalRouterStaticRoute,
}

impl Table {
    pub const ALL: [Table; 3] = [
        Table::LogicalRouter,
        Table::LogicalRouterPort,
        Table::LogicalRouterStaticRoute,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Table::LogicalRouter => "Logical_Router",
            Table::LogicalRouterPort => "Logical_Router_Port",
            Table::LogicalRouterStaticRoute => "Logical_Router_Static_Route",
        }
    }
    pub fn from_name(s: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == s)
    }
    pub fn columns(self) -> &'static [ColumnSpec] {
        match self {
            Table::LogicalRouter => LogicalRouter::COLUMNS,
            Table::LogicalRouterPort => LogicalRouterPort::COLUMNS,
            Table::LogicalRouterStaticRoute => LogicalRouterStaticRoute::COLUMNS,
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogicalRouter {
    pub uuid: Uuid,
    pub name: CompactString,
    pub ports: Box<[Uuid]>,
    pub static_routes: Box<[Uuid]>,
    pub options: StrMap,
    pub external_ids: StrMap,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogicalRouterPort {
    pub uuid: Uuid,
    pub name: CompactString,
    pub mac: CompactString,
    /// Plain strings: the rules read them as `&[String]`.
    pub networks: Box<[String]>,
    /// The peer port's *name*.
    pub peer: Option<CompactString>,
    pub enabled: Option<bool>,
    pub gateway_chassis: Box<[Uuid]>,
    pub ha_chassis_group: Option<Uuid>,
    pub options: StrMap,
    pub external_ids: StrMap,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogicalRouterStaticRoute {
    pub uuid: Uuid,
    pub ip_prefix: CompactString,
    pub nexthop: CompactString,
    /// `None` means dst-ip.
    pub policy: Option<CompactString>,
    pub output_port: Option<CompactString>,
    /// "" = the main table.
    pub route_table: CompactString,
    /// Weak reference to a `BFD` row.
    pub bfd: Option<Uuid>,
    pub options: StrMap,
    pub external_ids: StrMap,
}

// ---- conversions between column values and fields ----

fn atoms(d: Datum) -> Result<Vec<Atom>, String> {
    match d {
        Datum::Set(v) => Ok(v),
        Datum::Map(_) => Err("expected a set, got a map".into()),
    }
}
fn string(d: Datum) -> Result<CompactString, String> {
    opt_string(d)?.ok_or_else(|| "expected one string".into())
}
/// A short string moves inline (its buffer freed), a long one keeps its buffer.
fn opt_string(d: Datum) -> Result<Option<CompactString>, String> {
    let mut v = strings(d)?;
    if v.len() > 1 {
        return Err("expected at most one string".into());
    }
    Ok(v.pop().map(CompactString::from))
}
fn strings(d: Datum) -> Result<Vec<String>, String> {
    atoms(d)?
        .into_iter()
        .map(|a| match a {
            Atom::String(s) => Ok(s),
            other => Err(format!("expected a string, got {other:?}")),
        })
        .collect()
}
fn uuids(d: Datum) -> Result<Vec<Uuid>, String> {
    atoms(d)?
        .into_iter()
        .map(|a| {
            a.as_uuid()
                .ok_or_else(|| format!("expected a uuid, got {a:?}"))
        })
        .collect()
}
fn opt_uuid(d: Datum) -> Result<Option<Uuid>, String> {
    let mut v = uuids(d)?;
    if v.len() > 1 {
        return Err("expected at most one uuid".into());
    }
    Ok(v.pop())
}
fn opt_bool(d: Datum) -> Result<Option<bool>, String> {
    match atoms(d)?.as_slice() {
        [] => Ok(None),
        [Atom::Boolean(b)] => Ok(Some(*b)),
        other => Err(format!("expected an optional boolean, got {other:?}")),
    }
}
fn string_pairs(d: Datum) -> Result<Vec<(String, String)>, String> {
    match d {
        Datum::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| match (k, v) {
                (Atom::String(k), Atom::String(v)) => Ok((k, v)),
                other => Err(format!("expected string pairs, got {other:?}")),
            })
            .collect(),
        Datum::Set(v) if v.is_empty() => Ok(Vec::new()),
        Datum::Set(_) => Err("expected a map, got a set".into()),
    }
}
fn string_map(d: Datum) -> Result<StrMap, String> {
    string_pairs(d).map(StrMap::from_iter)
}

/// Applies an `update2` set diff in place: each element of `diff` is removed when held, added
/// when not. `set` is sorted and stays so (a modify of one hub router's 10,000 ports costs a
/// binary search and a move per element, and one exact reallocation, not a copy of the set).
fn toggle<T: Ord>(set: &mut Box<[T]>, diff: Vec<T>) {
    let mut v = std::mem::take(set).into_vec();
    for x in diff {
        match v.binary_search(&x) {
            Ok(i) => {
                v.remove(i);
            }
            Err(i) => v.insert(i, x),
        }
    }
    *set = v.into_boxed_slice();
}
fn map_diff(m: &mut StrMap, d: Datum) -> Result<(), String> {
    m.apply_diff(string_pairs(d)?);
    Ok(())
}

fn d_str(s: &str) -> Datum {
    Datum::from(s)
}
fn d_opt_str(s: &Option<CompactString>) -> Datum {
    Datum::set(s.iter().map(CompactString::as_str))
}
fn d_strs(v: &[String]) -> Datum {
    Datum::set(v.iter().map(String::as_str))
}
fn d_uuids(v: &[Uuid]) -> Datum {
    Datum::set(v.iter().copied())
}
fn d_map(m: &StrMap) -> Datum {
    Datum::map(m.iter())
}

impl Model for LogicalRouter {
    const TABLE: Table = Table::LogicalRouter;
    const COLUMNS: &'static [ColumnSpec] = &[
        ColumnSpec::scalar("name", T::String),
        ColumnSpec::set("ports", T::Uuid),
        ColumnSpec::set("static_routes", T::Uuid),
        ColumnSpec::map("options"),
        ColumnSpec::map("external_ids"),
    ];
    fn uuid(&self) -> Uuid {
        self.uuid
    }
    fn set_uuid(&mut self, uuid: Uuid) {
        self.uuid = uuid;
    }
    fn external_ids(&self) -> &StrMap {
        &self.external_ids
    }
    fn get(&self, column: &str) -> Option<Datum> {
        Some(match column {
            "name" => d_str(&self.name),
            "ports" => d_uuids(&self.ports),
            "static_routes" => d_uuids(&self.static_routes),
            "options" => d_map(&self.options),
            "external_ids" => d_map(&self.external_ids),
            _ => return None,
        })
    }
    fn set(&mut self, column: &str, v: Datum) -> Result<(), String> {
        match column {
            "name" => self.name = string(v)?,
            "ports" => self.ports = uuids(v)?.into(),
            "static_routes" => self.static_routes = uuids(v)?.into(),
            "options" => self.options = string_map(v)?,
            "external_ids" => self.external_ids = string_map(v)?,
            _ => {}
        }
        Ok(())
    }
    fn apply_diff(&mut self, column: &str, d: Datum) -> Result<(), String> {
        match column {
            "ports" => uuids(d).map(|d| toggle(&mut self.ports, d)),
            "static_routes" => uuids(d).map(|d| toggle(&mut self.static_routes, d)),
            "options" => map_diff(&mut self.options, d),
            "external_ids" => map_diff(&mut self.external_ids, d),
            _ => Err("not a set or map column".into()),
        }
    }
}

impl Model for LogicalRouterPort {
    const TABLE: Table = Table::LogicalRouterPort;
    const COLUMNS: &'static [ColumnSpec] = &[
        ColumnSpec::scalar("name", T::String),
        ColumnSpec::scalar("mac", T::String),
        ColumnSpec::set("networks", T::String),
        ColumnSpec::optional("peer", T::String),
        ColumnSpec::optional("enabled", T::Boolean),
        ColumnSpec::set("gateway_chassis", T::Uuid),
        ColumnSpec::optional("ha_chassis_group", T::Uuid),
        ColumnSpec::map("options"),
        ColumnSpec::map("external_ids"),
    ];
    fn uuid(&self) -> Uuid {
        self.uuid
    }
    fn set_uuid(&mut self, uuid: Uuid) {
        self.uuid = uuid;
    }
    fn external_ids(&self) -> &StrMap {
        &self.external_ids
    }
    fn get(&self, column: &str) -> Option<Datum> {
        Some(match column {
            "name" => d_str(&self.name),
            "mac" => d_str(&self.mac),
            "networks" => d_strs(&self.networks),
            "peer" => d_opt_str(&self.peer),
            "enabled" => Datum::set(self.enabled),
            "gateway_chassis" => d_uuids(&self.gateway_chassis),
            "ha_chassis_group" => Datum::set(self.ha_chassis_group),
            "options" => d_map(&self.options),
            "external_ids" => d_map(&self.external_ids),
            _ => return None,
        })
    }
    fn set(&mut self, column: &str, v: Datum) -> Result<(), String> {
        match column {
            "name" => self.name = string(v)?,
            "mac" => self.mac = string(v)?,
            "networks" => self.networks = strings(v)?.into(),
            "peer" => self.peer = opt_string(v)?,
            "enabled" => self.enabled = opt_bool(v)?,
            "gateway_chassis" => self.gateway_chassis = uuids(v)?.into(),
            "ha_chassis_group" => self.ha_chassis_group = opt_uuid(v)?,
            "options" => self.options = string_map(v)?,
            "external_ids" => self.external_ids = string_map(v)?,
            _ => {}
        }
        Ok(())
    }
    fn apply_diff(&mut self, column: &str, d: Datum) -> Result<(), String> {
        match column {
            "networks" => strings(d).map(|d| toggle(&mut self.networks, d)),
            "gateway_chassis" => uuids(d).map(|d| toggle(&mut self.gateway_chassis, d)),
            "options" => map_diff(&mut self.options, d),
            "external_ids" => map_diff(&mut self.external_ids, d),
            _ => Err("not a set or map column".into()),
        }
    }
}

impl Model for LogicalRouterStaticRoute {
    const TABLE: Table = Table::LogicalRouterStaticRoute;
    const COLUMNS: &'static [ColumnSpec] = &[
        ColumnSpec::scalar("ip_prefix", T::String),
        ColumnSpec::scalar("nexthop", T::String),
        ColumnSpec::optional("policy", T::String),
        ColumnSpec::optional("output_port", T::String),
        ColumnSpec::scalar("route_table", T::String),
        ColumnSpec::optional("bfd", T::Uuid),
        ColumnSpec::map("options"),
        ColumnSpec::map("external_ids"),
    ];
    fn uuid(&self) -> Uuid {
        self.uuid
    }
    fn set_uuid(&mut self, uuid: Uuid) {
        self.uuid = uuid;
    }
    fn external_ids(&self) -> &StrMap {
        &self.external_ids
    }
    fn get(&self, column: &str) -> Option<Datum> {
        Some(match column {
            "ip_prefix" => d_str(&self.ip_prefix),
            "nexthop" => d_str(&self.nexthop),
            "policy" => d_opt_str(&self.policy),
            "output_port" => d_opt_str(&self.output_port),
            "route_table" => d_str(&self.route_table),
            "bfd" => Datum::set(self.bfd),
            "options" => d_map(&self.options),
            "external_ids" => d_map(&self.external_ids),
            _ => return None,
        })
    }
    fn set(&mut self, column: &str, v: Datum) -> Result<(), String> {
        match column {
            "ip_prefix" => self.ip_prefix = string(v)?,
            "nexthop" => self.nexthop = string(v)?,
            "policy" => self.policy = opt_string(v)?,
            "output_port" => self.output_port = opt_string(v)?,
            "route_table" => self.route_table = string(v)?,
            "bfd" => self.bfd = opt_uuid(v)?,
            "options" => self.options = string_map(v)?,
            "external_ids" => self.external_ids = string_map(v)?,
            _ => {}
        }
        Ok(())
    }
    fn apply_diff(&mut self, column: &str, d: Datum) -> Result<(), String> {
        match column {
            "options" => map_diff(&mut self.options, d),
            "external_ids" => map_diff(&mut self.external_ids, d),
            _ => Err("not a set or map column".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_through_columns() {
        let p = LogicalRouterPort {
            uuid: Uuid::nil(),
            name: "p".into(),
            mac: "0a:00:00:00:00:01".into(),
            networks: ["10.0.0.1/24".into(), "fd00::1/64".into()].into(),
            peer: Some("q".into()),
            enabled: Some(false),
            gateway_chassis: [Uuid::from_u128(3)].into(),
            ha_chassis_group: None,
            options: StrMap::from([("a", "b")]),
            external_ids: StrMap::new(),
        };
        let mut q = LogicalRouterPort::default();
        for (c, v) in p.to_row() {
            q.set(&c, v).unwrap();
        }
        assert_eq!(p, q);
        assert!(q.set("name", Datum::empty_set()).is_err());
        assert!(q.set("options", Datum::set(["x"])).is_err());
    }

    /// Set and map diffs in place: toggled elements, removed/replaced/added pairs, sorted.
    #[test]
    fn diffs_in_place() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let mut r = LogicalRouter {
            ports: [a, b].into(),
            external_ids: StrMap::from([("k1", "v1"), ("k2", "v2"), ("k3", "v3")]),
            ..Default::default()
        };
        r.apply_diff("ports", Datum::set([b, c])).unwrap();
        assert_eq!(*r.ports, [a, c]);
        r.apply_diff(
            "external_ids",
            Datum::map([("k1", "v1"), ("k2", "new"), ("k4", "v4")]),
        )
        .unwrap();
        assert_eq!(
            r.external_ids,
            StrMap::from([("k2", "new"), ("k3", "v3"), ("k4", "v4")])
        );
        r.apply_diff("options", Datum::empty_set()).unwrap();
        assert!(r.apply_diff("ports", Datum::map([("k", "v")])).is_err());
        assert!(r.apply_diff("name", Datum::set(["x"])).is_err());
        let mut p = LogicalRouterPort {
            networks: ["".into()].into(),
            ..Default::default()
        };
        p.apply_diff("networks", Datum::set(["", "a", "b"]))
            .unwrap();
        assert_eq!(*p.networks, ["a", "b"]);
    }
}
