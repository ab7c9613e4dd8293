//! [`RelayOptions`]: how the relay listens (address, TLS, token, limits, timeouts)
//! and the rule that keeps it from serving unprotected ([`RelayOptions::check`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use servicegroup_core::config::Secret;

use crate::error::RelayError;

/// The default listen address: loopback, port 7450.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7450";

/// A certificate chain and its private key, PEM files (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How the relay serves. Build with [`RelayOptions::new`] and set the fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayOptions {
    /// The address to listen on (port 0: any free port; [`crate::RunningRelay::addr`] says which).
    pub listen: SocketAddr,
    /// The bearer token every call but `/healthz` must carry (`relay.token`,
    /// `--token-file`). `None` only with [`Self::insecure`] on a loopback address.
    pub token: Option<Secret>,
    /// TLS (rustls, ring). `None`: plain HTTP, allowed only on a loopback address.
    pub tls: Option<TlsFiles>,
    /// Allows serving without a token (loopback only).
    pub insecure: bool,
    /// Largest request body accepted, in bytes (413 above). Default 1 MiB.
    pub body_limit: usize,
    /// Longest a request may take from its headers to its answer, body upload
    /// included (408 after; a watch stream's lifetime is not bounded). Default 30 s.
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's headers, and to send the next
    /// request on a kept-alive connection; the connection is closed after. Default 10 s.
    pub header_timeout: Duration,
    /// Most members in one heartbeat or registration request (400 above). Default 100,000.
    pub max_batch: usize,
}

impl RelayOptions {
    /// Options listening on `listen` with the defaults: no token, no TLS, not insecure
    /// (so [`Self::check`] refuses them until one of those is set).
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            token: None,
            tls: None,
            insecure: false,
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_batch: 100_000,
        }
    }

    /// The rule: plain HTTP only on a loopback address; no token only with `insecure`,
    /// and `insecure` only on a loopback address. A zero limit or timeout is refused.
    pub fn check(&self) -> Result<(), RelayError> {
        let loopback = self.listen.ip().is_loopback();
        if self.insecure && !loopback {
            return Err(RelayError::Options(format!(
                "--insecure is allowed only on a loopback listen address, not {}",
                self.listen
            )));
        }
        if self.token.is_none() && !self.insecure {
            return Err(RelayError::Options(
                "no token: set relay.token (SERVICEGROUP_RELAY__TOKEN) or --token-file; serving without one needs --insecure on a loopback address".to_owned(),
            ));
        }
        if self.tls.is_none() && !loopback {
            return Err(RelayError::Options(format!(
                "plain HTTP is allowed only on a loopback listen address, not {}: give --tls-cert and --tls-key",
                self.listen
            )));
        }
        if self
            .token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            return Err(RelayError::Options("the token is empty".to_owned()));
        }
        for (name, zero) in [
            ("body limit", self.body_limit == 0),
            ("request timeout", self.request_timeout.is_zero()),
            ("header timeout", self.header_timeout.is_zero()),
            ("batch limit", self.max_batch == 0),
        ] {
            if zero {
                return Err(RelayError::Options(format!(
                    "the {name} must be greater than zero"
                )));
            }
        }
        Ok(())
    }
}

/// Reads a token file: its content with surrounding whitespace trimmed; an empty file
/// is refused. The token itself never appears in the error.
pub fn read_token_file(path: &std::path::Path) -> Result<Secret, RelayError> {
    let text = std::fs::read_to_string(path).map_err(|e| RelayError::File {
        what: "--token-file",
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(RelayError::File {
            what: "--token-file",
            path: path.to_owned(),
            message: "the file is empty".to_owned(),
        });
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(addr: &str) -> RelayOptions {
        RelayOptions::new(addr.parse().unwrap())
    }

    #[test]
    fn the_protection_rule() {
        let mut o = at("127.0.0.1:0");
        assert!(o.check().unwrap_err().to_string().contains("no token"));
        o.insecure = true;
        o.check().unwrap();
        let mut o = at("0.0.0.0:0");
        o.insecure = true;
        assert!(o.check().unwrap_err().to_string().contains("loopback"));
        o.insecure = false;
        o.token = Some(Secret::new("x"));
        assert!(o.check().unwrap_err().to_string().contains("plain HTTP"));
        o.tls = Some(TlsFiles {
            cert: "c".into(),
            key: "k".into(),
        });
        o.check().unwrap();
        o.token = Some(Secret::new(" "));
        assert!(o.check().unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn token_file_errors_never_show_the_token() {
        let dir = std::env::temp_dir().join(format!("sg-relay-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t");
        std::fs::write(&file, "  s3cret-tok\n").unwrap();
        assert_eq!(read_token_file(&file).unwrap().expose(), "s3cret-tok");
        std::fs::write(&file, "\n").unwrap();
        assert!(read_token_file(&file)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let e = read_token_file(&dir.join("none")).unwrap_err();
        assert!(e.to_string().contains("--token-file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
