//! [`Value`] and [`Table`]: configuration values as core hands them around, whatever
//! source they came from (TOML, nova.conf, environment, code).
//!
//! They are core's own types, so no configuration library leaks into the public API.
//! Build a value from the usual Rust values with `From` (`"200ms"`, `8u32`, `true`,
//! `Duration::from_secs(5)`, `vec!["a:1", "b:2"]`), or from anything serializable
//! with [`Value::serialize`]; read one with the `as_*` accessors or
//! [`Value::deserialize`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use figment::value::{Dict, Num, Tag, Value as Raw};
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};

use crate::config::{duration, redact};
use crate::error::{Error, Result};

/// One configuration value: text, a number, a flag, a list or a table.
///
/// `Debug` masks the password of any URL it holds; `Display` renders it as JSON
/// (`"10s"`, `8`, `["a:1"]`) without masking, as `serde_json` would.
#[derive(Clone, PartialEq)]
pub struct Value(Repr);

#[derive(Clone, PartialEq)]
enum Repr {
    Text(String),
    Flag(bool),
    Integer(i128),
    Float(f64),
    List(Vec<Value>),
    Table(Table),
}

impl Value {
    /// A value holding whatever `value` serializes to (structs and maps become tables,
    /// `None` fields are left out). Fails for values that are not configuration-shaped.
    pub fn serialize<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
        let raw = Raw::serialize(value)
            .map_err(|e| Error::config(format!("cannot represent a configuration value: {e}")))?;
        Value::from_raw(raw).ok_or_else(|| {
            Error::config("cannot represent a configuration value: it is empty (`None` or `()`)")
        })
    }

    /// Reads the value as `T` (any `serde` type; durations with
    /// [`duration`](crate::config::duration)).
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T> {
        self.to_raw()
            .deserialize()
            .map_err(|e| Error::config(redact::redact_text(&e.to_string())))
    }

    /// The text, if this is text.
    pub fn as_str(&self) -> Option<&str> {
        match &self.0 {
            Repr::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The flag, if this is `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match self.0 {
            Repr::Flag(b) => Some(b),
            _ => None,
        }
    }

    /// The number, if this is an integer that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self.0 {
            Repr::Integer(n) => i64::try_from(n).ok(),
            _ => None,
        }
    }

    /// The number, if this is a non-negative integer that fits a `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match self.0 {
            Repr::Integer(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }

    /// The number as a float, if this is a number (integers convert, maybe rounded).
    pub fn as_f64(&self) -> Option<f64> {
        match self.0 {
            Repr::Integer(n) => Some(n as f64),
            Repr::Float(f) => Some(f),
            _ => None,
        }
    }

    /// The items, if this is a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match &self.0 {
            Repr::List(items) => Some(items),
            _ => None,
        }
    }

    /// The table, if this is a table.
    pub fn as_table(&self) -> Option<&Table> {
        match &self.0 {
            Repr::Table(t) => Some(t),
            _ => None,
        }
    }

    /// What kind of value this is, in one word (`text`, `flag`, `integer`, `float`,
    /// `list`, `table`), as error messages name it.
    pub fn kind(&self) -> &'static str {
        match self.0 {
            Repr::Text(_) => "text",
            Repr::Flag(_) => "flag",
            Repr::Integer(_) => "integer",
            Repr::Float(_) => "float",
            Repr::List(_) => "list",
            Repr::Table(_) => "table",
        }
    }

    /// The same value with every text passed through `f` (list items and table
    /// values included).
    pub(crate) fn map_text(self, f: &impl Fn(String) -> String) -> Value {
        Value(match self.0 {
            Repr::Text(s) => Repr::Text(f(s)),
            Repr::List(items) => Repr::List(items.into_iter().map(|v| v.map_text(f)).collect()),
            Repr::Table(t) => Repr::Table(Table(
                t.0.into_iter().map(|(k, v)| (k, v.map_text(f))).collect(),
            )),
            other => other,
        })
    }

    /// Converts from figment's value; `None` for figment's empty values (`None`, `()`).
    pub(crate) fn from_raw(raw: Raw) -> Option<Value> {
        Some(Value(match raw {
            Raw::String(_, s) => Repr::Text(s),
            Raw::Char(_, c) => Repr::Text(c.to_string()),
            Raw::Bool(_, b) => Repr::Flag(b),
            Raw::Num(_, n) => match (n.to_f64(), n.to_i128(), n.to_u128()) {
                (Some(f), _, _) => Repr::Float(f),
                (_, Some(i), _) => Repr::Integer(i),
                // Beyond i128 (a huge u128): kept as a float rather than refused.
                (_, _, Some(u)) => i128::try_from(u).map_or(Repr::Float(u as f64), Repr::Integer),
                (None, None, None) => return None,
            },
            Raw::Empty(..) => return None,
            Raw::Dict(_, dict) => Repr::Table(Table::from_raw(dict)),
            Raw::Array(_, items) => {
                Repr::List(items.into_iter().filter_map(Value::from_raw).collect())
            }
        }))
    }

    /// Converts to figment's value.
    pub(crate) fn to_raw(&self) -> Raw {
        let tag = Tag::Default;
        match &self.0 {
            Repr::Text(s) => Raw::String(tag, s.clone()),
            Repr::Flag(b) => Raw::Bool(tag, *b),
            Repr::Integer(n) => Raw::Num(
                tag,
                if let Ok(u) = u64::try_from(*n) {
                    Num::U64(u)
                } else if let Ok(i) = i64::try_from(*n) {
                    Num::I64(i)
                } else {
                    Num::I128(*n)
                },
            ),
            Repr::Float(f) => Raw::Num(tag, Num::F64(*f)),
            Repr::List(items) => Raw::Array(tag, items.iter().map(Value::to_raw).collect()),
            Repr::Table(t) => Raw::Dict(tag, t.to_raw()),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Text(s) => fmt::Debug::fmt(&redact::redact_url(s), f),
            Repr::Flag(b) => fmt::Debug::fmt(b, f),
            Repr::Integer(n) => fmt::Debug::fmt(n, f),
            Repr::Float(x) => fmt::Debug::fmt(x, f),
            Repr::List(items) => f.debug_list().entries(items).finish(),
            Repr::Table(t) => fmt::Debug::fmt(t, f),
        }
    }
}

/// JSON, as `serde_json` renders it: `"10s"`, `8`, `true`, `["a:1","b:2"]`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(json) => f.write_str(&json),
            Err(_) => f.write_str("<unrepresentable>"),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Text(t) => s.serialize_str(t),
            Repr::Flag(b) => s.serialize_bool(*b),
            Repr::Integer(n) => {
                if let Ok(u) = u64::try_from(*n) {
                    s.serialize_u64(u)
                } else if let Ok(i) = i64::try_from(*n) {
                    s.serialize_i64(i)
                } else {
                    s.serialize_i128(*n)
                }
            }
            Repr::Float(x) => s.serialize_f64(*x),
            Repr::List(items) => s.collect_seq(items),
            Repr::Table(t) => t.serialize(s),
        }
    }
}

macro_rules! from_integer {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Self {
                Value(Repr::Integer(n as i128))
            }
        }
    )*};
}

from_integer!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value(Repr::Float(x))
    }
}

impl From<f32> for Value {
    fn from(x: f32) -> Self {
        Value(Repr::Float(f64::from(x)))
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value(Repr::Flag(b))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value(Repr::Text(s.to_owned()))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value(Repr::Text(s))
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value(Repr::Text(s.clone()))
    }
}

/// A duration as text that reads back exactly (`200ms`, `1m 30s`).
impl From<Duration> for Value {
    fn from(d: Duration) -> Self {
        Value(Repr::Text(duration::render(d)))
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(items: Vec<T>) -> Self {
        Value(Repr::List(items.into_iter().map(Into::into).collect()))
    }
}

impl<T: Into<Value>, const N: usize> From<[T; N]> for Value {
    fn from(items: [T; N]) -> Self {
        Value(Repr::List(items.into_iter().map(Into::into).collect()))
    }
}

impl<T: Clone + Into<Value>> From<&[T]> for Value {
    fn from(items: &[T]) -> Self {
        Value(Repr::List(items.iter().cloned().map(Into::into).collect()))
    }
}

impl From<Table> for Value {
    fn from(table: Table) -> Self {
        Value(Repr::Table(table))
    }
}

impl<K: Into<String>, V: Into<Value>> From<BTreeMap<K, V>> for Value {
    fn from(map: BTreeMap<K, V>) -> Self {
        Value(Repr::Table(map.into_iter().collect()))
    }
}

/// A table of configuration values by key, sorted by key.
#[derive(Clone, Default, PartialEq)]
pub struct Table(BTreeMap<String, Value>);

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Sets `key` to `value`, returning the value it replaces.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        self.0.insert(key.into(), value.into())
    }

    /// Every key and value, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// How many keys it has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it has no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads the table as `T`, such as a driver's own options struct. An error names
    /// the key (relative to this table) with a password-free message.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T> {
        Raw::Dict(Tag::Default, self.to_raw())
            .deserialize()
            .map_err(|e| {
                let key = e.path.join(".");
                let message = redact::redact_text(&e.kind.to_string());
                if key.is_empty() {
                    Error::config(message)
                } else {
                    Error::config(format!("invalid value for `{key}`: {message}"))
                }
            })
    }

    pub(crate) fn from_raw(dict: Dict) -> Table {
        Table(
            dict.into_iter()
                .filter_map(|(k, v)| Value::from_raw(v).map(|v| (k, v)))
                .collect(),
        )
    }

    pub(crate) fn to_raw(&self) -> Dict {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), v.to_raw()))
            .collect()
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl Serialize for Table {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Table {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Table(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<'a> IntoIterator for &'a Table {
    type Item = (&'a String, &'a Value);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_figment() {
        let v = Value::from(vec![Value::from("a"), Value::from(3u8), Value::from(-2i64)]);
        assert_eq!(Value::from_raw(v.to_raw()), Some(v.clone()));
        assert_eq!(v.to_string(), r#"["a",3,-2]"#);
        let t: Table = [("x", Value::from(1.5)), ("y", Value::from(true))]
            .into_iter()
            .collect();
        let v = Value::from(t);
        assert_eq!(Value::from_raw(v.to_raw()), Some(v.clone()));
        assert_eq!(v.to_string(), r#"{"x":1.5,"y":true}"#);
    }

    #[test]
    fn accessors_and_conversions() {
        assert_eq!(Value::from(8u32).as_u64(), Some(8));
        assert_eq!(Value::from(-1).as_u64(), None);
        assert_eq!(Value::from(-1).as_i64(), Some(-1));
        assert_eq!(Value::from("x").as_str(), Some("x"));
        assert_eq!(
            Value::from(Duration::from_millis(1500)).as_str(),
            Some("1s 500ms")
        );
        assert_eq!(
            Value::from(["a", "b"]).as_list().map(<[Value]>::len),
            Some(2)
        );
        let d: Duration = Value::from("200ms")
            .deserialize::<String>()
            .map(|s| duration::parse(&s).unwrap())
            .unwrap();
        assert_eq!(d, Duration::from_millis(200));
    }

    #[test]
    fn debug_masks_url_passwords() {
        let v = Value::from("postgres://nova:s3cret@db/nova");
        assert!(!format!("{v:?}").contains("s3cret"));
        assert!(format!("{v:?}").contains("nova:***@db"));
    }

    #[test]
    fn tables_deserialize_naming_the_key() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            retries: u32,
        }
        let t: Table = [("retries", "many")].into_iter().collect();
        let err = t.deserialize::<T>().unwrap_err().to_string();
        assert!(err.contains("`retries`"), "{err}");
    }
}
