//! PostgreSQL through diesel-async's pure-Rust connection (tokio-postgres) and a
//! deadpool pool.
//!
//! - The clock: `last_seen = now()` and ages `now() - last_seen`, both on the
//!   server (selected as binary timestamps/intervals, converted to seconds here).
//! - A heartbeat batch is one `UPDATE … WHERE id = ANY($1)` (one array bind) that
//!   first locks its rows in id order (`ORDER BY id FOR NO KEY UPDATE` in a sub-select), so
//!   concurrent batches of several processes cannot deadlock.
//! - Timeouts: `connect_timeout` and `statement_timeout` (through the `options`
//!   startup parameter, no extra round trip) from `[db] timeout`, plus pool
//!   checkout/connect timeouts and a bound on every call.
//! - Pooled connections are not pinged on checkout (a heartbeat stays one
//!   statement); a connection the server closed is noticed by the client and
//!   dropped by the pool before reuse.
//! - Migrations run under `pg_advisory_lock`, so processes starting together apply
//!   them once.

use std::sync::Mutex;
use std::time::Duration;

use diesel::data_types::{PgInterval, PgTimestamp};
use diesel::dsl::{now, sql};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Interval, Text};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use servicegroup_core::async_trait;

use super::{bounded, Row, RowId, Settings, StatementCounter, Store};
use crate::error::DbError;
use crate::schema::pg::servicegroup_members as t;
use crate::url::PostgresUrl;

/// The embedded PostgreSQL migrations.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Most ids in one heartbeat statement (one array bind; bounds statement time).
pub(crate) const IDS_PER_STATEMENT: usize = 100_000;

/// Most rows in one multi-row upsert (two binds per row, PostgreSQL allows 65535).
const ROWS_PER_UPSERT: usize = 10_000;

/// `pg_advisory_lock` key serializing migrations ("sgmigr" in ASCII).
const MIGRATION_LOCK: i64 = 0x7367_6d69_6772;

/// The heartbeat batch. The rows are locked in id order first (`ORDER BY id FOR NO
/// KEY UPDATE`, the lock an UPDATE takes anyway: the lock step runs on the sorted
/// rows) and only then updated, so batches of several processes over overlapping
/// rows never deadlock, whatever plan the update takes. Sorting the ids alone is not
/// enough: a sequential scan visits rows in physical order, which every HOT update
/// changes (`concurrent_overlapping_batches_never_deadlock` failed with a plain
/// `UPDATE … WHERE id = ANY($1)`). The outer `t.id = ANY($1)` repeats the filter so
/// the planner reads `t` by index too: without it, a bound 10,000-id array made it
/// hash-join against a sequential scan of the whole table (seen with `perf` at
/// 1,000,000 members: 155 ms of the batch's 294 ms scanning 1,000,000 rows, ~13 µs of
/// server CPU per updated row instead of ~3). One statement, one array bind.
const TOUCH_IDS: &str = "UPDATE servicegroup_members AS t SET last_seen = now() \
     FROM (SELECT id FROM servicegroup_members WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE) AS s \
     WHERE t.id = s.id AND t.id = ANY($1)";

/// [`TOUCH_IDS`] for members known by name.
const TOUCH_MEMBERS: &str = "UPDATE servicegroup_members AS t SET last_seen = now() \
     FROM (SELECT id FROM servicegroup_members WHERE group_id = $1 AND member_id = ANY($2) \
           ORDER BY id FOR NO KEY UPDATE) AS s \
     WHERE t.id = s.id AND t.group_id = $1 AND t.member_id = ANY($2) \
     RETURNING t.id, t.member_id";

/// Age of the last heartbeat on the server's clock, as an `interval`. Selected raw
/// (binary microseconds) with `last_seen` itself, and converted to seconds here:
/// `date_part('epoch', …)` on both columns doubled the server's time to list
/// 100,000 members (30 ms against 15 ms, `EXPLAIN ANALYZE`).
fn db_age() -> diesel::expression::SqlLiteral<Interval> {
    sql::<Interval>("now() - last_seen")
}

/// A member row as PostgreSQL returns it: `(member, last_seen, age, forced_down)`.
type Selected = (String, PgTimestamp, PgInterval, bool);

/// Seconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_UNIX_SECS: f64 = 946_684_800.0;

/// Turns a selected row into a [`Row`] (epoch seconds and an age in seconds).
fn row((member, last_seen, age, forced_down): Selected) -> Row {
    // `now() - timestamptz` has no months; days are 24 h (it is not justified).
    let age_secs = age.microseconds as f64 / 1e6
        + f64::from(age.days) * 86_400.0
        + f64::from(age.months) * 30.0 * 86_400.0;
    Row {
        member,
        last_seen: PG_EPOCH_UNIX_SECS + last_seen.0 as f64 / 1e6,
        age: age_secs,
        forced_down,
    }
}

/// Rows registered through one store before it first refreshes the table's planner
/// statistics itself; the next refresh comes after twice as many, and so on.
const FIRST_ANALYZE_AFTER: u64 = 10_000;

/// When a store runs `ANALYZE` on the table itself: after [`FIRST_ANALYZE_AFTER`]
/// registered rows, then each time the count doubles (a fleet joining 3,400,000
/// members analyzes ~9 times). A table filled in one go is otherwise planned from no
/// statistics until autovacuum's next visit, and the planner then chose sequential
/// scans for the heartbeat statement (250–900 ms per batch of 10,000 at 1,000,000
/// rows instead of ~40 ms; seen with `auto_explain`, docs/performance.md).
#[derive(Debug, Default)]
struct StatsRefresh {
    /// `(rows registered so far, count at which the next refresh is due)`.
    state: Mutex<(u64, u64)>,
}

impl StatsRefresh {
    /// Counts `rows` registered rows; whether the table should be analyzed now.
    fn registered(&self, rows: u64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (total, next) = &mut *state;
        *total += rows;
        let due = (*next).max(FIRST_ANALYZE_AFTER);
        if *total < due {
            return false;
        }
        *next = total.saturating_mul(2);
        true
    }
}

/// The PostgreSQL store.
pub(crate) struct PostgresStore {
    pool: Pool<AsyncPgConnection>,
    timeout: Duration,
    stats: StatsRefresh,
    /// The URL the pool connects with (secret: never logged or shown), for the
    /// statistics refresh's own connection.
    client_url: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The URL handed to tokio-postgres: the configured one plus `connect_timeout`,
/// `statement_timeout` (in `options`) and an `application_name`.
fn client_url(url: &PostgresUrl, timeout: Duration) -> String {
    let connect_secs = timeout.as_secs_f64().ceil().max(1.0) as u64;
    let statement_ms = timeout.as_millis().max(1);
    let mut options = url.param("options").unwrap_or("").to_owned();
    if !options.contains("statement_timeout") {
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c statement_timeout={statement_ms}"));
    }
    let mut extra = vec![
        ("connect_timeout", connect_secs.to_string()),
        ("options", options),
    ];
    if url.param("application_name").is_none() {
        extra.push(("application_name", "servicegroup".to_owned()));
    }
    url.render(&extra)
}

/// Applies the migrations and builds the pool.
pub(crate) async fn connect(
    url: &PostgresUrl,
    settings: &Settings,
) -> Result<PostgresStore, DbError> {
    let client_url = client_url(url, settings.timeout);
    migrate(client_url.clone(), settings.timeout).await?;
    let counter = settings.statements.clone();
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |target: &str| {
        let target = target.to_owned();
        let counter = counter.clone();
        Box::pin(async move {
            let mut conn = AsyncPgConnection::establish(&target).await?;
            conn.set_instrumentation(StatementCounter(counter));
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        client_url.clone(),
        config,
    );
    let pool = super::pool(manager, settings.pool_size, settings.timeout)?;
    Ok(PostgresStore {
        pool,
        timeout: settings.timeout,
        stats: StatsRefresh::default(),
        client_url,
    })
}

/// Applies pending migrations on a dedicated connection, holding a session
/// advisory lock so that concurrent processes run them one after the other (the
/// later ones find nothing pending). Runs in a blocking task: diesel_migrations is
/// synchronous and works here on any tokio runtime flavour.
async fn migrate(client_url: String, timeout: Duration) -> Result<(), DbError> {
    let task = tokio::task::spawn_blocking(move || -> Result<usize, DbError> {
        let mut c = <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(
            &client_url,
        )?;
        diesel::RunQueryDsl::execute(
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")),
            &mut c,
        )?;
        let applied = c
            .run_pending_migrations(MIGRATIONS)
            .map(|v| v.len())
            .map_err(|e| DbError::Other(format!("migration failed: {e}")));
        let unlocked = diesel::RunQueryDsl::execute(
            diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")),
            &mut c,
        );
        let applied = applied?;
        unlocked?;
        Ok(applied)
    });
    // The blocking task cannot be cancelled, but the caller gets its answer in time.
    let applied = bounded(timeout * 2, async {
        task.await
            .map_err(|e| DbError::Other(format!("the migration task failed: {e}")))?
    })
    .await?;
    if applied > 0 {
        tracing::info!(applied, backend = "postgres", "applied database migrations");
    }
    Ok(())
}

impl PostgresStore {
    /// Refreshes the table's planner statistics in the background, on a connection of
    /// its own (not a pooled one: heartbeats keep every pooled connection, and the
    /// per-statement counters keep counting what the handles send), bounded by
    /// `[db] timeout`. A failure is logged, never returned: the registration it follows
    /// has succeeded, and autovacuum analyzes later anyway.
    fn analyze_in_background(&self) {
        let url = self.client_url.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            let result = bounded(timeout, async {
                let mut conn = AsyncPgConnection::establish(&url).await?;
                diesel::sql_query("ANALYZE servicegroup_members")
                    .execute(&mut conn)
                    .await?;
                Ok(())
            })
            .await;
            match result {
                Ok(()) => tracing::debug!(driver = crate::NAME, "analyzed servicegroup_members"),
                Err(error) => tracing::warn!(
                    driver = crate::NAME,
                    %error,
                    "could not refresh the planner statistics of servicegroup_members"
                ),
            }
        });
    }

    async fn conn(
        &self,
    ) -> Result<diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>, DbError> {
        Ok(self.pool.get().await?)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn upsert(&self, keys: &[(&str, &str)]) -> Result<Vec<(RowId, String, String)>, DbError> {
        let out = bounded(self.timeout, async {
            let mut conn = self.conn().await?;
            let mut out = Vec::with_capacity(keys.len());
            for chunk in keys.chunks(ROWS_PER_UPSERT) {
                let rows: Vec<_> = chunk
                    .iter()
                    .map(|(g, m)| {
                        (
                            t::group_id.eq(*g),
                            t::member_id.eq(*m),
                            t::last_seen.eq(now),
                        )
                    })
                    .collect();
                out.extend(
                    diesel::insert_into(t::table)
                        .values(rows)
                        .on_conflict((t::group_id, t::member_id))
                        .do_update()
                        .set(t::last_seen.eq(now))
                        .returning((t::id, t::group_id, t::member_id))
                        .get_results::<(i64, String, String)>(&mut conn)
                        .await?,
                );
            }
            Ok(out)
        })
        .await?;
        if self.stats.registered(keys.len() as u64) {
            self.analyze_in_background();
        }
        Ok(out)
    }

    async fn touch_ids(&self, ids: Vec<RowId>) -> Result<Vec<RowId>, DbError> {
        // Bounds per checkout and per statement: a batch of several chunks (more than
        // IDS_PER_STATEMENT members) may take longer than one `[db] timeout` in all.
        let mut conn = bounded(self.timeout, self.conn()).await?;
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            // The row count tells whether every row still exists; only when some are
            // gone (rare: an operator removed a member) a second statement finds out
            // which. Ids are never reused, so nothing can appear in between.
            let updated = bounded(self.timeout, async {
                Ok(diesel::sql_query(TOUCH_IDS)
                    .bind::<Array<BigInt>, _>(chunk)
                    .execute(&mut conn)
                    .await?)
            })
            .await?;
            if updated == chunk.len() {
                found.extend_from_slice(chunk);
            } else {
                let existing = bounded(self.timeout, async {
                    Ok(t::table
                        .select(t::id)
                        .filter(t::id.eq_any(chunk))
                        .load::<i64>(&mut conn)
                        .await?)
                })
                .await?;
                found.extend(existing);
            }
        }
        Ok(found)
    }

    async fn touch_members(
        &self,
        group: &str,
        members: Vec<String>,
    ) -> Result<Vec<(RowId, String)>, DbError> {
        #[derive(diesel::QueryableByName)]
        struct Touched {
            #[diesel(sql_type = BigInt)]
            id: i64,
            #[diesel(sql_type = Text)]
            member_id: String,
        }
        let mut conn = bounded(self.timeout, self.conn()).await?;
        let mut found = Vec::with_capacity(members.len());
        for chunk in members.chunks(IDS_PER_STATEMENT) {
            let touched: Vec<Touched> = bounded(self.timeout, async {
                Ok(diesel::sql_query(TOUCH_MEMBERS)
                    .bind::<Text, _>(group)
                    .bind::<Array<Text>, _>(chunk)
                    .load(&mut conn)
                    .await?)
            })
            .await?;
            found.extend(touched.into_iter().map(|r| (r.id, r.member_id)));
        }
        Ok(found)
    }

    async fn delete(&self, group: &str, member: &str) -> Result<bool, DbError> {
        bounded(self.timeout, async {
            let mut conn = self.conn().await?;
            let n = diesel::delete(
                t::table
                    .filter(t::group_id.eq(group))
                    .filter(t::member_id.eq(member)),
            )
            .execute(&mut conn)
            .await?;
            Ok(n > 0)
        })
        .await
    }

    async fn set_forced_down(
        &self,
        group: &str,
        member: &str,
        forced_down: bool,
    ) -> Result<bool, DbError> {
        bounded(self.timeout, async {
            let mut conn = self.conn().await?;
            let n = diesel::update(
                t::table
                    .filter(t::group_id.eq(group))
                    .filter(t::member_id.eq(member)),
            )
            .set(t::forced_down.eq(forced_down))
            .execute(&mut conn)
            .await?;
            Ok(n > 0)
        })
        .await
    }

    async fn get(&self, group: &str, member: &str) -> Result<Option<Row>, DbError> {
        bounded(self.timeout, async {
            let mut conn = self.conn().await?;
            let found = t::table
                .filter(t::group_id.eq(group))
                .filter(t::member_id.eq(member))
                .select((t::member_id, t::last_seen, db_age(), t::forced_down))
                .get_result::<Selected>(&mut conn)
                .await
                .optional()?;
            Ok(found.map(row))
        })
        .await
    }

    async fn list(&self, group: &str) -> Result<Vec<Row>, DbError> {
        bounded(self.timeout, async {
            let mut conn = self.conn().await?;
            let rows = t::table
                .filter(t::group_id.eq(group))
                .select((t::member_id, t::last_seen, db_age(), t::forced_down))
                .load::<Selected>(&mut conn)
                .await?;
            Ok(rows.into_iter().map(row).collect())
        })
        .await
    }

    async fn groups(&self) -> Result<Vec<String>, DbError> {
        bounded(self.timeout, async {
            let mut conn = self.conn().await?;
            Ok(t::table
                .select(t::group_id)
                .distinct()
                .order(t::group_id)
                .load::<String>(&mut conn)
                .await?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::url::{parse, Target};
    use servicegroup_core::DatabaseUrl;

    #[test]
    fn statistics_are_refreshed_when_the_registered_count_doubles() {
        let stats = StatsRefresh::default();
        let due: Vec<u64> = (1..=100)
            .filter(|_| stats.registered(1_000))
            .map(|i| i * 1_000)
            .collect();
        assert_eq!(due, [10_000, 20_000, 40_000, 80_000]);
        assert!(
            StatsRefresh::default().registered(50_000),
            "one large batch"
        );
    }

    #[test]
    fn client_url_adds_timeouts_and_keeps_options() {
        let Target::Postgres(url) = parse(&DatabaseUrl::new(
            "postgresql://u:pw@h:5/db?options=-c%20search_path%3Dx",
        ))
        .unwrap() else {
            panic!()
        };
        let rendered = client_url(&url, Duration::from_millis(1500));
        assert_eq!(
            rendered,
            "postgresql://u:pw@h:5/db?connect_timeout=2&options=-c%20search_path%3Dx%20-c%20statement_timeout%3D1500&application_name=servicegroup"
        );
    }
}
