//! Typed OVSDB values (RFC 7047 §5.1): atoms, data (sets and maps) and rows, with their JSON
//! encoding and decoding.
//!
//! Pure data and functions: no I/O, no knowledge of NB tables. Decoding comes two ways: from a
//! `serde_json::Value` (`from_json`, for small replies) and straight from the wire's bytes
//! (`Deserialize`, for monitor updates: no JSON tree in between). Both accept the same inputs.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::{json, Value};
use uuid::Uuid;

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

// ---- decoding straight from the wire (RFC 7047 §5.1 notation) ----

/// The tag that opens an array-shaped value.
enum Tag {
    Uuid,
    NamedUuid,
    Set,
    Map,
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Tag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"uuid\", \"named-uuid\", \"set\" or \"map\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Tag, E> {
                Ok(match s {
                    "uuid" => Tag::Uuid,
                    "named-uuid" => Tag::NamedUuid,
                    "set" => Tag::Set,
                    "map" => Tag::Map,
                    other => return Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A uuid written as a string, parsed without an intermediate `String`.
pub(super) struct UuidStr(pub Uuid);

impl<'de> Deserialize<'de> for UuidStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = UuidStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a uuid string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<UuidStr, E> {
                Uuid::parse_str(s)
                    .map(UuidStr)
                    .map_err(|e| E::custom(format!("bad uuid {s:?}: {e}")))
            }
        }
        d.deserialize_str(V)
    }
}

/// The second and last element of a tagged array.
fn tagged_body<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(mut seq: A) -> Result<T, A::Error> {
    let body = seq
        .next_element()?
        .ok_or_else(|| de::Error::invalid_length(1, &"a two-element array"))?;
    if seq.next_element::<IgnoredAny>()?.is_some() {
        return Err(de::Error::invalid_length(3, &"a two-element array"));
    }
    Ok(body)
}

/// Scalar atoms, shared by [`Atom`]'s and [`Datum`]'s visitors.
macro_rules! visit_scalar_atoms {
    ($wrap:expr) => {
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
            Ok($wrap(Atom::Boolean(b)))
        }
        fn visit_i64<E: de::Error>(self, i: i64) -> Result<Self::Value, E> {
            Ok($wrap(Atom::Integer(i)))
        }
        fn visit_u64<E: de::Error>(self, u: u64) -> Result<Self::Value, E> {
            Ok($wrap(match i64::try_from(u) {
                Ok(i) => Atom::Integer(i),
                Err(_) => Atom::Real(u as f64),
            }))
        }
        fn visit_f64<E: de::Error>(self, r: f64) -> Result<Self::Value, E> {
            Ok($wrap(Atom::Real(r)))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok($wrap(Atom::String(s.to_owned())))
        }
        fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
            Ok($wrap(Atom::String(s)))
        }
    };
}

impl<'de> Deserialize<'de> for Atom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Atom;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an OVSDB atom")
            }
            visit_scalar_atoms!(|a| a);
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Atom, A::Error> {
                match seq.next_element::<Tag>()? {
                    Some(Tag::Uuid) => tagged_body::<_, UuidStr>(seq).map(|u| Atom::Uuid(u.0)),
                    Some(Tag::NamedUuid) => tagged_body(seq).map(Atom::NamedUuid),
                    _ => Err(de::Error::custom("not an atom")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Datum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Datum;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an OVSDB value (atom, set or map)")
            }
            visit_scalar_atoms!(|a| Datum::Set(vec![a]));
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Datum, A::Error> {
                match seq.next_element::<Tag>()? {
                    Some(Tag::Uuid) => {
                        tagged_body::<_, UuidStr>(seq).map(|u| Datum::Set(vec![Atom::Uuid(u.0)]))
                    }
                    Some(Tag::NamedUuid) => {
                        tagged_body(seq).map(|n| Datum::Set(vec![Atom::NamedUuid(n)]))
                    }
                    Some(Tag::Set) => tagged_body(seq).map(Datum::Set),
                    Some(Tag::Map) => tagged_body(seq).map(Datum::Map),
                    None => Err(de::Error::invalid_length(0, &"a tagged array")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Straight from the wire's text: the same values as through a `Value`, the same refusals.
    #[test]
    fn datum_from_wire_text() {
        let u = Uuid::from_u128(7);
        for d in [
            Datum::from("a\"b"),
            Datum::from(-3i64),
            Datum::from(true),
            Datum::Set(vec![Atom::Real(1.5)]),
            Datum::from(u),
            Datum::named_uuid("row1"),
            Datum::empty_set(),
            Datum::set(["a", "b"]),
            Datum::set([u, Uuid::nil()]),
            Datum::empty_map(),
            Datum::map([("k", "v"), ("k2", "v2")]),
            Datum::Map(vec![(Atom::Integer(1), Atom::Uuid(u))]),
        ] {
            let text = d.to_json().to_string();
            let got: Datum = serde_json::from_str(&text).unwrap();
            assert_eq!(got, d, "{text}");
            assert_eq!(got, Datum::from_json(&d.to_json()).unwrap(), "{text}");
        }
        for bad in [
            r#"{"x": 1}"#,
            r#"["uuid", "nope"]"#,
            r#"["uuid", "00000000-0000-0000-0000-000000000000", 1]"#,
            r#"["set"]"#,
            r#"["bogus", []]"#,
            r#"["set", [{"x": 1}]]"#,
            r#"["map", [["k"]]]"#,
            r#"null"#,
        ] {
            assert!(serde_json::from_str::<Datum>(bad).is_err(), "{bad}");
            let v: Value = serde_json::from_str(bad).unwrap();
            assert!(Datum::from_json(&v).is_err(), "{bad}");
        }
    }
}
