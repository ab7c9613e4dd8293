//! `[relay]`: the relay driver's options (and the token a `servicegroup relay`
//! server requires), declared with its registration. `relay.token` is secret: masked
//! in `servicegroup config`, never in errors, logs or `Debug`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use servicegroup_core::config::{duration, DriverConfig, DriverTable, InvalidKey, Secret};

/// The table this driver reads: `[relay]`, `SERVICEGROUP_RELAY__*`
/// (`SERVICEGROUP_RELAY__URLS` comma-separated, `SERVICEGROUP_RELAY__TOKEN`).
pub const CONFIG: DriverConfig = DriverConfig::new::<RelayConfig>(crate::NAME).secrets(&["token"]);

/// `[relay]`: where the relays are and how to talk to them.
///
/// Set from code with `config.set("relay.urls", ["https://relay-1:7450"])?`; read
/// with `config.driver_config::<RelayConfig>("relay")?`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Base URLs of the relays (`http://127.0.0.1:7450`, `https://relay.example:7450`),
    /// tried in order: a connect error or a 5xx answer moves on to the next.
    pub urls: Vec<String>,
    /// The bearer token the relays require (the relay server reads the same key).
    pub token: Option<Secret>,
    /// Bound on each request (connect included). Default 5 s.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// PEM file of the CA certificates that sign the relays' certificates (`https://`
    /// URLs). Unset: the URLs must be `http://`.
    pub ca_file: Option<PathBuf>,
    /// Most requests in flight per relay URL (so connections, with HTTP/1.1; streams
    /// on one connection with `http2`), shared by every relay driver of the process
    /// with the same URL. Default 64.
    pub max_connections: usize,
    /// Start at a random relay of `urls` instead of the first (then fail over down the
    /// list from there), so the processes of a fleet spread over several relays
    /// without a load balancer in front. Default false: the first URL first.
    pub spread: bool,
    /// Speak HTTP/2 to the relays instead of HTTP/1.1: prior knowledge (h2c) on
    /// `http://` URLs, ALPN `h2` on `https://` ones (the relay server speaks both).
    /// The requests of every relay driver of the process with the same target are
    /// then multiplexed as streams on one connection per relay URL
    /// (`max_connections` bounds the streams in flight) instead of a pool of
    /// keep-alive connections. A load balancer in front of the relays must pass
    /// HTTP/2 through. Default false.
    pub http2: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            token: None,
            timeout: Duration::from_secs(5),
            ca_file: None,
            max_connections: 64,
            spread: false,
            http2: false,
        }
    }
}

impl RelayConfig {
    /// The configured URLs: entries split at commas, trimmed, empty ones dropped,
    /// trailing slashes removed, duplicates removed (first kept).
    pub fn url_list(&self) -> Vec<String> {
        servicegroup_core::config::list::entries(&self.urls, |p| Some(p.trim_end_matches('/')))
    }
}

impl DriverTable for RelayConfig {
    fn check(&self) -> Result<(), InvalidKey> {
        for url in self.url_list() {
            check_url(&url, self.ca_file.is_some()).map_err(|why| InvalidKey::new("urls", why))?;
        }
        if self.timeout.is_zero() {
            return Err(InvalidKey::new("timeout", "must be greater than zero"));
        }
        if self.max_connections == 0 {
            return Err(InvalidKey::new("max_connections", "must be at least 1"));
        }
        if self
            .token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            return Err(InvalidKey::new("token", "must not be empty"));
        }
        Ok(())
    }
}

/// One URL: `http://` or `https://` (with `ca_file`), a host, no path, query or userinfo.
fn check_url(url: &str, have_ca: bool) -> Result<(), String> {
    let parsed: http::Uri = url
        .parse()
        .map_err(|e| format!("entry {url:?} is not a URL: {e}"))?;
    match parsed.scheme_str() {
        Some("http") => {}
        Some("https") if have_ca => {}
        Some("https") => {
            return Err(format!(
                "entry {url:?} is https but relay.ca_file is not set"
            ))
        }
        _ => return Err(format!("entry {url:?} must start with http:// or https://")),
    }
    let Some(authority) = parsed.authority() else {
        return Err(format!("entry {url:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "entry {url:?} must not carry credentials (use relay.token)"
        ));
    }
    if parsed.path() != "/" && !parsed.path().is_empty() || parsed.query().is_some() {
        return Err(format!(
            "entry {url:?} must be a base URL without a path or query"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_urls(urls: &[&str]) -> RelayConfig {
        RelayConfig {
            urls: urls.iter().map(|s| s.to_string()).collect(),
            ..RelayConfig::default()
        }
    }

    #[test]
    fn urls_are_split_and_checked() {
        assert_eq!(
            with_urls(&["http://a:1/, http://b:2", "http://a:1"]).url_list(),
            vec!["http://a:1", "http://b:2"]
        );
        with_urls(&["http://127.0.0.1:7450"]).check().unwrap();
        for bad in [
            "a:1",
            "ftp://a",
            "http://u:p@a:1",
            "http://a:1/v1",
            "https://a:1",
        ] {
            let e = with_urls(&[bad]).check().unwrap_err();
            assert_eq!(e.key(), "urls", "{bad}");
        }
        let mut c = with_urls(&["https://a:1"]);
        c.ca_file = Some("ca.pem".into());
        c.check().unwrap();
    }

    #[test]
    fn the_token_is_masked() {
        let c = RelayConfig {
            token: Some(Secret::new("very-secret")),
            ..RelayConfig::default()
        };
        assert!(!format!("{c:?}").contains("very-secret"));
        assert!(!serde_json::to_string(&c).unwrap().contains("very-secret"));
    }
}
