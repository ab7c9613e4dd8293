//! The keys the configuration knows: core's common keys (from [`Common`]) and the
//! table of every linked driver that declares one ([`DriverConfig`], found through
//! the registry), with how text for each key is read (an environment variable), the
//! check that rejects unknown keys (naming key and source), the `servicegroup_driver`
//! alias, and `[options.<driver>]` folded into the table its driver declares.
//!
//! Built once: the registrations are fixed at link time.

use std::sync::OnceLock;

use figment::value::{Dict, Value};

use super::declaration::DriverConfig;
use super::origin::Origin;
use super::redact::Secrets;
use super::Common;
use crate::error::{Error, Result};
use crate::registry::Registry;

/// Nova's name of `driver`, accepted in every source.
pub(crate) const DRIVER_ALIAS: &str = "servicegroup_driver";
/// `[options.<driver>]`: the options of a driver. Read as its table when it declares
/// one; passed through unchecked otherwise.
pub(crate) const OPTIONS: &str = "options";
/// Words that make a key of an undeclared `[options.<driver>]` table secret.
const SECRET_WORDS: &[&str] = &["password", "passwd", "secret", "token"];

/// How a value given as text (an environment variable) is read for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Kept as a string (durations parse their own strings; URLs and names stay text).
    Text,
    /// An integer.
    Number,
    /// A true/false flag.
    Flag,
    /// A comma-separated list.
    List,
}

/// A table a linked driver declares.
#[derive(Debug)]
pub(crate) struct TableSchema {
    /// The table's name (`db`).
    pub(crate) name: &'static str,
    /// The driver that declares it (its `[options.<driver>]` is read as this table).
    pub(crate) driver: &'static str,
    /// The declaration.
    pub(crate) decl: DriverConfig,
    /// Its defaults, as the driver's type serializes them.
    pub(crate) defaults: Dict,
    /// Every leaf key, relative to the table, with its kind.
    pub(crate) leaves: Vec<(String, Kind)>,
    /// Its top-level keys, sorted.
    pub(crate) keys: Vec<String>,
}

/// Every key the configuration knows.
#[derive(Debug)]
pub(crate) struct Schema {
    common: Vec<(String, Kind)>,
    common_defaults: Dict,
    tables: Vec<TableSchema>,
    problems: Vec<String>,
}

impl Schema {
    /// The schema of this program: core's keys and every linked driver's table.
    pub(crate) fn get() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(|| {
            let declared = Registry::factories()
                .into_iter()
                .filter_map(|f| f.config.map(|c| (f.name, c)));
            Schema::build(declared)
        })
    }

    /// The schema of core's keys and these declarations (driver name, declaration).
    pub(crate) fn build(declared: impl IntoIterator<Item = (&'static str, DriverConfig)>) -> Self {
        let mut problems = Vec::new();
        // Fill the optional fields so that serialization shows them.
        let mut full = Common::default();
        full.watch_interval = Some(full.report_interval);
        let mut common = Vec::new();
        if let Ok(Value::Dict(_, dict)) = Value::serialize(&full) {
            collect_leaves("", &dict, &mut common);
        }
        let common_defaults = match Value::serialize(Common::default()) {
            Ok(Value::Dict(_, dict)) => dict,
            _ => {
                problems.push("the default configuration is not a table".to_owned());
                Dict::new()
            }
        };

        let mut tables: Vec<TableSchema> = Vec::new();
        for (driver, decl) in declared {
            let name = decl.table();
            if let Some(why) = bad_table_name(name, &common) {
                problems.push(format!(
                    "driver {driver:?} declares the configuration table {name:?}, which {why}"
                ));
                continue;
            }
            if let Some(other) = tables.iter().find(|t| t.name == name) {
                problems.push(format!(
                    "drivers {:?} and {driver:?} both declare the configuration table [{name}]",
                    other.driver
                ));
                continue;
            }
            let defaults = match decl.defaults() {
                Ok(d) => d,
                Err(e) => {
                    problems.push(format!(
                        "the defaults of driver {driver:?}'s table [{name}] ({}) cannot be represented: {e}",
                        decl.type_name()
                    ));
                    continue;
                }
            };
            let mut leaves = Vec::new();
            collect_leaves("", &defaults, &mut leaves);
            let mut keys: Vec<String> = defaults.keys().cloned().collect();
            for field in decl.fields() {
                if !keys.iter().any(|k| k == field) {
                    keys.push((*field).to_owned());
                    leaves.push(((*field).to_owned(), Kind::Text));
                }
            }
            keys.sort();
            leaves.sort_by(|a, b| a.0.cmp(&b.0));
            tables.push(TableSchema {
                name,
                driver,
                decl,
                defaults,
                leaves,
                keys,
            });
        }
        tables.sort_by_key(|t| t.name);
        Schema {
            common,
            common_defaults,
            tables,
            problems,
        }
    }

    /// A `Config` error for the first declaration problem (two drivers declaring one
    /// table, a reserved table name, defaults that cannot be represented).
    pub(crate) fn check(&self) -> Result<()> {
        match self.problems.first() {
            Some(problem) => Err(Error::config(problem.clone())),
            None => Ok(()),
        }
    }

    /// Every leaf key (`driver`, `db.url`, ...) with its kind: core's, then each table's.
    pub(crate) fn leaves(&self) -> Vec<(String, Kind)> {
        let mut all = self.common.clone();
        for table in &self.tables {
            all.extend(
                table
                    .leaves
                    .iter()
                    .map(|(k, kind)| (format!("{}.{k}", table.name), *kind)),
            );
        }
        all
    }

    /// Core's leaf keys.
    pub(crate) fn common_keys(&self) -> impl Iterator<Item = &str> {
        self.common.iter().map(|(k, _)| k.as_str())
    }

    /// The declared tables, sorted by name.
    pub(crate) fn tables(&self) -> &[TableSchema] {
        &self.tables
    }

    /// The declared table `name`.
    pub(crate) fn table(&self, name: &str) -> Option<&TableSchema> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The table driver `driver` declares.
    pub(crate) fn table_of_driver(&self, driver: &str) -> Option<&TableSchema> {
        self.tables.iter().find(|t| t.driver == driver)
    }

    /// Every default: core's keys and each declared table.
    pub(crate) fn defaults(&self) -> Dict {
        let mut dict = self.common_defaults.clone();
        for table in &self.tables {
            dict.insert(table.name.to_owned(), Value::from(table.defaults.clone()));
        }
        dict
    }

    /// Whether the dotted key is secret: a declared secret of its table, or a key of
    /// an undeclared `[options.<driver>]` table whose name says so (`password`,
    /// `secret`, `token`).
    pub(crate) fn is_secret(&self, key: &str) -> bool {
        let Some((head, rest)) = key.split_once('.') else {
            return false;
        };
        if head == OPTIONS {
            return rest.split_once('.').is_some_and(|(driver, inner)| {
                match self.table_of_driver(driver) {
                    Some(t) => t.decl.is_secret(inner),
                    None => looks_secret(inner),
                }
            });
        }
        self.table(head).is_some_and(|t| t.decl.is_secret(rest))
    }

    /// The nova.conf sections the linked drivers read (besides `DEFAULT`), lower-case.
    pub(crate) fn nova_sections(&self) -> Vec<String> {
        let mut sections: Vec<String> = self
            .tables
            .iter()
            .flat_map(|t| t.decl.nova_options())
            .filter(|o| o.section() != "DEFAULT")
            .map(|o| o.section().to_lowercase())
            .collect();
        sections.sort();
        sections.dedup();
        sections
    }

    /// Remembers the secrets of one source's dictionary: every URL password, and the
    /// whole value of every secret key.
    pub(crate) fn collect_secrets(&self, dict: &Dict, secrets: &mut Secrets) {
        secrets.collect(dict);
        for (head, value) in dict {
            let Value::Dict(_, inner) = value else {
                continue;
            };
            if head == OPTIONS {
                for (driver, table) in inner {
                    if let Value::Dict(_, table) = table {
                        self.collect_table_secrets(&format!("{OPTIONS}.{driver}"), table, secrets);
                    }
                }
            } else {
                self.collect_table_secrets(head, inner, secrets);
            }
        }
    }

    fn collect_table_secrets(&self, prefix: &str, dict: &Dict, secrets: &mut Secrets) {
        for (key, value) in dict {
            let path = format!("{prefix}.{key}");
            if self.is_secret(&path) {
                secrets.collect_whole(value);
            } else if let Value::Dict(_, inner) = value {
                self.collect_table_secrets(&path, inner, secrets);
            }
        }
    }

    fn is_common(&self, key: &str) -> bool {
        self.common.iter().any(|(k, _)| k == key)
    }

    fn describe_top_level(&self) -> String {
        let mut known: Vec<String> = self
            .common_keys()
            .map(|k| match k {
                "driver" => format!("driver (or {DRIVER_ALIAS})"),
                other => other.to_owned(),
            })
            .collect();
        known.extend(self.tables.iter().map(|t| format!("[{}]", t.name)));
        known.push(format!("[{OPTIONS}.<driver>]"));
        known.join(", ")
    }
}

/// Why a declared table name cannot be used, if it cannot.
fn bad_table_name(name: &str, common: &[(String, Kind)]) -> Option<&'static str> {
    let well_formed = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__");
    if !well_formed {
        return Some("is not a lower-case name of `a-z 0-9 _` (starting with a letter, no `__`)");
    }
    if name == OPTIONS || name == DRIVER_ALIAS || common.iter().any(|(k, _)| k == name) {
        return Some("is reserved by servicegroup-core");
    }
    None
}

/// Whether an undeclared option's name says it holds a secret.
fn looks_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
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
                collect_leaves(&path, inner, out);
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

/// A dictionary holding `value` at the dotted `key` (`db.url` → `{db: {url: value}}`).
pub(crate) fn dict_at(key: &str, value: Value) -> Dict {
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
pub(crate) fn without_empty(dict: Dict) -> Dict {
    dict.into_iter()
        .filter_map(|(k, v)| match v {
            Value::Empty(..) => None,
            Value::Dict(tag, inner) => Some((k, Value::Dict(tag, without_empty(inner)))),
            other => Some((k, other)),
        })
        .collect()
}

impl Schema {
    /// Folds `servicegroup_driver` into `driver` and `[options.<driver>]` into the
    /// table that driver declares, and rejects keys nothing declares, naming the key
    /// and `origin`.
    pub(crate) fn normalize_and_check(&self, dict: &mut Dict, origin: &Origin) -> Result<()> {
        if let Some(value) = dict.remove(DRIVER_ALIAS) {
            if dict.contains_key("driver") {
                return Err(Error::config(format!(
                    "both `driver` and its alias `{DRIVER_ALIAS}` are set in {}; keep one",
                    origin.describe()
                )));
            }
            dict.insert("driver".to_owned(), value);
        }
        self.fold_options(dict, origin)?;
        for (key, value) in dict.iter() {
            if key == OPTIONS || self.is_common(key) {
                continue;
            }
            let Some(table) = self.table(key) else {
                let hint = if matches!(value, Value::Dict(..)) {
                    ". A driver's table is known only when the driver's crate is linked: \
                     enable its feature of the `servicegroup` crate or write `use the_driver_crate as _;`"
                } else {
                    ""
                };
                return Err(unknown(
                    key,
                    &format!("{}{hint}", self.describe_top_level()),
                    origin,
                ));
            };
            // A non-table value is a type error, reported by the extraction.
            if let Value::Dict(_, inner) = value {
                if let Some(bad) = inner.keys().find(|k| !table.keys.contains(k)) {
                    return Err(unknown(
                        &format!("{key}.{bad}"),
                        &table.keys.join(", "),
                        origin,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Moves `[options.<driver>]` of a driver that declares a table into that table.
    fn fold_options(&self, dict: &mut Dict, origin: &Origin) -> Result<()> {
        let Some(Value::Dict(tag, mut options)) = dict.remove(OPTIONS) else {
            return Ok(());
        };
        let declared: Vec<String> = options
            .keys()
            .filter(|d| self.table_of_driver(d).is_some())
            .cloned()
            .collect();
        for driver in declared {
            let Some(table) = self.table_of_driver(&driver) else {
                continue;
            };
            let Some(value) = options.remove(&driver) else {
                continue;
            };
            if dict.contains_key(table.name) {
                return Err(Error::config(format!(
                    "both [{}] and [{OPTIONS}.{driver}] are set in {}; keep one",
                    table.name,
                    origin.describe()
                )));
            }
            dict.insert(table.name.to_owned(), value);
        }
        if !options.is_empty() {
            dict.insert(OPTIONS.to_owned(), Value::Dict(tag, options));
        }
        Ok(())
    }
}

fn unknown(key: &str, known: &str, origin: &Origin) -> Error {
    // A key may be a megabyte-long line: shown shortened.
    const SHOWN: usize = 64;
    let key = if key.chars().count() > SHOWN {
        format!("{}…", key.chars().take(SHOWN).collect::<String>())
    } else {
        key.to_owned()
    };
    Error::config(format!(
        "unknown key `{key}` in {} (known keys: {known})",
        origin.describe()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_alone_knows_its_common_keys() {
        let schema = Schema::build([]);
        for key in [
            "driver",
            "report_interval",
            "service_down_time",
            "call_timeout",
            "watch_interval",
        ] {
            assert!(
                schema.leaves().contains(&(key.to_owned(), Kind::Text)),
                "{key} missing: {:?}",
                schema.leaves()
            );
        }
        assert!(!schema.leaves().iter().any(|(k, _)| k.contains('.')));
        assert!(schema.check().is_ok());
    }

    #[test]
    fn dotted_keys_nest() {
        let d = Value::from(dict_at("db.url", Value::from("x")));
        assert_eq!(d.find_ref("db.url").and_then(Value::as_str), Some("x"));
    }

    #[derive(Default, serde::Serialize, serde::Deserialize)]
    #[serde(default)]
    struct T {
        x: u32,
    }
    impl crate::config::DriverTable for T {}

    #[test]
    fn conflicting_declarations_are_reported() {
        const ONE: DriverConfig = DriverConfig::new::<T>("shared");
        const BAD: DriverConfig = DriverConfig::new::<T>("report_interval");
        let schema = Schema::build([("a", ONE), ("b", ONE), ("c", BAD)]);
        let problems = schema.problems.join("\n");
        assert!(
            problems
                .contains("drivers \"a\" and \"b\" both declare the configuration table [shared]"),
            "{problems}"
        );
        assert!(
            problems.contains("\"report_interval\", which is reserved"),
            "{problems}"
        );
        assert!(schema.check().is_err());
        // The first declaration stays usable.
        assert_eq!(schema.table_of_driver("a").map(|t| t.name), Some("shared"));
        assert_eq!(
            schema
                .leaves()
                .iter()
                .filter(|(k, _)| k == "shared.x")
                .count(),
            1
        );
    }

    #[test]
    fn table_names_are_checked() {
        let common = Schema::build([]).common;
        for bad in [
            "",
            "Db",
            "1x",
            "a-b",
            "a__b",
            "options",
            "driver",
            "report_interval",
        ] {
            assert!(bad_table_name(bad, &common).is_some(), "{bad:?} accepted");
        }
        for good in ["db", "mc", "filestore", "my_store2"] {
            assert!(bad_table_name(good, &common).is_none(), "{good:?} refused");
        }
    }
}
