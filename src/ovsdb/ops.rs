//! Typed OVSDB conditions, mutations and transaction operations (RFC 7047 §5.1, §5.2), their
//! JSON encoding, and decoding of `transact` results into typed results or errors. The values
//! they carry are in `values`.
//!
//! Pure data and functions: no I/O, no knowledge of NB tables.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::error::{OvsdbError, TransactError};
use super::values::{Atom, Datum, Row};

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
