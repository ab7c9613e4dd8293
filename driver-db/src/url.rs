//! Database URLs: which backend a `[db] url` names and where it points.
//!
//! Accepted forms (the scheme decides the backend):
//!
//! | URL | meaning |
//! |---|---|
//! | `sqlite:///abs/path.db` | SQLite file `/abs/path.db` (sqlx's convention) |
//! | `sqlite://rel.db`, `sqlite:rel.db` | SQLite file `rel.db`, relative to the working directory |
//! | `sqlite:////abs/path` | SQLite file `/abs/path` (SQLAlchemy / Nova's form) |
//! | `sqlite::memory:`, `sqlite://:memory:`, `sqlite://` | a private in-memory database |
//! | `postgres://…`, `postgresql://…` | PostgreSQL (libpq-style URL: user, password, hosts, dbname, parameters) |
//! | `postgresql+psycopg2://…`, `sqlite+pysqlite://…` | SQLAlchemy's `+driver` suffix is ignored |
//! | `mysql://…`, `mariadb://…`, `mysql+pymysql://…` | MySQL / MariaDB (user, password, host, port, dbname, parameters) |
//!
//! Nothing here ever puts a password into an error message: messages show the URL
//! through [`redact`].

use std::fmt;
use std::path::PathBuf;

use servicegroup_core::config::secret::redact;
use servicegroup_core::{DatabaseUrl, Error, Result};

mod mysql;
pub use mysql::MysqlUrl;

/// The configuration key URLs come from, named in every URL error.
pub const URL_KEY: &str = "db.url";

/// The database products this driver knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// SQLite (file or in-memory), the embedded default.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
}

impl BackendKind {
    /// The product name, as shown in messages (`SQLite`, `PostgreSQL`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "SQLite",
            BackendKind::Postgres => "PostgreSQL",
            BackendKind::Mysql => "MySQL/MariaDB",
        }
    }

    /// The cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
            BackendKind::Mysql => "mysql",
        }
    }

    /// Whether this build has the backend compiled in.
    pub fn is_compiled_in(self) -> bool {
        match self {
            BackendKind::Sqlite => cfg!(feature = "sqlite"),
            BackendKind::Postgres => cfg!(feature = "postgres"),
            BackendKind::Mysql => cfg!(feature = "mysql"),
        }
    }

    /// Every backend compiled into this build.
    pub fn compiled_in() -> Vec<BackendKind> {
        [
            BackendKind::Sqlite,
            BackendKind::Postgres,
            BackendKind::Mysql,
        ]
        .into_iter()
        .filter(|k| k.is_compiled_in())
        .collect()
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a SQLite database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteLocation {
    /// A database file.
    File(PathBuf),
    /// A private in-memory database (one connection, gone with the driver).
    Memory,
}

/// A parsed `[db] url`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// A SQLite database.
    Sqlite(SqliteLocation),
    /// A PostgreSQL server: the URL normalized to `postgresql://` (password included:
    /// shown only through [`Target::redacted`] and `Debug`, which hide it).
    Postgres(PostgresUrl),
    /// A MySQL or MariaDB server: the URL normalized to `mysql://` (password hidden
    /// by [`Target::redacted`] and `Debug`).
    Mysql(MysqlUrl),
}

impl Target {
    /// The backend this target needs.
    pub fn kind(&self) -> BackendKind {
        match self {
            Target::Sqlite(_) => BackendKind::Sqlite,
            Target::Postgres(_) => BackendKind::Postgres,
            Target::Mysql(_) => BackendKind::Mysql,
        }
    }

    /// A printable form without any password.
    pub fn redacted(&self) -> String {
        match self {
            Target::Sqlite(SqliteLocation::File(path)) => format!("sqlite://{}", path.display()),
            Target::Sqlite(SqliteLocation::Memory) => "sqlite::memory:".to_owned(),
            Target::Postgres(url) => url.redacted(),
            Target::Mysql(url) => url.redacted(),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({:?})", self.redacted())
    }
}

/// A PostgreSQL or MySQL/MariaDB server URL (`scheme://user:password@host:port/db?params`),
/// normalized to the scheme the client library reads.
///
/// `Debug` and [`ServerUrl::redacted`] hide the password; the secrets it holds
/// (raw and percent-decoded password) are available to scrub error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// `postgresql` or `mysql`.
    scheme: &'static str,
    /// `user:password@host:port/db` (everything between `://` and `?`).
    base: String,
    /// Query parameters the client knows, percent-decoded, in order.
    params: Vec<(String, String)>,
}

/// A PostgreSQL URL.
pub type PostgresUrl = ServerUrl;

impl ServerUrl {
    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.render(&[]))
    }

    /// The password and its percent-decoded form, if there is one (for scrubbing messages).
    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let authority = self.base.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, password)) = userinfo.split_once(':') {
                if !password.is_empty() {
                    out.push(password.to_owned());
                    let decoded = percent_decode(password);
                    if decoded != password {
                        out.push(decoded);
                    }
                }
            }
        }
        for (k, v) in &self.params {
            if k == "password" && !v.is_empty() {
                out.push(v.clone());
            }
        }
        out
    }

    /// The value of parameter `key`, if set.
    pub(crate) fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The full URL (password included) with `extra` parameters added or replacing
    /// existing ones, as handed to the client library. Never log it.
    pub(crate) fn render(&self, extra: &[(&str, String)]) -> String {
        let mut params: Vec<(String, String)> = self
            .params
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .cloned()
            .collect();
        params.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let mut out = format!("{}://{}", self.scheme, self.base);
        for (i, (k, v)) in params.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(&percent_encode(k));
            out.push('=');
            out.push_str(&percent_encode(v));
        }
        out
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerUrl({:?})", self.redacted())
    }
}

/// Query parameters tokio-postgres understands; others (SQLAlchemy's, such as
/// `client_encoding`) are dropped with a warning instead of failing the connect.
const POSTGRES_PARAMS: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

fn bad_url(url: &DatabaseUrl, why: impl fmt::Display) -> Error {
    Error::config(format!(
        "`{URL_KEY}` = {:?} is not a usable database URL: {why}. Expected sqlite:///abs/path.db, \
         sqlite://rel.db, sqlite::memory:, postgresql://user:password@host:port/dbname, \
         mysql://user:password@host:port/dbname (SQLAlchemy forms such as \
         postgresql+psycopg2://, mysql+pymysql:// and sqlite:////abs/path work too)",
        shown(url)
    ))
}

/// A URL as it may appear in a message: redacted, and for a URL too malformed to
/// locate a password in (no `scheme://`), only its scheme.
fn shown(url: &DatabaseUrl) -> String {
    let raw = url.expose().trim();
    if raw.contains("://") || !raw.contains('@') {
        return url.redacted();
    }
    match raw.split_once(':') {
        Some((scheme, _)) => format!("{scheme}:…"),
        None => "…".to_owned(),
    }
}

/// Parses a `[db] url` into a [`Target`]. A malformed URL, an unknown scheme, or a
/// backend that is not compiled into this build is an `ErrorKind::Config` error that
/// names the key `db.url` (and, for a missing backend, the cargo feature to enable).
pub fn parse(url: &DatabaseUrl) -> Result<Target> {
    let target = parse_any(url)?;
    let kind = target.kind();
    if !kind.is_compiled_in() {
        let available = BackendKind::compiled_in();
        return Err(Error::config(format!(
            "`{URL_KEY}` = {:?} needs the {kind} backend, which is not compiled into this build \
             of the db driver: enable the `{}` cargo feature of the `servicegroup` crate \
             (or of `servicegroup-driver-db`). Backends in this build: {}",
            shown(url),
            kind.feature(),
            if available.is_empty() {
                "none".to_owned()
            } else {
                available
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )));
    }
    Ok(target)
}

/// Parses without checking which backends are compiled in.
fn parse_any(url: &DatabaseUrl) -> Result<Target> {
    let raw = url.expose().trim();
    if raw.is_empty() {
        return Err(bad_url(url, "it is empty"));
    }
    let Some(colon) = raw.find(':') else {
        return Err(bad_url(
            url,
            "it has no scheme (such as sqlite: or postgresql:)",
        ));
    };
    let scheme_full = raw[..colon].to_ascii_lowercase();
    let rest = &raw[colon + 1..];
    // SQLAlchemy's dialect+driver: `postgresql+psycopg2`, `sqlite+pysqlite`.
    let scheme = scheme_full.split('+').next().unwrap_or("");
    match scheme {
        "sqlite" | "sqlite3" => parse_sqlite(url, rest).map(Target::Sqlite),
        "postgres" | "postgresql" | "pgsql" => parse_postgres(url, rest).map(Target::Postgres),
        "mysql" | "mariadb" => mysql::parse_mysql(url, rest).map(Target::Mysql),
        other => Err(bad_url(
            url,
            format!(
                "unknown scheme {other:?} (known: sqlite, postgres, postgresql, mysql, mariadb)"
            ),
        )),
    }
}

fn parse_sqlite(url: &DatabaseUrl, rest: &str) -> Result<SqliteLocation> {
    // Query parameters (sqlx's `?mode=rwc`, SQLAlchemy's `?check_same_thread=false`)
    // have no meaning here; ignore them, loudly.
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        let keys: Vec<&str> = query
            .split('&')
            .map(|p| p.split('=').next().unwrap_or(""))
            .collect();
        tracing::warn!(
            url = %shown(url),
            ignored = ?keys,
            "ignoring query parameters of the SQLite URL in `{URL_KEY}`: {keys:?}"
        );
    }
    let path = match rest.strip_prefix("//") {
        // `sqlite:////abs` (SQLAlchemy) -> `//abs` -> `/abs`; `sqlite:///abs` -> `/abs`;
        // `sqlite://rel.db` -> `rel.db`; `sqlite://` -> memory (SQLAlchemy).
        Some(after) => {
            if let Some(abs) = after.strip_prefix("//") {
                format!("/{abs}")
            } else {
                after.to_owned()
            }
        }
        // `sqlite::memory:` and `sqlite:rel.db` (sqlx).
        None => rest.to_owned(),
    };
    let path = percent_decode(&path);
    match path.as_str() {
        "" | ":memory:" | "/:memory:" => Ok(SqliteLocation::Memory),
        p if p.contains('\0') => Err(bad_url(url, "the path contains a NUL byte")),
        p if p.ends_with('/') => Err(bad_url(url, "the path names a directory, not a file")),
        p => Ok(SqliteLocation::File(PathBuf::from(p))),
    }
}

fn parse_postgres(url: &DatabaseUrl, rest: &str) -> Result<PostgresUrl> {
    let Some(after) = rest.strip_prefix("//") else {
        return Err(bad_url(
            url,
            "a PostgreSQL URL starts with postgresql:// (or postgres://)",
        ));
    };
    let (base, query) = match after.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (after, None),
    };
    let authority = base.split('/').next().unwrap_or("");
    let hostport = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    for hp in hostport.split(',').filter(|h| !h.is_empty()) {
        let port = if hp.starts_with('[') {
            hp.rsplit_once("]:").map(|(_, p)| p)
        } else {
            hp.rsplit_once(':').map(|(_, p)| p)
        };
        if let Some(port) = port {
            if port.parse::<u16>().is_err() {
                return Err(bad_url(url, format!("the port {port:?} is not a number")));
            }
        }
    }
    let mut params = Vec::new();
    let mut dropped = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(bad_url(
                url,
                format!(
                    "query parameter {:?} has no value",
                    percent_decode(pair.split('=').next().unwrap_or(""))
                ),
            ));
        };
        let (k, v) = (percent_decode(k), percent_decode(v));
        if POSTGRES_PARAMS.contains(&k.as_str()) {
            params.push((k, v));
        } else {
            dropped.push(k);
        }
    }
    if !dropped.is_empty() {
        tracing::warn!(
            url = %shown(url),
            ignored = ?dropped,
            "ignoring query parameters the PostgreSQL client does not know in `{URL_KEY}`: {dropped:?}"
        );
    }
    Ok(ServerUrl {
        scheme: "postgresql",
        base: base.to_owned(),
        params,
    })
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes everything but unreserved characters as `%XX`.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use servicegroup_core::ErrorKind;

    fn t(url: &str) -> Result<Target> {
        parse_any(&DatabaseUrl::new(url))
    }

    fn file(url: &str) -> PathBuf {
        match t(url).unwrap() {
            Target::Sqlite(SqliteLocation::File(p)) => p,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn sqlite_forms() {
        assert_eq!(file("sqlite:///abs/path.db"), PathBuf::from("/abs/path.db"));
        assert_eq!(file("sqlite:////abs/path"), PathBuf::from("/abs/path"));
        assert_eq!(file("sqlite://rel.db"), PathBuf::from("rel.db"));
        assert_eq!(file("sqlite:rel.db"), PathBuf::from("rel.db"));
        assert_eq!(
            file("sqlite+pysqlite:////var/lib/nova/nova.sqlite"),
            PathBuf::from("/var/lib/nova/nova.sqlite")
        );
        assert_eq!(
            file("SQLITE:///a%20b.db?mode=rwc"),
            PathBuf::from("/a b.db")
        );
        for memory in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://",
            "sqlite:///:memory:",
        ] {
            assert_eq!(
                t(memory).unwrap(),
                Target::Sqlite(SqliteLocation::Memory),
                "{memory}"
            );
        }
    }

    #[test]
    fn postgres_forms() {
        for url in [
            "postgres://nova:s3cr%3At@db.example:5432/nova",
            "postgresql://nova:s3cr%3At@db.example:5432/nova",
            "postgresql+psycopg2://nova:s3cr%3At@db.example:5432/nova?client_encoding=utf8",
        ] {
            let Target::Postgres(pg) = t(url).unwrap() else {
                panic!("{url}")
            };
            assert_eq!(
                pg.redacted(),
                "postgresql://nova:***@db.example:5432/nova",
                "{url}"
            );
            assert_eq!(
                pg.secrets(),
                vec!["s3cr%3At".to_owned(), "s3cr:t".to_owned()]
            );
            assert!(!format!("{pg:?}").contains("s3cr"));
            assert_eq!(
                pg.render(&[("connect_timeout", "5".into())]),
                "postgresql://nova:s3cr%3At@db.example:5432/nova?connect_timeout=5"
            );
        }
        let Target::Postgres(pg) =
            t("postgresql://u@/db?host=%2Fvar%2Frun%2Fpostgresql&options=-c%20x%3D1").unwrap()
        else {
            panic!()
        };
        assert_eq!(pg.param("host"), Some("/var/run/postgresql"));
        assert_eq!(pg.param("options"), Some("-c x=1"));
    }

    #[test]
    fn bad_urls_are_config_errors_naming_the_key_without_the_password() {
        for url in [
            "",
            "nonsense",
            "oracle://u:hunter2@h/db",
            "postgresql:u:hunter2@h/db",
            "postgresql://u:hunter2@h:port/db",
            "postgresql://u:hunter2@h/db?sslmode",
            "mysql://u:hunter2@h:port/db",
            "mysql://u:hunter2@/db",
            "mysql://u:hunter2@h",
            "mysql:u:hunter2@h/db",
            "sqlite:///dir/",
        ] {
            let err = t(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            let shown = format!("{err} {err:?}");
            assert!(shown.contains("db.url"), "{url}: {shown}");
            assert!(!shown.contains("hunter2"), "{url}: {shown}");
        }
    }

    #[cfg(not(feature = "postgres"))]
    #[test]
    fn postgres_url_without_the_feature_names_it() {
        let err = parse(&DatabaseUrl::new("postgresql://u:hunter2@h/db")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let msg = err.to_string();
        assert!(
            msg.contains("db.url") && msg.contains("`postgres` cargo feature"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[cfg(not(feature = "sqlite"))]
    #[test]
    fn sqlite_url_without_the_feature_names_it() {
        let err = parse(&DatabaseUrl::new("sqlite:///x.db")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let msg = err.to_string();
        assert!(
            msg.contains("db.url") && msg.contains("`sqlite` cargo feature"),
            "{msg}"
        );
    }

    #[test]
    fn percent_round_trip() {
        assert_eq!(percent_decode("a%20b%3d%zz%"), "a b=%zz%");
        assert_eq!(
            percent_encode("-c statement_timeout=5"),
            "-c%20statement_timeout%3D5"
        );
    }
}
