//! The keys our configuration knows, derived from [`Config`] itself (so a field
//! added to `Config` is a known key, an environment variable and an origin without
//! touching the loader): the leaf keys and how text for them is read, the check
//! that rejects unknown keys (naming key and source), and the `servicegroup_driver`
//! alias, folded into `driver` in every source so two sources never set both.

use std::sync::OnceLock;

use figment::value::{Dict, Value};

use super::Origin;
use crate::config::{Config, DatabaseUrl};
use crate::error::{Error, Result};

/// Nova's name of `driver`, accepted in every source.
const DRIVER_ALIAS: &str = "servicegroup_driver";
/// `[options.<driver>]`: third-party driver options, passed through unchecked.
pub(super) const OPTIONS: &str = "options";

/// How a value given as text (an environment variable) is read for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Kept as a string (durations parse their own strings; URLs and names stay text).
    Text,
    /// An integer.
    Number,
    /// A true/false flag.
    Flag,
    /// A comma-separated list.
    List,
}

/// The shape of [`Config`]: every leaf key in dotted form with its [`Kind`].
pub(super) struct Schema {
    leaves: Vec<(String, Kind)>,
}

impl Schema {
    /// The schema, derived once from a fully populated default [`Config`].
    pub(super) fn get() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(|| {
            // Fill the optional fields so that serialization shows them.
            let mut full = Config::default();
            full.watch_interval = Some(full.effective_watch_interval());
            full.db.url = Some(DatabaseUrl::new(""));
            let mut leaves = Vec::new();
            if let Ok(Value::Dict(_, dict)) = Value::serialize(&full) {
                collect_leaves("", &dict, &mut leaves);
            }
            Schema { leaves }
        })
    }

    /// Every leaf key (`driver`, `db.url`, ...), sorted.
    pub(super) fn leaf_keys(&self) -> impl Iterator<Item = &str> {
        self.leaves.iter().map(|(k, _)| k.as_str())
    }

    /// Every leaf key with its kind.
    pub(super) fn leaves(&self) -> &[(String, Kind)] {
        &self.leaves
    }

    /// The tables (`db`, `mc`, `inproc`).
    pub(super) fn tables(&self) -> Vec<&str> {
        let mut tables: Vec<&str> = self
            .leaf_keys()
            .filter_map(|k| k.split_once('.').map(|(t, _)| t))
            .collect();
        tables.dedup();
        tables
    }

    fn is_top_level(&self, key: &str) -> bool {
        self.leaf_keys().any(|k| k == key)
    }

    fn table_keys(&self, table: &str) -> Option<Vec<&str>> {
        let keys: Vec<&str> = self
            .leaf_keys()
            .filter_map(|k| k.strip_prefix(table)?.strip_prefix('.'))
            .collect();
        (!keys.is_empty()).then_some(keys)
    }

    fn describe_top_level(&self) -> String {
        let mut known: Vec<String> = self
            .leaf_keys()
            .filter(|k| !k.contains('.'))
            .map(|k| match k {
                "driver" => format!("driver (or {DRIVER_ALIAS})"),
                other => other.to_owned(),
            })
            .collect();
        known.extend(self.tables().iter().map(|t| format!("[{t}]")));
        known.push(format!("[{OPTIONS}.<driver>]"));
        known.join(", ")
    }
}

fn collect_leaves(prefix: &str, dict: &Dict, out: &mut Vec<(String, Kind)>) {
    for (key, value) in dict {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let kind = match value {
            Value::Dict(_, inner) => {
                if key != OPTIONS || !prefix.is_empty() {
                    collect_leaves(&path, inner, out);
                }
                continue;
            }
            Value::Num(..) => Kind::Number,
            Value::Bool(..) => Kind::Flag,
            Value::Array(..) => Kind::List,
            _ => Kind::Text,
        };
        out.push((path, kind));
    }
}

/// The defaults as a figment dictionary.
pub(super) fn defaults() -> Result<Dict> {
    match Value::serialize(Config::default()) {
        Ok(Value::Dict(_, dict)) => Ok(dict),
        Ok(_) => Err(Error::config("the default configuration is not a table")),
        Err(e) => Err(Error::config(format!(
            "cannot represent the default configuration: {e}"
        ))),
    }
}

/// A dictionary holding `value` at the dotted `key` (`db.url` → `{db: {url: value}}`).
pub(super) fn dict_at(key: &str, value: Value) -> Dict {
    let mut parts = key.rsplit('.');
    let last = parts.next().unwrap_or_default();
    let mut dict = Dict::new();
    dict.insert(last.to_owned(), value);
    for part in parts {
        let mut outer = Dict::new();
        outer.insert(part.to_owned(), Value::from(dict));
        dict = outer;
    }
    dict
}

/// Drops unset (`None`/unit) values, recursively: an override of `None` sets nothing.
pub(super) fn without_empty(dict: Dict) -> Dict {
    dict.into_iter()
        .filter_map(|(k, v)| match v {
            Value::Empty(..) => None,
            Value::Dict(tag, inner) => Some((k, Value::Dict(tag, without_empty(inner)))),
            other => Some((k, other)),
        })
        .collect()
}

/// Folds `servicegroup_driver` into `driver` and rejects keys [`Config`] does not have.
pub(super) fn normalize_and_check(dict: &mut Dict, origin: &Origin) -> Result<()> {
    if let Some(value) = dict.remove(DRIVER_ALIAS) {
        if dict.contains_key("driver") {
            return Err(Error::config(format!(
                "both `driver` and its alias `{DRIVER_ALIAS}` are set in {}; keep one",
                origin.describe()
            )));
        }
        dict.insert("driver".to_owned(), value);
    }
    let schema = Schema::get();
    for (key, value) in dict.iter() {
        if key == OPTIONS || schema.is_top_level(key) {
            continue;
        }
        let Some(known) = schema.table_keys(key) else {
            return Err(unknown(key, &schema.describe_top_level(), origin));
        };
        // A non-table value is a type error, reported by the extraction.
        if let Value::Dict(_, inner) = value {
            if let Some(bad) = inner.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(unknown(&format!("{key}.{bad}"), &known.join(", "), origin));
            }
        }
    }
    Ok(())
}

fn unknown(key: &str, known: &str, origin: &Origin) -> Error {
    Error::config(format!(
        "unknown key `{key}` in {} (known keys: {known})",
        origin.describe()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_has_every_leaf_with_its_kind() {
        let schema = Schema::get();
        for (key, kind) in [
            ("driver", Kind::Text),
            ("report_interval", Kind::Text),
            ("service_down_time", Kind::Text),
            ("call_timeout", Kind::Text),
            ("watch_interval", Kind::Text),
            ("db.url", Kind::Text),
            ("db.pool_size", Kind::Number),
            ("db.timeout", Kind::Text),
            ("mc.servers", Kind::List),
            ("mc.timeout", Kind::Text),
            ("inproc.name", Kind::Text),
        ] {
            assert!(
                schema.leaves().contains(&(key.to_owned(), kind)),
                "{key} {kind:?} missing: {:?}",
                schema.leaves()
            );
        }
        assert!(!schema.leaf_keys().any(|k| k.starts_with("options")));
        assert_eq!(schema.tables(), ["db", "inproc", "mc"]);
    }

    #[test]
    fn dotted_keys_nest() {
        let d = Value::from(dict_at("db.url", Value::from("x")));
        assert_eq!(d.find_ref("db.url").and_then(Value::as_str), Some("x"));
    }
}
