//! Monitor updates parsed straight from the wire's text into typed row operations.
//!
//! Owns the shape of a `table-updates` object (RFC 7047 §4.1.6 `update`, Open vSwitch's
//! `update2`/`update3` and the monitor replies that carry the same object): tables, row uuids,
//! row updates (`initial`/`insert`/`modify`/`delete`, or v1 `old`/`new`) and their columns. Each
//! row's operation is handed to the caller as soon as it is parsed, so a dump of 80,000 rows
//! needs no JSON tree and no list of parsed rows: only the row being parsed is held. Tables we
//! do not model and columns we do not monitor are skipped unread. What an operation *means*
//! for the replica (defaults, diffs, consistency) is the cache's (`cache.rs`), not this
//! module's.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use uuid::Uuid;

use super::cache::{Types, UpdateError, UpdateErrorKind, UpdateFormat};
use super::model::Table;
use super::schema::{ColumnType, TableSchema};
use super::values::Datum;

/// A row's columns as sent (only those we model), in the order sent.
pub(super) type Columns<'t> = Vec<(&'t str, &'t ColumnType, Datum)>;

/// One row's operation, as sent.
#[derive(Debug)]
pub(super) enum RowOp<'t> {
    /// `initial`/`insert` (v2) or `new` without `old` (v1): the columns that differ from their
    /// default.
    Insert(Columns<'t>),
    /// `modify` (v2: `diff` = true, sets and maps carry a diff) or `old` + `new` (v1: the new
    /// values of the changed columns, `diff` = false).
    Modify(Columns<'t>, bool),
    Delete,
}

/// Why the caller refused an operation.
pub(super) type Refusal = (UpdateErrorKind, String);

/// Parses `json`, a `table-updates` object (or `null`), calling `apply` with each row's
/// operation in the order sent. Stops at the first malformed part or refusal.
pub(super) fn parse<F>(
    json: &str,
    types: &Types,
    format: UpdateFormat,
    mut apply: F,
) -> Result<(), UpdateError>
where
    F: FnMut(Table, &TableSchema, Uuid, RowOp<'_>) -> Result<(), Refusal>,
{
    let empty = TableSchema::new();
    let mut ctx = Ctx {
        types,
        empty: &empty,
        format,
        apply: &mut apply,
        failed: None,
        table: "",
        uuid: None,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    let parsed = TableUpdates(&mut ctx)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    match parsed {
        Ok(()) => Ok(()),
        Err(e) => Err(ctx.failed.take().unwrap_or_else(|| UpdateError {
            kind: UpdateErrorKind::Malformed,
            table: ctx.table.to_owned(),
            uuid: ctx.uuid.map(|u| u.to_string()).unwrap_or_default(),
            reason: e.to_string(),
        })),
    }
}

type ApplyFn<'f> = dyn FnMut(Table, &TableSchema, Uuid, RowOp<'_>) -> Result<(), Refusal> + 'f;

struct Ctx<'c, 'f> {
    types: &'c Types,
    empty: &'c TableSchema,
    format: UpdateFormat,
    apply: &'c mut ApplyFn<'f>,
    /// The error that stopped the parse, when it is more than serde's message.
    failed: Option<UpdateError>,
    /// Where the parse is, for error messages.
    table: &'static str,
    uuid: Option<Uuid>,
}

impl Ctx<'_, '_> {
    fn fail<E: de::Error>(&mut self, kind: UpdateErrorKind, uuid: String, reason: String) -> E {
        let e = E::custom(&reason);
        self.failed = Some(UpdateError {
            kind,
            table: self.table.to_owned(),
            uuid,
            reason,
        });
        e
    }
}

/// `{<table>: {<uuid>: <row-update>, ..}, ..}` or `null`.
struct TableUpdates<'a, 'c, 'f>(&'a mut Ctx<'c, 'f>);

impl<'de> DeserializeSeed<'de> for TableUpdates<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TableUpdates<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table-updates object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(table) = map.next_key_seed(TableName)? {
            let Some(table) = table else {
                // Not ours (should not happen: we monitor only our tables).
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            self.0.table = table.name();
            self.0.uuid = None;
            map.next_value_seed(TableUpdate {
                ctx: &mut *self.0,
                table,
            })?;
        }
        self.0.table = "";
        self.0.uuid = None;
        Ok(())
    }
}

/// A table's name: `Some` for the tables we model.
struct TableName;

impl<'de> DeserializeSeed<'de> for TableName {
    type Value = Option<Table>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Table>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for TableName {
    type Value = Option<Table>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table name")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Option<Table>, E> {
        Ok(Table::from_name(s))
    }
}

/// `{<uuid>: <row-update>, ..}` of one table.
struct TableUpdate<'a, 'c, 'f> {
    ctx: &'a mut Ctx<'c, 'f>,
    table: Table,
}

impl<'de> DeserializeSeed<'de> for TableUpdate<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TableUpdate<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table-update object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let ty = ctx.types.get(&self.table).unwrap_or(ctx.empty);
        while let Some(uuid) = map.next_key_seed(RowUuid)? {
            let uuid = match uuid {
                Ok(u) => u,
                Err((s, why)) => return Err(ctx.fail(UpdateErrorKind::Malformed, s, why)),
            };
            ctx.uuid = Some(uuid);
            let op = map.next_value_seed(RowUpdate {
                ty,
                format: ctx.format,
            })?;
            if let Err((kind, why)) = (ctx.apply)(self.table, ty, uuid, op) {
                return Err(ctx.fail(kind, uuid.to_string(), why));
            }
        }
        Ok(())
    }
}

/// A row's uuid as a key: `Err((text, why))` when it is not one.
struct RowUuid;

impl<'de> DeserializeSeed<'de> for RowUuid {
    type Value = Result<Uuid, (String, String)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for RowUuid {
    type Value = Result<Uuid, (String, String)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row uuid")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Uuid::parse_str(s).map_err(|e| (s.to_owned(), e.to_string())))
    }
}

/// `{"initial"|"insert"|"modify": <row>}`, `{"delete": null}` (v2) or
/// `{"old": <row>, "new": <row>}` (v1).
struct RowUpdate<'t> {
    ty: &'t TableSchema,
    format: UpdateFormat,
}

impl<'de, 't> DeserializeSeed<'de> for RowUpdate<'t> {
    type Value = RowOp<'t>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RowOp<'t>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 't> Visitor<'de> for RowUpdate<'t> {
    type Value = RowOp<'t>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row-update object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RowOp<'t>, A::Error> {
        let row = |map: &mut A| -> Result<Columns<'t>, A::Error> {
            map.next_value_seed(Row(self.ty))?
                .ok_or_else(|| de::Error::custom("row is not an object"))
        };
        match self.format {
            UpdateFormat::V2 => {
                let mut op = None;
                while let Some(key) = map.next_key::<RowUpdateKey>()? {
                    op = match (op, key) {
                        (None, RowUpdateKey::Insert) => Some(RowOp::Insert(row(&mut map)?)),
                        (None, RowUpdateKey::Modify) => Some(RowOp::Modify(row(&mut map)?, true)),
                        (None, RowUpdateKey::Delete) => {
                            map.next_value::<IgnoredAny>()?;
                            Some(RowOp::Delete)
                        }
                        (op, _) => {
                            map.next_value::<IgnoredAny>()?;
                            op
                        }
                    };
                }
                op.ok_or_else(|| de::Error::custom("unknown row-update2"))
            }
            // `old` is present for a modify and a delete, `new` for an insert and a modify.
            UpdateFormat::V1 => {
                let (mut old, mut new) = (false, None);
                while let Some(key) = map.next_key::<RowUpdateKey>()? {
                    match key {
                        RowUpdateKey::Old => {
                            old = map.next_value::<Option<IgnoredAny>>()?.is_some()
                        }
                        RowUpdateKey::New => new = map.next_value_seed(Row(self.ty))?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                match (old, new) {
                    (true, Some(new)) => Ok(RowOp::Modify(new, false)),
                    (false, Some(new)) => Ok(RowOp::Insert(new)),
                    (true, None) => Ok(RowOp::Delete),
                    (false, None) => Err(de::Error::custom("row-update has neither old nor new")),
                }
            }
        }
    }
}

enum RowUpdateKey {
    Insert,
    Modify,
    Delete,
    Old,
    New,
    Other,
}

impl<'de> serde::Deserialize<'de> for RowUpdateKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RowUpdateKey, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RowUpdateKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a row-update key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RowUpdateKey, E> {
                Ok(match s {
                    "initial" | "insert" => RowUpdateKey::Insert,
                    "modify" => RowUpdateKey::Modify,
                    "delete" => RowUpdateKey::Delete,
                    "old" => RowUpdateKey::Old,
                    "new" => RowUpdateKey::New,
                    _ => RowUpdateKey::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// `{<column>: <value>, ..}` (`None` for `null`): the modelled columns, others skipped.
struct Row<'t>(&'t TableSchema);

impl<'de, 't> DeserializeSeed<'de> for Row<'t> {
    type Value = Option<Columns<'t>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 't> Visitor<'de> for Row<'t> {
    type Value = Option<Columns<'t>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut cols = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(col) = map.next_key_seed(Column(self.0))? {
            match col {
                Some((name, ct)) => {
                    let d: Datum = map
                        .next_value()
                        .map_err(|e: A::Error| de::Error::custom(format!("column {name}: {e}")))?;
                    cols.push((name, ct, d));
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(cols))
    }
}

/// A column's name: its name and type when we model it.
struct Column<'t>(&'t TableSchema);

impl<'de, 't> DeserializeSeed<'de> for Column<'t> {
    type Value = Option<(&'t str, &'t ColumnType)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'t> Visitor<'_> for Column<'t> {
    type Value = Option<(&'t str, &'t ColumnType)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a column name")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(self.0.get_key_value(s).map(|(k, v)| (k.as_str(), v)))
    }
}
