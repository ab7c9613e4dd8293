//! The driver registry: driver crates register a factory by name with
//! [`register_driver!`](crate::register_driver), together with the declaration of
//! their configuration table ([`DriverConfig`]), and [`Registry`] builds drivers from
//! config.
//!
//! # The linker pitfall
//!
//! Registration uses `inventory`, which runs at link time. rustc does not link a
//! crate that nothing names, so a driver crate that is only a dependency is
//! *not registered*. Every final binary or test crate must name each driver it
//! wants: the `servicegroup` facade does so for its enabled features, and a third
//! party writes `use my_driver as _;`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Config, DriverConfig};
use crate::driver::Driver;
use crate::error::{Error, Result};

/// The future a driver factory returns.
pub type BuildFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn Driver>>> + Send + 'static>>;

/// A driver's entry in the registry.
#[derive(Debug)]
#[non_exhaustive]
pub struct DriverFactory {
    /// The name configs select it by (`servicegroup_driver`).
    pub name: &'static str,
    /// One line saying what it is.
    pub description: &'static str,
    /// Builds a driver from a validated configuration (connect, migrate, ...).
    pub build: fn(Config) -> BuildFuture,
    /// Its configuration table, if it declares one.
    pub config: Option<DriverConfig>,
}

impl DriverFactory {
    /// A factory without a configuration table (what [`register_driver!`](crate::register_driver) builds).
    pub const fn new(
        name: &'static str,
        description: &'static str,
        build: fn(Config) -> BuildFuture,
    ) -> Self {
        Self {
            name,
            description,
            build,
            config: None,
        }
    }

    /// The same factory declaring its configuration table.
    pub const fn with_config(mut self, config: DriverConfig) -> Self {
        self.config = Some(config);
        self
    }
}

inventory::collect!(DriverFactory);

/// Registers a driver factory under a name, with its configuration table if it has one.
///
/// ```ignore
/// use servicegroup_core::config::{DriverConfig, NovaOption};
///
/// servicegroup_core::register_driver! {
///     name: "mydriver",
///     description: "my backend",
///     // Optional: the driver's own table `[mydriver]`, read as `MyConfig`.
///     config: DriverConfig::new::<MyConfig>("mydriver")
///         .secrets(&["password"])
///         .nova(&[NovaOption::new("mydriver", "servers", "servers")]),
///     build: |config| Box::pin(async move {
///         let options: MyConfig = config.driver_config("mydriver")?;
///         Ok(std::sync::Arc::new(MyDriver::new(options)?) as _)
///     }),
/// }
/// ```
///
/// The driver built must report `name` as its [`Driver::name`]; the registry refuses
/// one that does not.
#[macro_export]
macro_rules! register_driver {
    (name: $name:expr, description: $description:expr, build: $build:expr $(,)?) => {
        $crate::__private::inventory::submit! {
            $crate::DriverFactory::new($name, $description, $build)
        }
    };
    (name: $name:expr, description: $description:expr, config: $config:expr, build: $build:expr $(,)?) => {
        $crate::__private::inventory::submit! {
            $crate::DriverFactory::new($name, $description, $build).with_config($config)
        }
    };
}

/// The drivers linked into this program.
#[derive(Debug, Clone, Copy, Default)]
pub struct Registry;

impl Registry {
    /// Every registered factory, sorted by name.
    pub fn factories() -> Vec<&'static DriverFactory> {
        let mut all: Vec<&'static DriverFactory> = inventory::iter::<DriverFactory>().collect();
        all.sort_by_key(|f| f.name);
        all.dedup_by_key(|f| f.name);
        all
    }

    /// The names of every registered driver, sorted.
    pub fn names() -> Vec<&'static str> {
        Self::factories().into_iter().map(|f| f.name).collect()
    }

    /// The factory registered as `name`; an unknown name is a `Config` error listing the known ones.
    pub fn get(name: &str) -> Result<&'static DriverFactory> {
        let all = Self::factories();
        all.iter().copied().find(|f| f.name == name).ok_or_else(|| {
            let known = all.iter().map(|f| f.name).collect::<Vec<_>>();
            Error::config(format!(
                "unknown servicegroup driver {name:?} (`driver` / `servicegroup_driver`); registered drivers: {}{}",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") },
                ". A driver crate that nothing names is not linked: enable its feature of the `servicegroup` crate or write `use the_driver_crate as _;`"
            ))
        })
    }

    /// Builds the driver `config.driver` names from `config`.
    ///
    /// A factory whose driver reports a [`Driver::name`] other than the name it is
    /// registered under is refused with a `Config` error naming both: core tags every
    /// error and log line with the driver's name, so the two must agree.
    pub async fn build(config: &Config) -> Result<Arc<dyn Driver>> {
        let factory = Self::get(&config.driver)?;
        let driver = (factory.build)(config.clone()).await?;
        if driver.name() != factory.name {
            return Err(Error::config(format!(
                "the driver registered as {:?} reports the name {:?}: a driver's `name()` must be the name it is registered under",
                factory.name,
                driver.name()
            )));
        }
        Ok(driver)
    }
}
