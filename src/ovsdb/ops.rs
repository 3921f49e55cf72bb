//! Typed OVSDB conditions, mutations and transaction operations (RFC 7047 §5.1, §5.2), their
//! JSON encoding, and decoding of `transact` results into typed results or errors. The values
//! they carry are in `values`.
//!
//! Pure data and functions: no I/O, no knowledge of NB tables.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::{OvsdbError, TransactError};
use super::values::{Atom, Datum, Row};

/// A condition function (RFC 7047 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Includes,
    Excludes,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Gt => ">",
            Function::Ge => ">=",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// `[column, function, value]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub column: String,
    pub function: Function,
    pub value: Datum,
}

impl Condition {
    pub fn new(column: &str, function: Function, value: impl Into<Datum>) -> Self {
        Condition {
            column: column.to_owned(),
            function,
            value: value.into(),
        }
    }
    pub fn eq(column: &str, value: impl Into<Datum>) -> Self {
        Self::new(column, Function::Eq, value)
    }
    /// `_uuid == uuid`: the usual way to address one row.
    pub fn uuid(uuid: Uuid) -> Self {
        Self::new("_uuid", Function::Eq, uuid)
    }
    /// `external_ids includes {key: value}`.
    pub fn has_external_id(key: &str, value: &str) -> Self {
        Self::new(
            "external_ids",
            Function::Includes,
            Datum::map([(key, value)]),
        )
    }
}

/// A mutator (RFC 7047 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Insert,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub column: String,
    pub mutator: Mutator,
    pub value: Datum,
}

impl Mutation {
    pub fn insert(column: &str, value: impl Into<Datum>) -> Self {
        Mutation {
            column: column.to_owned(),
            mutator: Mutator::Insert,
            value: value.into(),
        }
    }
    pub fn delete(column: &str, value: impl Into<Datum>) -> Self {
        Mutation {
            column: column.to_owned(),
            mutator: Mutator::Delete,
            value: value.into(),
        }
    }
}

/// `until` of a `wait` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUntil {
    Equal,
    NotEqual,
}

/// One operation of a `transact` request.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// `uuid_name` lets later operations refer to the row; `uuid` (OVS ≥ 3.1) chooses the row's
    /// uuid, which makes a retried insert fail with "duplicate uuid" instead of duplicating.
    Insert {
        table: String,
        row: Row,
        uuid_name: Option<String>,
        uuid: Option<Uuid>,
    },
    Select {
        table: String,
        conditions: Vec<Condition>,
        columns: Option<Vec<String>>,
    },
    Update {
        table: String,
        conditions: Vec<Condition>,
        row: Row,
    },
    Mutate {
        table: String,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    },
    Delete {
        table: String,
        conditions: Vec<Condition>,
    },
    /// `timeout_ms: Some(0)` checks now and fails with "timed out" if the rows differ.
    Wait {
        table: String,
        conditions: Vec<Condition>,
        columns: Vec<String>,
        until: WaitUntil,
        rows: Vec<Row>,
        timeout_ms: Option<u64>,
    },
    Comment(String),
    Assert {
        lock: String,
    },
}

impl Operation {
    /// The operation as a JSON tree (tests, logs); the wire goes through [`Serialize`]
    /// straight to bytes ([`write_transact_params`]), the same encoding without the tree.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("an operation always encodes")
    }
}

/// Writes a `transact` request's `params` (`[database, op, op, ...]`) into `out`: each
/// operation serialized straight to bytes, no `serde_json::Value` tree per op (building
/// and freeing those trees was most of what a large transaction cost the worker).
pub fn write_transact_params(out: &mut Vec<u8>, database: &str, ops: &[Operation]) {
    struct Params<'a>(&'a str, &'a [Operation]);
    impl Serialize for Params<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.1.len() + 1))?;
            seq.serialize_element(self.0)?;
            for op in self.1 {
                seq.serialize_element(op)?;
            }
            seq.end()
        }
    }
    serde_json::to_writer(out, &Params(database, ops)).expect("writing to a Vec cannot fail");
}

// The RFC 7047 encoding, written by serde straight into the request's bytes.

/// An atom: bare JSON for scalars, `["uuid", ..]` / `["named-uuid", ..]` for references.
impl Serialize for Atom {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Atom::Integer(i) => s.serialize_i64(*i),
            Atom::Real(r) => s.serialize_f64(*r),
            Atom::Boolean(b) => s.serialize_bool(*b),
            Atom::String(v) => s.serialize_str(v),
            Atom::Uuid(u) => {
                let mut buf = Uuid::encode_buffer();
                ("uuid", &*u.hyphenated().encode_lower(&mut buf)).serialize(s)
            }
            Atom::NamedUuid(n) => ("named-uuid", n.as_str()).serialize(s),
        }
    }
}

/// A one-element set is written as the bare atom (as `Datum::to_json`).
impl Serialize for Datum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Pairs<'a>(&'a [(Atom, Atom)]);
        impl Serialize for Pairs<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|(k, v)| (k, v)))
            }
        }
        match self {
            Datum::Set(v) if v.len() == 1 => v[0].serialize(s),
            Datum::Set(v) => ("set", v).serialize(s),
            Datum::Map(m) => ("map", Pairs(m)).serialize(s),
        }
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.column, self.function.as_str(), &self.value).serialize(s)
    }
}

impl Serialize for Mutation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = match self.mutator {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        };
        (&self.column, m, &self.value).serialize(s)
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut o = s.serialize_map(None)?;
        match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
                uuid,
            } => {
                o.serialize_entry("op", "insert")?;
                o.serialize_entry("table", table)?;
                o.serialize_entry("row", row)?;
                if let Some(n) = uuid_name {
                    o.serialize_entry("uuid-name", n)?;
                }
                if let Some(u) = uuid {
                    let mut buf = Uuid::encode_buffer();
                    o.serialize_entry("uuid", &*u.hyphenated().encode_lower(&mut buf))?;
                }
            }
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                o.serialize_entry("op", "select")?;
                o.serialize_entry("table", table)?;
                o.serialize_entry("where", conditions)?;
                if let Some(c) = columns {
                    o.serialize_entry("columns", c)?;
                }
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => {
                o.serialize_entry("op", "update")?;
                o.serialize_entry("table", table)?;
                o.serialize_entry("where", conditions)?;
                o.serialize_entry("row", row)?;
            }
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => {
                o.serialize_entry("op", "mutate")?;
                o.serialize_entry("table", table)?;
                o.serialize_entry("where", conditions)?;
                o.serialize_entry("mutations", mutations)?;
            }
            Operation::Delete { table, conditions } => {
                o.serialize_entry("op", "delete")?;
                o.serialize_entry("table", table)?;
                o.serialize_entry("where", conditions)?;
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until,
                rows,
                timeout_ms,
            } => {
                o.serialize_entry("op", "wait")?;
                o.serialize_entry("table", table)?;
                o.serialize_entry("where", conditions)?;
                o.serialize_entry("columns", columns)?;
                let until = match until {
                    WaitUntil::Equal => "==",
                    WaitUntil::NotEqual => "!=",
                };
                o.serialize_entry("until", until)?;
                o.serialize_entry("rows", rows)?;
                if let Some(t) = timeout_ms {
                    o.serialize_entry("timeout", t)?;
                }
            }
            Operation::Comment(c) => {
                o.serialize_entry("op", "comment")?;
                o.serialize_entry("comment", c)?;
            }
            Operation::Assert { lock } => {
                o.serialize_entry("op", "assert")?;
                o.serialize_entry("lock", lock)?;
            }
        }
        o.end()
    }
}

/// The result of one successful operation.
#[derive(Debug, Clone, PartialEq)]
pub enum OperationResult {
    /// `insert`: the new row's uuid.
    Inserted(Uuid),
    /// `select`: the rows, in the server's JSON encoding.
    Rows(Vec<Map<String, Value>>),
    /// `update`, `mutate`, `delete`: rows matched.
    Count(u64),
    /// `wait`, `comment`, `assert`.
    Empty,
}

/// Decodes a `transact` result array for `ops`, including the extra commit-error element.
pub fn decode_transact_result(
    ops: &[Operation],
    result: &Value,
) -> Result<Vec<OperationResult>, TransactError> {
    let proto = |m: String| TransactError::Protocol(m);
    let items = result
        .as_array()
        .ok_or_else(|| proto(format!("transact result is not an array: {result}")))?;
    let mut out = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let item = items.get(index).ok_or_else(|| {
            proto(format!(
                "{} results for {} operations",
                items.len(),
                ops.len()
            ))
        })?;
        if item.get("error").is_some_and(|e| !e.is_null()) {
            return Err(TransactError::Operation {
                index,
                error: OvsdbError::from_json(item),
            });
        }
        let bad = || proto(format!("unexpected result for operation {index}: {item}"));
        out.push(match op {
            Operation::Insert { .. } => {
                let u = item.get("uuid").ok_or_else(bad)?;
                match Atom::from_json(u) {
                    Ok(Atom::Uuid(u)) => OperationResult::Inserted(u),
                    _ => return Err(bad()),
                }
            }
            Operation::Select { .. } => {
                let rows = item.get("rows").and_then(Value::as_array).ok_or_else(bad)?;
                OperationResult::Rows(
                    rows.iter()
                        .map(|r| r.as_object().cloned().ok_or_else(bad))
                        .collect::<Result<_, _>>()?,
                )
            }
            Operation::Update { .. } | Operation::Mutate { .. } | Operation::Delete { .. } => {
                OperationResult::Count(item.get("count").and_then(Value::as_u64).ok_or_else(bad)?)
            }
            _ => {
                if !item.is_object() {
                    return Err(bad());
                }
                OperationResult::Empty
            }
        });
    }
    if let Some(extra) = items.get(ops.len()) {
        if extra.get("error").is_some_and(|e| !e.is_null()) {
            return Err(TransactError::Commit(OvsdbError::from_json(extra)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::error::OvsdbErrorKind;
    use serde_json::json;

    fn insert() -> Operation {
        Operation::Insert {
            table: "T".into(),
            row: Row::new(),
            uuid_name: Some("r".into()),
            uuid: None,
        }
    }

    #[test]
    fn insert_encoding_with_explicit_uuid() {
        let u = Uuid::from_u128(1);
        let op = Operation::Insert {
            table: "T".into(),
            row: Row::from([("name".to_string(), Datum::from("x"))]),
            uuid_name: None,
            uuid: Some(u),
        };
        assert_eq!(
            op.to_json(),
            json!({"op": "insert", "table": "T", "row": {"name": "x"}, "uuid": u.to_string()})
        );
    }

    /// The bytes on the wire are RFC 7047's encoding, the one `Datum::to_json` builds as a
    /// tree: every kind of operation, atom and datum.
    #[test]
    fn operations_encode_straight_to_the_rfc_7047_bytes() {
        let u = Uuid::from_u128(0xabc);
        let data = [
            Datum::from("s"),
            Datum::from(7i64),
            Datum::from(true),
            Datum::Set(vec![Atom::Real(1.5)]),
            Datum::from(u),
            Datum::named_uuid("row_1"),
            Datum::empty_set(),
            Datum::set(["a", "b"]),
            Datum::empty_map(),
            Datum::map([("k", "v"), ("k2", "v2")]),
            Datum::Map(vec![(Atom::Uuid(u), Atom::Integer(3))]),
        ];
        for d in &data {
            assert_eq!(serde_json::to_value(d).unwrap(), d.to_json(), "{d:?}");
        }
        let cond = Condition::has_external_id("owner", "me");
        let row = Row::from([
            ("name".to_string(), Datum::from("x")),
            ("ids".to_string(), Datum::map([("a", "b")])),
        ]);
        let ops = vec![
            Operation::Insert {
                table: "T".into(),
                row: row.clone(),
                uuid_name: Some("n".into()),
                uuid: Some(u),
            },
            Operation::Select {
                table: "T".into(),
                conditions: vec![cond.clone()],
                columns: Some(vec!["name".into()]),
            },
            Operation::Select {
                table: "T".into(),
                conditions: vec![],
                columns: None,
            },
            Operation::Update {
                table: "T".into(),
                conditions: vec![Condition::uuid(u)],
                row: row.clone(),
            },
            Operation::Mutate {
                table: "T".into(),
                conditions: vec![Condition::new("n", Function::Ne, 1i64)],
                mutations: vec![
                    Mutation::insert("ports", Datum::named_uuid("n")),
                    Mutation::delete("ports", Datum::set([u])),
                ],
            },
            Operation::Delete {
                table: "T".into(),
                conditions: vec![Condition::eq("name", "x")],
            },
            Operation::Wait {
                table: "T".into(),
                conditions: vec![],
                columns: vec!["ids".into()],
                until: WaitUntil::NotEqual,
                rows: vec![row],
                timeout_ms: Some(0),
            },
            Operation::Wait {
                table: "T".into(),
                conditions: vec![],
                columns: vec![],
                until: WaitUntil::Equal,
                rows: vec![],
                timeout_ms: None,
            },
            Operation::Comment("c".into()),
            Operation::Assert { lock: "l".into() },
        ];
        let us = u.to_string();
        let expected = json!(["DB",
            {"op": "insert", "table": "T", "row": {"name": "x", "ids": ["map", [["a", "b"]]]}, "uuid-name": "n", "uuid": us},
            {"op": "select", "table": "T", "where": [["external_ids", "includes", ["map", [["owner", "me"]]]]], "columns": ["name"]},
            {"op": "select", "table": "T", "where": []},
            {"op": "update", "table": "T", "where": [["_uuid", "==", ["uuid", us]]], "row": {"name": "x", "ids": ["map", [["a", "b"]]]}},
            {"op": "mutate", "table": "T", "where": [["n", "!=", 1]],
                "mutations": [["ports", "insert", ["named-uuid", "n"]], ["ports", "delete", ["uuid", us]]]},
            {"op": "delete", "table": "T", "where": [["name", "==", "x"]]},
            {"op": "wait", "table": "T", "where": [], "columns": ["ids"], "until": "!=",
                "rows": [{"name": "x", "ids": ["map", [["a", "b"]]]}], "timeout": 0},
            {"op": "wait", "table": "T", "where": [], "columns": [], "until": "==", "rows": []},
            {"op": "comment", "comment": "c"},
            {"op": "assert", "lock": "l"},
        ]);
        let mut bytes = b"leftover".to_vec();
        bytes.clear();
        write_transact_params(&mut bytes, "DB", &ops);
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), expected);
    }

    #[test]
    fn decodes_results() {
        let u = Uuid::from_u128(5);
        let ops = vec![
            insert(),
            Operation::Delete {
                table: "T".into(),
                conditions: vec![],
            },
            Operation::Comment("c".into()),
        ];
        let r = json!([{"uuid": ["uuid", u.to_string()]}, {"count": 2}, {}]);
        assert_eq!(
            decode_transact_result(&ops, &r).unwrap(),
            vec![
                OperationResult::Inserted(u),
                OperationResult::Count(2),
                OperationResult::Empty
            ]
        );
    }

    #[test]
    fn decodes_operation_error_and_commit_error() {
        let ops = vec![insert(), insert()];
        let r = json!([{"uuid": ["uuid", Uuid::nil().to_string()]},
                       {"error": "duplicate uuid", "details": "d"}]);
        match decode_transact_result(&ops, &r) {
            Err(TransactError::Operation { index: 1, error }) => {
                assert_eq!(error.kind, OvsdbErrorKind::DuplicateUuid);
                assert_eq!(error.details.as_deref(), Some("d"));
            }
            other => panic!("{other:?}"),
        }
        let r = json!([{"uuid": ["uuid", Uuid::nil().to_string()]},
                       {"uuid": ["uuid", Uuid::nil().to_string()]},
                       {"error": "referential integrity violation", "details": "x refs y"}]);
        match decode_transact_result(&ops, &r) {
            Err(TransactError::Commit(e)) => {
                assert_eq!(e.kind, OvsdbErrorKind::ReferentialIntegrityViolation)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_transact_result(&ops, &json!([{}])),
            Err(TransactError::Protocol(_))
        ));
        assert!(matches!(
            decode_transact_result(&ops, &json!("x")),
            Err(TransactError::Protocol(_))
        ));
    }
}
