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
                let (mut op, mut members) = (None, 0);
                while let Some(key) = map.next_key::<RowUpdateKey>()? {
                    members += 1;
                    if members > 1 {
                        return Err(de::Error::custom("row-update2 has more than one member"));
                    }
                    op = match (op, key) {
                        (None, RowUpdateKey::Insert) => Some(RowOp::Insert(row(&mut map)?)),
                        (None, RowUpdateKey::Modify) => Some(RowOp::Modify(row(&mut map)?, true)),
                        (None, RowUpdateKey::Delete) => {
                            // RFC 7047 / ovsdb-cs: `"delete": null`, nothing else.
                            if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                                return Err(de::Error::custom("row-update2 delete is not null"));
                            }
                            Some(RowOp::Delete)
                        }
                        // One member exactly (ovsdb-cs.c refuses more, checked above).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::cache::tests::types;
    use crate::ovsdb::values::Atom;

    /// What `parse` hands over, owned: (table, uuid, op, columns as (name, value)).
    type Seen = Vec<(Table, Uuid, &'static str, Vec<(String, Datum)>)>;

    fn parse_all(format: UpdateFormat, json: &str) -> Result<Seen, UpdateError> {
        let t = types();
        let mut seen = Seen::new();
        parse(json, &t, format, |table, _, uuid, op| {
            let (kind, cols) = match op {
                RowOp::Insert(c) => ("insert", c),
                RowOp::Modify(c, true) => ("modify-diff", c),
                RowOp::Modify(c, false) => ("modify-new", c),
                RowOp::Delete => ("delete", vec![]),
            };
            let cols = cols
                .into_iter()
                .map(|(n, _, d)| (n.to_owned(), d))
                .collect();
            seen.push((table, uuid, kind, cols));
            Ok(())
        })?;
        Ok(seen)
    }

    fn u(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// Every kind of column we model, typed straight from the text; unknown columns and tables
    /// are skipped; columns omitted (defaults) are simply absent.
    #[test]
    fn every_column_kind_from_the_wire() {
        let json = format!(
            r#"{{"Logical_Router_Port": {{"{p}": {{"initial": {{
                "name": "lp", "mac": "0a:00:00:00:00:01",
                "networks": ["set", ["10.0.0.1/24", "fd00::1/64"]],
                "peer": "q", "enabled": false,
                "gateway_chassis": ["set", [["uuid", "{g}"]]],
                "ha_chassis_group": ["uuid", "{g}"],
                "options": ["map", [["a", "b"]]],
                "external_ids": ["map", [["k1", "v1"], ["k2", "v2"]]],
                "status": ["map", [["hosting-chassis", "ch1"]]],
                "unknown_nested": {{"x": [1, {{"y": null}}]}}}}}}}},
              "NAT": {{"{g}": {{"insert": {{"external_ip": "1.2.3.4"}}}}}},
              "Logical_Router_Static_Route": {{"{r}": {{"insert": {{
                "ip_prefix": "10.2.0.0/16", "nexthop": "169.254.0.2",
                "bfd": ["uuid", "{g}"], "policy": ["set", []]}}}}}}}}"#,
            p = u(1),
            g = u(9),
            r = u(2)
        );
        let seen = parse_all(UpdateFormat::V2, &json).unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        let (table, uuid, kind, cols) = &seen[0];
        assert_eq!(
            (*table, *uuid, *kind),
            (Table::LogicalRouterPort, u(1), "insert")
        );
        let want = vec![
            ("name", Datum::from("lp")),
            ("mac", Datum::from("0a:00:00:00:00:01")),
            ("networks", Datum::set(["10.0.0.1/24", "fd00::1/64"])),
            ("peer", Datum::from("q")),
            ("enabled", Datum::from(false)),
            ("gateway_chassis", Datum::set([u(9)])),
            ("ha_chassis_group", Datum::from(u(9))),
            ("options", Datum::map([("a", "b")])),
            ("external_ids", Datum::map([("k1", "v1"), ("k2", "v2")])),
        ];
        let want: Vec<(String, Datum)> = want.into_iter().map(|(c, d)| (c.into(), d)).collect();
        assert_eq!(cols, &want);
        let (table, uuid, kind, cols) = &seen[1];
        assert_eq!(
            (*table, *uuid, *kind),
            (Table::LogicalRouterStaticRoute, u(2), "insert")
        );
        assert_eq!(
            cols,
            &vec![
                ("ip_prefix".to_owned(), Datum::from("10.2.0.0/16")),
                ("nexthop".to_owned(), Datum::from("169.254.0.2")),
                ("bfd".to_owned(), Datum::Set(vec![Atom::Uuid(u(9))])),
                ("policy".to_owned(), Datum::empty_set()),
            ]
        );
    }

    /// `modify` carries diffs (v2) or new values (v1); `delete`; v1's old/new decide the op.
    #[test]
    fn modify_and_delete_in_both_formats() {
        let json = format!(
            r#"{{"Logical_Router": {{
                "{a}": {{"modify": {{"ports": ["uuid", "{c}"],
                    "external_ids": ["map", [["k", "v"]]]}}}},
                "{b}": {{"delete": null}}}}}}"#,
            a = u(1),
            b = u(2),
            c = u(3)
        );
        let seen = parse_all(UpdateFormat::V2, &json).unwrap();
        let kinds: Vec<_> = seen.iter().map(|s| (s.1, s.2)).collect();
        assert_eq!(kinds, [(u(1), "modify-diff"), (u(2), "delete")]);
        assert_eq!(
            seen[0].3,
            vec![
                ("ports".to_owned(), Datum::from(u(3))),
                ("external_ids".to_owned(), Datum::map([("k", "v")])),
            ]
        );

        let json = format!(
            r#"{{"Logical_Router": {{
                "{a}": {{"new": {{"name": "n"}}, "old": {{"name": "o"}}}},
                "{b}": {{"old": {{"name": "o"}}}},
                "{c}": {{"new": {{"name": "x"}}, "old": null}}}}}}"#,
            a = u(1),
            b = u(2),
            c = u(3)
        );
        let seen = parse_all(UpdateFormat::V1, &json).unwrap();
        let kinds: Vec<_> = seen.iter().map(|s| (s.1, s.2)).collect();
        assert_eq!(
            kinds,
            [(u(1), "modify-new"), (u(2), "delete"), (u(3), "insert")]
        );
        assert_eq!(seen[0].3, vec![("name".to_owned(), Datum::from("n"))]);
        assert!(parse_all(UpdateFormat::V2, "null").unwrap().is_empty());
    }

    /// Malformed parts are errors naming where they are; a refusal stops the parse.
    #[test]
    fn malformed_parts_name_their_place() {
        let e = parse_all(
            UpdateFormat::V2,
            r#"{"Logical_Router": {"not-a-uuid": {"insert": {}}}}"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.table.as_str(), e.uuid.as_str()),
            ("Logical_Router", "not-a-uuid")
        );
        let row = u(5).to_string();
        for (bad, why) in [
            (
                format!(r#"{{"Logical_Router": {{"{row}": {{"bogus": {{}}}}}}}}"#),
                "unknown row-update2",
            ),
            (
                format!(
                    r#"{{"Logical_Router": {{"{row}": {{"insert": {{"name": {{"x": 1}}}}}}}}}}"#
                ),
                "column name",
            ),
            (
                format!(r#"{{"Logical_Router": {{"{row}": {{"insert": 5}}}}}}"#),
                "row",
            ),
            (
                format!(r#"{{"Logical_Router": {{"{row}": {{"insert": {{}}}}}}"#),
                "",
            ),
            ("[1]".to_owned(), "table-updates"),
            (
                format!(r#"{{"Logical_Router": {{"{row}": {{"delete": null, "insert": {{}}}}}}}}"#),
                "more than one member",
            ),
            (
                format!(r#"{{"Logical_Router": {{"{row}": {{"bogus": 1, "delete": null}}}}}}"#),
                "more than one member",
            ),
            (
                format!(r#"{{"Logical_Router": {{"{row}": {{"delete": {{}}}}}}}}"#),
                "delete is not null",
            ),
        ] {
            let e = parse_all(UpdateFormat::V2, &bad).unwrap_err();
            assert_eq!(e.kind, UpdateErrorKind::Malformed, "{bad}");
            assert!(e.reason.contains(why), "{bad}: {e}");
        }
        let t = types();
        let e = parse(
            &format!(r#"{{"Logical_Router": {{"{row}": {{"delete": null}}}}}}"#),
            &t,
            UpdateFormat::V2,
            |_, _, _, _| Err((UpdateErrorKind::Diverged, "not held".into())),
        )
        .unwrap_err();
        assert_eq!(
            (e.kind, e.table.as_str(), e.uuid.as_str(), e.reason.as_str()),
            (
                UpdateErrorKind::Diverged,
                "Logical_Router",
                row.as_str(),
                "not held"
            )
        );
    }
}
