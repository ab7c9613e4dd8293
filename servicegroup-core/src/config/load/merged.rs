//! The merged sources of one configuration: every layer (defaults, file, each
//! environment variable, each override) in precedence order, the secrets they hold,
//! and the step that turns them into a [`Config`] with errors naming key and source.

use std::collections::BTreeMap;

use figment::error::Kind as ErrorKind;
use figment::value::{Dict, Value as Raw};
use figment::Figment;

use super::layer::{self, Layer};
use crate::config::declaration::{rooted, Rejected};
use crate::config::origin::Origin;
use crate::config::redact::Secrets;
use crate::config::schema::{Schema, OPTIONS};
use crate::config::{Common, Config};
use crate::error::{Error, Result};

/// The layers of one configuration, lowest precedence first.
pub(crate) struct Merged {
    schema: &'static Schema,
    figment: Figment,
    secrets: Secrets,
}

impl Merged {
    /// The built-in defaults: core's keys and every declared table.
    pub(crate) fn new(schema: &'static Schema) -> Self {
        Self::with_base(schema, schema.defaults())
    }

    /// `base` (already checked values, such as those of a [`Config`]) as the lowest
    /// layer, with the origin [`Origin::Default`].
    pub(crate) fn with_base(schema: &'static Schema, base: Dict) -> Self {
        let mut secrets = Secrets::default();
        schema.collect_secrets(&base, &mut secrets);
        Self {
            schema,
            figment: Figment::new().merge(Layer::new(Origin::Default, base)),
            secrets,
        }
    }

    /// A figment holding only `dict` as the table `table`, from the defaults.
    pub(crate) fn table_figment(table: &str, dict: Dict) -> Figment {
        Figment::new().merge(Layer::new(
            Origin::Default,
            crate::config::schema::dict_at(table, Raw::from(dict)),
        ))
    }

    /// Adds a layer above the others, after checking its keys.
    pub(crate) fn push(&mut self, origin: Origin, mut dict: Dict) -> Result<()> {
        self.schema.collect_secrets(&dict, &mut self.secrets);
        self.schema
            .normalize_and_check(&mut dict, &origin)
            .map_err(|e| Error::config(self.secrets.scrub(e.message())))?;
        self.figment = std::mem::take(&mut self.figment).merge(Layer::new(origin, dict));
        Ok(())
    }

    /// The merged configuration, every value checked: core's keys, then each declared
    /// table with its driver's type and rules, then the undeclared options tables.
    pub(crate) fn assemble(&self) -> Result<Config> {
        let common: Common = self
            .figment
            .extract()
            .map_err(|e| self.extraction_error(e))?;
        if common.driver.trim().is_empty() {
            return Err(Error::config(format!(
                "invalid value for `driver` in {}: must not be empty",
                self.origin_at("driver").describe()
            )));
        }

        let mut tables = BTreeMap::new();
        for table in self.schema.tables() {
            // The selected driver's own rules apply; every table's types and keys do.
            let check = table.driver == common.driver;
            match table.decl.read(&self.figment, table.name, check) {
                Ok(_) => {}
                Err(Rejected::Serde(e)) => return Err(self.extraction_error(e)),
                Err(Rejected::Rule(invalid)) => {
                    let key = format!("{}.{}", table.name, invalid.key());
                    return Err(Error::config(self.secrets.scrub(&format!(
                        "invalid value for `{key}` in {}: {}",
                        self.origin_at(&key).describe(),
                        invalid.message()
                    ))));
                }
                Err(Rejected::Unrepresentable(why)) => {
                    return Err(Error::config(format!(
                        "the table [{}] of driver {:?} ({}) cannot be represented: {why}",
                        table.name,
                        table.driver,
                        table.decl.type_name()
                    )))
                }
            }
            let raw = match self.figment.find_value(table.name) {
                Ok(Raw::Dict(_, dict)) => dict,
                _ => Dict::new(),
            };
            tables.insert(table.name.to_owned(), raw);
        }

        let options = if self.figment.contains(OPTIONS) {
            self.figment
                .extract_inner::<BTreeMap<String, Dict>>(OPTIONS)
                .map_err(|e| self.extraction_error(rooted(e, OPTIONS)))?
        } else {
            BTreeMap::new()
        };

        Ok(Config::from_parts(common, tables, options))
    }

    /// Where each leaf key's value came from: every known key, and each key set in an
    /// undeclared options table.
    pub(crate) fn origins(&self) -> BTreeMap<String, Origin> {
        let mut origins: BTreeMap<String, Origin> = self
            .schema
            .leaves()
            .into_iter()
            .map(|(key, _)| {
                let origin = self.origin_at(&key);
                (key, origin)
            })
            .collect();
        if let Ok(Raw::Dict(_, options)) = self.figment.find_value(OPTIONS) {
            let mut leaves = Vec::new();
            option_leaves(OPTIONS, &options, &mut leaves);
            for key in leaves {
                let origin = self.origin_at(&key);
                origins.insert(key, origin);
            }
        }
        origins
    }

    /// Where the value at a dotted key came from (the defaults when no layer has it).
    fn origin_at(&self, key: &str) -> Origin {
        self.figment
            .find_metadata(key)
            .and_then(layer::origin_of)
            .unwrap_or(Origin::Default)
    }

    /// Turns figment's extraction error into our `Config` error naming key and source.
    fn extraction_error(&self, errors: impl IntoIterator<Item = figment::Error>) -> Error {
        let messages: Vec<String> = errors
            .into_iter()
            .map(|e| {
                let key = e.path.join(".");
                let origin = e
                    .metadata
                    .as_ref()
                    .and_then(layer::origin_of)
                    .unwrap_or_else(|| self.origin_at(&key));
                let what = if key.is_empty() {
                    "invalid configuration".to_owned()
                } else {
                    format!("invalid value for `{key}`")
                };
                let why = if self.schema.is_secret(&key) {
                    without_value(&e.kind)
                } else {
                    e.kind.to_string()
                };
                format!("{what} in {}: {why}", origin.describe())
            })
            .collect();
        Error::config(self.secrets.scrub(&messages.join("; ")))
    }
}

/// What is wrong with a secret key's value, without echoing the value.
pub(crate) fn without_value(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidType(_, expected) => format!("invalid type: expected {expected}"),
        ErrorKind::InvalidValue(_, expected) => format!("invalid value: expected {expected}"),
        ErrorKind::InvalidLength(len, expected) => {
            format!("invalid length {len}: expected {expected}")
        }
        _ => "invalid value (not shown: the key is secret)".to_owned(),
    }
}

/// The dotted leaf keys under `prefix`.
fn option_leaves(prefix: &str, dict: &Dict, out: &mut Vec<String>) {
    for (key, value) in dict {
        let path = format!("{prefix}.{key}");
        match value {
            Raw::Dict(_, inner) if !inner.is_empty() => option_leaves(&path, inner, out),
            _ => out.push(path),
        }
    }
}
