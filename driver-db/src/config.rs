//! `[db]`: the database driver's options, declared with its registration: the table,
//! its secret (`url`) and the nova.conf option that feeds it (`[database] connection`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use servicegroup_core::config::{duration, DriverConfig, DriverTable, InvalidKey, NovaOption};
use servicegroup_core::DatabaseUrl;

use crate::tls::{MysqlSslMode, PgSslMode};

/// The table this driver reads: `[db]`, `SERVICEGROUP_DB__*`, and nova.conf's
/// `[database] connection` as `db.url`. `db.url` is secret: it is shown with its
/// password masked and never appears in errors, logs or `Debug`.
pub const CONFIG: DriverConfig = DriverConfig::new::<DbConfig>(crate::NAME)
    .secrets(&["url"])
    .nova(&[NovaOption::new("database", "connection", "url")]);

/// `[db]`: the database driver's options.
///
/// Set from code with `config.set("db.url", "postgres://...")?`; read with
/// `config.driver_config::<DbConfig>("db")?`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct DbConfig {
    /// Database URL (`sqlite://path`, `postgres://...`, `mysql://...`, Nova's SQLAlchemy
    /// forms). `None`: the embedded default, a SQLite file in the state directory.
    pub url: Option<DatabaseUrl>,
    /// Connections in the general pool: listings, watch polls, operator calls
    /// (SQLite: the read-only connections). Default 8.
    pub pool_size: u32,
    /// Connections reserved for heartbeats and registrations (joins), besides
    /// `pool_size`, so a heartbeat never queues behind a listing, a watch poll or an
    /// operator call for a connection. 0: they share the general pool. Default 2.
    /// SQLite has one writer connection for them whatever the value (see
    /// docs/db-driver.md, "Lanes").
    pub heartbeat_pool_size: u32,
    /// Connect, query and pool-checkout timeout. Default 5 s.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// PostgreSQL only: libpq's `sslmode` (`disable`, `prefer`, `require`,
    /// `verify-ca`, `verify-full`). Wins over `sslmode=` in the URL. Unset: the URL's,
    /// else `prefer`. See docs/operations.md, "TLS to the databases".
    pub sslmode: Option<PgSslMode>,
    /// PostgreSQL only: libpq's `sslrootcert`, a PEM file of the CA certificate(s)
    /// the server's certificate must chain to. Wins over the URL's.
    pub sslrootcert: Option<PathBuf>,
    /// MySQL/MariaDB only: the MySQL client's `ssl-mode` (`DISABLED`, `PREFERRED`,
    /// `REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY`). Wins over `ssl-mode=` in the URL.
    /// Unset: the URL's, else `VERIFY_IDENTITY` with a CA file and `PREFERRED` without.
    pub ssl_mode: Option<MysqlSslMode>,
    /// MySQL/MariaDB only: the MySQL client's `ssl-ca`, a PEM file of the CA
    /// certificate(s). Wins over the URL's `ssl-ca` / `ssl_ca`.
    pub ssl_ca: Option<PathBuf>,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: 8,
            heartbeat_pool_size: 2,
            timeout: Duration::from_secs(5),
            sslmode: None,
            sslrootcert: None,
            ssl_mode: None,
            ssl_ca: None,
        }
    }
}

impl DriverTable for DbConfig {
    fn check(&self) -> Result<(), InvalidKey> {
        if self
            .url
            .as_ref()
            .is_some_and(|u| u.expose().trim().is_empty())
        {
            return Err(InvalidKey::new("url", "must not be empty"));
        }
        if self.pool_size == 0 {
            return Err(InvalidKey::new("pool_size", "must be at least 1"));
        }
        for (key, path) in [("sslrootcert", &self.sslrootcert), ("ssl_ca", &self.ssl_ca)] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(InvalidKey::new(key, "must not be empty"));
            }
        }
        Ok(())
    }
}
