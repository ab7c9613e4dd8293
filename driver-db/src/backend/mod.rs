//! What differs per database product: SQL dialect, the clock expression, connection
//! setup, pooling and migrations. Each backend implements [`Store`], a handful of
//! storage operations in its own SQL; everything else (the id cache, missing-member
//! detection, records, errors) lives once in [`crate::driver`]: SQLite, PostgreSQL
//! and MySQL/MariaDB are one module each implementing [`Store`].

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{Instrumentation, InstrumentationEvent};
use servicegroup_core::async_trait;

use crate::error::DbError;

#[cfg(feature = "mysql")]
pub(crate) mod mysql;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

/// One stored member of a known group as a backend returns it: facts measured on the
/// database's clock. The group is the query's parameter, so it is not selected again
/// (a listing of 1,000,000 rows would otherwise carry and decode it 1,000,000 times).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) member: String,
    /// The last heartbeat as Unix epoch seconds (database clock).
    pub(crate) last_seen: f64,
    /// `now - last_seen` in seconds, computed by the database in the same query.
    pub(crate) age: f64,
    pub(crate) forced_down: bool,
}

/// A member row as SQLite and MySQL select it: `(member, last_seen, age, forced_down)`
/// in seconds (PostgreSQL selects a binary timestamp and interval instead and has its
/// own tuple and conversion in `postgres.rs`).
pub(crate) type Selected = (String, f64, f64, bool);

/// Turns a selected tuple into a [`Row`].
pub(crate) fn row((member, last_seen, age, forced_down): Selected) -> Row {
    Row {
        member,
        last_seen,
        age,
        forced_down,
    }
}

/// An id assigned to a member by the database.
pub(crate) type RowId = i64;

/// Storage operations, one statement (or one transaction) each, in the backend's SQL.
///
/// Every operation is bounded by `[db] timeout` (pool checkout included) and reports
/// failures as [`DbError`]; the caller classifies and redacts them.
#[async_trait]
pub(crate) trait Store: Send + Sync + fmt::Debug + 'static {
    /// Creates or refreshes each `(group, member)` with `last_seen = <db now>`,
    /// keeping `forced_down` and `created_at`; returns `(id, group, member)` per row.
    async fn upsert(&self, keys: &[(&str, &str)]) -> Result<Vec<(RowId, String, String)>, DbError>;

    /// `UPDATE … SET last_seen = <db now> WHERE id IN ids` (ids sorted, unique), in as
    /// few statements as the backend allows; returns the ids that still exist.
    async fn touch_ids(&self, ids: Vec<RowId>) -> Result<Vec<RowId>, DbError>;

    /// Like [`Store::touch_ids`] for members not known by id: returns `(id, member)`
    /// of the rows of `group` that exist and were updated.
    async fn touch_members(
        &self,
        group: &str,
        members: Vec<String>,
    ) -> Result<Vec<(RowId, String)>, DbError>;

    /// Deletes a member; whether it existed.
    async fn delete(&self, group: &str, member: &str) -> Result<bool, DbError>;

    /// Sets the forced-down flag; whether the member exists.
    async fn set_forced_down(
        &self,
        group: &str,
        member: &str,
        forced_down: bool,
    ) -> Result<bool, DbError>;

    /// One member with its age, one query.
    async fn get(&self, group: &str, member: &str) -> Result<Option<Row>, DbError>;

    /// Every member of `group` with its age, one query.
    async fn list(&self, group: &str) -> Result<Vec<Row>, DbError>;

    /// Every group with at least one member, one query.
    async fn groups(&self) -> Result<Vec<String>, DbError>;
}

/// What every backend needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `[db] timeout`: connect, statement and pool-checkout bound.
    pub(crate) timeout: Duration,
    /// `[db] pool_size`.
    pub(crate) pool_size: usize,
    /// Counters bumped for every statement sent on the driver's pooled connections
    /// (the driver's own and the one shared by all drivers on the same database).
    pub(crate) statements: Vec<Arc<AtomicU64>>,
}

/// Runs `fut` under `limit`; overrunning is [`DbError::TimedOut`].
pub(crate) async fn bounded<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(DbError::TimedOut(limit)),
    }
}

/// Diesel instrumentation that counts statements (each `StartQuery` event), so the
/// "one statement per heartbeat tick" rule can be checked on a real connection.
pub(crate) struct StatementCounter(pub(crate) Vec<Arc<AtomicU64>>);

impl Instrumentation for StatementCounter {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { .. } = event {
            for counter in &self.0 {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Pool builder settings shared by the backends: size, and checkout / connect /
/// recycle timeouts of `[db] timeout` on tokio.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) fn pool<C>(
    manager: diesel_async::pooled_connection::AsyncDieselConnectionManager<C>,
    size: usize,
    timeout: Duration,
) -> Result<diesel_async::pooled_connection::deadpool::Pool<C>, DbError>
where
    C: diesel_async::pooled_connection::PoolableConnection + Send + 'static,
    diesel_async::pooled_connection::AsyncDieselConnectionManager<C>:
        deadpool::managed::Manager<Type = C, Error = diesel_async::pooled_connection::PoolError>,
{
    diesel_async::pooled_connection::deadpool::Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| DbError::Other(format!("cannot build the connection pool: {e}")))
}
