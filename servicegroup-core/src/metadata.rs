//! [`Metadata`]: what a member says about itself (address, version, zone), a small
//! map of strings validated at the API edge, and its one storage encoding.
//!
//! The rules, checked by [`Metadata::new`] and everywhere metadata enters:
//!
//! - at most [`MAX_ENTRIES`] entries;
//! - keys 1 to [`MAX_KEY_LEN`] bytes of `a-z 0-9 . _ / -`;
//! - values at most [`MAX_VALUE_LEN`] bytes of UTF-8 (any characters);
//! - keys and values together at most [`MAX_TOTAL_LEN`] bytes.
//!
//! Anything else is an [`ErrorKind::InvalidMetadata`]
//! error naming the key and the rule. Nothing is ever truncated.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Most entries in one member's metadata.
pub const MAX_ENTRIES: usize = 32;
/// Longest metadata key, in bytes.
pub const MAX_KEY_LEN: usize = 63;
/// Longest metadata value, in bytes.
pub const MAX_VALUE_LEN: usize = 1024;
/// Most bytes of all keys and values together.
pub const MAX_TOTAL_LEN: usize = 4096;

/// A member's metadata: string keys to string values, sorted by key, valid by
/// construction. Empty by default.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Metadata(BTreeMap<String, String>);

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidMetadata, message)
}

fn shown(text: &str) -> String {
    const SHOWN: usize = 40;
    if text.chars().count() > SHOWN {
        let head: String = text.chars().take(SHOWN).collect();
        format!("{head:?}…")
    } else {
        format!("{text:?}")
    }
}

/// Most characters of a parser's message shown in an error.
const SHOWN_ERROR: usize = 200;

/// `text` cut to `max` characters (then `…`), without serde_json's ` at line L column C`.
fn shortened(text: &str, max: usize) -> String {
    let text = match text.rfind(" at line ") {
        Some(at) => &text[..at],
        None => text,
    };
    if text.chars().count() > max {
        let head: String = text.chars().take(max).collect();
        format!("{head}…")
    } else {
        text.to_owned()
    }
}

/// Checks one key against the key rule.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(invalid(
            "invalid metadata key \"\": keys must not be empty".to_owned(),
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid(format!(
            "invalid metadata key {}: it is {} bytes long, at most {MAX_KEY_LEN} are allowed",
            shown(key),
            key.len()
        )));
    }
    if let Some((at, c)) = key
        .char_indices()
        .find(|(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '/' | '-'))
    {
        return Err(invalid(format!(
            "invalid metadata key {}: character {c:?} at byte {at} is not allowed (keys use a-z 0-9 . _ / -)",
            shown(key)
        )));
    }
    Ok(())
}

impl Metadata {
    /// No metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validated metadata from key/value pairs. A key given twice is an error
    /// (never silently one of the two).
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut map = BTreeMap::new();
        for (key, value) in pairs {
            let key = key.into();
            if map.contains_key(&key) {
                return Err(invalid(format!(
                    "metadata key {} is given twice",
                    shown(&key)
                )));
            }
            map.insert(key, value.into());
        }
        Self::try_from(map)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries as a map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The entries as an owned map.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }

    /// The storage form every driver uses: a JSON object (`{}` when empty), keys sorted.
    pub fn to_json(&self) -> String {
        // A map of strings always serializes.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Reads [`Self::to_json`]'s form back, checking every rule (a stored value that
    /// breaks them is an `InvalidMetadata` error, never a panic). Empty text is no metadata.
    pub fn from_json(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::new());
        }
        let map: BTreeMap<String, String> = serde_json::from_str(text).map_err(|e| {
            // serde_json's message quotes the offending value (a stored string may be
            // megabytes long): shown shortened, with the position.
            invalid(format!(
                "stored metadata is not a JSON object of strings: {} at line {} column {}",
                shortened(&e.to_string(), SHOWN_ERROR),
                e.line(),
                e.column()
            ))
        })?;
        Self::try_from(map)
    }
}

impl TryFrom<BTreeMap<String, String>> for Metadata {
    type Error = Error;

    fn try_from(map: BTreeMap<String, String>) -> Result<Self> {
        if map.len() > MAX_ENTRIES {
            return Err(invalid(format!(
                "metadata has {} entries, at most {MAX_ENTRIES} are allowed",
                map.len()
            )));
        }
        let mut total = 0;
        for (key, value) in &map {
            check_key(key)?;
            if value.len() > MAX_VALUE_LEN {
                return Err(invalid(format!(
                    "metadata value of key {} is {} bytes long, at most {MAX_VALUE_LEN} are allowed",
                    shown(key),
                    value.len()
                )));
            }
            total += key.len() + value.len();
        }
        if total > MAX_TOTAL_LEN {
            return Err(invalid(format!(
                "metadata keys and values are {total} bytes together, at most {MAX_TOTAL_LEN} are allowed"
            )));
        }
        Ok(Self(map))
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(d)?;
        Self::try_from(map).map_err(|e| serde::de::Error::custom(e.message()))
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl fmt::Display for Metadata {
    /// `key=value,key=value` (empty when there are none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// Anything the API accepts as metadata: [`Metadata`] itself, or a map or list of
/// string pairs, validated on the way in (a bad one is an `InvalidMetadata` error).
pub trait IntoMetadata {
    /// The validated metadata.
    fn into_metadata(self) -> Result<Metadata>;
}

impl IntoMetadata for Metadata {
    fn into_metadata(self) -> Result<Metadata> {
        Ok(self)
    }
}

impl<K: Into<String>, V: Into<String>> IntoMetadata for BTreeMap<K, V> {
    fn into_metadata(self) -> Result<Metadata> {
        Metadata::from_pairs(self)
    }
}

impl<K: Into<String>, V: Into<String>, S> IntoMetadata for std::collections::HashMap<K, V, S> {
    fn into_metadata(self) -> Result<Metadata> {
        Metadata::from_pairs(self)
    }
}

impl<K: Into<String>, V: Into<String>> IntoMetadata for Vec<(K, V)> {
    fn into_metadata(self) -> Result<Metadata> {
        Metadata::from_pairs(self)
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> IntoMetadata for [(K, V); N] {
    fn into_metadata(self) -> Result<Metadata> {
        Metadata::from_pairs(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_metadata_round_trips_through_json() {
        let md = Metadata::from_pairs([
            ("address", "10.0.0.1:8774"),
            ("zone", "eu-1/rack-7"),
            ("note", "héllo \"world\" \n ✓"),
        ])
        .unwrap();
        let back = Metadata::from_json(&md.to_json()).unwrap();
        assert_eq!(back, md);
        assert_eq!(back.get("zone"), Some("eu-1/rack-7"));
        assert_eq!(Metadata::from_json("").unwrap(), Metadata::new());
        assert_eq!(Metadata::new().to_json(), "{}");
    }

    #[test]
    fn limits_are_exact() {
        let key = "k".repeat(MAX_KEY_LEN);
        assert!(Metadata::from_pairs([(key.clone(), "x".repeat(MAX_VALUE_LEN))]).is_ok());
        let entries: Vec<(String, String)> = (0..MAX_ENTRIES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(Metadata::from_pairs(entries.clone()).is_ok());

        let too_many =
            Metadata::from_pairs((0..=MAX_ENTRIES).map(|i| (format!("k{i}"), String::new())))
                .unwrap_err();
        assert_eq!(too_many.kind(), ErrorKind::InvalidMetadata);
        assert!(too_many.message().contains("33 entries"), "{too_many}");

        for (bad_key, rule) in [
            ("", "must not be empty"),
            (&"k".repeat(MAX_KEY_LEN + 1) as &str, "64 bytes long"),
            ("Zone", "'Z'"),
            ("a b", "' '"),
            ("ключ", "not allowed"),
        ] {
            let e = Metadata::from_pairs([(bad_key, "v")]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidMetadata);
            assert!(e.message().contains(rule), "{bad_key:?}: {e}");
        }
        let long = Metadata::from_pairs([("k", "x".repeat(MAX_VALUE_LEN + 1))]).unwrap_err();
        assert!(
            long.message().contains("key \"k\"") && long.message().contains("1025 bytes"),
            "{long}"
        );
        let total =
            Metadata::from_pairs((0..5).map(|i| (format!("k{i}"), "x".repeat(1000)))).unwrap_err();
        assert!(total.message().contains("at most 4096"), "{total}");
        let twice = Metadata::from_pairs([("a", "1"), ("a", "2")]).unwrap_err();
        assert!(twice.message().contains("twice"), "{twice}");
    }

    #[test]
    fn bad_stored_json_is_an_error_not_a_panic() {
        for bad in ["[1]", "{\"a\": 1}", "{", "{\"A\": \"x\"}"] {
            let e = Metadata::from_json(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidMetadata, "{bad}");
        }
    }
}
