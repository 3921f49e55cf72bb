//! Typed OVSDB values (RFC 7047 §5.1): atoms, data (sets and maps) and rows, with their JSON
//! encoding and decoding.
//!
//! Pure data and functions: no I/O, no knowledge of NB tables.

use std::cmp::Ordering;
use std::collections::BTreeMap;

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
}
