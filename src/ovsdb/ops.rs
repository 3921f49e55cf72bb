//! Typed OVSDB values, conditions, mutations and transaction operations (RFC 7047 §5, §5.2),
//! their JSON encoding, and decoding of `transact` results into typed results or errors.
//!
//! Pure data and functions: no I/O, no knowledge of NB tables.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::error::{OvsdbError, TransactError};

/// One atomic value.
#[derive(Debug, Clone)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    String(String),
    Uuid(Uuid),
    /// A row inserted earlier in the same transaction, by its `uuid-name`.
    NamedUuid(String),
}

impl Atom {
    pub fn to_json(&self) -> Value {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => json!(r),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => json!(s),
            Atom::Uuid(u) => json!(["uuid", u.to_string()]),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }

    pub fn from_json(v: &Value) -> Result<Atom, String> {
        match v {
            Value::Bool(b) => Ok(Atom::Boolean(*b)),
            Value::String(s) => Ok(Atom::String(s.clone())),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(Atom::Integer(i)),
                None => n
                    .as_f64()
                    .map(Atom::Real)
                    .ok_or_else(|| format!("bad number {n}")),
            },
            Value::Array(a) => match (a.first().and_then(Value::as_str), a.get(1), a.len()) {
                (Some("uuid"), Some(Value::String(s)), 2) => Uuid::parse_str(s)
                    .map(Atom::Uuid)
                    .map_err(|e| format!("bad uuid {s:?}: {e}")),
                (Some("named-uuid"), Some(Value::String(s)), 2) => Ok(Atom::NamedUuid(s.clone())),
                _ => Err(format!("not an atom: {v}")),
            },
            _ => Err(format!("not an atom: {v}")),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }
}

impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            (Atom::NamedUuid(a), Atom::NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}
impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Atom {}

impl From<&str> for Atom {
    fn from(s: &str) -> Self {
        Atom::String(s.to_owned())
    }
}
impl From<String> for Atom {
    fn from(s: String) -> Self {
        Atom::String(s)
    }
}
impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Self {
        Atom::Uuid(u)
    }
}
impl From<bool> for Atom {
    fn from(b: bool) -> Self {
        Atom::Boolean(b)
    }
}
impl From<i64> for Atom {
    fn from(i: i64) -> Self {
        Atom::Integer(i)
    }
}

/// A column value: a set of atoms (a scalar is a set of one) or a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Set(Vec<Atom>),
    Map(Vec<(Atom, Atom)>),
}

impl Datum {
    pub fn empty_set() -> Datum {
        Datum::Set(vec![])
    }
    pub fn empty_map() -> Datum {
        Datum::Map(vec![])
    }
    pub fn set<I: IntoIterator<Item = A>, A: Into<Atom>>(items: I) -> Datum {
        Datum::Set(items.into_iter().map(Into::into).collect())
    }
    pub fn map<I, K, V>(items: I) -> Datum
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Atom>,
        V: Into<Atom>,
    {
        Datum::Map(
            items
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
    pub fn named_uuid(name: &str) -> Datum {
        Datum::Set(vec![Atom::NamedUuid(name.to_owned())])
    }

    /// RFC 7047 encoding: a one-element set is written as the bare atom.
    pub fn to_json(&self) -> Value {
        match self {
            Datum::Set(v) if v.len() == 1 => v[0].to_json(),
            Datum::Set(v) => json!(["set", v.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Datum::Map(m) => json!([
                "map",
                m.iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    /// Decodes `<atom>`, `["set", [..]]` or `["map", [[k, v], ..]]`.
    pub fn from_json(v: &Value) -> Result<Datum, String> {
        if let Value::Array(a) = v {
            match (a.first().and_then(Value::as_str), a.get(1), a.len()) {
                (Some("set"), Some(Value::Array(items)), 2) => {
                    return items
                        .iter()
                        .map(Atom::from_json)
                        .collect::<Result<_, _>>()
                        .map(Datum::Set)
                }
                (Some("map"), Some(Value::Array(pairs)), 2) => {
                    return pairs
                        .iter()
                        .map(|p| match p.as_array().map(Vec::as_slice) {
                            Some([k, v]) => Ok((Atom::from_json(k)?, Atom::from_json(v)?)),
                            _ => Err(format!("bad map pair {p}")),
                        })
                        .collect::<Result<_, _>>()
                        .map(Datum::Map)
                }
                _ => {}
            }
        }
        Atom::from_json(v).map(|a| Datum::Set(vec![a]))
    }
}

impl<A: Into<Atom>> From<A> for Datum {
    fn from(a: A) -> Self {
        Datum::Set(vec![a.into()])
    }
}

/// Column name → value, as written in `insert`/`update` and `wait` rows.
pub type Row = BTreeMap<String, Datum>;

fn row_json(row: &Row) -> Value {
    Value::Object(row.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

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
    fn to_json(&self) -> Value {
        json!([self.column, self.function.as_str(), self.value.to_json()])
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
    fn to_json(&self) -> Value {
        let m = match self.mutator {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        };
        json!([self.column, m, self.value.to_json()])
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
    pub fn to_json(&self) -> Value {
        let conds = |c: &[Condition]| Value::Array(c.iter().map(Condition::to_json).collect());
        match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
                uuid,
            } => {
                let mut o = json!({"op": "insert", "table": table, "row": row_json(row)});
                if let Some(n) = uuid_name {
                    o["uuid-name"] = json!(n);
                }
                if let Some(u) = uuid {
                    o["uuid"] = json!(u.to_string());
                }
                o
            }
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                let mut o = json!({"op": "select", "table": table, "where": conds(conditions)});
                if let Some(c) = columns {
                    o["columns"] = json!(c);
                }
                o
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => json!({"op": "update", "table": table, "where": conds(conditions),
                        "row": row_json(row)}),
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => json!({"op": "mutate", "table": table, "where": conds(conditions),
                "mutations": mutations.iter().map(Mutation::to_json).collect::<Vec<_>>()}),
            Operation::Delete { table, conditions } => {
                json!({"op": "delete", "table": table, "where": conds(conditions)})
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until,
                rows,
                timeout_ms,
            } => {
                let mut o = json!({"op": "wait", "table": table, "where": conds(conditions),
                    "columns": columns,
                    "until": if *until == WaitUntil::Equal { "==" } else { "!=" },
                    "rows": rows.iter().map(row_json).collect::<Vec<_>>()});
                if let Some(t) = timeout_ms {
                    o["timeout"] = json!(t);
                }
                o
            }
            Operation::Comment(c) => json!({"op": "comment", "comment": c}),
            Operation::Assert { lock } => json!({"op": "assert", "lock": lock}),
        }
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

    fn insert() -> Operation {
        Operation::Insert {
            table: "T".into(),
            row: Row::new(),
            uuid_name: Some("r".into()),
            uuid: None,
        }
    }

    #[test]
    fn datum_encoding() {
        assert_eq!(Datum::from("a").to_json(), json!("a"));
        assert_eq!(Datum::empty_set().to_json(), json!(["set", []]));
        assert_eq!(Datum::set(["a", "b"]).to_json(), json!(["set", ["a", "b"]]));
        assert_eq!(
            Datum::map([("k", "v")]).to_json(),
            json!(["map", [["k", "v"]]])
        );
        let u = Uuid::nil();
        assert_eq!(Datum::from(u).to_json(), json!(["uuid", u.to_string()]));
        assert_eq!(Datum::named_uuid("x").to_json(), json!(["named-uuid", "x"]));
        for d in [
            Datum::set(["a", "b"]),
            Datum::map([("k", "v")]),
            Datum::from(u),
        ] {
            assert_eq!(Datum::from_json(&d.to_json()).unwrap(), d);
        }
        assert!(Datum::from_json(&json!({"x": 1})).is_err());
        assert!(Datum::from_json(&json!(["uuid", "nope"])).is_err());
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
