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
//! What is ours here: the schemes and SQLAlchemy's `+driver` suffixes, the SQLite
//! forms, the TLS options (`sslmode`/`sslrootcert`, `ssl-mode`/`ssl-ca`: see
//! [`crate::tls`]), the parameters Nova's URLs carry for Python drivers, and
//! redaction. The rest is parsed by the client libraries themselves
//! (`tokio_postgres::Config`, `mysql_async::Opts` on the `url` crate): a parameter a
//! client does not know is dropped with a WARN naming it, a bad value of one it knows
//! is an error.
//!
//! Nothing here ever puts a password into an error message: messages show the URL
//! redacted ([`servicegroup_core::config::secret::redact`]).

use std::fmt;
use std::path::PathBuf;

use servicegroup_core::{DatabaseUrl, Error, Result};

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "mysql")]
pub use mysql::MysqlUrl;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
pub use postgres::PostgresUrl;

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
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum Target {
    /// A SQLite database.
    Sqlite(SqliteLocation),
    /// A PostgreSQL server (password shown only through [`Target::redacted`] and
    /// `Debug`, which hide it).
    #[cfg(feature = "postgres")]
    Postgres(PostgresUrl),
    /// A MySQL or MariaDB server (password hidden by [`Target::redacted`] and `Debug`).
    #[cfg(feature = "mysql")]
    Mysql(MysqlUrl),
}

impl Target {
    /// The backend this target needs.
    pub fn kind(&self) -> BackendKind {
        match self {
            Target::Sqlite(_) => BackendKind::Sqlite,
            #[cfg(feature = "postgres")]
            Target::Postgres(_) => BackendKind::Postgres,
            #[cfg(feature = "mysql")]
            Target::Mysql(_) => BackendKind::Mysql,
        }
    }

    /// A printable form without any password.
    pub fn redacted(&self) -> String {
        match self {
            Target::Sqlite(SqliteLocation::File(path)) => format!("sqlite://{}", path.display()),
            Target::Sqlite(SqliteLocation::Memory) => "sqlite::memory:".to_owned(),
            #[cfg(feature = "postgres")]
            Target::Postgres(url) => url.redacted().to_owned(),
            #[cfg(feature = "mysql")]
            Target::Mysql(url) => url.redacted().to_owned(),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({:?})", self.redacted())
    }
}

/// Splits `raw` (what follows `scheme:`) into the part before `?` and its query
/// parameters, percent-decoded, in order. A parameter without `=` is an error.
#[cfg(feature = "postgres")]
pub(crate) fn split_query<'a>(
    url: &DatabaseUrl,
    raw: &'a str,
) -> Result<(&'a str, Vec<(String, String)>)> {
    let (base, query) = raw.split_once('?').unwrap_or((raw, ""));
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(bad_url(
                url,
                format!("query parameter {:?} has no value", decode(url, pair)?),
            ));
        };
        params.push((decode(url, k)?, decode(url, v)?));
    }
    Ok((base, params))
}

/// `%XX` escapes decoded (the percent-encoding crate's codec); not UTF-8 is an error.
pub(crate) fn decode(url: &DatabaseUrl, s: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| bad_url(url, "a percent-escape does not decode to UTF-8"))
}

/// The secrets of a URL's userinfo (`user:PASSWORD@`): the password as written and
/// percent-decoded, for scrubbing messages.
pub(crate) fn userinfo_secrets(url: &DatabaseUrl, base: &str) -> Vec<String> {
    let authority = base.split('/').next().unwrap_or("");
    let mut out = Vec::new();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if let Some((_, password)) = userinfo.split_once(':') {
            if !password.is_empty() {
                out.push(password.to_owned());
                if let Ok(decoded) = decode(url, password) {
                    if decoded != password {
                        out.push(decoded);
                    }
                }
            }
        }
    }
    out
}

/// Warns about parameters dropped from `db.url` because the client does not know them.
pub(crate) fn warn_dropped(url: &DatabaseUrl, client: &str, dropped: &[String]) {
    if !dropped.is_empty() {
        tracing::warn!(
            url = %shown(url),
            ignored = ?dropped,
            "ignoring query parameters the {client} client does not know in `{URL_KEY}`: {dropped:?}"
        );
    }
}

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
    let (kind, rest) = scheme(url)?;
    if !kind.is_compiled_in() {
        return Err(not_compiled_in(url, kind));
    }
    match kind {
        BackendKind::Sqlite => parse_sqlite(url, rest).map(Target::Sqlite),
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => postgres::parse(url, rest).map(Target::Postgres),
        #[cfg(feature = "mysql")]
        BackendKind::Mysql => mysql::parse(url, rest).map(Target::Mysql),
        #[allow(unreachable_patterns)]
        kind => Err(not_compiled_in(url, kind)),
    }
}

/// The backend a URL's scheme names (SQLAlchemy's `+driver` ignored) and what
/// follows `scheme:`.
fn scheme(url: &DatabaseUrl) -> Result<(BackendKind, &str)> {
    let raw = url.expose().trim();
    if raw.is_empty() {
        return Err(bad_url(url, "it is empty"));
    }
    let Some((scheme_full, rest)) = raw.split_once(':') else {
        return Err(bad_url(
            url,
            "it has no scheme (such as sqlite: or postgresql:)",
        ));
    };
    // SQLAlchemy's dialect+driver: `postgresql+psycopg2`, `sqlite+pysqlite`.
    let scheme = scheme_full.split('+').next().unwrap_or("");
    let kind = match scheme.to_ascii_lowercase().as_str() {
        "sqlite" | "sqlite3" => BackendKind::Sqlite,
        "postgres" | "postgresql" | "pgsql" => BackendKind::Postgres,
        "mysql" | "mariadb" => BackendKind::Mysql,
        other => {
            return Err(bad_url(
                url,
                format!(
                    "unknown scheme {other:?} (known: sqlite, postgres, postgresql, mysql, mariadb)"
                ),
            ))
        }
    };
    if kind != BackendKind::Sqlite && !rest.starts_with("//") {
        return Err(bad_url(
            url,
            format!(
                "a {kind} URL starts with {}:// (user:password@host:port/dbname)",
                scheme.to_ascii_lowercase()
            ),
        ));
    }
    Ok((kind, rest))
}

/// The error for a URL whose backend this build lacks.
fn not_compiled_in(url: &DatabaseUrl, kind: BackendKind) -> Error {
    let available = BackendKind::compiled_in();
    Error::config(format!(
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
    ))
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
    let path = percent_encoding::percent_decode_str(&path)
        .decode_utf8_lossy()
        .into_owned();
    match path.as_str() {
        "" | ":memory:" | "/:memory:" => Ok(SqliteLocation::Memory),
        p if p.contains('\0') => Err(bad_url(url, "the path contains a NUL byte")),
        p if p.ends_with('/') => Err(bad_url(url, "the path names a directory, not a file")),
        p => Ok(SqliteLocation::File(PathBuf::from(p))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use servicegroup_core::ErrorKind;

    fn t(url: &str) -> Result<Target> {
        parse(&DatabaseUrl::new(url))
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

    #[cfg(not(feature = "mysql"))]
    #[test]
    fn mysql_url_without_the_feature_names_it() {
        let err = parse(&DatabaseUrl::new("mysql://u:hunter2@h/db")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let msg = err.to_string();
        assert!(
            msg.contains("db.url") && msg.contains("`mysql` cargo feature"),
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
}
