//! SQLite: a file shared by any number of OS processes, or a private in-memory database.
//!
//! - WAL journal, `synchronous=NORMAL`, a busy timeout of `[db] timeout`.
//! - One writer connection for this driver's heartbeats, their id look-ups and
//!   registrations (the heartbeat lane), so batches of one process never fight each
//!   other for SQLite's single write lock; a second writer for operator writes
//!   (leave, forced down, metadata), so they never take the lane's connection;
//!   `pool_size` read-only connections for listings, which under WAL never block
//!   the writers. Other processes are serialized by SQLite's file lock and the busy
//!   timeout.
//! - The clock: `last_seen` is `unixepoch('subsec')` (REAL epoch seconds) and ages
//!   are `unixepoch('subsec') - last_seen`, both computed by SQLite.
//! - A heartbeat batch is one `UPDATE … WHERE id IN (SELECT value FROM json_each(?))
//!   AND holder = ?`: one bind (a JSON array of the ids) whatever the batch size, and
//!   the beating instance. A batch of several instances binds its `(id, instance)`
//!   pairs as a second JSON array instead.
//! - Registrations run on the writer inside one `BEGIN IMMEDIATE` transaction (the
//!   database's write lock, so a conditional registration's check and write are one
//!   step for every process on the file), one upsert each (the epoch rule in SQL).
//! - Queries run as plain diesel inside diesel-async's `SyncConnectionWrapper`
//!   (`spawn_blocking`), which also allows multi-statement transactions.
//! - `sqlite::memory:`: one connection serves everything (a second connection would
//!   see a different, empty database).

use super::row;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel::sql_types::{BigInt, Binary, Bool, Double, Nullable, Text};
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use servicegroup_core::{async_trait, Condition, InstanceId, Summary};

use super::{
    bounded, condition_holds, push_hex, single_instance, state_predicate, summary_of,
    summary_select, unique_ids, Beat, Fresh, Lane, Outcome, Reg, RowId, Settings, StatementCounter,
    Store, StoredHolder, StoredInstance, StoredMetadata, Unrefreshed, Which, SUMMARY_GROUPING,
};
use crate::backend::Row;
use crate::error::DbError;
use crate::schema::revisions::servicegroup_revisions as rev;
use crate::schema::sqlite::servicegroup_members as t;
use crate::url::SqliteLocation;

/// Moves a group's membership revision ([`Store::bump`]).
const BUMP: &str = "INSERT INTO servicegroup_revisions (group_id, revision) VALUES (?, 1) \
     ON CONFLICT (group_id) DO UPDATE SET revision = revision + 1";

/// The embedded SQLite migrations.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Most member names bound in one statement when members are looked up by name
/// (SQLITE_MAX_VARIABLE_NUMBER of the bundled build is 32766, one group bind more).
/// Heartbeats by id bind a single JSON array and need no chunking.
pub(crate) const IDS_PER_STATEMENT: usize = 32_000;

type Conn = SyncConnectionWrapper<SqliteConnection>;

/// Age of the last heartbeat in seconds, on the database's clock (`unixepoch('subsec')`
/// needs SQLite 3.42 or later, which the bundled library is): what the
/// listing selects and what the rule ([`super::state_predicate`]) compares with the
/// bound `service_down_time` in seconds. Within one row both are computed in the
/// same `sqlite3_step`, on the same `now`.
const AGE: &str = sqlite_age!();

/// [`AGE`]'s text, for [`FRESH`] to build on (`concat!` takes literals only).
macro_rules! sqlite_age {
    () => {
        "(unixepoch('subsec') - last_seen)"
    };
}
use sqlite_age;

/// The heartbeat half of the rule ([`super::state_predicate`], bound with
/// `service_down_time` in seconds): [`AGE`], the age the listing selects, compared
/// as it is (SQLite's ages are doubles, so a cutoff `now - d` could round
/// differently from the age the listing reports).
const FRESH: Fresh = Fresh {
    before: concat!(sqlite_age!(), " <= "),
    after: "",
};

fn db_age() -> diesel::expression::SqlLiteral<Double> {
    sql::<Double>(AGE)
}

/// `metadata`, NULL for `{}` (a member without metadata: nothing to copy).
fn db_metadata() -> diesel::expression::SqlLiteral<Nullable<Text>> {
    sql::<Nullable<Text>>("NULLIF(metadata, '{}')")
}

/// The rule's filter for `which` ([`super::state_predicate`] around the bound
/// `service_down_time` in seconds); `None` for every row.
fn state_filter(
    which: Which,
) -> Option<Box<dyn BoxableExpression<t::table, diesel::sqlite::Sqlite, SqlType = Bool>>> {
    let Which::In(state, service_down_time) = which else {
        return None;
    };
    let (before, after) = state_predicate(state, FRESH);
    Some(Box::new(
        sql::<Bool>(&before)
            .bind::<Double, _>(service_down_time.as_secs_f64())
            .sql(&after),
    ))
}

/// The heartbeat batch of one instance: `?1` the ids as a JSON array, `?2` the
/// instance (16 bytes). A row another instance holds is not refreshed.
const TOUCH_ONE: &str = "UPDATE servicegroup_members SET last_seen = unixepoch('subsec') \
     WHERE id IN (SELECT value FROM json_each(?1)) AND holder = ?2";

/// [`TOUCH_ONE`] for several instances: `?2` the `(id, instance)` pairs as a JSON
/// array of `[id, "hex"]`.
const TOUCH_MANY: &str = "UPDATE servicegroup_members SET last_seen = unixepoch('subsec') \
     WHERE id IN (SELECT value FROM json_each(?1)) \
     AND (id, holder) IN (SELECT value ->> 0, unhex(value ->> 1) FROM json_each(?2))";

/// The second look after a batch refreshed fewer rows than it beat (rare): the beats
/// (`?1`, pairs as in [`TOUCH_MANY`]) whose row is gone or held by another instance.
const UNREFRESHED: &str = "SELECT b.value ->> 0 AS id, unhex(b.value ->> 1) AS instance, \
     t.holder AS holder, t.epoch AS epoch \
     FROM json_each(?1) AS b LEFT JOIN servicegroup_members AS t ON t.id = b.value ->> 0 \
     WHERE t.id IS NULL OR t.holder <> unhex(b.value ->> 1)";

/// One registration, unconditionally, with the identity contract in SQL: a new row
/// gets epoch 1 and `holder_since` now; on conflict the holding instance keeps its
/// epoch and `holder_since`, another instance adds one and sets `holder_since`;
/// metadata is replaced, `forced_down` and `created_at` kept. (`SET` expressions read
/// the row as it was.)
const UPSERT: &str = "INSERT INTO servicegroup_members \
     (group_id, member_id, last_seen, holder, epoch, holder_since, metadata) \
     VALUES (?1, ?2, unixepoch('subsec'), ?3, 1, unixepoch('subsec'), ?4) \
     ON CONFLICT (group_id, member_id) DO UPDATE SET last_seen = excluded.last_seen, \
     epoch = CASE WHEN holder = excluded.holder THEN max(epoch, 1) ELSE epoch + 1 END, \
     holder_since = CASE WHEN holder = excluded.holder \
         THEN coalesce(holder_since, excluded.holder_since) ELSE excluded.holder_since END, \
     holder = excluded.holder, metadata = excluded.metadata \
     RETURNING id, epoch";

/// A row [`UPSERT`] wrote.
#[derive(diesel::QueryableByName)]
struct Written {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    epoch: i64,
}

/// `[1,2,3]`: ids as a JSON array, for `json_each`.
fn json_ids(ids: &[RowId]) -> String {
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

/// `[[1,"<hex>"],…]`: the `(id, instance)` pairs of `beats` as a JSON array.
fn json_pairs(beats: &[Beat]) -> String {
    let mut json = String::with_capacity(beats.len() * 44 + 2);
    json.push('[');
    for (i, beat) in beats.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('[');
        json.push_str(&beat.id.to_string());
        json.push_str(",\"");
        push_hex(&mut json, beat.instance);
        json.push_str("\"]");
    }
    json.push(']');
    json
}

/// A registration owned, for the blocking task.
struct OwnedReg {
    group: String,
    member: String,
    instance: [u8; 16],
    metadata: String,
    condition: Condition,
}

/// Applies registrations one statement each (two for a conditional one: the check,
/// then the write), on a connection inside the caller's transaction.
fn apply(c: &mut SqliteConnection, regs: &[OwnedReg]) -> QueryResult<Vec<Outcome>> {
    let mut out = Vec::with_capacity(regs.len());
    for r in regs {
        if r.condition != Condition::Always {
            let found = t::table
                .filter(t::group_id.eq(&r.group))
                .filter(t::member_id.eq(&r.member))
                .select((t::holder, t::epoch))
                .get_result::<StoredHolder>(c)
                .optional()?;
            if !condition_holds(r.condition, found) {
                out.push(Outcome::Refused { found });
                continue;
            }
        }
        let written = diesel::sql_query(UPSERT)
            .bind::<Text, _>(&r.group)
            .bind::<Text, _>(&r.member)
            .bind::<Binary, _>(&r.instance[..])
            .bind::<Text, _>(&r.metadata)
            .get_result::<Written>(c)?;
        out.push(Outcome::Stored {
            id: written.id,
            epoch: written.epoch,
        });
    }
    Ok(out)
}

/// The SQL function of [`read_rows`] (one argument per value of a record).
#[allow(clippy::too_many_arguments)]
mod record_fn {
    use diesel::sql_types::{BigInt, Binary, Bool, Double, Nullable, Text};

    diesel::define_sql_function! {
        /// Hands one row of a read of records to the Rust code that registered it on
        /// the connection for that read ([`super::read_rows`]); returns 0.
        #[sql_name = "servicegroup_record"]
        fn record_row(
            age: Double,
            member: Text,
            last_seen: Double,
            forced_down: Bool,
            holder: Binary,
            epoch: BigInt,
            holder_since: Nullable<Double>,
            metadata: Nullable<Text>,
        ) -> Integer;
    }
}
use record_fn::{record_row, record_row_utils};

/// Reads the rows of `group` that `which` selects (one member's with `member`) in
/// one statement and one `sqlite3_step`: `SELECT count(servicegroup_record(<age>,
/// member_id, …)) … WHERE group_id = ?`, an aggregate whose function (registered on
/// this connection for this read) takes each row as SQLite evaluates it. The values
/// reach Rust as function arguments (`sqlite3_value_*`), which take no lock, where
/// reading result columns (`sqlite3_column_*`) takes the connection's mutex for
/// every column of every row (the bundled SQLite is built serialized): 9
/// lock/unlock pairs per row with eight columns, 17 % of a 100,000-member listing
/// in `perf` (wip/db-listing). The `now` of [`AGE`] is the same for every row of
/// the one step, as PostgreSQL's `now()` is for its query, and the filter of
/// `which` judges the very age the row reports.
fn read_rows(
    c: &mut SqliteConnection,
    group: &str,
    member: Option<&str>,
    which: Which,
) -> QueryResult<Vec<Row>> {
    let rows: Arc<Mutex<Vec<Row>>> = Arc::default();
    let sink = rows.clone();
    record_row_utils::register_nondeterministic_impl(
        c,
        move |age: f64,
              member: String,
              last_seen: f64,
              forced_down: bool,
              instance: StoredInstance,
              epoch: i64,
              holder_since: Option<f64>,
              metadata: Option<StoredMetadata>| {
            // Only this read's statement calls it, on this thread: never contended.
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(row((
                member,
                last_seen,
                age,
                forced_down,
                instance,
                epoch,
                holder_since,
                metadata,
            )));
            0
        },
    )?;
    let query = t::table
        .filter(t::group_id.eq(group))
        .into_boxed()
        .select(diesel::dsl::count(record_row(
            db_age(),
            t::member_id,
            t::last_seen,
            t::forced_down,
            t::holder,
            t::epoch,
            t::holder_since,
            db_metadata(),
        )));
    let query = match member {
        Some(member) => query.filter(t::member_id.eq(member)),
        None => query,
    };
    let query = match state_filter(which) {
        Some(filter) => query.filter(filter),
        None => query,
    };
    let counted = query.get_result::<i64>(c)?;
    let rows = std::mem::take(&mut *rows.lock().unwrap_or_else(|e| e.into_inner()));
    if usize::try_from(counted).ok() != Some(rows.len()) {
        return Err(diesel::result::Error::DeserializationError(
            format!(
                "the read counted {counted} rows but received {}",
                rows.len()
            )
            .into(),
        ));
    }
    Ok(rows)
}

/// The SQLite store.
pub(crate) struct SqliteStore {
    location: String,
    /// The heartbeat lane: heartbeats, their id look-ups and registrations.
    writer: Pool<Conn>,
    /// Operator writes (leave, forced down, metadata): a second writer connection,
    /// so they never take the heartbeat lane's (the writer itself when
    /// `[db] heartbeat_pool_size` is 0).
    operator: Pool<Conn>,
    /// Listings, watch polls, reads: `pool_size` read-only connections.
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

/// How much of the database file a read-only connection maps into memory (address
/// space, not memory): its reads then come from the OS page cache without a `pread`
/// copy each (SQLite's own page cache is dropped whenever another connection
/// writes, so under heartbeats a listing reads most pages again every time).
/// Readers never write through the map.
const READER_MMAP_BYTES: u64 = 256 << 20;

/// PRAGMAs every connection gets.
fn pragmas(timeout: Duration, read_only: bool) -> String {
    let busy_ms = timeout.as_millis().clamp(1, i32::MAX as u128);
    let mut sql = format!(
        "PRAGMA busy_timeout = {busy_ms}; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
    );
    if read_only {
        sql.push_str(&format!(
            " PRAGMA query_only = 1; PRAGMA mmap_size = {READER_MMAP_BYTES};"
        ));
    }
    sql
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
    let operator = match settings.heartbeat_pool_size {
        0 => writer.clone(),
        _ => build_pool(&path_str, settings, 1, false, false)?,
    };
    let reader = build_pool(&path_str, settings, settings.pool_size, true, false)?;
    Ok(SqliteStore {
        location: format!("sqlite://{}", path.display()),
        writer,
        operator,
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
        operator: pool.clone(),
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
    async fn register(&self, regs: &[Reg<'_>]) -> Result<Vec<Outcome>, DbError> {
        let regs: Vec<OwnedReg> = regs
            .iter()
            .map(|r| OwnedReg {
                group: r.group.to_owned(),
                member: r.member.to_owned(),
                instance: r.instance.to_bytes(),
                metadata: r.metadata.clone(),
                condition: r.condition,
            })
            .collect();
        self.run(&self.writer, move |c| {
            if regs.len() == 1 && regs[0].condition == Condition::Always {
                // One statement: atomic on its own.
                return apply(c, &regs);
            }
            c.immediate_transaction(|c| apply(c, &regs))
        })
        .await
    }

    async fn touch(&self, beats: &[Beat]) -> Result<Vec<Unrefreshed>, DbError> {
        #[derive(diesel::QueryableByName)]
        struct Refused {
            #[diesel(sql_type = BigInt)]
            id: i64,
            #[diesel(sql_type = Binary)]
            instance: StoredInstance,
            #[diesel(sql_type = Nullable<Binary>)]
            holder: Option<StoredInstance>,
            #[diesel(sql_type = Nullable<BigInt>)]
            epoch: Option<i64>,
        }
        // One statement with one bind (two for several instances) whatever the batch
        // size: the ids travel as a JSON array expanded by json_each, so there is no
        // bind limit to chunk around and the statement text is the same every tick.
        // Its row count tells whether every beat refreshed its row; only when some
        // did not (rare: a member removed or taken over) a second statement finds out
        // which.
        let ids = json_ids(&unique_ids(beats));
        let single = single_instance(beats);
        let many = match single {
            Some(_) => None,
            None => Some(json_pairs(beats)),
        };
        let expected = beats.len();
        let (updated, many) = self
            .run(&self.writer, move |c| {
                let updated = match (single, &many) {
                    (Some(instance), _) => diesel::sql_query(TOUCH_ONE)
                        .bind::<Text, _>(&ids)
                        .bind::<Binary, _>(&instance.to_bytes()[..])
                        .execute(c)?,
                    (None, Some(pairs)) => diesel::sql_query(TOUCH_MANY)
                        .bind::<Text, _>(&ids)
                        .bind::<Text, _>(pairs)
                        .execute(c)?,
                    (None, None) => 0,
                };
                Ok((updated, many))
            })
            .await?;
        if updated == expected {
            return Ok(Vec::new());
        }
        let pairs = many.unwrap_or_else(|| json_pairs(beats));
        self.run(&self.writer, move |c| {
            let refused: Vec<Refused> = diesel::sql_query(UNREFRESHED)
                .bind::<Text, _>(&pairs)
                .load(c)?;
            Ok(refused
                .into_iter()
                .filter_map(|r| {
                    Some(Unrefreshed {
                        id: r.id,
                        instance: r.instance.instance()?,
                        found: r.holder.map(|h| (h, r.epoch.unwrap_or(0))),
                    })
                })
                .collect())
        })
        .await
    }

    async fn lookup(
        &self,
        group: &str,
        members: Vec<String>,
    ) -> Result<Vec<(RowId, String)>, DbError> {
        let group = group.to_owned();
        self.run(&self.writer, move |c| {
            let mut found = Vec::with_capacity(members.len());
            for chunk in members.chunks(IDS_PER_STATEMENT) {
                found.extend(
                    t::table
                        .filter(t::group_id.eq(&group))
                        .filter(t::member_id.eq_any(chunk))
                        .select((t::id, t::member_id))
                        .load::<(i64, String)>(c)?,
                );
            }
            Ok(found)
        })
        .await
    }

    async fn delete(
        &self,
        group: &str,
        member: &str,
        holder: Option<InstanceId>,
    ) -> Result<bool, DbError> {
        let (group, member) = (group.to_owned(), member.to_owned());
        self.run(&self.operator, move |c| {
            let of_key = t::table
                .filter(t::group_id.eq(&group))
                .filter(t::member_id.eq(&member));
            let n = match holder {
                None => diesel::delete(of_key).execute(c)?,
                Some(instance) => {
                    diesel::delete(of_key.filter(t::holder.eq(&instance.to_bytes()[..])))
                        .execute(c)?
                }
            };
            Ok(n > 0)
        })
        .await
    }

    async fn set_metadata(
        &self,
        group: &str,
        member: &str,
        instance: InstanceId,
        metadata: String,
    ) -> Result<bool, DbError> {
        let (group, member) = (group.to_owned(), member.to_owned());
        self.run(&self.operator, move |c| {
            diesel::update(
                t::table
                    .filter(t::group_id.eq(&group))
                    .filter(t::member_id.eq(&member))
                    .filter(t::holder.eq(&instance.to_bytes()[..])),
            )
            .set(t::metadata.eq(&metadata))
            .execute(c)
            .map(|n| n > 0)
        })
        .await
    }

    async fn holder(&self, group: &str, member: &str) -> Result<Option<StoredHolder>, DbError> {
        let (group, member) = (group.to_owned(), member.to_owned());
        self.run(&self.reader, move |c| {
            t::table
                .filter(t::group_id.eq(&group))
                .filter(t::member_id.eq(&member))
                .select((t::holder, t::epoch))
                .get_result::<StoredHolder>(c)
                .optional()
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
        self.run(&self.operator, move |c| {
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
            read_rows(c, &group, Some(&member), Which::All).map(|mut rows| rows.pop())
        })
        .await
    }

    async fn list(&self, group: &str, which: Which) -> Result<Vec<Row>, DbError> {
        let group = group.to_owned();
        self.run(&self.reader, move |c| read_rows(c, &group, None, which))
            .await
    }

    async fn summary(&self, group: &str, service_down_time: Duration) -> Result<Summary, DbError> {
        let group = group.to_owned();
        self.run(&self.reader, move |c| {
            let (select, from) = summary_select(FRESH);
            sql::<(Bool, Bool, BigInt)>(&select)
                .bind::<Double, _>(service_down_time.as_secs_f64())
                .sql(&from)
                .bind::<Text, _>(&group)
                .sql(SUMMARY_GROUPING)
                .load::<(bool, bool, i64)>(c)
                .map(|rows| summary_of(&rows))
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

    async fn bump(&self, group: &str, lane: Lane) -> Result<(), DbError> {
        let group = group.to_owned();
        let pool = match lane {
            Lane::Heartbeat => &self.writer,
            Lane::General => &self.operator,
        };
        self.run(pool, move |c| {
            diesel::sql_query(BUMP)
                .bind::<diesel::sql_types::Text, _>(&group)
                .execute(c)
                .map(|_| ())
        })
        .await
    }

    async fn revision(&self, group: &str) -> Result<u64, DbError> {
        let group = group.to_owned();
        let stored = self
            .run(&self.reader, move |c| {
                rev::table
                    .filter(rev::group_id.eq(&group))
                    .select(rev::revision)
                    .get_result::<i64>(c)
                    .optional()
            })
            .await?;
        Ok(super::revision_of(stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_forms() {
        let a = InstanceId::from_u128(0xab);
        let b = InstanceId::from_u128(1 << 120);
        assert_eq!(json_ids(&[1, 5, 9]), "[1,5,9]");
        assert_eq!(
            json_pairs(&[Beat { id: 3, instance: a }, Beat { id: 4, instance: b }]),
            format!("[[3,\"{:032x}\"],[4,\"{:032x}\"]]", 0xab, 1u128 << 120)
        );
    }
}
