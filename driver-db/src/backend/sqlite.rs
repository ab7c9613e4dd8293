//! SQLite: a file shared by any number of OS processes, or a private in-memory database.
//!
//! - WAL journal, `synchronous=NORMAL`, a busy timeout of `[db] timeout`.
//! - One writer connection for this driver (registrations, heartbeats, flags), so
//!   batches of one process never fight each other for SQLite's single write lock;
//!   `pool_size` read-only connections for listings. Other processes are serialized
//!   by SQLite's file lock and the busy timeout.
//! - The clock: `last_seen` is `unixepoch('subsec')` (REAL epoch seconds) and ages
//!   are `unixepoch('subsec') - last_seen`, both computed by SQLite.
//! - A heartbeat batch is one `UPDATE … WHERE id IN (SELECT value FROM json_each(?))`:
//!   one bind (a JSON array of the ids) whatever the batch size.
//! - Queries run as plain diesel inside diesel-async's `SyncConnectionWrapper`
//!   (`spawn_blocking`), which also allows multi-statement transactions.
//! - `sqlite::memory:`: one connection serves everything (a second connection would
//!   see a different, empty database).

use super::{row, Selected};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel::sql_types::{Bool, Double, Text};
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use servicegroup_core::async_trait;

use super::{bounded, RowId, Settings, StatementCounter, Store};
use crate::backend::Row;
use crate::error::DbError;
use crate::schema::sqlite::servicegroup_members as t;
use crate::url::SqliteLocation;

/// The embedded SQLite migrations.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Most member names bound in one statement when members are looked up by name
/// (SQLITE_MAX_VARIABLE_NUMBER of the bundled build is 32766, one group bind more).
/// Heartbeats by id bind a single JSON array and need no chunking.
pub(crate) const IDS_PER_STATEMENT: usize = 32_000;

type Conn = SyncConnectionWrapper<SqliteConnection>;

/// The database's clock, as epoch seconds with sub-second precision (needs SQLite
/// >= 3.42, which the bundled library is).
fn db_now() -> diesel::expression::SqlLiteral<Double> {
    sql::<Double>("unixepoch('subsec')")
}

/// Age of the last heartbeat in seconds, on the database's clock.
fn db_age() -> diesel::expression::SqlLiteral<Double> {
    sql::<Double>("unixepoch('subsec') - last_seen")
}

/// `[1,2,3]`: ids as a JSON array, for `json_each`.
fn json_array(ids: &[RowId]) -> String {
    let mut json = String::with_capacity(ids.len() * 8 + 2);
    json.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&id.to_string());
    }
    json.push(']');
    json
}

/// The SQLite store.
pub(crate) struct SqliteStore {
    location: String,
    writer: Pool<Conn>,
    reader: Pool<Conn>,
    timeout: Duration,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// PRAGMAs every connection gets.
fn pragmas(timeout: Duration, read_only: bool) -> String {
    let busy_ms = timeout.as_millis().clamp(1, i32::MAX as u128);
    format!(
        "PRAGMA busy_timeout = {busy_ms}; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;{}",
        if read_only {
            " PRAGMA query_only = 1;"
        } else {
            ""
        }
    )
}

/// Opens (creating if needed) the database, applies the migrations and builds the pools.
pub(crate) async fn connect(
    location: &SqliteLocation,
    settings: &Settings,
) -> Result<SqliteStore, DbError> {
    match location {
        SqliteLocation::File(path) => connect_file(path, settings).await,
        SqliteLocation::Memory => connect_memory(settings).await,
    }
}

async fn connect_file(path: &Path, settings: &Settings) -> Result<SqliteStore, DbError> {
    let path_str = path
        .to_str()
        .ok_or_else(|| DbError::Other(format!("the path {} is not UTF-8", path.display())))?
        .to_owned();
    migrate_file(path.to_path_buf(), settings.timeout).await?;
    let writer = build_pool(&path_str, settings, 1, false, false)?;
    let reader = build_pool(&path_str, settings, settings.pool_size, true, false)?;
    Ok(SqliteStore {
        location: format!("sqlite://{}", path.display()),
        writer,
        reader,
        timeout: settings.timeout,
    })
}

async fn connect_memory(settings: &Settings) -> Result<SqliteStore, DbError> {
    let pool = build_pool(":memory:", settings, 1, false, true)?;
    // Open the one connection now, so a broken setup fails the build, not the first call.
    bounded(settings.timeout, async {
        drop(pool.get().await?);
        Ok(())
    })
    .await?;
    Ok(SqliteStore {
        location: "sqlite::memory:".to_owned(),
        writer: pool.clone(),
        reader: pool,
        timeout: settings.timeout,
    })
}

fn build_pool(
    target: &str,
    settings: &Settings,
    size: usize,
    read_only: bool,
    migrate: bool,
) -> Result<Pool<Conn>, DbError> {
    let setup_sql = pragmas(settings.timeout, read_only);
    let counter = settings.statements.clone();
    let mut config = ManagerConfig::<Conn>::default();
    // A local file does not go away under us; skip the per-checkout `SELECT 1`.
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |target: &str| {
        let target = target.to_owned();
        let setup_sql = setup_sql.clone();
        let counter = counter.clone();
        Box::pin(async move {
            let mut conn = Conn::establish(&target).await?;
            conn.batch_execute(&setup_sql)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            if migrate {
                conn.spawn_blocking(|c| run_migrations(c).map(|_| ()))
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            }
            conn.set_instrumentation(StatementCounter(counter));
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<Conn>::new_with_config(target, config);
    super::pool(manager, size, settings.timeout)
}

fn run_migrations(c: &mut SqliteConnection) -> QueryResult<usize> {
    c.run_pending_migrations(MIGRATIONS)
        .map(|applied| applied.len())
        .map_err(diesel::result::Error::QueryBuilderError)
}

/// Applies pending migrations to a database file, safely when several processes
/// start at once: WAL is switched on first, then everything runs inside one
/// `BEGIN IMMEDIATE` transaction (one process at a time; the others wait on the
/// busy timeout and then find nothing pending). A busy error is retried until
/// twice `[db] timeout` has passed.
async fn migrate_file(path: PathBuf, timeout: Duration) -> Result<(), DbError> {
    let deadline = Instant::now() + timeout * 2;
    let busy_ms = timeout.as_millis().clamp(1, i32::MAX as u128);
    let task = tokio::task::spawn_blocking(move || -> Result<usize, DbError> {
        let target = path.to_str().unwrap_or_default().to_owned();
        loop {
            let attempt = (|| -> Result<usize, DbError> {
                let mut c = SqliteConnection::establish(&target)?;
                c.batch_execute(&format!(
                    "PRAGMA busy_timeout = {busy_ms}; PRAGMA journal_mode = WAL;"
                ))?;
                Ok(c.immediate_transaction(run_migrations)?)
            })();
            match attempt {
                Err(e)
                    if e.kind() == servicegroup_core::ErrorKind::Timeout
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    });
    let applied = task
        .await
        .map_err(|e| DbError::Other(format!("the migration task failed: {e}")))??;
    if applied > 0 {
        tracing::info!(applied, backend = "sqlite", "applied database migrations");
    }
    Ok(())
}

impl SqliteStore {
    /// Runs `f` on a connection of `pool` in a blocking task, under `[db] timeout`.
    async fn run<T, F>(&self, pool: &Pool<Conn>, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> QueryResult<T> + Send + 'static,
    {
        bounded(self.timeout, async {
            let mut conn = pool.get().await?;
            Ok(conn.spawn_blocking(f).await?)
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn upsert(&self, keys: &[(&str, &str)]) -> Result<Vec<(RowId, String, String)>, DbError> {
        let keys: Vec<(String, String)> = keys
            .iter()
            .map(|(g, m)| ((*g).to_owned(), (*m).to_owned()))
            .collect();
        self.run(&self.writer, move |c| {
            let one = |c: &mut SqliteConnection, g: String, m: String| -> QueryResult<_> {
                let id = diesel::insert_into(t::table)
                    .values((
                        t::group_id.eq(&g),
                        t::member_id.eq(&m),
                        t::last_seen.eq(db_now()),
                    ))
                    .on_conflict((t::group_id, t::member_id))
                    .do_update()
                    .set(t::last_seen.eq(db_now()))
                    .returning(t::id)
                    .get_result::<i64>(c)?;
                Ok((id, g, m))
            };
            if keys.len() == 1 {
                let (g, m) = keys.into_iter().next().expect("one key");
                return Ok(vec![one(c, g, m)?]);
            }
            c.immediate_transaction(|c| keys.into_iter().map(|(g, m)| one(c, g, m)).collect())
        })
        .await
    }

    async fn touch_ids(&self, ids: Vec<RowId>) -> Result<Vec<RowId>, DbError> {
        // One statement with one bind whatever the batch size: the ids travel as a
        // JSON array expanded by json_each, so there is no bind limit to chunk around
        // and the statement text is the same every tick. Its row count tells whether
        // every row still exists; only when some are gone (rare: an operator removed
        // a member) a second statement finds out which.
        let json = json_array(&ids);
        self.run(&self.writer, move |c| {
            let ids_in = |json: String| {
                sql::<Bool>("id IN (SELECT value FROM json_each(")
                    .bind::<Text, _>(json)
                    .sql("))")
            };
            let updated = diesel::update(t::table.filter(ids_in(json.clone())))
                .set(t::last_seen.eq(db_now()))
                .execute(c)?;
            if updated == ids.len() {
                return Ok(ids);
            }
            t::table.select(t::id).filter(ids_in(json)).load::<i64>(c)
        })
        .await
    }

    async fn touch_members(
        &self,
        group: &str,
        members: Vec<String>,
    ) -> Result<Vec<(RowId, String)>, DbError> {
        let group = group.to_owned();
        self.run(&self.writer, move |c| {
            let touch = |c: &mut SqliteConnection, chunk: &[String]| {
                diesel::update(
                    t::table
                        .filter(t::group_id.eq(&group))
                        .filter(t::member_id.eq_any(chunk)),
                )
                .set(t::last_seen.eq(db_now()))
                .returning((t::id, t::member_id))
                .get_results::<(i64, String)>(c)
            };
            if members.len() <= IDS_PER_STATEMENT {
                return touch(c, &members);
            }
            c.immediate_transaction(|c| {
                let mut found = Vec::with_capacity(members.len());
                for chunk in members.chunks(IDS_PER_STATEMENT) {
                    found.extend(touch(c, chunk)?);
                }
                Ok(found)
            })
        })
        .await
    }

    async fn delete(&self, group: &str, member: &str) -> Result<bool, DbError> {
        let (group, member) = (group.to_owned(), member.to_owned());
        self.run(&self.writer, move |c| {
            diesel::delete(
                t::table
                    .filter(t::group_id.eq(&group))
                    .filter(t::member_id.eq(&member)),
            )
            .execute(c)
            .map(|n| n > 0)
        })
        .await
    }

    async fn set_forced_down(
        &self,
        group: &str,
        member: &str,
        forced_down: bool,
    ) -> Result<bool, DbError> {
        let (group, member) = (group.to_owned(), member.to_owned());
        self.run(&self.writer, move |c| {
            diesel::update(
                t::table
                    .filter(t::group_id.eq(&group))
                    .filter(t::member_id.eq(&member)),
            )
            .set(t::forced_down.eq(forced_down))
            .execute(c)
            .map(|n| n > 0)
        })
        .await
    }

    async fn get(&self, group: &str, member: &str) -> Result<Option<Row>, DbError> {
        let (group, member) = (group.to_owned(), member.to_owned());
        self.run(&self.reader, move |c| {
            t::table
                .filter(t::group_id.eq(&group))
                .filter(t::member_id.eq(&member))
                .select((t::member_id, t::last_seen, db_age(), t::forced_down))
                .get_result::<Selected>(c)
                .optional()
                .map(|r| r.map(row))
        })
        .await
    }

    async fn list(&self, group: &str) -> Result<Vec<Row>, DbError> {
        let group = group.to_owned();
        self.run(&self.reader, move |c| {
            t::table
                .filter(t::group_id.eq(&group))
                .select((t::member_id, t::last_seen, db_age(), t::forced_down))
                .load::<Selected>(c)
                .map(|rows| rows.into_iter().map(row).collect())
        })
        .await
    }

    async fn groups(&self) -> Result<Vec<String>, DbError> {
        self.run(&self.reader, |c| {
            t::table
                .select(t::group_id)
                .distinct()
                .order(t::group_id)
                .load::<String>(c)
        })
        .await
    }
}
