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

impl McConfig {
    /// The configured servers: entries split at commas, trimmed, empty ones and
    /// `<None>` dropped, duplicates removed (first kept). Empty: in-process.
    pub fn server_list(&self) -> Vec<String> {
        servicegroup_core::config::list::entries(&self.servers, |p| {
            (!p.eq_ignore_ascii_case("<None>")).then_some(p)
        })
    }
}

/// With servers: each is `host:port`, and the key prefix is valid. Without (the
/// in-process store) nothing is sent to memcached, so neither is checked.
impl DriverTable for McConfig {
    fn check(&self) -> Result<(), InvalidKey> {
        let servers = self.server_list();
        if servers.is_empty() {
            return Ok(());
        }
        for address in &servers {
            check_address(address).map_err(|why| InvalidKey::new("servers", why))?;
        }
        crate::keys::check_prefix(&self.prefix).map_err(|message| {
            InvalidKey::new(
                "prefix",
                message.trim_start_matches("`mc.prefix` ").to_owned(),
            )
        })
    }
}

/// Checks one `host:port` entry of `[mc] servers`; the error says what is wrong.
fn check_address(address: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!("entry {address:?} {why}; expected host:port, e.g. 127.0.0.1:11211 or [::1]:11211")
    };
    if address.contains("://") {
        return Err(bad("has a URL scheme"));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(bad("has no port"));
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("has no valid host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("is an IPv6 address without brackets"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("has no valid port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_servers(servers: &[&str]) -> McConfig {
        McConfig {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            ..McConfig::default()
        }
    }

    #[test]
    fn server_lists() {
        assert!(with_servers(&[]).server_list().is_empty());
        assert!(with_servers(&["<None>"]).server_list().is_empty());
        assert!(with_servers(&[" ", ""]).server_list().is_empty());
        assert_eq!(
            with_servers(&["a:1, b:2", "a:1", "c:3"]).server_list(),
            vec!["a:1", "b:2", "c:3"]
        );
    }

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1:11211",
            "localhost:1",
            "[::1]:11211",
            "mc.example.org:65535",
        ] {
            with_servers(&[ok]).check().unwrap();
        }
        for bad in [
            "127.0.0.1",
            "memcache://a:1",
            "a:0",
            "a:70000",
            ":1",
            "::1:11211",
            "a b:1",
        ] {
            let e = with_servers(&[bad]).check().unwrap_err();
            assert_eq!(e.key(), "servers", "{bad}");
            assert!(e.message().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn the_prefix_is_checked_only_with_servers() {
        let mut c = with_servers(&["<None>"]);
        c.prefix = "bad prefix".into();
        c.check().unwrap();
        c.servers = vec!["a:1".into()];
        let e = c.check().unwrap_err();
        assert_eq!(e.key(), "prefix");
        assert!(e.message().starts_with("\"bad prefix\""), "{e}");
    }
}
