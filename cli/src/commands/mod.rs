//! One module per group of commands. Each returns the process exit code or a [`Failure`].

pub mod admin;
pub mod exporter;
pub mod join;
pub mod operator;
pub mod query;
pub mod relay;
pub mod watch;

use servicegroup::{LoadedConfig, ServiceGroup};

use crate::failure::Failure;

/// Builds a handle on the configured driver.
pub async fn connect(loaded: LoadedConfig) -> Result<ServiceGroup, Failure> {
    Ok(ServiceGroup::connect(loaded.config).await?)
}
