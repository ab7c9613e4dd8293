//! Loading a [`Config`] from defaults, a file, the environment and overrides.
//! (Being written: see issue 3.)

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::Config;
use crate::error::Result;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The built-in default.
    Default,
    /// A configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// An override from code or a command-line flag.
    Override(String),
}

/// A loaded configuration and the origin of each of its values.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The configuration.
    pub config: Config,
    /// Origin per dotted key (`report_interval`, `db.url`, ...).
    pub origins: BTreeMap<String, Origin>,
}

/// Builds a [`Config`] from layered sources.
#[derive(Debug, Clone, Default)]
pub struct ConfigLoader {
    file: Option<PathBuf>,
}

impl ConfigLoader {
    /// A loader with only the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads this file (TOML or nova.conf-style INI).
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Loads the configuration.
    pub fn load(self) -> Result<LoadedConfig> {
        Ok(LoadedConfig {
            config: Config::default(),
            origins: BTreeMap::new(),
        })
    }
}
