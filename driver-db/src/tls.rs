//! TLS to PostgreSQL and MySQL/MariaDB: the modes (libpq's `sslmode`, MySQL's
//! `ssl-mode`), the CA file, where each came from (a `db.url` parameter or a `[db]`
//! key), and how a failure names them.
//!
//! The rustls side (ring chosen explicitly, the verifiers `sslmode` needs that
//! rustls does not ship) is in `tls::rustls_config`; each backend applies the
//! `Tls` it is given (PostgreSQL: a `tokio-postgres-rustls` connector; MySQL:
//! mysql_async's `SslOpts`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) mod rustls_config;

/// PostgreSQL `sslmode`, with libpq's meaning (`[db] sslmode`, or `sslmode=` in a
/// PostgreSQL `db.url`). Written as libpq writes it: `disable`, `prefer`, `require`,
/// `verify-ca`, `verify-full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum PgSslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, plain TCP otherwise (libpq's default). The
    /// certificate is not checked, unless `sslrootcert` is given: then its chain is.
    #[default]
    Prefer,
    /// TLS or no connection. The certificate is not checked, unless `sslrootcert` is
    /// given: then its chain is (libpq's rule for a root file that exists).
    Require,
    /// TLS, the certificate chain checked against `sslrootcert` (or the built-in
    /// roots); the host name is not checked.
    VerifyCa,
    /// TLS, the chain checked and the certificate valid for the host connected to.
    VerifyFull,
}

impl PgSslMode {
    /// Every mode, as written.
    pub const ALL: &'static str = "disable, prefer, require, verify-ca, verify-full";

    /// The mode as libpq writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PgSslMode::Disable => "disable",
            PgSslMode::Prefer => "prefer",
            PgSslMode::Require => "require",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate chain is checked (against `ca` if given).
    pub(crate) fn checks_chain(self, has_ca: bool) -> bool {
        match self {
            PgSslMode::VerifyCa | PgSslMode::VerifyFull => true,
            PgSslMode::Prefer | PgSslMode::Require => has_ca,
            PgSslMode::Disable => false,
        }
    }
}

/// A TLS mode that is not one of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {option} {value:?} (expected one of: {expected})")]
pub struct UnknownMode {
    option: &'static str,
    value: String,
    expected: &'static str,
}

impl FromStr for PgSslMode {
    type Err = UnknownMode;

    /// libpq's values (ASCII case ignored).
    fn from_str(s: &str) -> Result<Self, UnknownMode> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "disable" => PgSslMode::Disable,
            "prefer" => PgSslMode::Prefer,
            "require" => PgSslMode::Require,
            "verify-ca" => PgSslMode::VerifyCa,
            "verify-full" => PgSslMode::VerifyFull,
            _ => {
                return Err(UnknownMode {
                    option: "sslmode",
                    value: s.to_owned(),
                    expected: Self::ALL,
                })
            }
        })
    }
}

impl TryFrom<String> for PgSslMode {
    type Error = UnknownMode;
    fn try_from(s: String) -> Result<Self, UnknownMode> {
        s.parse()
    }
}

impl From<PgSslMode> for String {
    fn from(mode: PgSslMode) -> String {
        mode.as_str().to_owned()
    }
}

impl fmt::Display for PgSslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// MySQL/MariaDB `ssl-mode`, with the MySQL client's meaning (`[db] ssl_mode`, or
/// `ssl-mode=` / `ssl_mode=` in a MySQL `db.url`). Written as MySQL writes it:
/// `DISABLED`, `PREFERRED`, `REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY` (case and `-`
/// for `_` ignored when read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum MysqlSslMode {
    /// Plain TCP only.
    Disabled,
    /// TLS when the server offers it, plain TCP otherwise (the MySQL client's
    /// default). The certificate is not checked, unless `ssl-ca` is given: then its
    /// chain is.
    #[default]
    Preferred,
    /// TLS or no connection. The certificate is not checked, unless `ssl-ca` is
    /// given: then its chain is.
    Required,
    /// TLS, the chain checked against `ssl-ca` (or the built-in roots); the host name
    /// is not checked.
    VerifyCa,
    /// TLS, the chain checked and the certificate valid for the host connected to.
    VerifyIdentity,
}

impl MysqlSslMode {
    /// Every mode, as written.
    pub const ALL: &'static str = "DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY";

    /// The mode as MySQL writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MysqlSslMode::Disabled => "DISABLED",
            MysqlSslMode::Preferred => "PREFERRED",
            MysqlSslMode::Required => "REQUIRED",
            MysqlSslMode::VerifyCa => "VERIFY_CA",
            MysqlSslMode::VerifyIdentity => "VERIFY_IDENTITY",
        }
    }

    /// Whether the server's certificate chain is checked (against `ca` if given).
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    pub(crate) fn checks_chain(self, has_ca: bool) -> bool {
        match self {
            MysqlSslMode::VerifyCa | MysqlSslMode::VerifyIdentity => true,
            MysqlSslMode::Preferred | MysqlSslMode::Required => has_ca,
            MysqlSslMode::Disabled => false,
        }
    }
}

impl FromStr for MysqlSslMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, UnknownMode> {
        Ok(
            match s.trim().to_ascii_uppercase().replace('-', "_").as_str() {
                "DISABLED" => MysqlSslMode::Disabled,
                "PREFERRED" => MysqlSslMode::Preferred,
                "REQUIRED" => MysqlSslMode::Required,
                "VERIFY_CA" => MysqlSslMode::VerifyCa,
                "VERIFY_IDENTITY" => MysqlSslMode::VerifyIdentity,
                _ => {
                    return Err(UnknownMode {
                        option: "ssl-mode",
                        value: s.to_owned(),
                        expected: Self::ALL,
                    })
                }
            },
        )
    }
}

impl TryFrom<String> for MysqlSslMode {
    type Error = UnknownMode;
    fn try_from(s: String) -> Result<Self, UnknownMode> {
        s.parse()
    }
}

impl From<MysqlSslMode> for String {
    fn from(mode: MysqlSslMode) -> String {
        mode.as_str().to_owned()
    }
}

impl fmt::Display for MysqlSslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a TLS option was set, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Not set: the backend's default.
    Default,
    /// A parameter of `db.url`.
    Url,
    /// A `[db]` key (which wins over the URL).
    Key,
}

/// The TLS options of one connection target: the mode, the CA file, and how to name
/// them in a message (`sslmode=verify-full, sslrootcert=/etc/ca.pem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tls<M> {
    /// The mode.
    pub(crate) mode: M,
    /// The CA (PEM) file, if any.
    pub(crate) ca: Option<PathBuf>,
    /// The name of the CA file's option as set (`sslrootcert`, `db.ssl_ca`).
    pub(crate) ca_option: String,
    /// The options as set, for messages (never secret).
    pub(crate) described: String,
}

/// The two TLS options as one source gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsParams<M> {
    /// The mode, if set.
    pub(crate) mode: Option<M>,
    /// The CA file, if set.
    pub(crate) ca: Option<PathBuf>,
}

/// The names of a backend's two options, as the URL and the `[db]` table spell them.
pub(crate) struct OptionNames {
    /// The mode in a URL (`sslmode`, `ssl-mode`).
    pub(crate) url_mode: &'static str,
    /// The CA file in a URL (`sslrootcert`, `ssl-ca`).
    pub(crate) url_ca: &'static str,
    /// The mode's `[db]` key (`sslmode`, `ssl_mode`).
    pub(crate) key_mode: &'static str,
    /// The CA file's `[db]` key (`sslrootcert`, `ssl_ca`).
    pub(crate) key_ca: &'static str,
}

/// PostgreSQL's option names (libpq's, in the URL and as keys).
pub(crate) const PG_NAMES: OptionNames = OptionNames {
    url_mode: "sslmode",
    url_ca: "sslrootcert",
    key_mode: "sslmode",
    key_ca: "sslrootcert",
};

/// MySQL/MariaDB's option names (the MySQL client's in the URL; with `_` as keys,
/// so they have an environment variable: `SERVICEGROUP_DB__SSL_MODE`).
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) const MYSQL_NAMES: OptionNames = OptionNames {
    url_mode: "ssl-mode",
    url_ca: "ssl-ca",
    key_mode: "ssl_mode",
    key_ca: "ssl_ca",
};

/// The options in force: a `[db]` key wins over the URL's parameter; an unset mode
/// is the backend's default, or `with_ca` when a CA file is given (PostgreSQL:
/// `prefer`, as libpq; MySQL: `VERIFY_IDENTITY`, as PyMySQL, for which Nova's
/// `mysql+pymysql://…?ssl_ca=…` URLs are written).
pub(crate) fn resolve<M: Copy + Default + fmt::Display>(
    names: &OptionNames,
    url: &TlsParams<M>,
    keys: &TlsParams<M>,
    with_ca: M,
) -> Tls<M> {
    let (ca, ca_from) = match (&keys.ca, &url.ca) {
        (Some(c), _) => (Some(c.clone()), Source::Key),
        (None, Some(c)) => (Some(c.clone()), Source::Url),
        (None, None) => (None, Source::Default),
    };
    let (mode, mode_from) = match (keys.mode, url.mode) {
        (Some(m), _) => (m, Source::Key),
        (None, Some(m)) => (m, Source::Url),
        (None, None) if ca.is_some() => (with_ca, Source::Default),
        (None, None) => (M::default(), Source::Default),
    };
    let mut described = match mode_from {
        Source::Default if ca.is_some() => format!("{}={mode} (implied)", names.url_mode),
        Source::Default => format!("{}={mode} (the default)", names.url_mode),
        Source::Url => format!("{}={mode}", names.url_mode),
        Source::Key => format!("db.{}={mode}", names.key_mode),
    };
    let ca_option = match ca_from {
        Source::Key => format!("db.{}", names.key_ca),
        _ => names.url_ca.to_owned(),
    };
    if let Some(ca) = &ca {
        described.push_str(&format!(", {ca_option}={}", ca.display()));
    }
    Tls {
        mode,
        ca,
        ca_option,
        described,
    }
}

/// The Display of `error` and of every error below it, joined by `: ` (a level whose
/// text the one above already shows is skipped). tokio-postgres' own Display is terse
/// (`db error`, `error performing TLS handshake`): the cause is in the sources.
pub(crate) fn source_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_the_clients_write_them() {
        for (text, mode) in [
            ("disable", PgSslMode::Disable),
            ("prefer", PgSslMode::Prefer),
            ("require", PgSslMode::Require),
            ("verify-ca", PgSslMode::VerifyCa),
            ("Verify-Full", PgSslMode::VerifyFull),
        ] {
            assert_eq!(text.parse::<PgSslMode>().unwrap(), mode);
            assert_eq!(mode.as_str().parse::<PgSslMode>().unwrap(), mode);
        }
        for (text, mode) in [
            ("DISABLED", MysqlSslMode::Disabled),
            ("preferred", MysqlSslMode::Preferred),
            ("Required", MysqlSslMode::Required),
            ("verify_ca", MysqlSslMode::VerifyCa),
            ("VERIFY-IDENTITY", MysqlSslMode::VerifyIdentity),
        ] {
            assert_eq!(text.parse::<MysqlSslMode>().unwrap(), mode);
            assert_eq!(mode.as_str().parse::<MysqlSslMode>().unwrap(), mode);
        }
        let err = "verify-identity".parse::<PgSslMode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown sslmode \"verify-identity\" (expected one of: disable, prefer, require, verify-ca, verify-full)"
        );
        assert!("allow".parse::<MysqlSslMode>().is_err());
    }

    #[test]
    fn keys_win_over_the_url_and_are_named() {
        let url = TlsParams {
            mode: Some(PgSslMode::Require),
            ca: Some(PathBuf::from("/url/ca.pem")),
        };
        let keys = TlsParams {
            mode: Some(PgSslMode::VerifyFull),
            ca: None,
        };
        let tls = resolve(&PG_NAMES, &url, &keys, PgSslMode::Prefer);
        assert_eq!(tls.mode, PgSslMode::VerifyFull);
        assert_eq!(tls.ca, Some(PathBuf::from("/url/ca.pem")));
        assert_eq!(
            tls.described,
            "db.sslmode=verify-full, sslrootcert=/url/ca.pem"
        );
        let none = TlsParams::default();
        let tls = resolve(&MYSQL_NAMES, &none, &none, MysqlSslMode::VerifyIdentity);
        assert_eq!(tls.mode, MysqlSslMode::Preferred);
        assert_eq!(tls.described, "ssl-mode=PREFERRED (the default)");
        let ca = TlsParams {
            mode: None,
            ca: Some(PathBuf::from("/ca.pem")),
        };
        let tls = resolve(&MYSQL_NAMES, &none, &ca, MysqlSslMode::VerifyIdentity);
        assert_eq!(tls.mode, MysqlSslMode::VerifyIdentity);
        assert_eq!(
            tls.described,
            "ssl-mode=VERIFY_IDENTITY (implied), db.ssl_ca=/ca.pem"
        );
        assert!(PgSslMode::Require.checks_chain(true));
        assert!(!PgSslMode::Require.checks_chain(false));
        assert!(MysqlSslMode::VerifyCa.checks_chain(false));
    }
}
