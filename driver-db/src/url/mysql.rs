//! MySQL / MariaDB URLs: `mysql://`, `mariadb://` and SQLAlchemy's `mysql+pymysql://`
//! (Nova's usual `[database] connection`).
//!
//! The `url` crate parses them and mysql_async reads its options from them
//! ([`mysql_async::Opts::from_url`]). Ours:
//! - `ssl-mode` (also `ssl_mode`) and `ssl-ca` (also PyMySQL's `ssl_ca`), and PyMySQL's
//!   `ssl_check_hostname=false` (no `ssl-mode` given: `VERIFY_CA`); mysql_async's own
//!   `require_ssl` / `verify_ca` / `verify_identity` are read back as the mode they
//!   mean;
//! - PyMySQL's `unix_socket`, which is mysql_async's `socket`;
//! - parameters mysql_async does not know (PyMySQL's `charset=utf8`, which most
//!   Nova URLs carry) are dropped with a WARN (mysql_async says which, by name);
//! - a host and a database are required; redaction.

use std::fmt;
use std::path::PathBuf;

use mysql_async::{Opts, UrlError};
use servicegroup_core::{DatabaseUrl, Result};

use super::{bad_url, decode, userinfo_secrets, warn_dropped};
use crate::tls::{MysqlSslMode, TlsParams};

/// A parsed MySQL/MariaDB URL: mysql_async's options, the TLS options it names, and
/// its redacted form. `Debug` shows only the redacted form.
#[derive(Clone, PartialEq)]
pub struct MysqlUrl {
    opts: Opts,
    tls: TlsParams<MysqlSslMode>,
    prefer_socket_set: bool,
    shown: String,
    secrets: Vec<String>,
}

impl MysqlUrl {
    /// The URL normalized to `mysql://`, its password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// mysql_async's options from the URL (its TLS options not applied: the backend
    /// sets them from [`MysqlUrl::tls`] and the `[db]` keys).
    pub(crate) fn opts(&self) -> &Opts {
        &self.opts
    }

    /// `ssl-mode` and `ssl-ca`, if the URL sets them.
    pub(crate) fn tls(&self) -> &TlsParams<MysqlSslMode> {
        &self.tls
    }

    /// Whether the URL sets `prefer_socket` itself (else the driver stays on TCP).
    pub(crate) fn prefer_socket_set(&self) -> bool {
        self.prefer_socket_set
    }

    /// The password as written and percent-decoded (for scrubbing messages).
    pub(crate) fn secrets(&self) -> &[String] {
        &self.secrets
    }
}

impl fmt::Debug for MysqlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MysqlUrl({:?})", self.shown)
    }
}

/// A query parameter and what becomes of it.
struct Param {
    key: String,
    value: String,
    /// Handed to mysql_async (else it is ours and only shown).
    client: bool,
}

/// Parses a `mysql:` / `mariadb:` / `mysql+pymysql:` URL; `rest` is what follows the
/// scheme's colon.
pub(super) fn parse(url: &DatabaseUrl, rest: &str) -> Result<MysqlUrl> {
    let mut parsed = url::Url::parse(&format!("mysql:{rest}"))
        .map_err(|e| bad_url(url, format!("{e} (mysql://user:password@host:port/dbname)")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad_url(
            url,
            "it names no host (mysql://user:password@host:port/dbname)",
        ));
    }
    if parsed.path().trim_matches('/').is_empty() {
        return Err(bad_url(
            url,
            "it names no database (mysql://user:password@host:port/dbname)",
        ));
    }
    let mut tls = TlsParams::default();
    let mut check_hostname = None;
    let mut params = Vec::new();
    for (key, value) in parsed.query_pairs() {
        let (key, value) = (key.into_owned(), value.into_owned());
        let client = match key.as_str() {
            "ssl-mode" | "ssl_mode" => {
                tls.mode = Some(value.parse().map_err(|e| bad_url(url, e))?);
                false
            }
            "ssl-ca" | "ssl_ca" => {
                tls.ca = Some(PathBuf::from(&value));
                false
            }
            "ssl_check_hostname" => {
                check_hostname = Some(!matches!(
                    value.to_ascii_lowercase().as_str(),
                    "false" | "0" | "no" | "off"
                ));
                false
            }
            _ => true,
        };
        // PyMySQL's name for the socket path.
        let key = if key == "unix_socket" {
            "socket".to_owned()
        } else {
            key
        };
        params.push(Param { key, value, client });
    }
    let mut dropped: Vec<String> = Vec::new();
    let opts = loop {
        let mut client = parsed.clone();
        client.set_query(None);
        let kept: Vec<&Param> = params
            .iter()
            .filter(|p| p.client && !dropped.contains(&p.key))
            .collect();
        if !kept.is_empty() {
            client
                .query_pairs_mut()
                .extend_pairs(kept.iter().map(|p| (&p.key, &p.value)));
        }
        match Opts::from_url(client.as_str()) {
            Ok(opts) => break opts,
            Err(UrlError::UnknownParameter { param }) if !dropped.contains(&param) => {
                dropped.push(param)
            }
            Err(e) => return Err(bad_url(url, e)),
        }
    };
    warn_dropped(url, "MySQL", &dropped);
    if tls.mode.is_none() {
        tls.mode = match opts.ssl_opts() {
            // mysql_async's own require_ssl / verify_ca / verify_identity.
            Some(ssl) if ssl.accept_invalid_certs() => Some(MysqlSslMode::Required),
            Some(ssl) if ssl.skip_domain_validation() => Some(MysqlSslMode::VerifyCa),
            Some(_) => Some(MysqlSslMode::VerifyIdentity),
            None if check_hostname == Some(false) => Some(MysqlSslMode::VerifyCa),
            None => None,
        };
    }
    let mut secrets = userinfo_secrets(url, rest.trim_start_matches('/'));
    if let Some(password) = parsed.password() {
        for s in [password.to_owned(), decode(url, password)?] {
            if !s.is_empty() && !secrets.contains(&s) {
                secrets.push(s);
            }
        }
    }
    parsed
        .set_scheme("mysql")
        .map_err(|()| bad_url(url, "its scheme cannot be read as mysql://"))?;
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    parsed.set_query(None);
    let shown: Vec<&Param> = params
        .iter()
        .filter(|p| !dropped.contains(&p.key))
        .collect();
    if !shown.is_empty() {
        parsed
            .query_pairs_mut()
            .extend_pairs(shown.iter().map(|p| (&p.key, &p.value)));
    }
    Ok(MysqlUrl {
        prefer_socket_set: params.iter().any(|p| p.client && p.key == "prefer_socket"),
        opts,
        tls,
        shown: parsed.to_string(),
        secrets,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{parse, Target};
    use super::*;
    use servicegroup_core::ErrorKind;

    fn my(url: &str) -> MysqlUrl {
        match parse(&DatabaseUrl::new(url)).unwrap() {
            Target::Mysql(my) => my,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn mysql_forms() {
        for url in [
            "mysql://nova:s3cr%3At@db.example:3306/nova",
            "mariadb://nova:s3cr%3At@db.example:3306/nova",
            "MYSQL+PYMYSQL://nova:s3cr%3At@db.example:3306/nova?charset=utf8",
            "mysql+mysqldb://nova:s3cr%3At@db.example:3306/nova",
        ] {
            let my = my(url);
            assert_eq!(
                my.redacted(),
                "mysql://nova:***@db.example:3306/nova",
                "{url}"
            );
            assert_eq!(my.secrets(), ["s3cr%3At", "s3cr:t"]);
            assert!(!format!("{my:?}").contains("s3cr"));
            assert_eq!(my.opts().pass(), Some("s3cr:t"));
            assert_eq!(my.opts().user(), Some("nova"));
            assert_eq!(my.opts().db_name(), Some("nova"));
            assert_eq!(my.opts().ip_or_hostname(), "db.example");
            assert_eq!(my.opts().tcp_port(), 3306);
            assert!(!my.prefer_socket_set());
        }
        // Nova's usual form: no port; PyMySQL's unix_socket becomes `socket`.
        let my = my(
            "mysql+pymysql://nova:pw@controller/nova?charset=utf8&unix_socket=%2Frun%2Fmysqld%2Fmysqld.sock",
        );
        assert_eq!(my.opts().socket(), Some("/run/mysqld/mysqld.sock"));
        assert_eq!(
            my.redacted(),
            "mysql://nova:***@controller/nova?socket=%2Frun%2Fmysqld%2Fmysqld.sock"
        );
        assert!(my.tls().mode.is_none());
        assert!(self::my("mysql://nova:pw@h/nova?prefer_socket=true").prefer_socket_set());
    }

    #[test]
    fn tls_options_in_the_mysql_and_pymysql_spellings() {
        for (url, mode, ca) in [
            (
                "mysql://u:pw@db/nova?ssl-mode=VERIFY_IDENTITY&ssl-ca=/etc/ca.pem",
                Some(MysqlSslMode::VerifyIdentity),
                Some("/etc/ca.pem"),
            ),
            (
                "mysql+pymysql://u:pw@db/nova?charset=utf8&ssl_mode=required",
                Some(MysqlSslMode::Required),
                None,
            ),
            // PyMySQL: a CA file alone (the mode follows from it in the backend).
            (
                "mysql+pymysql://u:pw@db/nova?ssl_ca=%2Fetc%2Fca.pem",
                None,
                Some("/etc/ca.pem"),
            ),
            (
                "mysql+pymysql://u:pw@db/nova?ssl_ca=/etc/ca.pem&ssl_check_hostname=false",
                Some(MysqlSslMode::VerifyCa),
                Some("/etc/ca.pem"),
            ),
            // mysql_async's own parameters, read back as the mode they mean.
            (
                "mysql://u:pw@db/nova?require_ssl=true&verify_ca=false",
                Some(MysqlSslMode::Required),
                None,
            ),
            (
                "mysql://u:pw@db/nova?require_ssl=true&verify_identity=false",
                Some(MysqlSslMode::VerifyCa),
                None,
            ),
        ] {
            let my = my(url);
            assert_eq!(my.tls().mode, mode, "{url}");
            assert_eq!(my.tls().ca.as_deref(), ca.map(Path::new), "{url}");
        }
        assert_eq!(
            my("mysql://u:pw@db/nova?ssl-mode=VERIFY_CA&ssl-ca=/etc/ca.pem").redacted(),
            "mysql://u:***@db/nova?ssl-mode=VERIFY_CA&ssl-ca=%2Fetc%2Fca.pem"
        );
        let err = parse(&DatabaseUrl::new(
            "mysql://u:hunter2@db/nova?ssl-mode=verify-full",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("db.url")
                && err.contains("unknown ssl-mode \"verify-full\"")
                && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn mysql_url_with_the_feature_parses() {
        let target = parse(&DatabaseUrl::new("mysql://u:hunter2@h/db")).unwrap();
        assert_eq!(target.kind().feature(), "mysql");
        assert!(!format!("{target:?}").contains("hunter2"));
        for bad in [
            "mysql://u:hunter2@h/",
            "mysql://u:hunter2@h",
            "mysql://u:hunter2@/db",
            "mysql://u:hunter2@h:port/db",
            "mysql://u:hunter2@h/db?tcp_nodelay=maybe",
        ] {
            let err = parse(&DatabaseUrl::new(bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
            let shown = format!("{err} {err:?}");
            assert!(
                shown.contains("db.url") && !shown.contains("hunter2"),
                "{bad}: {shown}"
            );
        }
    }
}
