//! Loading a [`Config`] from defaults, a file, the environment and overrides.
//!
//! The sources are layered with [figment](https://docs.rs/figment), lowest
//! precedence first:
//!
//! 1. the built-in defaults ([`Config::default`]),
//! 2. one file ([`ConfigLoader::file`]): our TOML, or a nova.conf-style INI read as-is
//!    (detected by content, see `docs/configuration.md`),
//! 3. environment variables ([`ConfigLoader::env`], [`ConfigLoader::env_from`]):
//!    `SERVICEGROUP_DRIVER`, `SERVICEGROUP_DB__URL`, ...,
//! 4. explicit overrides from code or command-line flags ([`ConfigLoader::set`],
//!    [`ConfigLoader::set_from`], [`ConfigLoader::override_with`]), in call order.
//!
//! The order of the builder calls does not change this precedence. Every error is
//! an [`ErrorKind::Config`](crate::ErrorKind::Config) error naming the key and
//! where its value came from (file path, environment variable or override), with
//! database passwords masked. [`LoadedConfig::origins`] says where each value of
//! the effective configuration came from.
//!
//! ```
//! use servicegroup_core::{ConfigLoader, Origin};
//!
//! let loaded = ConfigLoader::new()
//!     .env_from([("SERVICEGROUP_REPORT_INTERVAL", "200ms")])
//!     .set_from("--driver", "driver", "inproc")
//!     .load()
//!     .unwrap();
//! assert_eq!(loaded.config.driver, "inproc");
//! assert_eq!(loaded.config.report_interval, std::time::Duration::from_millis(200));
//! assert_eq!(loaded.origin("driver"), Some(&Origin::Override("--driver".into())));
//! assert_eq!(loaded.origin("service_down_time"), Some(&Origin::Default));
//! ```

mod env;
mod file;
mod ini;
mod keys;
mod layer;
mod redact;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;

use figment::value::{Dict, Value};
use figment::Figment;
use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};

use layer::Layer;
use redact::Secrets;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The built-in default.
    Default,
    /// A configuration file.
    File(PathBuf),
    /// An environment variable (its name).
    Env(String),
    /// An override from code or a command-line flag: the name given to
    /// [`ConfigLoader::set_from`] (such as `--driver`), or `code` for [`ConfigLoader::set`].
    Override(String),
}

impl Origin {
    /// The kind of source in one word: `default`, `file`, `env` or `override`.
    pub fn label(&self) -> &'static str {
        match self {
            Origin::Default => "default",
            Origin::File(_) => "file",
            Origin::Env(_) => "env",
            Origin::Override(_) => "override",
        }
    }

    /// How error messages name this source: the file path, `environment variable X`,
    /// or `override (X)`.
    pub fn describe(&self) -> String {
        match self {
            Origin::Default => "the defaults".to_owned(),
            Origin::File(path) => path.display().to_string(),
            Origin::Env(var) => format!("environment variable {var}"),
            Origin::Override(by) => format!("override ({by})"),
        }
    }
}

/// `default`, `file /etc/nova/nova.conf`, `env SERVICEGROUP_DRIVER`, `override --driver`.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Override(by) => write!(f, "override {by}"),
        }
    }
}

/// A loaded configuration and the origin of each of its values.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The configuration, already [validated](Config::validated) (so `service_down_time`
    /// is the effective one after Nova's 2.5x rule).
    pub config: Config,
    /// Origin per dotted leaf key: every leaf of [`Config`] (`driver`, `report_interval`,
    /// `service_down_time`, `call_timeout`, `watch_interval`, `db.url`, `db.pool_size`,
    /// `db.timeout`, `mc.servers`, `mc.timeout`, `inproc.name`, ...). `options` is not listed.
    pub origins: BTreeMap<String, Origin>,
}

impl LoadedConfig {
    /// Where the value of a dotted leaf key (`report_interval`, `db.url`) came from.
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.origins.get(key)
    }
}

/// Builds a [`Config`] from layered sources: defaults < file < environment < overrides.
///
/// Nothing is read until [`ConfigLoader::load`], except [`ConfigLoader::env`], which
/// takes a snapshot of the process environment when called.
#[derive(Debug, Clone, Default)]
pub struct ConfigLoader {
    file: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    overrides: Vec<Override>,
}

#[derive(Debug, Clone)]
struct Override {
    by: String,
    dict: std::result::Result<Dict, String>,
}

impl ConfigLoader {
    /// A loader with only the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads this file: our TOML, or a nova.conf-style INI (detected by content).
    /// A missing or unreadable file is an error at [`load`](Self::load).
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Reads the `SERVICEGROUP_*` variables of the process environment (snapshot taken now).
    pub fn env(self) -> Self {
        self.env_from(std::env::vars_os())
    }

    /// Reads `SERVICEGROUP_*` variables from these pairs instead of the process
    /// environment (for tests and embedders). Other names are ignored. Can be called
    /// more than once; a later pair for the same name wins.
    pub fn env_from<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.env.extend(
            vars.into_iter()
                .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())),
        );
        self
    }

    /// Sets one key from code (dotted: `report_interval`, `db.url`, `options.mine.x`),
    /// above every other source. Its origin is `Override("code")`. Durations are given
    /// as seconds (`10`, `0.2`) or strings (`"200ms"`); `mc.servers` as a `Vec`.
    pub fn set(self, key: &str, value: impl Into<Value>) -> Self {
        self.set_from("code", key, value)
    }

    /// Like [`set`](Self::set), naming where the value came from (a command-line flag
    /// such as `--driver`): origins and error messages show `by`.
    pub fn set_from(mut self, by: impl Into<String>, key: &str, value: impl Into<Value>) -> Self {
        self.overrides.push(Override {
            by: by.into(),
            dict: Ok(keys::dict_at(key, value.into())),
        });
        self
    }

    /// Shorthand for `set("driver", name)`.
    pub fn driver(self, name: impl Into<String>) -> Self {
        self.set("driver", name.into())
    }

    /// Overrides with every field of a serializable value (a struct or map shaped like
    /// [`Config`], e.g. parsed command-line flags). `None` fields are skipped, so a
    /// struct of `Option`s overrides only what was given. `by` names the source.
    pub fn override_with<T: Serialize>(mut self, by: impl Into<String>, value: &T) -> Self {
        let dict = match Value::serialize(value) {
            Ok(Value::Dict(_, dict)) => Ok(keys::without_empty(dict)),
            Ok(other) => Err(format!(
                "expected a table of configuration keys, found {}",
                other.to_actual()
            )),
            Err(e) => Err(e.to_string()),
        };
        self.overrides.push(Override {
            by: by.into(),
            dict,
        });
        self
    }

    /// Loads the configuration: merges the sources, checks every key and value, applies
    /// [`Config::validated`] (Nova's 2.5x rule, with a WARN) and records the origins.
    pub fn load(self) -> Result<LoadedConfig> {
        let mut secrets = Secrets::default();
        let mut figment = Figment::new().merge(Layer::new(Origin::Default, keys::defaults()?));

        if let Some(path) = &self.file {
            let origin = Origin::File(path.clone());
            let (format, mut dict) = file::read(path)?;
            keys::normalize_and_check(&mut dict, &origin)?;
            tracing::debug!(path = %path.display(), ?format, "read configuration file");
            secrets.collect(&dict);
            figment = figment.merge(Layer::new(origin, dict));
        }

        for (var, dict) in env::layers(&self.env)? {
            secrets.collect(&dict);
            figment = figment.merge(Layer::new(Origin::Env(var), dict));
        }

        for Override { by, dict } in self.overrides {
            let origin = Origin::Override(by);
            let mut dict =
                dict.map_err(|e| Error::config(format!("invalid {}: {e}", origin.describe())))?;
            secrets.collect(&dict);
            keys::normalize_and_check(&mut dict, &origin)
                .map_err(|e| Error::config(secrets.scrub(e.message())))?;
            figment = figment.merge(Layer::new(origin, dict));
        }

        let config: Config = figment
            .extract()
            .map_err(|e| extraction_error(e, &figment, &secrets))?;
        check_not_empty(&config, &figment)?;

        let origins = keys::Schema::get()
            .leaf_keys()
            .map(|key| (key.to_owned(), origin_at(&figment, key)))
            .collect();
        let config = config.validated()?;
        Ok(LoadedConfig { config, origins })
    }
}

/// Where the value at a dotted key came from (the defaults when no layer has it).
fn origin_at(figment: &Figment, key: &str) -> Origin {
    figment
        .find_metadata(key)
        .and_then(layer::origin_of)
        .unwrap_or(Origin::Default)
}

/// Empty strings that deserialize fine but mean nothing: `driver` and `db.url`.
fn check_not_empty(config: &Config, figment: &Figment) -> Result<()> {
    let empty_url = config
        .db
        .url
        .as_ref()
        .is_some_and(|u| u.expose().trim().is_empty());
    for (key, empty) in [
        ("driver", config.driver.trim().is_empty()),
        ("db.url", empty_url),
    ] {
        if empty {
            return Err(Error::config(format!(
                "invalid value for `{key}` in {}: must not be empty",
                origin_at(figment, key).describe()
            )));
        }
    }
    Ok(())
}

/// Turns figment's extraction error into our `Config` error naming key and source.
fn extraction_error(err: figment::Error, figment: &Figment, secrets: &Secrets) -> Error {
    let messages: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = e
                .metadata
                .as_ref()
                .and_then(layer::origin_of)
                .or_else(|| figment.find_metadata(&key).and_then(layer::origin_of))
                .unwrap_or(Origin::Default);
            let what = if key.is_empty() {
                "invalid configuration".to_owned()
            } else {
                format!("invalid value for `{key}`")
            };
            format!("{what} in {}: {}", origin.describe(), e.kind)
        })
        .collect();
    Error::config(secrets.scrub(&messages.join("; ")))
}
