//! Configuration: the [`Config`] struct, its defaults and its rules.
//!
//! Loading from files (TOML or nova.conf-style INI), environment variables and
//! overrides lives in [`load`]; duration parsing in [`duration`]; the redacting
//! database URL type in [`secret`].

pub mod duration;
pub mod load;
pub mod secret;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use load::{ConfigLoader, LoadedConfig, Origin};
pub use secret::DatabaseUrl;

use crate::error::{Error, Result};

/// Nova's factor: when `service_down_time <= report_interval`, use
/// `report_interval * 2.5` instead.
pub const DOWN_TIME_FACTOR: f64 = 2.5;

/// Everything a [`crate::ServiceGroup`] needs to run.
///
/// Build it with [`Config::default`] and field updates, or load it with
/// [`ConfigLoader`] (defaults < file < environment < overrides).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// The driver name (`db`, `mc`, `inproc`, or a third party's). Nova: `servicegroup_driver`.
    #[serde(alias = "servicegroup_driver")]
    pub driver: String,
    /// How often each member heartbeats. Default 10 s.
    #[serde(with = "duration")]
    pub report_interval: Duration,
    /// How old a heartbeat may be for its member to be up (inclusive). Default 60 s.
    #[serde(with = "duration")]
    pub service_down_time: Duration,
    /// Upper bound core puts on every single driver call. Default 10 s.
    #[serde(with = "duration")]
    pub call_timeout: Duration,
    /// How often `watch` polls the group listing. Default: 1 s, at most `report_interval`.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub watch_interval: Option<Duration>,
    /// Options of the `db` driver.
    pub db: DbConfig,
    /// Options of the `mc` driver.
    pub mc: McConfig,
    /// Options of the `inproc` driver.
    pub inproc: InprocConfig,
    /// Options of third-party drivers: `[options.<driver>]` tables, passed through untouched.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, figment::value::Dict>,
}

/// `[db]`: the database driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct DbConfig {
    /// Database URL (`sqlite://path`, `postgres://...`, Nova's SQLAlchemy forms).
    /// `None`: the embedded default, a SQLite file chosen by the application.
    pub url: Option<DatabaseUrl>,
    /// Connections in the pool. Default 8.
    pub pool_size: u32,
    /// Connect, query and pool-checkout timeout. Default 5 s.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

/// `[mc]`: the memcached driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct McConfig {
    /// `host:port` of each memcached server. Empty: in-process store (Nova's behaviour).
    pub servers: Vec<String>,
    /// Connect, read and write timeout. Default 1 s.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Prepended to every memcached key, so several deployments (or test runs) can
    /// share servers without seeing each other: 1 to 32 bytes of `A-Z a-z 0-9 . _ -`.
    /// Every process of one deployment must use the same prefix. Default `"sg"`.
    pub prefix: String,
}

/// `[inproc]`: the in-process driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct InprocConfig {
    /// Handles built with the same name in one process share membership. Default `"default"`.
    pub name: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            driver: "db".to_owned(),
            report_interval: Duration::from_secs(10),
            service_down_time: Duration::from_secs(60),
            call_timeout: Duration::from_secs(10),
            watch_interval: None,
            db: DbConfig::default(),
            mc: McConfig::default(),
            inproc: InprocConfig::default(),
            options: BTreeMap::new(),
        }
    }
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: 8,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Default for McConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: Duration::from_secs(1),
            prefix: "sg".to_owned(),
        }
    }
}

impl Default for InprocConfig {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
        }
    }
}

impl Config {
    /// The default configuration with another driver.
    pub fn with_driver(driver: impl Into<String>) -> Self {
        Self {
            driver: driver.into(),
            ..Self::default()
        }
    }

    /// The `service_down_time` actually used: the configured one, or
    /// `report_interval * 2.5` when it is not larger than `report_interval` (Nova's rule).
    pub fn effective_service_down_time(&self) -> Duration {
        if self.service_down_time <= self.report_interval {
            self.report_interval.mul_f64(DOWN_TIME_FACTOR)
        } else {
            self.service_down_time
        }
    }

    /// The interval at which `watch` polls.
    pub fn effective_watch_interval(&self) -> Duration {
        self.watch_interval
            .unwrap_or_else(|| self.report_interval.min(Duration::from_secs(1)))
    }

    /// Checks the rules a configuration built in code must also follow (no zero
    /// durations, a driver name), and returns it with `service_down_time` replaced
    /// by [`Self::effective_service_down_time`], logging a WARN when the override applies.
    pub fn validated(mut self) -> Result<Self> {
        if self.driver.trim().is_empty() {
            return Err(Error::config("`driver` must not be empty"));
        }
        let durations = [
            ("report_interval", self.report_interval),
            ("service_down_time", self.service_down_time),
            ("call_timeout", self.call_timeout),
            ("db.timeout", self.db.timeout),
            ("mc.timeout", self.mc.timeout),
        ];
        for (key, value) in durations {
            if value.is_zero() {
                return Err(Error::config(format!("`{key}` must be greater than zero")));
            }
        }
        if self.watch_interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::config("`watch_interval` must be greater than zero"));
        }
        let effective = self.effective_service_down_time();
        if effective != self.service_down_time {
            tracing::warn!(
                service_down_time = ?self.service_down_time,
                report_interval = ?self.report_interval,
                using = ?effective,
                "service_down_time ({:?}) is not larger than report_interval ({:?}); using report_interval * {DOWN_TIME_FACTOR} = {:?} instead",
                self.service_down_time,
                self.report_interval,
                effective,
            );
            self.service_down_time = effective;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_nova() {
        let c = Config::default();
        assert_eq!(c.driver, "db");
        assert_eq!(c.report_interval, Duration::from_secs(10));
        assert_eq!(c.service_down_time, Duration::from_secs(60));
    }

    #[test]
    fn down_time_not_above_report_interval_is_replaced() {
        let mut c = Config::with_driver("inproc");
        c.report_interval = Duration::from_secs(10);
        c.service_down_time = Duration::from_secs(10);
        assert_eq!(c.effective_service_down_time(), Duration::from_secs(25));
        let v = c.clone().validated().unwrap();
        assert_eq!(v.service_down_time, Duration::from_secs(25));
        c.service_down_time = Duration::from_millis(10_001);
        assert_eq!(
            c.effective_service_down_time(),
            Duration::from_millis(10_001)
        );
    }

    #[test]
    fn zero_durations_are_rejected() {
        let mut c = Config::with_driver("inproc");
        c.report_interval = Duration::ZERO;
        let err = c.validated().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(err.to_string().contains("report_interval"), "{err}");
    }
}
