//! PostgreSQL URLs: libpq's form (`postgresql://user:password@host:port,host2/db?params`)
//! under the schemes `postgres`, `postgresql`, `pgsql` and SQLAlchemy's
//! `postgresql+psycopg2` (Nova's `[database] connection`).
//!
//! tokio-postgres parses them ([`tokio_postgres::Config`]'s `FromStr`). Ours:
//! - `sslmode`, all five of libpq's values (tokio-postgres knows three), and
//!   `sslrootcert` (tokio-postgres has none): taken out and applied by the backend;
//! - parameters tokio-postgres does not know (libpq's or psycopg2's, such as
//!   `client_encoding`, which a real nova.conf carries) are dropped with a WARN;
//!   which ones it knows is asked of tokio-postgres, one parameter at a time;
//! - redaction.

use std::fmt;
use std::path::PathBuf;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use servicegroup_core::config::secret::redact;
use servicegroup_core::{DatabaseUrl, Result};

use super::{bad_url, split_query, userinfo_secrets, warn_dropped};
use crate::tls::{source_chain, PgSslMode, TlsParams};

/// What a rendered parameter keeps unescaped (RFC 3986's unreserved characters).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A parsed PostgreSQL URL: the client's configuration, the TLS options it names,
/// and its redacted form. `Debug` shows only the redacted form.
#[derive(Clone, PartialEq)]
pub struct PostgresUrl {
    /// Boxed: it is large, and [`super::Target`] holds it by value.
    config: Box<tokio_postgres::Config>,
    tls: TlsParams<PgSslMode>,
    shown: String,
    secrets: Vec<String>,
}

impl PostgresUrl {
    /// The URL normalized to `postgresql://`, its password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// The client configuration the URL gives (TLS mode not applied yet).
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// `sslmode` and `sslrootcert`, if the URL sets them.
    pub(crate) fn tls(&self) -> &TlsParams<PgSslMode> {
        &self.tls
    }

    /// The password as written and percent-decoded (for scrubbing messages).
    pub(crate) fn secrets(&self) -> &[String] {
        &self.secrets
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({:?})", self.shown)
    }
}

/// What tokio-postgres makes of one parameter.
enum Probe {
    /// It knows the parameter and takes the value.
    Known,
    /// It does not know the parameter.
    Unknown,
    /// It knows the parameter and refuses the value (why, without the value).
    Invalid(String),
}

/// Asks tokio-postgres about `key=value` alone. tokio-postgres' "unknown option"
/// error is a private type: it is recognized by its text, which
/// `parameters_tokio_postgres_does_not_know_are_dropped` holds in place.
fn probe(key: &str, value: &str) -> Probe {
    let one = format!(
        "postgresql://?{}={}",
        utf8_percent_encode(key, COMPONENT),
        utf8_percent_encode(value, COMPONENT)
    );
    match one.parse::<tokio_postgres::Config>() {
        Ok(_) => Probe::Known,
        Err(e) => {
            let cause = std::error::Error::source(&e).map(|s| s.to_string());
            if cause.as_deref() == Some(&format!("unknown option `{key}`")) {
                Probe::Unknown
            } else {
                Probe::Invalid(source_chain(&e))
            }
        }
    }
}

/// Parses what follows `postgresql:` (the `//` included).
pub(super) fn parse(url: &DatabaseUrl, rest: &str) -> Result<PostgresUrl> {
    let after = rest.strip_prefix("//").unwrap_or(rest);
    let (base, params) = split_query(url, after)?;
    let mut tls = TlsParams::default();
    let mut kept: Vec<(String, String)> = Vec::new();
    let mut shown: Vec<(String, String)> = Vec::new();
    let mut dropped = Vec::new();
    for (key, value) in params {
        match key.as_str() {
            "sslmode" => {
                tls.mode = Some(value.parse().map_err(|e| bad_url(url, e))?);
                shown.push((key, value));
            }
            "sslrootcert" => {
                tls.ca = Some(PathBuf::from(&value));
                shown.push((key, value));
            }
            _ => match probe(&key, &value) {
                Probe::Known => {
                    kept.push((key.clone(), value.clone()));
                    shown.push((key, value));
                }
                Probe::Unknown => dropped.push(key),
                Probe::Invalid(why) => {
                    return Err(bad_url(url, format!("parameter {key:?}: {why}")));
                }
            },
        }
    }
    warn_dropped(url, "PostgreSQL", &dropped);
    let config: tokio_postgres::Config = format!("postgresql://{base}{}", render(&kept))
        .parse()
        .map_err(|e| bad_url(url, source_chain(&e)))?;
    let mut secrets = userinfo_secrets(url, base);
    if let Some(password) = config.get_password() {
        let password = String::from_utf8_lossy(password).into_owned();
        if !password.is_empty() && !secrets.contains(&password) {
            secrets.push(password);
        }
    }
    Ok(PostgresUrl {
        config: Box::new(config),
        tls,
        shown: redact(&format!("postgresql://{base}{}", render(&shown))),
        secrets,
    })
}

/// `?k=v&…`, percent-encoded (empty for no parameters).
fn render(params: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.extend(utf8_percent_encode(k, COMPONENT));
        out.push('=');
        out.extend(utf8_percent_encode(v, COMPONENT));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::super::{parse as parse_url, Target};
    use super::*;
    use tokio_postgres::config::Host;

    fn pg_url(url: &str) -> PostgresUrl {
        match parse_url(&DatabaseUrl::new(url)).unwrap() {
            Target::Postgres(pg) => pg,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn postgres_forms() {
        for url in [
            "postgres://nova:s3cr%3At@db.example:5432/nova",
            "postgresql://nova:s3cr%3At@db.example:5432/nova",
            "postgresql+psycopg2://nova:s3cr%3At@db.example:5432/nova?client_encoding=utf8",
        ] {
            let pg = pg_url(url);
            assert_eq!(
                pg.redacted(),
                "postgresql://nova:***@db.example:5432/nova",
                "{url}"
            );
            assert_eq!(pg.secrets(), ["s3cr%3At", "s3cr:t"]);
            assert!(!format!("{pg:?}").contains("s3cr"));
            let config = pg.config();
            assert_eq!(config.get_password(), Some(&b"s3cr:t"[..]));
            assert_eq!(config.get_user(), Some("nova"));
            assert_eq!(config.get_dbname(), Some("nova"));
            assert_eq!(config.get_ports(), [5432]);
            assert_eq!(config.get_hosts(), [Host::Tcp("db.example".into())]);
        }
        let pg = pg_url("postgresql://u@/db?host=%2Fvar%2Frun%2Fpostgresql&options=-c%20x%3D1");
        assert_eq!(
            pg.config().get_hosts(),
            [Host::Unix("/var/run/postgresql".into())]
        );
        assert_eq!(pg.config().get_options(), Some("-c x=1"));
        assert_eq!(
            pg.redacted(),
            "postgresql://u@/db?host=%2Fvar%2Frun%2Fpostgresql&options=-c%20x%3D1"
        );
        // Several hosts (libpq's form), parsed by tokio-postgres.
        let pg = pg_url("postgresql://u:pw@a:5433,b/db?connect_timeout=3&password=other");
        assert_eq!(
            pg.config().get_hosts(),
            [Host::Tcp("a".into()), Host::Tcp("b".into())]
        );
        assert_eq!(pg.config().get_ports(), [5433, 5432]);
        assert_eq!(
            pg.config().get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(pg.secrets(), ["pw", "other"]);
        assert_eq!(
            pg.redacted(),
            "postgresql://u:***@a:5433,b/db?connect_timeout=3&password=***"
        );
    }

    #[test]
    fn tls_options_are_ours_in_the_libpq_and_sqlalchemy_forms() {
        for url in [
            "postgresql://nova:pw@db/nova?sslmode=verify-full&sslrootcert=/etc/ca.pem",
            "postgresql+psycopg2://nova:pw@db/nova?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&client_encoding=utf8",
        ] {
            let pg = pg_url(url);
            assert_eq!(pg.tls().mode, Some(PgSslMode::VerifyFull), "{url}");
            assert_eq!(pg.tls().ca.as_deref(), Some(Path::new("/etc/ca.pem")));
            assert_eq!(
                pg.redacted(),
                "postgresql://nova:***@db/nova?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem"
            );
        }
        assert_eq!(pg_url("postgresql://db/nova").tls(), &TlsParams::default());
        let err = parse_url(&DatabaseUrl::new(
            "postgresql://u:hunter2@db/nova?sslmode=verify-identity",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("db.url")
                && err.contains("unknown sslmode \"verify-identity\"")
                && err.contains("verify-ca, verify-full")
                && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn parameters_tokio_postgres_does_not_know_are_dropped() {
        let pg = pg_url(
            "postgresql://u@h/db?client_encoding=utf8&application_name=x&gssencmode=disable",
        );
        assert_eq!(pg.config().get_application_name(), Some("x"));
        assert_eq!(pg.redacted(), "postgresql://u@h/db?application_name=x");
        // A bad value of a parameter it knows is an error naming the parameter.
        let err = parse_url(&DatabaseUrl::new(
            "postgresql://u:hunter2@h/db?connect_timeout=soon",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("parameter \"connect_timeout\"")
                && err.contains("invalid value for option `connect_timeout`")
                && !err.contains("hunter2"),
            "{err}"
        );
    }
}
