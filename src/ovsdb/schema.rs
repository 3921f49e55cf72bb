//! The server's schema (from `get_schema`) and checking it against the columns we model.
//!
//! Owns schema parsing and compatibility checks only. Extra tables and columns in the server's
//! schema are fine (we monitor only what we model); a missing table or column, or one whose type
//! changed shape, is an [`Error`] naming it.

use std::collections::HashMap;

use serde_json::Value;

use super::error::Error;
use super::values::{Atom, Datum};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicType {
    Integer,
    Real,
    Boolean,
    String,
    Uuid,
}

impl AtomicType {
    /// RFC 7047 default atom: 0, 0.0, false, "", the all-zero uuid.
    pub fn default_atom(self) -> Atom {
        match self {
            AtomicType::Integer => Atom::Integer(0),
            AtomicType::Real => Atom::Real(0.0),
            AtomicType::Boolean => Atom::Boolean(false),
            AtomicType::String => Atom::String(String::new()),
            AtomicType::Uuid => Atom::Uuid(uuid::Uuid::nil()),
        }
    }

    fn parse(v: &Value) -> Option<AtomicType> {
        let name = match v {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o.get("type")?.as_str()?,
            _ => return None,
        };
        Some(match name {
            "integer" => AtomicType::Integer,
            "real" => AtomicType::Real,
            "boolean" => AtomicType::Boolean,
            "string" => AtomicType::String,
            "uuid" => AtomicType::Uuid,
            _ => return None,
        })
    }
}

/// A column's type: key (and value, for maps) with element count bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    pub key: AtomicType,
    pub value: Option<AtomicType>,
    pub min: u64,
    /// `None` = unlimited.
    pub max: Option<u64>,
}

impl ColumnType {
    /// Exactly one atom.
    pub fn is_scalar(&self) -> bool {
        self.min == 1 && self.max == Some(1) && self.value.is_none()
    }
    /// More than one element allowed. Only such columns carry a *diff* in an `update2`
    /// `modify`; for `max == 1` columns (scalars and optional ones like `peer`) the server sends
    /// the new value (OVS `ovsdb_datum_diff`: `!ovsdb_type_is_composite` → clone of new).
    pub fn is_composite(&self) -> bool {
        self.max.is_none_or(|m| m > 1)
    }
    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    /// The value a column has when a row is inserted without it (RFC 7047 §5.1, OVS
    /// `ovsdb_datum_init_default`): `min` default atoms (`min` is 0 or 1). Monitor updates omit
    /// default-valued columns, so a new replica row must start from this, not from an empty
    /// value: `Logical_Router_Port.networks` (`min: 1`) starts as `[""]`, and the first `modify`
    /// diff toggles that `""` away.
    pub fn default_datum(&self) -> Datum {
        if self.min == 0 {
            return if self.is_map() {
                Datum::empty_map()
            } else {
                Datum::empty_set()
            };
        }
        match self.value {
            Some(v) => Datum::Map(vec![(self.key.default_atom(), v.default_atom())]),
            None => Datum::Set(vec![self.key.default_atom()]),
        }
    }

    fn parse(v: &Value) -> Option<ColumnType> {
        if let Some(key) = AtomicType::parse(v).filter(|_| v.is_string()) {
            return Some(ColumnType {
                key,
                value: None,
                min: 1,
                max: Some(1),
            });
        }
        let o = v.as_object()?;
        let key = AtomicType::parse(o.get("key")?)?;
        let value = match o.get("value") {
            Some(v) => Some(AtomicType::parse(v)?),
            None => None,
        };
        let min = o.get("min").map_or(Some(1), Value::as_u64)?;
        let max = match o.get("max") {
            None => Some(1),
            Some(Value::String(s)) if s == "unlimited" => None,
            Some(v) => Some(v.as_u64()?),
        };
        Some(ColumnType {
            key,
            value,
            min,
            max,
        })
    }
}

/// What a model needs from one column.
#[derive(Debug, Clone, Copy)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub key: AtomicType,
    pub value: Option<AtomicType>,
    /// Fewest elements the model can hold: 1 for a plain value (`String`), 0 for an `Option`
    /// or a collection.
    pub min: u64,
    /// Largest number of elements the model can hold (`None` = any).
    pub max: Option<u64>,
}

impl ColumnSpec {
    /// Exactly one atom (a plain Rust value).
    pub const fn scalar(name: &'static str, key: AtomicType) -> Self {
        ColumnSpec {
            name,
            key,
            value: None,
            min: 1,
            max: Some(1),
        }
    }
    /// Zero or one atom (an `Option`).
    pub const fn optional(name: &'static str, key: AtomicType) -> Self {
        ColumnSpec {
            name,
            key,
            value: None,
            min: 0,
            max: Some(1),
        }
    }
    pub const fn set(name: &'static str, key: AtomicType) -> Self {
        ColumnSpec {
            name,
            key,
            value: None,
            min: 0,
            max: None,
        }
    }
    pub const fn map(name: &'static str) -> Self {
        ColumnSpec {
            name,
            key: AtomicType::String,
            value: Some(AtomicType::String),
            min: 0,
            max: None,
        }
    }
}

/// One table: column name → type.
pub type TableSchema = HashMap<String, ColumnType>;

#[derive(Debug, Clone)]
pub struct DatabaseSchema {
    pub name: String,
    pub version: String,
    pub tables: HashMap<String, TableSchema>,
}

impl DatabaseSchema {
    pub fn parse(v: &Value) -> Result<DatabaseSchema, Error> {
        let bad = |m: &str| Error::Protocol(format!("bad schema: {m}"));
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no name"))?;
        let version = v
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let tables_json = v
            .get("tables")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no tables"))?;
        let mut tables = HashMap::new();
        for (tname, t) in tables_json {
            let cols = t
                .get("columns")
                .and_then(Value::as_object)
                .ok_or_else(|| bad(&format!("table {tname} has no columns")))?;
            let mut columns = TableSchema::new();
            for (cname, c) in cols {
                let ty = c
                    .get("type")
                    .and_then(ColumnType::parse)
                    .ok_or_else(|| bad(&format!("column {tname}.{cname} has a bad type")))?;
                columns.insert(cname.clone(), ty);
            }
            tables.insert(tname.clone(), columns);
        }
        Ok(DatabaseSchema {
            name: name.to_owned(),
            version,
            tables,
        })
    }

    /// Checks that `table` has every column in `specs` with a compatible type, and returns
    /// the server's types of exactly those columns.
    pub fn check(&self, table: &str, specs: &[ColumnSpec]) -> Result<TableSchema, Error> {
        let t = self
            .tables
            .get(table)
            .ok_or_else(|| Error::MissingTable(table.to_owned()))?;
        let mut out = TableSchema::new();
        for spec in specs {
            let ty = t.get(spec.name).ok_or_else(|| Error::MissingColumn {
                table: table.to_owned(),
                column: spec.name.to_owned(),
            })?;
            let mismatch = |reason: String| Error::ColumnType {
                table: table.to_owned(),
                column: spec.name.to_owned(),
                reason,
            };
            if ty.key != spec.key || ty.value != spec.value {
                return Err(mismatch(format!(
                    "expected {:?}/{:?}, server has {:?}/{:?}",
                    spec.key, spec.value, ty.key, ty.value
                )));
            }
            // Both bounds: a value the model cannot hold would fail every update carrying
            // it (a reconnect loop far from the cause); refuse the schema up front instead.
            if let Some(max) = spec.max {
                if ty.max.is_none_or(|m| m > max) {
                    let has = ty.max.map_or("any number".into(), |m| m.to_string());
                    return Err(mismatch(format!(
                        "the server allows {has} elements, we hold at most {max}"
                    )));
                }
            }
            if ty.min < spec.min {
                return Err(mismatch(format!(
                    "the server allows {} elements (the column may be empty), we need at least {}",
                    ty.min, spec.min
                )));
            }
            out.insert(spec.name.to_owned(), ty.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> DatabaseSchema {
        DatabaseSchema::parse(&json!({"name": "DB", "version": "1.0.0", "tables": {"T": {"columns": {
            "name": {"type": "string"},
            "peer": {"type": {"key": "string", "min": 0, "max": 1}},
            "ports": {"type": {"key": {"type": "uuid", "refTable": "P"}, "min": 0, "max": "unlimited"}},
            "ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
        }}}}))
        .unwrap()
    }

    #[test]
    fn parses_types() {
        let s = schema();
        let t = &s.tables["T"];
        assert!(t["name"].is_scalar());
        assert!(!t["peer"].is_scalar());
        assert!(!t["peer"].is_composite());
        assert!(t["ports"].is_composite());
        assert_eq!(t["ports"].max, None);
        assert!(t["ids"].is_map());
    }

    #[test]
    fn check_names_missing_column_and_bad_type() {
        let s = schema();
        let ok = s.check(
            "T",
            &[
                ColumnSpec::scalar("name", AtomicType::String),
                ColumnSpec::optional("peer", AtomicType::String),
                ColumnSpec::set("ports", AtomicType::Uuid),
                ColumnSpec::map("ids"),
            ],
        );
        assert_eq!(ok.unwrap().len(), 4);
        let e = s
            .check("T", &[ColumnSpec::scalar("mac", AtomicType::String)])
            .unwrap_err();
        assert_eq!(e.to_string(), "schema of table T lacks column mac");
        assert!(matches!(s.check("U", &[]), Err(Error::MissingTable(_))));
        assert!(matches!(
            s.check("T", &[ColumnSpec::scalar("ports", AtomicType::Uuid)]),
            Err(Error::ColumnType { .. })
        ));
    }

    #[test]
    fn check_honours_min_and_max() {
        let s = schema();
        // A column that became optional (min 0) where we hold a plain value.
        let e = s
            .check("T", &[ColumnSpec::scalar("peer", AtomicType::String)])
            .unwrap_err();
        assert!(e.to_string().contains("T.peer"), "{e}");
        assert!(e.to_string().contains("may be empty"), "{e}");
        // A set where we hold at most one value.
        let e = s
            .check("T", &[ColumnSpec::optional("ports", AtomicType::Uuid)])
            .unwrap_err();
        assert!(e.to_string().contains("any number"), "{e}");
        // Stricter on the server than we need is fine.
        s.check("T", &[ColumnSpec::optional("name", AtomicType::String)])
            .unwrap();
        s.check("T", &[ColumnSpec::set("peer", AtomicType::String)])
            .unwrap();
    }
}
