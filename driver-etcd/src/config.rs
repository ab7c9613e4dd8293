//! `[etcd]`: the etcd driver's options, declared with its registration: the table
//! and its secret (`password`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use servicegroup_core::config::{duration, DriverConfig, DriverTable, InvalidKey};

/// The table this driver reads: `[etcd]` and `SERVICEGROUP_ETCD__*`
/// (`SERVICEGROUP_ETCD__ENDPOINTS` comma-separated). `etcd.password` is secret: it is
/// shown as `***` and never appears in errors, logs or `Debug`.
pub const CONFIG: DriverConfig =
    DriverConfig::new::<EtcdConfig>(crate::NAME).secrets(&["password"]);

/// `[etcd]`: the etcd driver's options.
///
/// Set from code with `config.set("etcd.endpoints", ["http://10.0.0.1:2379"])?`; read
/// with `config.driver_config::<EtcdConfig>("etcd")?`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// Client URLs of the cluster's members (`http://host:port` or `https://host:port`;
    /// entries may also be comma-separated). Requests go to one of them and fail over
    /// to the next on connect errors and "unavailable" answers. Default
    /// `["http://127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// Prepended to every key (`<prefix>/r/...`), so several deployments can share a
    /// cluster: 1 to 64 printable bytes without whitespace. Every process of one
    /// deployment must use the same prefix. Default `"sg"`.
    pub prefix: String,
    /// Bound on connecting and on every request. Default 2 s.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// User for etcd's authentication (`/v3/auth/authenticate`); with `password`.
    pub username: Option<String>,
    /// Password of `username`. Secret.
    pub password: Option<Password>,
    /// PEM file of the CA certificates that sign the members' certificates; needed for
    /// `https://` endpoints.
    pub ca_file: Option<String>,
    /// Keep a mirror of each group listed: a copy of the group that the driver's
    /// watch keeps, so later `list`, `list_in` and `summary` calls read only what
    /// changed (one small write and the watch's latency per call; memory for the
    /// group's records). `false`: every listing reads the whole group. Default `true`.
    pub mirror: bool,
    /// How long a group's mirror lives after its last listing. Default 5 minutes.
    #[serde(with = "duration")]
    pub mirror_idle: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            prefix: "sg".to_owned(),
            timeout: Duration::from_secs(2),
            username: None,
            password: None,
            ca_file: None,
            mirror: true,
            mirror_idle: Duration::from_secs(300),
        }
    }
}

/// A password that never shows: `Debug`, `Display` and serialization print `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself. Only for the authentication request; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Password {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl EtcdConfig {
    /// The configured endpoints: entries split at commas, trimmed, empty ones dropped,
    /// duplicates removed (first kept), trailing `/` removed.
    pub fn endpoint_list(&self) -> Vec<String> {
        servicegroup_core::config::list::entries(&self.endpoints, |p| Some(p.trim_end_matches('/')))
    }
}

impl DriverTable for EtcdConfig {
    fn check(&self) -> Result<(), InvalidKey> {
        let endpoints = self.endpoint_list();
        if endpoints.is_empty() {
            return Err(InvalidKey::new(
                "endpoints",
                "lists no endpoint; expected URLs such as http://127.0.0.1:2379",
            ));
        }
        for endpoint in &endpoints {
            check_endpoint(endpoint).map_err(|why| InvalidKey::new("endpoints", why))?;
        }
        if self.ca_file.as_deref().is_some_and(|f| f.trim().is_empty()) {
            return Err(InvalidKey::new("ca_file", "must not be empty"));
        }
        check_prefix(&self.prefix).map_err(|why| InvalidKey::new("prefix", why))?;
        if self.timeout.is_zero() {
            return Err(InvalidKey::new("timeout", "must be greater than zero"));
        }
        if self.username.as_deref() == Some("") {
            return Err(InvalidKey::new("username", "must not be empty"));
        }
        Ok(())
    }
}

impl EtcdConfig {
    /// The rules between keys, checked when the driver is built (not at each
    /// `Config::set`, so the keys can be set one after the other): `username` and
    /// `password` go together, and `https://` endpoints need `ca_file`.
    pub fn check_together(&self) -> Result<(), InvalidKey> {
        let https = self
            .endpoint_list()
            .iter()
            .any(|e| e.starts_with("https://"));
        if https && self.ca_file.is_none() {
            return Err(InvalidKey::new(
                "ca_file",
                "is not set, but `etcd.endpoints` has https:// endpoints: name the PEM file of their CA",
            ));
        }
        match (&self.username, &self.password) {
            (Some(_), None) => Err(InvalidKey::new(
                "password",
                "is not set, but `etcd.username` is: set both or neither",
            )),
            (None, Some(_)) => Err(InvalidKey::new(
                "username",
                "is not set, but `etcd.password` is: set both or neither",
            )),
            _ => Ok(()),
        }
    }
}

/// Checks one endpoint URL; returns whether it is https. The error says what is wrong.
fn check_endpoint(endpoint: &str) -> Result<bool, String> {
    let bad = |why: &str| {
        format!("entry {endpoint:?} {why}; expected http://host:port or https://host:port, e.g. http://127.0.0.1:2379")
    };
    let (https, rest) = if let Some(rest) = endpoint.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = endpoint.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(bad("has no http:// or https:// scheme"));
    };
    if rest.contains('/') || rest.contains('@') || rest.contains('?') {
        return Err(bad("has a path, user or query"));
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(bad("has no port"));
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("has no valid host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("is an IPv6 address without brackets"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(https),
        _ => Err(bad("has no valid port")),
    }
}

/// The prefix rule: 1 to 64 bytes, printable ASCII without whitespace.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > 64 {
        return Err(format!(
            "{prefix:?} must be 1 to 64 bytes long (it is {})",
            prefix.len()
        ));
    }
    if !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{prefix:?} must be printable ASCII without whitespace"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(endpoints: &[&str]) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
            ..EtcdConfig::default()
        }
    }

    #[test]
    fn endpoint_lists() {
        assert_eq!(
            with(&["http://a:1, http://b:2/", "http://a:1"]).endpoint_list(),
            vec!["http://a:1", "http://b:2"]
        );
        assert!(with(&[" , "]).endpoint_list().is_empty());
    }

    #[test]
    fn endpoints_are_checked() {
        for ok in [
            "http://127.0.0.1:2379",
            "http://[::1]:2379",
            "http://etcd.example:1",
        ] {
            with(&[ok]).check().unwrap();
        }
        for bad in [
            "127.0.0.1:2379",
            "http://a",
            "http://a:0",
            "http://a:1/x",
            "ftp://a:1",
            "http://u@a:1",
        ] {
            let e = with(&[bad]).check().unwrap_err();
            assert_eq!(e.key(), "endpoints", "{bad}");
            assert!(e.message().contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(with(&[]).check().unwrap_err().key(), "endpoints");
    }

    #[test]
    fn https_needs_a_ca_file() {
        let mut c = with(&["https://a:1"]);
        c.check().unwrap();
        assert_eq!(c.check_together().unwrap_err().key(), "ca_file");
        c.ca_file = Some("/etc/etcd/ca.pem".into());
        c.check_together().unwrap();
    }

    #[test]
    fn user_and_password_go_together() {
        let mut c = with(&["http://a:1"]);
        c.username = Some("sg".into());
        assert_eq!(c.check_together().unwrap_err().key(), "password");
        c.password = Some(Password::new("s3cr3t"));
        c.check_together().unwrap();
        c.username = None;
        let e = c.check_together().unwrap_err();
        assert_eq!(e.key(), "username");
        assert!(!e.to_string().contains("s3cr3t"));
    }

    #[test]
    fn prefix_and_timeout() {
        let mut c = with(&["http://a:1"]);
        c.prefix = "a b".into();
        assert_eq!(c.check().unwrap_err().key(), "prefix");
        c.prefix = "sg".into();
        c.timeout = Duration::ZERO;
        assert_eq!(c.check().unwrap_err().key(), "timeout");
    }

    #[test]
    fn the_password_never_shows() {
        let mut c = with(&["http://a:1"]);
        c.username = Some("sg".into());
        c.password = Some(Password::new("s3cr3t-pw"));
        let debug = format!("{c:?}");
        let json = serde_json::to_string(&c).unwrap();
        for shown in [debug, json, c.password.as_ref().unwrap().to_string()] {
            assert!(!shown.contains("s3cr3t-pw"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }
}
