//! Configuration: the [`Config`] struct, its defaults and its rules.
//!
//! Core owns the common keys (`driver`, `report_interval`, `service_down_time`,
//! `call_timeout`, `watch_interval`, `coalesce_window`), typed fields of [`Config`]. Every other key
//! belongs to a driver: each driver crate defines its typed options
//! ([`DriverTable`]) and declares their table with its registration
//! ([`DriverConfig`]: table name, secret keys, nova.conf options); core reads, checks,
//! masks and reports origins for those tables as it does for its own keys, and hands
//! each driver its table ([`Config::driver_config`]).
//!
//! Loading from files (TOML or nova.conf-style INI), environment variables and
//! overrides lives in [`load`]; duration parsing in [`duration`]; values in
//! [`Value`] and [`Table`]; masking in [`redact`]; the redacting database URL type in
//! [`secret`].

pub mod declaration;
pub mod duration;
pub mod list;
pub mod load;
mod origin;
pub mod redact;
pub(crate) mod schema;
pub mod secret;
mod value;
mod view;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use figment::value::{Dict, Value as Raw};
use serde::{Deserialize, Serialize};

pub use declaration::{DriverConfig, DriverTable, InvalidKey, NovaOption};
pub use load::{ConfigLoader, LoadedConfig};
pub use origin::Origin;
pub use secret::{DatabaseUrl, Secret};
pub use value::{Table, Value};
pub use view::Entry;

use crate::error::{Error, Result};
use load::merged::Merged;
use redact::Secrets;
use schema::Schema;

/// Nova's factor: when `service_down_time <= report_interval`, use
/// `report_interval * 2.5` instead.
pub const DOWN_TIME_FACTOR: f64 = 2.5;

/// Everything a [`crate::ServiceGroup`] needs to run: core's keys as fields, and the
/// table of every linked driver (read with [`Config::driver_config`], set with
/// [`Config::set`]).
///
/// Build it with [`Config::default`] / [`Config::with_driver`], field updates and
/// [`Config::set`], or load it with [`ConfigLoader`] (defaults < file < environment <
/// overrides). `Debug` masks secrets. Two configurations are equal when they hold the
/// same values as given (`timeout = 5` and `timeout = "5s"` are different values).
///
/// ```
/// use std::time::Duration;
/// use servicegroup_core::Config;
///
/// let mut config = Config::with_driver("inproc");
/// config.report_interval = Duration::from_millis(200);
/// config.set("service_down_time", "1s")?;
/// assert_eq!(config.service_down_time, Duration::from_secs(1));
/// // A key no linked driver declares is an error naming it.
/// assert!(config.set("nosuch.key", 1).is_err());
/// # Ok::<(), servicegroup_core::Error>(())
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// The driver name (`db`, `mc`, `inproc`, or a third party's). Nova: `servicegroup_driver`.
    pub driver: String,
    /// How often each member heartbeats. Default 10 s.
    pub report_interval: Duration,
    /// How old a heartbeat may be for its member to be up (inclusive). Default 60 s.
    pub service_down_time: Duration,
    /// Upper bound core puts on every single driver call. Default 10 s.
    pub call_timeout: Duration,
    /// How often `watch` polls the group listing. Default: 1 s, at most `report_interval`.
    pub watch_interval: Option<Duration>,
    /// How long heartbeats of the handles sharing one driver instance are collected
    /// into one driver call ([`crate::coalesce`]). Default 5 ms.
    pub coalesce_window: Duration,
    /// Each declared table's values (its defaults with what was set), as given.
    tables: BTreeMap<String, Dict>,
    /// `[options.<driver>]` of drivers that declare no table, passed through.
    options: BTreeMap<String, Dict>,
}

/// Core's keys, as they are read and written (durations as text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Common {
    pub(crate) driver: String,
    #[serde(with = "duration")]
    pub(crate) report_interval: Duration,
    #[serde(with = "duration")]
    pub(crate) service_down_time: Duration,
    #[serde(with = "duration")]
    pub(crate) call_timeout: Duration,
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub(crate) watch_interval: Option<Duration>,
    #[serde(with = "duration")]
    pub(crate) coalesce_window: Duration,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            driver: "db".to_owned(),
            report_interval: Duration::from_secs(10),
            service_down_time: Duration::from_secs(60),
            call_timeout: Duration::from_secs(10),
            watch_interval: None,
            coalesce_window: crate::coalesce::DEFAULT_WINDOW,
        }
    }
}

impl Default for Config {
    /// Nova's defaults, and the defaults of every linked driver's table.
    fn default() -> Self {
        let tables = Schema::get()
            .tables()
            .iter()
            .map(|t| (t.name.to_owned(), t.defaults.clone()))
            .collect();
        Self::from_parts(Common::default(), tables, BTreeMap::new())
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

    pub(crate) fn from_parts(
        common: Common,
        tables: BTreeMap<String, Dict>,
        options: BTreeMap<String, Dict>,
    ) -> Self {
        Self {
            driver: common.driver,
            report_interval: common.report_interval,
            service_down_time: common.service_down_time,
            call_timeout: common.call_timeout,
            watch_interval: common.watch_interval,
            coalesce_window: common.coalesce_window,
            tables,
            options,
        }
    }

    fn common(&self) -> Common {
        Common {
            driver: self.driver.clone(),
            report_interval: self.report_interval,
            service_down_time: self.service_down_time,
            call_timeout: self.call_timeout,
            watch_interval: self.watch_interval,
            coalesce_window: self.coalesce_window,
        }
    }

    /// Every value as one dictionary shaped like our TOML.
    fn to_raw(&self) -> Dict {
        let mut dict = match Raw::serialize(self.common()) {
            Ok(Raw::Dict(_, dict)) => dict,
            _ => Dict::new(),
        };
        for (name, table) in &self.tables {
            dict.insert(name.clone(), Raw::from(table.clone()));
        }
        if !self.options.is_empty() {
            let options: Dict = self
                .options
                .iter()
                .map(|(k, v)| (k.clone(), Raw::from(v.clone())))
                .collect();
            dict.insert(schema::OPTIONS.to_owned(), Raw::from(options));
        }
        dict
    }

    /// Sets one key (dotted: `report_interval`, `db.url`, `mc.servers`,
    /// `options.mine.endpoint`), checked at once as a loaded value would be: a key no
    /// linked driver declares, a value of the wrong type or a zero duration is a
    /// `Config` error naming the key. Durations are given as seconds (`10`, `0.2`),
    /// text (`"200ms"`) or a `Duration`; lists as a `Vec` or an array.
    ///
    /// Returns `self`, so calls chain: `config.set("db.url", url)?.set("db.pool_size", 4)?;`.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> Result<&mut Self> {
        let schema = Schema::get();
        schema.check()?;
        let mut merged = Merged::with_base(schema, self.to_raw());
        merged.push(
            Origin::Override("code".to_owned()),
            schema::dict_at(key, value.into().to_raw()),
        )?;
        *self = merged.assemble()?;
        Ok(self)
    }

    /// The value at a dotted key, as set (secrets included: do not log it), or `None`
    /// when it has no value (an unset option, an unknown key).
    pub fn get(&self, key: &str) -> Option<Value> {
        Raw::from(self.to_raw()).find(key).and_then(Value::from_raw)
    }

    /// The options of driver `driver`: the table it declares (defaults included), or
    /// its `[options.<driver>]` table when it declares none. `None` when there is
    /// neither. Secrets included: do not log it.
    pub fn options(&self, driver: &str) -> Option<Table> {
        let dict = match Schema::get().table_of_driver(driver) {
            Some(table) => self.tables.get(table.name),
            None => self.options.get(driver),
        };
        dict.cloned().map(Table::from_raw)
    }

    /// The table `table` read as the driver's options type `T`, with `T`'s
    /// [`check`](DriverTable::check) applied: what a driver's factory calls
    /// (`config.driver_config::<DbConfig>("db")?`). A table nothing set reads as
    /// `T::default()`; for a driver that declares no table, `table` is its name and its
    /// `[options.<name>]` table is read. Errors are `Config` errors naming the key.
    pub fn driver_config<T: DriverTable>(&self, table: &str) -> Result<T> {
        let dict = self
            .tables
            .get(table)
            .or_else(|| self.options.get(table))
            .cloned()
            .unwrap_or_default();
        let mut secrets = Secrets::default();
        let schema = Schema::get();
        let scoped = schema::dict_at(table, Raw::from(dict.clone()));
        schema.collect_secrets(&scoped, &mut secrets);
        let value: T = Raw::from(dict).deserialize().map_err(|e| {
            let key = std::iter::once(table.to_owned())
                .chain(e.path.iter().cloned())
                .collect::<Vec<_>>()
                .join(".");
            let why = if schema.is_secret(&key) {
                "invalid value (not shown: the key is secret)".to_owned()
            } else {
                e.kind.to_string()
            };
            Error::config(secrets.scrub(&format!("invalid value for `{key}`: {why}")))
        })?;
        value.check().map_err(|invalid| {
            Error::config(secrets.scrub(&format!(
                "invalid value for `{table}.{}`: {}",
                invalid.key(),
                invalid.message()
            )))
        })?;
        Ok(value)
    }

    /// Every key with its value, secrets masked, sorted by key: core's keys, every key
    /// of every linked driver's table, and each key of an `[options.<driver>]` table of
    /// a driver that declares none. This is what `servicegroup config` shows.
    pub fn entries(&self) -> Vec<Entry> {
        view::entries(self, Schema::get())
    }

    /// The `service_down_time` actually used: the configured one, or
    /// `report_interval * 2.5` when it is not larger than `report_interval` (Nova's rule).
    pub fn effective_service_down_time(&self) -> Duration {
        if self.service_down_time <= self.report_interval {
            // `mul_f64` would panic past `Duration::MAX` (a report_interval set in code).
            Duration::try_from_secs_f64(self.report_interval.as_secs_f64() * DOWN_TIME_FACTOR)
                .unwrap_or(Duration::MAX)
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
    /// durations and none above [`duration::MAX`], a driver name, the selected driver's own rules), and returns it with
    /// `service_down_time` replaced by [`Self::effective_service_down_time`], logging a
    /// WARN when the override applies.
    pub fn validated(mut self) -> Result<Self> {
        if self.driver.trim().is_empty() {
            return Err(Error::config("`driver` must not be empty"));
        }
        let durations = [
            ("report_interval", self.report_interval),
            ("service_down_time", self.service_down_time),
            ("call_timeout", self.call_timeout),
            ("coalesce_window", self.coalesce_window),
        ];
        let watch = self.watch_interval.map(|d| ("watch_interval", d));
        for (key, value) in durations.into_iter().chain(watch) {
            if value.is_zero() {
                return Err(Error::config(format!("`{key}` must be greater than zero")));
            }
            if value > duration::MAX {
                return Err(Error::config(format!(
                    "`{key}` must be at most {} ({} s), found {value:?}",
                    duration::render(duration::MAX),
                    duration::MAX.as_secs()
                )));
            }
        }
        if let Some(table) = Schema::get().table_of_driver(&self.driver) {
            view::check_table(&self, table)?;
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

    /// The raw values of a declared table.
    pub(crate) fn table_values(&self, table: &str) -> Option<&Dict> {
        self.tables.get(table)
    }

    /// The undeclared options tables.
    pub(crate) fn undeclared_options(&self) -> &BTreeMap<String, Dict> {
        &self.options
    }
}

/// Core's keys, then every other key with secrets masked.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let common = Schema::get().common_keys().collect::<Vec<_>>();
        let drivers: BTreeMap<String, Option<Value>> = self
            .entries()
            .into_iter()
            .filter(|e| !common.contains(&e.key.as_str()))
            .map(|e| (e.key, e.value))
            .collect();
        f.debug_struct("Config")
            .field("driver", &self.driver)
            .field("report_interval", &self.report_interval)
            .field("service_down_time", &self.service_down_time)
            .field("call_timeout", &self.call_timeout)
            .field("watch_interval", &self.watch_interval)
            .field("coalesce_window", &self.coalesce_window)
            .field("drivers", &drivers)
            .finish()
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

    #[test]
    fn set_checks_at_once_and_keeps_the_rest() {
        let mut c = Config::with_driver("inproc");
        c.call_timeout = Duration::from_millis(1500);
        c.set("report_interval", Duration::from_millis(200))
            .unwrap()
            .set("watch_interval", 0.05)
            .unwrap();
        assert_eq!(c.report_interval, Duration::from_millis(200));
        assert_eq!(c.watch_interval, Some(Duration::from_millis(50)));
        assert_eq!(c.call_timeout, Duration::from_millis(1500));
        assert_eq!(c.driver, "inproc");
        let err = c.set("report_interval", 0).unwrap_err().to_string();
        assert!(
            err.contains("invalid value for `report_interval` in override (code)"),
            "{err}"
        );
        let err = c.set("reportinterval", 1).unwrap_err().to_string();
        assert!(err.contains("unknown key `reportinterval`"), "{err}");
        // A failed set changes nothing.
        assert_eq!(c.report_interval, Duration::from_millis(200));
    }

    #[test]
    fn undeclared_options_pass_through() {
        let mut c = Config::with_driver("mine");
        c.set("options.mine.endpoint", "http://x")
            .unwrap()
            .set("options.mine.retries", 3)
            .unwrap();
        let options = c.options("mine").unwrap();
        assert_eq!(
            options.get("endpoint").and_then(Value::as_str),
            Some("http://x")
        );
        assert_eq!(options.get("retries").and_then(Value::as_u64), Some(3));
        assert_eq!(
            c.get("options.mine.retries").and_then(|v| v.as_u64()),
            Some(3)
        );
        assert!(c.options("other").is_none());
    }
}
