//! nova.conf-style INI files, read as-is, as oslo.config reads them.
//!
//! Parsed with rust-ini set up like oslo.config (no escapes, so `C:\path` survives;
//! no quote handling; indented lines continue a value). On top of that, as oslo does:
//! one pair of matching outer quotes is stripped from the first line of a value, a
//! repeated option takes its last value, section names other than `DEFAULT` are
//! case-insensitive. And as servicegroup's design says: keys before the first section
//! belong to `[DEFAULT]`, and `<None>` means unset. Only these options are read; all
//! other sections and options (other services') are ignored:
//!
//! | nova.conf | servicegroup |
//! |---|---|
//! | `[DEFAULT] servicegroup_driver` | `driver` |
//! | `[DEFAULT] report_interval` | `report_interval` |
//! | `[DEFAULT] service_down_time` | `service_down_time` |
//! | what each linked driver declares ([`NovaOption`](crate::config::NovaOption)) | a key of its table |
//!
//! (The db driver declares `[database] connection` → `db.url`; the mc driver
//! `[DEFAULT] memcached_servers`, else `[cache] memcache_servers` → `mc.servers`.)

use std::collections::BTreeMap;
use std::path::Path;

use figment::value::{Dict, Value};
use ini::{Ini, ParseOption};

use crate::config::schema::{Kind, Schema};
use crate::error::{Error, Result};

const DEFAULT: &str = "DEFAULT";

/// Core's own nova.conf options: `[DEFAULT] <option>` → key.
const COMMON: &[(&str, &str)] = &[
    ("servicegroup_driver", "driver"),
    ("report_interval", "report_interval"),
    ("service_down_time", "service_down_time"),
];

/// Reads a nova.conf-style file into a dictionary shaped like our configuration.
pub(super) fn read(path: &Path, text: &str, schema: &Schema) -> Result<Dict> {
    let options = options(path, text)?;
    let get = |section: &str, key: &str| -> Option<&str> {
        let section = if section == DEFAULT {
            DEFAULT.to_owned()
        } else {
            section.to_lowercase()
        };
        options
            .get(&(section, key.to_owned()))
            .and_then(|v| v.as_deref())
    };

    let mut dict = Dict::new();
    for (option, key) in COMMON {
        if let Some(v) = get(DEFAULT, option) {
            dict.insert((*key).to_owned(), Value::from(v));
        }
    }
    for table in schema.tables() {
        let mut values = Dict::new();
        // The first declared option that is set wins for its key.
        for nova in table.decl.nova_options() {
            if values.contains_key(nova.key()) {
                continue;
            }
            let Some(v) = get(nova.section(), nova.option()) else {
                continue;
            };
            let is_list = nova.is_list()
                || table
                    .leaves
                    .iter()
                    .any(|(k, kind)| k == nova.key() && *kind == Kind::List);
            let value = if is_list {
                Value::from(list(v))
            } else {
                Value::from(v)
            };
            values.insert(nova.key().to_owned(), value);
        }
        if !values.is_empty() {
            // Dotted keys (`tls.cert`) become nested tables.
            let mut nested = Dict::new();
            for (key, value) in values {
                merge_into(&mut nested, crate::config::schema::dict_at(&key, value));
            }
            dict.insert(table.name.to_owned(), Value::from(nested));
        }
    }
    Ok(dict)
}

fn merge_into(into: &mut Dict, from: Dict) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, inner)) => merge_into(existing, inner),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Every option of the file: `(section, key)` → its last value, `None` for `<None>`.
fn options(path: &Path, text: &str) -> Result<BTreeMap<(String, String), Option<String>>> {
    let parse_option = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: true,
        ..ParseOption::default()
    };
    let ini = Ini::load_from_str_opt(text, parse_option).map_err(|e| {
        Error::config(format!(
            "cannot parse {} as a nova.conf-style INI file: line {}, column {}: {}",
            path.display(),
            e.line,
            e.col,
            e.msg
        ))
    })?;
    let mut options = BTreeMap::new();
    // In file order; keys before the first section come first, as part of DEFAULT.
    for (section, properties) in &ini {
        let section = match section {
            None => DEFAULT.to_owned(),
            Some(DEFAULT) => DEFAULT.to_owned(),
            Some(name) => name.to_lowercase(),
        };
        for (key, value) in properties.iter() {
            // rust-ini glues indented comment lines before a key onto the key.
            let key = key.rsplit('\n').next().unwrap_or(key).trim();
            let value = unquote(value);
            let value = (value.trim() != "<None>").then_some(value);
            options.insert((section.clone(), key.to_owned()), value);
        }
    }
    Ok(options)
}

/// oslo.config: strips one pair of matching outer quotes from the first line.
fn unquote(value: &str) -> String {
    let (first, rest) = match value.split_once('\n') {
        Some((first, rest)) => (first.trim(), Some(rest)),
        None => (value.trim(), None),
    };
    let first = match first.as_bytes() {
        [q @ (b'"' | b'\''), .., last] if q == last => &first[1..first.len() - 1],
        _ => first,
    };
    match rest {
        Some(rest) => format!("{first}\n{rest}"),
        None => first.to_owned(),
    }
}

/// A list option: items separated by commas or newlines (Nova's multi-line form),
/// each trimmed and unquoted; empty items dropped.
fn list(value: &str) -> Vec<String> {
    value
        .split([',', '\n'])
        .map(|item| unquote(item.trim()))
        .filter(|item| !item.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_like_oslo() {
        assert_eq!(unquote("\"mc\""), "mc");
        assert_eq!(unquote("'mc'"), "mc");
        assert_eq!(unquote("\"mc'"), "\"mc'");
        assert_eq!(unquote("\"a\" b"), "\"a\" b");
        assert_eq!(unquote("\"\""), "");
        assert_eq!(unquote("\"a\nb\""), "\"a\nb\"");
    }

    #[test]
    fn lists() {
        assert_eq!(list("a:1, b:2,\n'c:3'\n"), ["a:1", "b:2", "c:3"]);
        assert!(list("").is_empty());
    }
}
