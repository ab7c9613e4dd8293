//! Loading a [`Config`] from defaults, a file, the environment and overrides.
//!
//! The sources are layered, lowest precedence first:
//!
//! 1. the built-in defaults ([`Config::default`]: core's keys and the defaults of every
//!    linked driver's table),
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
//! secrets masked, in core's keys and in every driver's table alike.
//! [`LoadedConfig::origins`] says where each value of the effective configuration
//! came from.
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
mod layer;
pub(crate) mod merged;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use figment::value::{Dict, Value as Raw};
use serde::Serialize;

use super::schema::{self, Schema};
use super::value::Value;
use crate::config::Config;
use crate::error::{Error, Result};

pub use super::origin::Origin;
use merged::Merged;

/// A loaded configuration and the origin of each of its values.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The configuration, already [validated](Config::validated) (so `service_down_time`
    /// is the effective one after Nova's 2.5x rule).
    pub config: Config,
    /// Origin per dotted leaf key: core's keys (`driver`, `report_interval`,
    /// `service_down_time`, `call_timeout`, `watch_interval`, `coalesce_window`), every key of every
    /// linked driver's table (`db.url`, `db.pool_size`, `mc.servers`, `inproc.name`,
    /// a third party's `filestore.root`, ...), and each key set in an `[options.<driver>]`
    /// table of a driver that declares none (`options.mine.endpoint`).
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
    /// as seconds (`10`, `0.2`), strings (`"200ms"`) or a `Duration`; lists (such as
    /// `mc.servers`) as a `Vec` or an array.
    pub fn set(self, key: &str, value: impl Into<Value>) -> Self {
        self.set_from("code", key, value)
    }

    /// Like [`set`](Self::set), naming where the value came from (a command-line flag
    /// such as `--driver`): origins and error messages show `by`.
    pub fn set_from(mut self, by: impl Into<String>, key: &str, value: impl Into<Value>) -> Self {
        self.overrides.push(Override {
            by: by.into(),
            dict: Ok(schema::dict_at(key, value.into().to_raw())),
        });
        self
    }

    /// Shorthand for `set("driver", name)`.
    pub fn driver(self, name: impl Into<String>) -> Self {
        self.set("driver", name.into())
    }

    /// Overrides with every field of a serializable value (a struct or map shaped like
    /// the configuration, e.g. parsed command-line flags). `None` fields are skipped, so
    /// a struct of `Option`s overrides only what was given. `by` names the source.
    pub fn override_with<T: Serialize>(mut self, by: impl Into<String>, value: &T) -> Self {
        let dict = match Raw::serialize(value) {
            Ok(Raw::Dict(_, dict)) => Ok(schema::without_empty(dict)),
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

    /// Loads the configuration: merges the sources, checks every key and value (every
    /// linked driver's table with its own type and rules), applies
    /// [`Config::validated`] (Nova's 2.5x rule, with a WARN) and records the origins.
    pub fn load(self) -> Result<LoadedConfig> {
        let schema = Schema::get();
        schema.check()?;
        let mut merged = Merged::new(schema);

        if let Some(path) = &self.file {
            let (format, dict) = file::read(path, schema)?;
            tracing::debug!(path = %path.display(), ?format, "read configuration file");
            merged.push(Origin::File(path.clone()), dict)?;
        }

        for (var, dict) in env::layers(&self.env, schema)? {
            merged.push(Origin::Env(var), dict)?;
        }

        for Override { by, dict } in self.overrides {
            let origin = Origin::Override(by);
            let dict =
                dict.map_err(|e| Error::config(format!("invalid {}: {e}", origin.describe())))?;
            merged.push(origin, dict)?;
        }

        let config = merged.assemble()?;
        let origins = merged.origins();
        let config = config.validated()?;
        Ok(LoadedConfig { config, origins })
    }
}
