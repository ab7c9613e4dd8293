//! The masked view of a configuration ([`Entry`], [`Config::entries`]): every key with
//! its value as it may be shown (secrets masked), and the check of a driver's table
//! outside the loader.

use figment::value::{Dict, Value as Raw};

use super::declaration::Rejected;
use super::load::merged::Merged;
use super::redact::{self, Secrets};
use super::schema::{Schema, TableSchema, OPTIONS};
use super::value::Value;
use super::Config;
use crate::error::{Error, Result};

/// One key of a configuration as it may be shown: what `servicegroup config` prints.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Entry {
    /// The dotted key (`report_interval`, `db.url`, `options.mine.endpoint`).
    pub key: String,
    /// The value, normalized the way its type writes it (durations as `10s`) with
    /// secrets masked: a declared secret shows as `***`, or as its URL with the
    /// password masked; every other URL shows with its password masked. `None` when the
    /// key has no value (an unset option).
    pub value: Option<Value>,
    /// Whether the key is secret (declared so by its driver).
    pub secret: bool,
}

/// Every entry of `config`, sorted by key.
pub(super) fn entries(config: &Config, schema: &Schema) -> Vec<Entry> {
    let mut out = Vec::new();
    let common = match Raw::serialize(config.common()) {
        Ok(Raw::Dict(_, dict)) => dict,
        _ => Dict::new(),
    };
    for key in schema.common_keys() {
        out.push(entry(schema, key.to_owned(), common.get(key).cloned()));
    }
    for table in schema.tables() {
        let raw = config.table_values(table.name).cloned().unwrap_or_default();
        let shown = normalized(table, &raw).unwrap_or(raw);
        let mut keys: Vec<String> = table.leaves.iter().map(|(k, _)| k.clone()).collect();
        leaves("", &shown, &mut keys);
        keys.sort();
        keys.dedup();
        for key in keys {
            let value = Raw::from(shown.clone()).find(&key);
            out.push(entry(schema, format!("{}.{key}", table.name), value));
        }
    }
    for (driver, table) in config.undeclared_options() {
        let mut keys = Vec::new();
        leaves("", table, &mut keys);
        for key in keys {
            let value = Raw::from(table.clone()).find(&key);
            out.push(entry(schema, format!("{OPTIONS}.{driver}.{key}"), value));
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn entry(schema: &Schema, key: String, value: Option<Raw>) -> Entry {
    let secret = schema.is_secret(&key);
    let value = value.and_then(Value::from_raw).map(|v| {
        if secret {
            v.map_text(&|s| redact::mask_secret(&s))
        } else {
            v.map_text(&|s| redact::redact_url(&s))
        }
    });
    Entry { key, value, secret }
}

/// The table as its driver's type writes it back (durations as `5s`), unchecked.
fn normalized(table: &TableSchema, raw: &Dict) -> Option<Dict> {
    let figment = Merged::table_figment(table.name, raw.clone());
    table.decl.read(&figment, table.name, false).ok()
}

/// The dotted leaf keys of `dict` under `prefix`.
fn leaves(prefix: &str, dict: &Dict, out: &mut Vec<String>) {
    for (key, value) in dict {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Raw::Dict(_, inner) if !inner.is_empty() => leaves(&path, inner, out),
            _ => out.push(path),
        }
    }
}

/// Reads a driver's table of `config` with its type and rules (for a configuration
/// built in code: the loader checks loaded ones).
pub(super) fn check_table(config: &Config, table: &TableSchema) -> Result<()> {
    let raw = config.table_values(table.name).cloned().unwrap_or_default();
    let mut secrets = Secrets::default();
    let scoped = super::schema::dict_at(table.name, Raw::from(raw.clone()));
    Schema::get().collect_secrets(&scoped, &mut secrets);
    let figment = Merged::table_figment(table.name, raw);
    match table.decl.read(&figment, table.name, true) {
        Ok(_) => Ok(()),
        Err(Rejected::Serde(errors)) => {
            let messages: Vec<String> = errors
                .iter()
                .map(|e| {
                    let key = e.path.join(".");
                    let why = if Schema::get().is_secret(&key) {
                        super::load::merged::without_value(&e.kind)
                    } else {
                        e.kind.to_string()
                    };
                    format!("invalid value for `{key}`: {why}")
                })
                .collect();
            Err(Error::config(secrets.scrub(&messages.join("; "))))
        }
        Err(Rejected::Rule(invalid)) => Err(Error::config(secrets.scrub(&format!(
            "invalid value for `{}.{}`: {}",
            table.name,
            invalid.key(),
            invalid.message()
        )))),
        Err(Rejected::Unrepresentable(why)) => Err(Error::config(format!(
            "the table [{}] ({}) cannot be represented: {why}",
            table.name,
            table.decl.type_name()
        ))),
    }
}
