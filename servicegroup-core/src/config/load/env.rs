//! `SERVICEGROUP_*` environment variables.
//!
//! Each leaf key of the configuration has one variable: `SERVICEGROUP_` and the key in
//! upper case with `__` for the dot (`db.pool_size` → `SERVICEGROUP_DB__POOL_SIZE`).
//! The keys are core's and those of every linked driver's declared table
//! (`SERVICEGROUP_DB__URL`, `SERVICEGROUP_FILESTORE__ROOT`). These and
//! `SERVICEGROUP_OPTIONS__<DRIVER>__<KEY>` (read as the driver's declared table when it
//! has one) are configuration; other `SERVICEGROUP_*` names (the test scripts export
//! `SERVICEGROUP_TEST_*`, a CLI may use `SERVICEGROUP_CONFIG`) are ignored, except
//! under a declared table's prefix (`SERVICEGROUP_DB__`, `SERVICEGROUP_MC__`,
//! `SERVICEGROUP_INPROC__`, ...), where an unknown name is a typo and so an error.
//!
//! Values are not guessed at the way figment's own `Env` provider does (which would
//! turn an inproc name `10` into a number): each is read by the type of its key, so
//! text stays text (durations parse their own text), `SERVICEGROUP_DB__POOL_SIZE` is
//! read as a number and `SERVICEGROUP_MC__SERVERS` is split at commas.

use std::ffi::OsString;

use figment::value::{Dict, Value};

use crate::config::schema::{self, Kind, Schema, OPTIONS};
use crate::error::{Error, Result};

const PREFIX: &str = "SERVICEGROUP_";
const OPTIONS_PREFIX: &str = "SERVICEGROUP_OPTIONS__";

/// The variable of a dotted key: `db.pool_size` → `SERVICEGROUP_DB__POOL_SIZE`.
pub(super) fn var_name(key: &str) -> String {
    format!("{PREFIX}{}", key.to_uppercase().replace('.', "__"))
}

/// One dictionary per configuration variable, in the order given, with its name.
pub(super) fn layers(
    vars: &[(OsString, OsString)],
    schema: &Schema,
) -> Result<Vec<(String, Dict)>> {
    let leaves = schema.leaves();
    let known_vars: Vec<(String, &str, Kind)> = leaves
        .iter()
        .map(|(key, kind)| (var_name(key), key.as_str(), *kind))
        .collect();
    let table_prefixes: Vec<String> = schema
        .tables()
        .iter()
        .map(|t| format!("{}__", var_name(t.name)))
        .collect();
    let mut layers = Vec::new();
    for (name, value) in vars {
        let Some(name) = name.to_str().filter(|n| n.starts_with(PREFIX)) else {
            continue;
        };
        let known = known_vars.iter().find(|(var, _, _)| var == name);
        let options_key = name.strip_prefix(OPTIONS_PREFIX);
        if known.is_none() && options_key.is_none() {
            if table_prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                return Err(Error::config(format!(
                    "unknown environment variable {name} (known: {}, SERVICEGROUP_OPTIONS__<DRIVER>__<KEY>)",
                    known_vars.iter().map(|(v, _, _)| v.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            continue;
        }
        let value = value.to_str().ok_or_else(|| {
            Error::config(format!("environment variable {name} is not valid UTF-8"))
        })?;
        let dict = match (known, options_key) {
            (Some((_, key, kind)), _) => schema::dict_at(key, read(value, *kind)),
            (None, Some(rest)) => {
                let (driver, key) = rest
                    .split_once("__")
                    .filter(|(d, k)| !d.is_empty() && !k.is_empty() && !k.contains("__"))
                    .ok_or_else(|| {
                        Error::config(format!(
                            "environment variable {name}: expected SERVICEGROUP_OPTIONS__<DRIVER>__<KEY>"
                        ))
                    })?;
                let (driver, key) = (driver.to_lowercase(), key.to_lowercase());
                let value = match schema.table_of_driver(&driver) {
                    // A driver's declared table: read by the key's kind, like its own variable.
                    Some(table) => {
                        let kind = table
                            .leaves
                            .iter()
                            .find(|(k, _)| *k == key)
                            .map_or(Kind::Text, |(_, kind)| *kind);
                        read(value, kind)
                    }
                    // Undeclared options: parsed the way figment parses environment values.
                    None => value.parse::<Value>().unwrap_or_else(|e| match e {}),
                };
                schema::dict_at(&format!("{OPTIONS}.{driver}.{key}"), value)
            }
            (None, None) => continue,
        };
        layers.push((name.to_owned(), dict));
    }
    Ok(layers)
}

fn read(value: &str, kind: Kind) -> Value {
    match kind {
        Kind::Text => Value::from(value),
        Kind::Flag => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::from(true),
            "false" | "0" | "no" | "off" => Value::from(false),
            _ => Value::from(value),
        },
        Kind::Number => {
            let trimmed = value.trim();
            if let Ok(n) = trimmed.parse::<u64>() {
                Value::from(n)
            } else if let Ok(n) = trimmed.parse::<i64>() {
                Value::from(n)
            } else {
                // Reported by the extraction as a wrong type, naming the variable.
                Value::from(value)
            }
        }
        Kind::List => Value::from(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        ),
    }
}
