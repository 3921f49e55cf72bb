//! Property: the name and owner indexes always equal what the rows say, after any sequence of
//! inserts, renames, owner-value changes and deletes, and a snapshot taken midway keeps its own.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

use super::tests::{types, ApplyValue};
use super::{NbCache, Table, UpdateFormat};

/// Few names and owner values for many rows: keys gather more members than the small form holds.
const NAMES: [&str; 3] = ["", "a", "a-name-longer-than-twenty-four"];
const OWNERS: [Option<&str>; 4] = [
    None,
    Some("x"),
    Some("y"),
    Some("a-peering-value-past-24-bytes"),
];
const ROUTERS: u128 = 14;
const PORTS: u128 = 6;

#[derive(Debug, Clone)]
enum Op {
    /// Insert the row if absent, else rename it.
    Name(bool, u128, usize),
    /// Insert the row if absent, else set its owner value.
    Owner(bool, u128, usize),
    Delete(bool, u128),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<bool>(), 0..ROUTERS, 0..NAMES.len()).prop_map(|(p, u, n)| Op::Name(p, u, n)),
        (any::<bool>(), 0..ROUTERS, 0..OWNERS.len()).prop_map(|(p, u, o)| Op::Owner(p, u, o)),
        (any::<bool>(), 0..ROUTERS).prop_map(|(p, u)| Op::Delete(p, u)),
    ]
}

/// What the rows hold: (table, uuid) → (name, owner value).
type Rows = BTreeMap<(Table, Uuid), (String, Option<String>)>;

fn ids(owner: &Option<String>) -> serde_json::Value {
    match owner {
        Some(v) => json!(["map", [["owner", v]]]),
        None => json!(["map", []]),
    }
}

/// Applies `op` to the cache (as one update2) and to `rows`.
fn apply(c: &mut NbCache, rows: &mut Rows, op: &Op) {
    let (port, u) = match op {
        Op::Name(p, u, _) | Op::Owner(p, u, _) | Op::Delete(p, u) => (*p, *u),
    };
    let (table, name) = if port {
        (Table::LogicalRouterPort, "Logical_Router_Port")
    } else {
        (Table::LogicalRouter, "Logical_Router")
    };
    // Port names are unique in NB: a port's name is its uuid's, with a generation.
    let uuid = Uuid::from_u128(if port { 100 + u % PORTS } else { u });
    let key = (table, uuid);
    let held = rows.get(&key).cloned();
    let row_op = match (op, held) {
        (Op::Delete(..), None) => return,
        (Op::Delete(..), Some(_)) => {
            rows.remove(&key);
            json!({"delete": null})
        }
        (Op::Name(_, _, n), held) | (Op::Owner(_, _, n), held @ None) => {
            let new_name = if port {
                format!("p{uuid}-{n}")
            } else {
                NAMES[*n % NAMES.len()].to_owned()
            };
            match held {
                None => {
                    let owner = match op {
                        Op::Owner(_, _, o) => OWNERS[*o].map(str::to_owned),
                        _ => None,
                    };
                    let row = json!({"name": new_name, "external_ids": ids(&owner)});
                    rows.insert(key, (new_name, owner));
                    json!({"insert": row})
                }
                Some((_, owner)) => {
                    rows.insert(key, (new_name.clone(), owner));
                    json!({"modify": {"name": new_name}})
                }
            }
        }
        (Op::Owner(_, _, o), Some((name, old))) => {
            let owner = OWNERS[*o].map(str::to_owned);
            // A map diff: the old pair removes it, a new value replaces or adds it.
            let diff = match (&old, &owner) {
                (None, None) => return,
                (Some(v), None) => json!(["map", [["owner", v]]]),
                (_, Some(v)) if old.as_ref() == Some(v) => return,
                (_, Some(v)) => json!(["map", [["owner", v]]]),
            };
            rows.insert(key, (name, owner));
            json!({"modify": {"external_ids": diff}})
        }
    };
    let update = json!({ name: { uuid.to_string(): row_op } });
    c.apply_v(&types(), UpdateFormat::V2, &update).unwrap();
}

/// The indexes of `c` equal those `rows` imply, key by key, with no key left empty.
fn check(c: &NbCache, rows: &Rows) -> Result<(), TestCaseError> {
    let mut by_name: BTreeMap<&str, BTreeSet<Uuid>> = BTreeMap::new();
    let mut ports: BTreeMap<&str, Uuid> = BTreeMap::new();
    let mut by_owner: BTreeMap<&str, BTreeSet<(Table, Uuid)>> = BTreeMap::new();
    for ((t, u), (name, owner)) in rows {
        match t {
            Table::LogicalRouter => {
                by_name.entry(name).or_default().insert(*u);
            }
            _ => {
                ports.insert(name, *u);
            }
        }
        if let Some(v) = owner {
            by_owner.entry(v).or_default().insert((*t, *u));
        }
    }
    prop_assert_eq!(c.router_by_name.len(), by_name.len());
    for (name, want) in &by_name {
        let got: Vec<Uuid> = c.router_by_name(name).iter().map(|r| r.uuid).collect();
        prop_assert_eq!(
            &got,
            &want.iter().copied().collect::<Vec<_>>(),
            "name {:?}",
            name
        );
    }
    prop_assert_eq!(c.port_by_name.len(), ports.len());
    for (name, want) in &ports {
        prop_assert_eq!(c.port_by_name(name).map(|p| p.uuid), Some(*want));
    }
    prop_assert_eq!(
        c.owner_values().collect::<Vec<_>>(),
        by_owner.keys().copied().collect::<Vec<_>>()
    );
    for (v, want) in &by_owner {
        prop_assert_eq!(&c.rows_with_external_id("owner", v), want);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn indexes_equal_the_rows_and_snapshots_keep_theirs(
        ops in prop::collection::vec(op(), 1..120),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut c = NbCache::new(Some("owner".into()));
        let mut rows = Rows::new();
        let cut = cut.index(ops.len());
        let mut snapshot = None;
        for (i, op) in ops.iter().enumerate() {
            if i == cut {
                snapshot = Some((c.clone(), rows.clone()));
            }
            apply(&mut c, &mut rows, op);
        }
        check(&c, &rows)?;
        let (s, s_rows) = snapshot.expect("cut is within ops");
        check(&s, &s_rows)?;
    }
}
