//! The NB rows a test checks, read back with `ovn-nbctl` (not through our own client), so a
//! test sees what any other NB user would see.
#![allow(dead_code)] // shared by several test modules; not all use every helper

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::nb::NbServer;

/// A `Logical_Router` as `ovn-nbctl list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterRow {
    pub uuid: String,
    pub name: String,
    pub ports: BTreeSet<String>,
    pub static_routes: BTreeSet<String>,
    pub options: BTreeMap<String, String>,
}

/// A `Logical_Router_Port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRow {
    pub uuid: String,
    pub name: String,
    pub mac: String,
    pub networks: BTreeSet<String>,
    pub peer: Option<String>,
    pub external_ids: BTreeMap<String, String>,
}

/// A `Logical_Router_Static_Route`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteRow {
    pub uuid: String,
    pub ip_prefix: String,
    pub nexthop: String,
    pub policy: Option<String>,
    pub route_table: String,
    pub external_ids: BTreeMap<String, String>,
}

/// A snapshot of the three tables.
#[derive(Debug, Clone)]
pub struct NbRows {
    pub routers: Vec<RouterRow>,
    pub ports: BTreeMap<String, PortRow>,
    pub routes: BTreeMap<String, RouteRow>,
}

const OWNER: (&str, &str) = ("ovn-peerd:owner", "ovn-peerd");

fn owned(ids: &BTreeMap<String, String>) -> bool {
    ids.get(OWNER.0).map(String::as_str) == Some(OWNER.1)
}

impl NbRows {
    /// Reads the tables now.
    pub fn read(nb: &NbServer) -> NbRows {
        let routers = list(
            nb,
            "Logical_Router",
            "_uuid,name,ports,static_routes,options",
        )
        .into_iter()
        .map(|r| RouterRow {
            uuid: uuid(&r[0]),
            name: string(&r[1]),
            ports: set(&r[2]).into_iter().collect(),
            static_routes: set(&r[3]).into_iter().collect(),
            options: map(&r[4]),
        })
        .collect();
        let ports = list(
            nb,
            "Logical_Router_Port",
            "_uuid,name,mac,networks,peer,external_ids",
        )
        .into_iter()
        .map(|r| PortRow {
            uuid: uuid(&r[0]),
            name: string(&r[1]),
            mac: string(&r[2]),
            networks: set(&r[3]).into_iter().collect(),
            peer: set(&r[4]).into_iter().next(),
            external_ids: map(&r[5]),
        })
        .map(|p| (p.uuid.clone(), p))
        .collect();
        let routes = list(
            nb,
            "Logical_Router_Static_Route",
            "_uuid,ip_prefix,nexthop,policy,route_table,external_ids",
        )
        .into_iter()
        .map(|r| RouteRow {
            uuid: uuid(&r[0]),
            ip_prefix: string(&r[1]),
            nexthop: string(&r[2]),
            policy: set(&r[3]).into_iter().next(),
            route_table: string(&r[4]),
            external_ids: map(&r[5]),
        })
        .map(|r| (r.uuid.clone(), r))
        .collect();
        NbRows {
            routers,
            ports,
            routes,
        }
    }

    /// The one router named `name`.
    #[track_caller]
    pub fn router(&self, name: &str) -> &RouterRow {
        let found: Vec<&RouterRow> = self.routers.iter().filter(|r| r.name == name).collect();
        assert_eq!(found.len(), 1, "routers named {name:?}: {found:?}");
        found[0]
    }

    /// The ports on router `name`.
    pub fn ports_of(&self, name: &str) -> Vec<&PortRow> {
        let r = self.router(name);
        r.ports.iter().filter_map(|u| self.ports.get(u)).collect()
    }

    /// The static routes on router `name`.
    pub fn routes_of(&self, name: &str) -> Vec<&RouteRow> {
        let r = self.router(name);
        r.static_routes
            .iter()
            .filter_map(|u| self.routes.get(u))
            .collect()
    }

    /// Our ports on router `name`.
    pub fn owned_ports_of(&self, name: &str) -> Vec<&PortRow> {
        self.ports_of(name)
            .into_iter()
            .filter(|p| owned(&p.external_ids))
            .collect()
    }

    /// Our routes on router `name`, as (prefix, nexthop, policy) sorted.
    pub fn owned_routes_of(&self, name: &str) -> Vec<(String, String, String)> {
        let mut v: Vec<(String, String, String)> = self
            .routes_of(name)
            .into_iter()
            .filter(|r| owned(&r.external_ids))
            .map(|r| {
                (
                    r.ip_prefix.clone(),
                    r.nexthop.clone(),
                    r.policy.clone().unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Every row marked as ours, anywhere.
    pub fn owned_count(&self) -> usize {
        self.ports
            .values()
            .filter(|p| owned(&p.external_ids))
            .count()
            + self
                .routes
                .values()
                .filter(|r| owned(&r.external_ids))
                .count()
    }

    /// Rows that are not ours, with the router holding them, for before/after comparisons.
    pub fn foreign(&self) -> Foreign {
        let mut f = Foreign::default();
        for r in &self.routers {
            f.routers
                .insert(r.uuid.clone(), (r.name.clone(), r.options.clone()));
            for u in &r.ports {
                if let Some(p) = self.ports.get(u).filter(|p| !owned(&p.external_ids)) {
                    f.ports.insert((r.name.clone(), p.clone()));
                }
            }
            for u in &r.static_routes {
                if let Some(x) = self.routes.get(u).filter(|x| !owned(&x.external_ids)) {
                    f.routes.insert((r.name.clone(), x.clone()));
                }
            }
        }
        f
    }

    /// (router, prefix, nexthop) held by more than one route, with the count.
    pub fn duplicate_routes(&self) -> Vec<(String, String, String, usize)> {
        let mut counts: BTreeMap<(String, String, String), usize> = BTreeMap::new();
        for r in &self.routers {
            for u in &r.static_routes {
                if let Some(x) = self.routes.get(u) {
                    *counts
                        .entry((r.name.clone(), x.ip_prefix.clone(), x.nexthop.clone()))
                        .or_default() += 1;
                }
            }
        }
        counts
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|((r, p, n), c)| (r, p, n, c))
            .collect()
    }

    /// Names of the ports marked as ours (names are unique in NB, so no duplicates possible).
    pub fn owned_port_names(&self) -> BTreeSet<String> {
        self.ports
            .values()
            .filter(|p| owned(&p.external_ids))
            .map(|p| p.name.clone())
            .collect()
    }
}

/// Foreign rows: routers (uuid → name, options), ports and routes with their router.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Foreign {
    pub routers: BTreeMap<String, (String, BTreeMap<String, String>)>,
    pub ports: BTreeSet<(String, PortRow)>,
    pub routes: BTreeSet<(String, RouteRow)>,
}

fn list(nb: &NbServer, table: &str, columns: &str) -> Vec<Vec<Value>> {
    let cols = format!("--columns={columns}");
    let out = nb.nbctl(&["--format=json", "--data=json", &cols, "list", table]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {out}"))
        .iter()
        .map(|row| row.as_array().expect("row array").clone())
        .collect()
}

fn string(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

fn uuid(v: &Value) -> String {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::String(u)]) if tag == "uuid" => u.clone(),
        _ => panic!("not a uuid: {v}"),
    }
}

/// A set column: a bare atom (one element) or `["set", [...]]`; uuids as strings.
fn set(v: &Value) -> Vec<String> {
    let atom = |a: &Value| match a {
        Value::String(s) => s.clone(),
        Value::Array(_) => uuid(a),
        other => other.to_string(),
    };
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(items)]) if tag == "set" => items.iter().map(atom).collect(),
        _ => vec![atom(v)],
    }
}

fn map(v: &Value) -> BTreeMap<String, String> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(pairs)]) if tag == "map" => pairs
            .iter()
            .map(|p| (string(&p[0]), string(&p[1])))
            .collect(),
        _ => panic!("not a map: {v}"),
    }
}
