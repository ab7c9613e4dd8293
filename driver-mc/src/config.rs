//! `[mc]`: the memcached driver's options, declared with its registration: the table
//! and the nova.conf options that feed `mc.servers` (`[DEFAULT] memcached_servers`,
//! else `[cache] memcache_servers`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use servicegroup_core::config::{duration, DriverConfig, DriverTable, InvalidKey, NovaOption};

/// The table this driver reads: `[mc]`, `SERVICEGROUP_MC__*` (`SERVICEGROUP_MC__SERVERS`
/// comma-separated), and nova.conf's `[DEFAULT] memcached_servers` or, when that is
/// not set, `[cache] memcache_servers`, as `mc.servers`. No secrets.
pub const CONFIG: DriverConfig = DriverConfig::new::<McConfig>(crate::NAME).nova(&[
    NovaOption::new("DEFAULT", "memcached_servers", "servers").list(),
    NovaOption::new("cache", "memcache_servers", "servers").list(),
]);

/// `[mc]`: the memcached driver's options.
///
/// Set from code with `config.set("mc.servers", ["10.0.0.1:11211"])?`; read with
/// `config.driver_config::<McConfig>("mc")?`. With no servers the driver keeps
/// membership in this process, in the store `[inproc] name` names (Nova's behaviour).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl Default for McConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: Duration::from_secs(1),
            prefix: "sg".to_owned(),
        }
    }
}

impl DriverTable for McConfig {
    fn check(&self) -> Result<(), InvalidKey> {
        crate::keys::check_prefix(&self.prefix).map_err(|message| {
            InvalidKey::new(
                "prefix",
                message.trim_start_matches("`mc.prefix` ").to_owned(),
            )
        })
    }
}
