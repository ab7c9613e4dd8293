//! # servicegroup-driver-db
//!
//! The `db` servicegroup driver: membership in a SQL database, on diesel 2.3 +
//! diesel-async 0.9 with a deadpool connection pool.
//!
//! - **Backends** (cargo features, in the spirit of sqlx): `sqlite` (bundled
//!   libsqlite3, no system library; the embedded default), `postgres`
//!   (pure-Rust client, no libpq) and `mysql` (MySQL/MariaDB, pure-Rust client, no
//!   libmysqlclient). A URL whose backend is not compiled in is a `Config` error
//!   naming the feature to enable.
//! - **URLs** (`[db] url`): `sqlite:///abs/path.db`, `sqlite://rel.db`,
//!   `sqlite::memory:`, `postgres://…` / `postgresql://…`, `mysql://…` /
//!   `mariadb://…`, and Nova's SQLAlchemy forms (`postgresql+psycopg2://…`,
//!   `mysql+pymysql://…`, `sqlite:////abs/path`). Unset: a SQLite file
//!   at [`default_sqlite_path`]. Passwords never appear in errors, logs or `Debug`.
//! - **TLS** (rustls on ring, no OpenSSL): PostgreSQL's `sslmode` (`disable` …
//!   `verify-full`) and `sslrootcert`, MySQL/MariaDB's `ssl-mode` (`DISABLED` …
//!   `VERIFY_IDENTITY`) and `ssl-ca`, in the URL or as `[db]` keys ([`tls`]).
//! - **Schema**: one row per (group, member) with a unique key, the last heartbeat,
//!   the forced-down flag, the creation time, the holder (the 16-byte instance id of
//!   the handle holding it, and an epoch), when that holder registered, and the
//!   member's metadata (JSON); no index on any of the columns heartbeats and
//!   registrations write. Embedded migrations run when the driver is built,
//!   idempotently and safely when several processes start at once.
//! - **Registrations** follow core's identity contract in SQL: a new row gets epoch
//!   1, the holding instance keeps it, another instance adds one; unconditional ones
//!   are one statement per chunk (PostgreSQL: four array binds), conditional ones
//!   (`Absent`, `HeldAs`) one transaction that locks the rows it checks (SQLite: an
//!   immediate transaction), so of two processes claiming one member exactly one wins.
//! - **Heartbeats**: a batch is one statement, `UPDATE … SET last_seen = <db now>
//!   WHERE id IN (…) AND holder = <instance>` with the ids sorted and bound as one
//!   array (PostgreSQL `= ANY($1)`, SQLite `json_each(?)`, MySQL the ids as literals
//!   with `ORDER BY id`); a batch of several instances matches `(id, holder)` pairs
//!   instead. Rows that were not refreshed are found by a second statement only then:
//!   gone ones are reported missing (core registers them again), rows another
//!   instance holds superseded (fencing: a zombie cannot keep a member alive).
//!   Listing a group is one query.
//! - **One clock**: ages are computed by the database (`now() - last_seen`), never
//!   by comparing a client's clock with a stored time.
//! - **Asking only what is needed**: `list_in` (the members in one state) and
//!   `summary` (counts per state) are one query each, judged by the database on its
//!   own clock with core's liveness rule, shipping only the matching rows or four
//!   counts.
//! - **Lanes**: heartbeats and registrations have connections of their own
//!   (`[db] heartbeat_pool_size`), so they never queue behind a listing, a watch
//!   poll or an operator call.
//! - **Timeouts**: connect, statement and pool checkout are bounded by
//!   `[db] timeout`; an unreachable or slow database is `Unavailable` / `Timeout`,
//!   never "down".
//!
//! Register the driver by naming the crate once in your binary
//! (`use servicegroup_driver_db as _;`) or through the `servicegroup` facade's
//! `db` feature: rustc does not link a crate nothing names.
//!
//! ```no_run
//! # async fn demo() -> servicegroup_core::Result<()> {
//! use servicegroup_core::{Config, ServiceGroup};
//! use servicegroup_driver_db as _;
//!
//! let mut config = Config::with_driver("db");
//! config.set("db.url", "postgresql://nova:secret@127.0.0.1:5432/nova")?;
//! let sg = ServiceGroup::connect(config).await?;
//! let _me = sg.join("compute", "host-1").await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
// A build with fewer backends leaves some shared helpers unused.
#![cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]

mod backend;
mod config;
mod driver;
mod error;
pub mod schema;
pub mod tls;
pub mod url;

use std::sync::Arc;

use servicegroup_core::{Config, Driver};

pub use config::{DbConfig, CONFIG};
pub use driver::{default_sqlite_path, statements_sent, DbDriver, Statistics, LIVENESS_RESOLUTION};
pub use tls::{MysqlSslMode, PgSslMode};
pub use url::{BackendKind, SqliteLocation, Target};

/// The name this driver registers under, and the name of its table (`[db]`).
pub const NAME: &str = "db";

servicegroup_core::register_driver! {
    name: NAME,
    description: "SQL database (SQLite file by default, PostgreSQL, MySQL/MariaDB): batched heartbeats, database clock",
    config: CONFIG,
    build: |config: Config| Box::pin(async move {
        Ok(Arc::new(DbDriver::connect(&config).await?) as Arc<dyn Driver>)
    }),
}
