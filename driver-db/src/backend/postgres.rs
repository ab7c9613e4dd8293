//! PostgreSQL through diesel-async's pure-Rust connection (tokio-postgres) and a
//! deadpool pool.
//!
//! - The clock: `last_seen = now()` and ages `now() - last_seen`, both on the
//!   server: a read selects `now()` once (a row of its own) and the binary
//!   `last_seen` of each row, and the age is their difference in microseconds;
//!   `list_in` and `summary` compare `last_seen` with `now() - service_down_time`
//!   (the bound interval), computed once per query.
//! - Two pools: the heartbeat lane (`[db] heartbeat_pool_size` connections for
//!   heartbeats, their id look-ups and registrations) and the general one
//!   (`[db] pool_size`: everything else), so a heartbeat never waits for a
//!   connection behind a listing.
//! - A heartbeat batch is one `UPDATE … WHERE id = ANY($1) AND holder = $2` (one
//!   array bind and the beating instance) that first locks its rows in id order
//!   (`ORDER BY id FOR NO KEY UPDATE` in a sub-select), so concurrent batches of
//!   several processes cannot deadlock. A batch of several instances (a relay's)
//!   compares `(id, holder)` with the pairs it binds as two arrays instead.
//! - Registering is one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO UPDATE` (four
//!   array binds whatever the batch size) applying the epoch rule in SQL; conditional
//!   registrations run in a transaction that locks the rows it checks.
//! - Timeouts: `connect_timeout` and `statement_timeout` (through the `options`
//!   startup parameter, no extra round trip) from `[db] timeout`, plus pool
//!   checkout/connect timeouts and a bound on every call.
//! - Pooled connections are not pinged on checkout (a heartbeat stays one
//!   statement); a connection the server closed is noticed by the client and
//!   dropped by the pool before reuse.
//! - Migrations run under `pg_advisory_lock`, so processes starting together apply
//!   them once.
//! - TLS: every connection is opened by a [`Connector`]: tokio-postgres with
//!   tokio-postgres-rustls and the rustls configuration of the `sslmode` in force
//!   (`crate::tls`), handed to diesel-async with `try_from_client_and_connection`
//!   (diesel-async's own `establish` knows no TLS).

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::data_types::{PgInterval, PgTimestamp};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Binary, Bool, Interval, Nullable, Text, Timestamptz};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use servicegroup_core::{async_trait, Condition, InstanceId, Summary};

use super::{
    age_from_micros, bounded, condition_holds, single_instance, state_predicate, summary_of,
    summary_select, unique_ids, Beat, Fresh, Lane, Outcome, Reg, Row, RowId, Settings,
    StatementCounter, Store, StoredHolder, StoredInstance, StoredMetadata, Unrefreshed, Which,
    SUMMARY_GROUPING,
};
use crate::error::{DbError, Redactor};
use crate::schema::pg::servicegroup_members as t;
use crate::schema::revisions::servicegroup_revisions as rev;
use crate::tls::rustls_config::{find_rustls_error, pg_client_config, tls_failure};
use crate::tls::{source_chain, PgSslMode, Tls};
use crate::url::PostgresUrl;

/// The embedded PostgreSQL migrations.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Most ids in one heartbeat statement (one array bind; bounds statement time).
pub(crate) const IDS_PER_STATEMENT: usize = 100_000;

/// Most rows in one registering statement (its rows travel as four array binds, so
/// this only bounds the statement's size and time).
const ROWS_PER_UPSERT: usize = 10_000;

/// `pg_advisory_lock` key serializing migrations ("sgmigr" in ASCII).
const MIGRATION_LOCK: i64 = 0x7367_6d69_6772;

/// The heartbeat batch of one instance (the normal case: a handle's tick). The rows
/// are locked in id order first (`ORDER BY id FOR NO KEY UPDATE`, the lock an UPDATE
/// takes anyway: the lock step runs on the sorted rows) and only then updated, so
/// batches of several processes over overlapping rows never deadlock, whatever plan
/// the update takes. Sorting the ids alone is not enough: a sequential scan visits
/// rows in physical order, which every HOT update changes
/// (`concurrent_overlapping_batches_never_deadlock` failed with a plain `UPDATE …
/// WHERE id = ANY($1)`).
///
/// The locking step is a `MATERIALIZED` CTE that also applies the fencing
/// (`holder = $2`: a row another instance holds is neither locked nor refreshed; a
/// takeover committed while we wait for the lock is re-checked on the row's new
/// version), and the update finds each locked row by its primary key. Run once, so the
/// statement is linear in the batch whatever the planner estimates. The form before
/// it joined the update's target to a locking sub-select, and a planner that
/// estimated one matching row (the holder filter) rescanned the sub-select, locks
/// and all, for every row: quadratic. `EXPLAIN ANALYZE` on 1,000,000 rows
/// (2026-12-02): 50 ids 0.7 ms (was 3.2), 1,000 ids 18 ms (25), 10,000 ids 156 ms (233).
/// Plans are custom (`sql_query` statements are not prepared by name), so the
/// array's size is known.
const TOUCH_ONE: &str = "WITH s AS MATERIALIZED (SELECT id FROM servicegroup_members \
     WHERE id = ANY($1) AND holder = $2 ORDER BY id FOR NO KEY UPDATE) \
     UPDATE servicegroup_members AS t SET last_seen = now() FROM s WHERE t.id = s.id";

/// [`TOUCH_ONE`] for a batch of several instances (a relay merging many clients, two
/// handles of a process): `$1` the distinct ids as before, `$2`/`$3` the `(id,
/// instance)` pairs, matched in the locking step. This is the relay's statement, and
/// the one the quadratic plan hit hardest: a batch of 1,000 beats of many instances
/// took 8.9 s (now 23 ms; 10,000: 204 ms, was 304), so a relay under 10,000 requests
/// a second fell behind for good.
const TOUCH_MANY: &str = "WITH s AS MATERIALIZED (SELECT id FROM servicegroup_members \
     WHERE id = ANY($1) AND (id, holder) IN (SELECT * FROM unnest($2::bigint[], $3::bytea[])) \
     ORDER BY id FOR NO KEY UPDATE) \
     UPDATE servicegroup_members AS t SET last_seen = now() FROM s WHERE t.id = s.id";

/// The second look after a batch refreshed fewer rows than it beat (rare: a member
/// removed or taken over): only the beats whose row is gone or held by another
/// instance come back (index lookups per beat, 30 ms for 10,000 beats).
const UNREFRESHED: &str = "SELECT b.id, b.instance, t.holder, t.epoch \
     FROM unnest($1::bigint[], $2::bytea[]) AS b(id, instance) \
     LEFT JOIN servicegroup_members AS t ON t.id = b.id \
     WHERE t.id IS NULL OR t.holder <> b.instance";

/// Registering unconditionally (join's takeover, the batch path): one statement for
/// a chunk, its rows as four arrays, the identity contract in SQL. A new row gets
/// epoch 1 and `holder_since = now()`; on conflict the holding instance keeps its
/// epoch and `holder_since`, another instance adds one to the epoch and sets
/// `holder_since`; metadata is replaced, `forced_down` and `created_at` are kept. (All
/// `SET` expressions read the row as it was.) Rows are inserted and locked in the
/// order given, sorted by key, so concurrent registrations cannot deadlock.
const UPSERT: &str = "INSERT INTO servicegroup_members AS t \
     (group_id, member_id, last_seen, holder, epoch, holder_since, metadata) \
     SELECT g, m, now(), h, 1, now(), md \
     FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[]) AS u(g, m, h, md) \
     ON CONFLICT (group_id, member_id) DO UPDATE SET last_seen = now(), \
     epoch = CASE WHEN t.holder = EXCLUDED.holder THEN GREATEST(t.epoch, 1) ELSE t.epoch + 1 END, \
     holder_since = CASE WHEN t.holder = EXCLUDED.holder \
         THEN COALESCE(t.holder_since, now()) ELSE now() END, \
     holder = EXCLUDED.holder, metadata = EXCLUDED.metadata \
     RETURNING t.id, t.group_id, t.member_id, t.epoch";

/// Registering members found absent under the lock (condition `Absent`): a row
/// another process inserted meanwhile wins (nothing is changed, nothing returned).
const INSERT_ABSENT: &str = "INSERT INTO servicegroup_members AS t \
     (group_id, member_id, last_seen, holder, epoch, holder_since, metadata) \
     SELECT g, m, now(), h, 1, now(), md \
     FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[]) AS u(g, m, h, md) \
     ON CONFLICT (group_id, member_id) DO NOTHING \
     RETURNING t.id, t.group_id, t.member_id, t.epoch";

/// The rows conditional registrations check, locked in id order until the
/// transaction ends (index lookups by key).
const LOCK_KEYS: &str = "SELECT t.id, t.group_id, t.member_id, t.holder, t.epoch \
     FROM servicegroup_members AS t \
     JOIN unnest($1::text[], $2::text[]) AS u(g, m) ON t.group_id = u.g AND t.member_id = u.m \
     ORDER BY t.id FOR NO KEY UPDATE OF t";

/// Moves a group's membership revision ([`Store::bump`]).
const BUMP: &str = "INSERT INTO servicegroup_revisions (group_id, revision) VALUES ($1, 1) \
     ON CONFLICT (group_id) DO UPDATE SET revision = servicegroup_revisions.revision + 1";

/// Ids of members known by name.
const LOOKUP: &str = "SELECT id, member_id FROM servicegroup_members \
     WHERE group_id = $1 AND member_id = ANY($2)";

/// A row a registering statement wrote.
#[derive(diesel::QueryableByName)]
struct Written {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    group_id: String,
    #[diesel(sql_type = Text)]
    member_id: String,
    #[diesel(sql_type = BigInt)]
    epoch: i64,
}

/// A row locked by [`LOCK_KEYS`].
#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = Text)]
    group_id: String,
    #[diesel(sql_type = Text)]
    member_id: String,
    #[diesel(sql_type = Binary)]
    holder: StoredInstance,
    #[diesel(sql_type = BigInt)]
    epoch: i64,
}

/// Runs [`UPSERT`] or [`INSERT_ABSENT`] for `regs`; the rows written.
async fn write(
    conn: &mut AsyncPgConnection,
    statement: &str,
    regs: &[&Reg<'_>],
) -> Result<Vec<Written>, DbError> {
    let mut written = Vec::with_capacity(regs.len());
    for chunk in regs.chunks(ROWS_PER_UPSERT) {
        let groups: Vec<&str> = chunk.iter().map(|r| r.group).collect();
        let members: Vec<&str> = chunk.iter().map(|r| r.member).collect();
        let holders: Vec<[u8; 16]> = chunk.iter().map(|r| r.instance.to_bytes()).collect();
        let holders: Vec<&[u8]> = holders.iter().map(|h| &h[..]).collect();
        let metadata: Vec<&str> = chunk.iter().map(|r| r.metadata.as_str()).collect();
        written.extend(
            diesel::sql_query(statement)
                .bind::<Array<Text>, _>(&groups)
                .bind::<Array<Text>, _>(&members)
                .bind::<Array<Binary>, _>(&holders)
                .bind::<Array<Text>, _>(&metadata)
                .load::<Written>(conn)
                .await?,
        );
    }
    Ok(written)
}

/// Puts the rows `written` into `out` at the positions of their registrations.
fn place(
    written: Vec<Written>,
    index: &std::collections::HashMap<(&str, &str), usize>,
    out: &mut [Option<Outcome>],
) {
    for w in written {
        if let Some(&i) = index.get(&(w.group_id.as_str(), w.member_id.as_str())) {
            out[i] = Some(Outcome::Stored {
                id: w.id,
                epoch: w.epoch,
            });
        }
    }
}

/// Registrations with conditions, inside a transaction: lock the rows they check,
/// decide with the rows as they are, write. A row that does not exist cannot be
/// locked: an `Absent` registration inserts with `ON CONFLICT DO NOTHING`, so of two
/// processes claiming one member at once exactly one wins, and the loser reads what
/// the winner stored.
async fn register_conditionally(
    conn: &mut AsyncPgConnection,
    regs: &[Reg<'_>],
) -> Result<Vec<Outcome>, DbError> {
    let index: std::collections::HashMap<(&str, &str), usize> = regs
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.group, r.member), i))
        .collect();
    let checked: Vec<&Reg<'_>> = regs
        .iter()
        .filter(|r| r.condition != Condition::Always)
        .collect();
    let groups: Vec<&str> = checked.iter().map(|r| r.group).collect();
    let members: Vec<&str> = checked.iter().map(|r| r.member).collect();
    let locked: Vec<Locked> = diesel::sql_query(LOCK_KEYS)
        .bind::<Array<Text>, _>(&groups)
        .bind::<Array<Text>, _>(&members)
        .load(conn)
        .await?;
    let found: std::collections::HashMap<(&str, &str), StoredHolder> = locked
        .iter()
        .map(|l| {
            (
                (l.group_id.as_str(), l.member_id.as_str()),
                (l.holder, l.epoch),
            )
        })
        .collect();
    let mut out: Vec<Option<Outcome>> = vec![None; regs.len()];
    let (mut upsert, mut insert) = (Vec::new(), Vec::new());
    for (i, r) in regs.iter().enumerate() {
        let holder = found.get(&(r.group, r.member)).copied();
        if r.condition == Condition::Always
            || (holder.is_some() && condition_holds(r.condition, holder))
        {
            // Unconditional, or the row is locked as checked: the upsert's epoch rule
            // gives what the check saw.
            upsert.push(r);
        } else if condition_holds(r.condition, holder) {
            insert.push(r);
        } else {
            out[i] = Some(Outcome::Refused { found: holder });
        }
    }
    if !upsert.is_empty() {
        place(write(conn, UPSERT, &upsert).await?, &index, &mut out);
    }
    if !insert.is_empty() {
        place(write(conn, INSERT_ABSENT, &insert).await?, &index, &mut out);
        // Inserted by another process since the lock: refused, with what it stored.
        for r in insert {
            let i = index[&(r.group, r.member)];
            if out[i].is_none() {
                let found = t::table
                    .filter(t::group_id.eq(r.group))
                    .filter(t::member_id.eq(r.member))
                    .select((t::holder, t::epoch))
                    .get_result::<StoredHolder>(conn)
                    .await
                    .optional()?;
                out[i] = Some(Outcome::Refused { found });
            }
        }
    }
    out.into_iter()
        .map(|o| o.ok_or_else(|| DbError::Other("a registration got no outcome".to_owned())))
        .collect()
}

/// The heartbeat half of the rule on the server's clock ([`super::state_predicate`],
/// bound with an `interval` of whole microseconds): `last_seen` no older than the
/// cutoff `now() - service_down_time`, which the sub-select computes once per query
/// (an init plan) instead of an age per row. Exact: timestamps and the interval are
/// whole microseconds, so `now() - last_seen <= d` exactly when
/// `last_seen >= now() - d`; the listing computes the age from the binary `now()`
/// and `last_seen` it selects (`now()` is the transaction's, one instant for every
/// row of the query and of the sub-select). Measured on an idle 1,000,000-member
/// group with 1 % stale (`EXPLAIN ANALYZE`): the scan took 233 ms computing
/// `now() - last_seen > interval` per row, 161 ms comparing with the cutoff.
const FRESH: Fresh = Fresh {
    before: "last_seen >= (SELECT now() - ",
    after: ")",
};

/// The records of a group, one query: the group's rows and, ahead of them, one row
/// holding `now()` (its member is NULL; `member_id` is `NOT NULL`, so it is that row
/// wherever it comes). Ages are `now - last_seen` computed here from the binary
/// timestamps, exactly as [`FRESH`] judges them, without computing and sending an
/// `interval` per row: selected per row, the interval cost the server 8 ms and the client 5 ms of a
/// 100,000-member listing. The holder, the epoch and the forced-down flag travel as
/// one `bytea` ([`Held`]) and metadata `{}` as NULL: every column of every row costs
/// the server a send function call and the client a field to decode (~5 ms of that
/// listing each). The bound group (and the state's filter) follow.
const RECORDS: &str = "SELECT NULL::text, now(), NULL::bytea, NULL::timestamptz, NULL::text \
     UNION ALL SELECT member_id, last_seen, \
     holder || int8send(epoch) || CASE WHEN forced_down THEN '\\x01'::bytea ELSE '\\x00'::bytea END, \
     holder_since, NULLIF(metadata, '{}') FROM servicegroup_members WHERE group_id = ";

/// The SQL types of [`RECORDS`]' columns.
type RecordColumns = (
    Nullable<Text>,
    Timestamptz,
    Nullable<Binary>,
    Nullable<Timestamptz>,
    Nullable<Text>,
);

/// A row of [`RECORDS`]: `(member, last_seen, holder/epoch/forced_down,
/// holder_since, metadata)`, the member `None` on the row of `now()` (whose
/// `last_seen` is `now()`).
type RecordRow = (
    Option<String>,
    PgTimestamp,
    Option<Held>,
    Option<PgTimestamp>,
    Option<StoredMetadata>,
);

/// `holder || int8send(epoch) || forced_down`: the stored holder (whatever its
/// length), the epoch's eight bytes (big-endian) and one byte for the flag, split
/// here exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::deserialize::FromSqlRow)]
struct Held {
    instance: StoredInstance,
    epoch: i64,
    forced_down: bool,
}

impl Held {
    fn from_bytes(raw: &[u8]) -> Option<Self> {
        let (&flag, rest) = raw.split_last()?;
        let (holder, epoch) = rest.split_at_checked(rest.len().checked_sub(8)?)?;
        Some(Self {
            instance: StoredInstance::from_slice(holder),
            epoch: i64::from_be_bytes(epoch.try_into().ok()?),
            forced_down: flag != 0,
        })
    }
}

impl diesel::deserialize::FromSql<Binary, diesel::pg::Pg> for Held {
    fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let raw = value.as_bytes();
        Self::from_bytes(raw).ok_or_else(|| {
            format!(
                "holder, epoch and flag in {} bytes, not 9 or more",
                raw.len()
            )
            .into()
        })
    }
}

/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A PostgreSQL timestamp as a time (microseconds, exactly); `None` for
/// `±infinity` and other values beyond chrono's range.
fn pg_utc(timestamp: PgTimestamp) -> Option<DateTime<Utc>> {
    timestamp
        .0
        .checked_add(PG_EPOCH_UNIX_MICROS)
        .and_then(DateTime::from_timestamp_micros)
}

/// `service_down_time` as the `interval` [`FRESH`] subtracts from `now()` (whole
/// microseconds, rounded down: see [`super::micros_floor`]).
fn interval(service_down_time: Duration) -> PgInterval {
    PgInterval::from_microseconds(super::micros_floor(service_down_time))
}

/// The rows of [`RECORDS`] as [`Row`]s.
fn records(rows: Vec<RecordRow>) -> Result<Vec<Row>, DbError> {
    // The `now()` row comes first (an append runs its parts in order); found
    // wherever it is all the same.
    let now = rows
        .iter()
        .find(|row| row.0.is_none())
        .map(|row| row.1 .0)
        .ok_or_else(|| DbError::Other("the listing returned no now() row".to_owned()))?;
    let mut out = Vec::with_capacity(rows.len().saturating_sub(1));
    for (member, last_seen, held, holder_since, metadata) in rows {
        // NULL only in the now() row (the columns are NOT NULL).
        let (Some(member), Some(held)) = (member, held) else {
            continue;
        };
        out.push(Row {
            member,
            last_seen: pg_utc(last_seen),
            age: age_from_micros(now.saturating_sub(last_seen.0)),
            forced_down: held.forced_down,
            instance: held.instance,
            epoch: held.epoch,
            holder_since: holder_since.and_then(pg_utc),
            metadata: metadata.unwrap_or(StoredMetadata::Empty),
        });
    }
    Ok(out)
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
    /// The general lane: listings, watch polls, operator calls.
    pool: Pool<AsyncPgConnection>,
    /// The heartbeat lane: heartbeats, their id look-ups and registrations, on
    /// connections nothing else takes (the general pool itself when
    /// `[db] heartbeat_pool_size` is 0).
    lane: Pool<AsyncPgConnection>,
    timeout: Duration,
    stats: StatsRefresh,
    /// Opens the statistics refresh's own connections.
    connector: Connector,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The client configuration: the URL's plus `connect_timeout`, `statement_timeout`
/// (in `options`), an `application_name`, and the `sslmode` tokio-postgres knows
/// (`verify-ca` and `verify-full` are `require` there: verifying is the rustls
/// configuration's part).
fn client_config(url: &PostgresUrl, mode: PgSslMode, timeout: Duration) -> tokio_postgres::Config {
    use tokio_postgres::config::SslMode;
    let mut config = url.config().clone();
    let connect_secs = timeout.as_secs_f64().ceil().max(1.0) as u64;
    let statement_ms = timeout.as_millis().max(1);
    let mut options = config.get_options().unwrap_or("").to_owned();
    if !options.contains("statement_timeout") {
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c statement_timeout={statement_ms}"));
    }
    config
        .connect_timeout(Duration::from_secs(connect_secs))
        .options(&options)
        .ssl_mode(match mode {
            PgSslMode::Disable => SslMode::Disable,
            PgSslMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
    if config.get_application_name().is_none() {
        config.application_name("servicegroup");
    }
    config
}

/// Opens connections to the server: tokio-postgres with the rustls connector of the
/// `sslmode` in force. A failure's message carries the whole source chain (the
/// client's own Display is terse), names the TLS options, and holds no password.
#[derive(Clone)]
pub(crate) struct Connector {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    options: String,
    redactor: Redactor,
}

impl Connector {
    /// A connector for `url` with the TLS options `tls` (a CA file that cannot be
    /// read is a `Tls` error naming its option).
    pub(crate) fn new(
        url: &PostgresUrl,
        tls: &Tls<PgSslMode>,
        timeout: Duration,
        redactor: Redactor,
    ) -> Result<Self, DbError> {
        let rustls = pg_client_config(tls).map_err(|e| DbError::Tls(e.to_string()))?;
        Ok(Self {
            config: client_config(url, tls.mode, timeout),
            tls: tokio_postgres_rustls::MakeRustlsConnect::new(rustls),
            options: tls.described.clone(),
            redactor,
        })
    }

    /// Opens one connection.
    pub(crate) async fn connect(&self) -> Result<AsyncPgConnection, DbError> {
        match self.config.connect(self.tls.clone()).await {
            Ok((client, connection)) => {
                Ok(AsyncPgConnection::try_from_client_and_connection(client, connection).await?)
            }
            Err(e) => Err(self.failure(&e)),
        }
    }

    /// A failed connect as a [`DbError`]: `Tls` when rustls refused (naming the TLS
    /// options), else `Connect` with the source chain and the TLS options.
    fn failure(&self, e: &tokio_postgres::Error) -> DbError {
        if let Some(refused) = find_rustls_error(e) {
            let message = self.redactor.clean(&tls_failure(&self.options, refused));
            tracing::warn!(
                driver = crate::NAME,
                backend = "postgres",
                tls = %self.options,
                error = %message,
                "TLS to PostgreSQL failed"
            );
            return DbError::Tls(message);
        }
        let chain = self.redactor.clean(&source_chain(e));
        tracing::debug!(
            driver = crate::NAME,
            backend = "postgres",
            tls = %self.options,
            error = %chain,
            "connecting to PostgreSQL failed"
        );
        DbError::Connect(diesel::ConnectionError::BadConnection(format!(
            "{chain} ({})",
            self.options
        )))
    }
}

/// Applies the migrations and builds the pool.
pub(crate) async fn connect(
    url: &PostgresUrl,
    tls: &Tls<PgSslMode>,
    redactor: &Redactor,
    settings: &Settings,
) -> Result<PostgresStore, DbError> {
    let connector = Connector::new(url, tls, settings.timeout, redactor.clone())?;
    migrate(&connector, settings.timeout).await?;
    let manager = || {
        let counter = settings.statements.clone();
        let connector = connector.clone();
        let mut config = ManagerConfig::<AsyncPgConnection>::default();
        config.recycling_method = RecyclingMethod::Fast;
        config.custom_setup = Box::new(move |_location: &str| {
            let counter = counter.clone();
            let connector = connector.clone();
            Box::pin(async move {
                let mut conn = connector
                    .connect()
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                conn.set_instrumentation(StatementCounter(counter));
                Ok(conn)
            })
        });
        // The manager's URL is only handed to `custom_setup`, which does not read it.
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            url.redacted().to_owned(),
            config,
        )
    };
    let pool = super::pool(manager(), settings.pool_size, settings.timeout)?;
    let lane = match settings.heartbeat_pool_size {
        0 => pool.clone(),
        size => super::pool(manager(), size, settings.timeout)?,
    };
    Ok(PostgresStore {
        pool,
        lane,
        timeout: settings.timeout,
        stats: StatsRefresh::default(),
        connector,
    })
}

/// Applies pending migrations on a dedicated connection, holding a session
/// advisory lock so that concurrent processes run them one after the other (the
/// later ones find nothing pending). Runs in a blocking task: diesel_migrations is
/// synchronous and works here on any tokio runtime flavour.
async fn migrate(connector: &Connector, timeout: Duration) -> Result<(), DbError> {
    let conn = bounded(timeout, connector.connect()).await?;
    let mut c: AsyncConnectionWrapper<AsyncPgConnection> = conn.into();
    let task = tokio::task::spawn_blocking(move || -> Result<usize, DbError> {
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
        let connector = self.connector.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            let result = bounded(timeout, async {
                let mut conn = connector.connect().await?;
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

    /// A connection of the general lane.
    async fn conn(
        &self,
    ) -> Result<diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>, DbError> {
        Ok(self.pool.get().await?)
    }

    /// A connection of the heartbeat lane.
    async fn lane_conn(
        &self,
    ) -> Result<diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>, DbError> {
        Ok(self.lane.get().await?)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn register(&self, regs: &[Reg<'_>]) -> Result<Vec<Outcome>, DbError> {
        let conditional = regs.iter().any(|r| r.condition != Condition::Always);
        let out = bounded(self.timeout, async {
            let mut conn = self.lane_conn().await?;
            if conditional {
                return conn
                    .transaction::<_, DbError, _>(async |c| register_conditionally(c, regs).await)
                    .await;
            }
            let index: std::collections::HashMap<(&str, &str), usize> = regs
                .iter()
                .enumerate()
                .map(|(i, r)| ((r.group, r.member), i))
                .collect();
            let all: Vec<&Reg<'_>> = regs.iter().collect();
            let mut out: Vec<Option<Outcome>> = vec![None; regs.len()];
            place(write(&mut conn, UPSERT, &all).await?, &index, &mut out);
            out.into_iter()
                .map(|o| {
                    o.ok_or_else(|| DbError::Other("a registration was not stored".to_owned()))
                })
                .collect()
        })
        .await?;
        if self.stats.registered(regs.len() as u64) {
            self.analyze_in_background();
        }
        Ok(out)
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
        // Bounds per checkout and per statement: a batch of several chunks (more than
        // IDS_PER_STATEMENT members) may take longer than one `[db] timeout` in all.
        let mut conn = bounded(self.timeout, self.lane_conn()).await?;
        let mut unrefreshed = Vec::new();
        for chunk in beats.chunks(IDS_PER_STATEMENT) {
            let ids = unique_ids(chunk);
            // The row count tells whether every beat refreshed its row; only when
            // some did not (rare: a member removed or taken over) a second statement
            // finds out which. Ids are never reused, so nothing can appear in between.
            let updated = bounded(self.timeout, async {
                let statement = match single_instance(chunk) {
                    Some(instance) => {
                        diesel::sql_query(TOUCH_ONE)
                            .bind::<Array<BigInt>, _>(&ids)
                            .bind::<Binary, _>(&instance.to_bytes()[..])
                            .execute(&mut conn)
                            .await
                    }
                    None => {
                        let (pair_ids, holders) = pairs(chunk);
                        let holders: Vec<&[u8]> = holders.iter().map(|h| &h[..]).collect();
                        diesel::sql_query(TOUCH_MANY)
                            .bind::<Array<BigInt>, _>(&ids)
                            .bind::<Array<BigInt>, _>(&pair_ids)
                            .bind::<Array<Binary>, _>(&holders)
                            .execute(&mut conn)
                            .await
                    }
                };
                Ok(statement?)
            })
            .await?;
            if updated == chunk.len() {
                continue;
            }
            let refused: Vec<Refused> = bounded(self.timeout, async {
                let (pair_ids, holders) = pairs(chunk);
                let holders: Vec<&[u8]> = holders.iter().map(|h| &h[..]).collect();
                Ok(diesel::sql_query(UNREFRESHED)
                    .bind::<Array<BigInt>, _>(&pair_ids)
                    .bind::<Array<Binary>, _>(&holders)
                    .load(&mut conn)
                    .await?)
            })
            .await?;
            for r in refused {
                // The beat's own instance came back as bound: always 16 bytes.
                let Some(instance) = r.instance.instance() else {
                    continue;
                };
                unrefreshed.push(Unrefreshed {
                    id: r.id,
                    instance,
                    found: r.holder.map(|h| (h, r.epoch.unwrap_or(0))),
                });
            }
        }
        Ok(unrefreshed)
    }

    async fn lookup(
        &self,
        group: &str,
        members: Vec<String>,
    ) -> Result<Vec<(RowId, String)>, DbError> {
        #[derive(diesel::QueryableByName)]
        struct Found {
            #[diesel(sql_type = BigInt)]
            id: i64,
            #[diesel(sql_type = Text)]
            member_id: String,
        }
        let mut conn = bounded(self.timeout, self.lane_conn()).await?;
        let mut found = Vec::with_capacity(members.len());
        for chunk in members.chunks(IDS_PER_STATEMENT) {
            let rows: Vec<Found> = bounded(self.timeout, async {
                Ok(diesel::sql_query(LOOKUP)
                    .bind::<Text, _>(group)
                    .bind::<Array<Text>, _>(chunk)
                    .load(&mut conn)
                    .await?)
            })
            .await?;
            found.extend(rows.into_iter().map(|r| (r.id, r.member_id)));
        }
        Ok(found)
    }

    async fn delete(
        &self,
        group: &str,
        member: &str,
        holder: Option<InstanceId>,
    ) -> Result<bool, DbError> {
        bounded(self.timeout, async {
            let mut conn = self.conn().await?;
            let of_key = t::table
                .filter(t::group_id.eq(group))
                .filter(t::member_id.eq(member));
            let n = match holder {
                None => diesel::delete(of_key).execute(&mut conn).await?,
                Some(instance) => {
                    diesel::delete(of_key.filter(t::holder.eq(&instance.to_bytes()[..])))
                        .execute(&mut conn)
                        .await?
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
        bounded(self.timeout, async {
            let mut conn = self.conn().await?;
            let n = diesel::update(
                t::table
                    .filter(t::group_id.eq(group))
                    .filter(t::member_id.eq(member))
                    .filter(t::holder.eq(&instance.to_bytes()[..])),
            )
            .set(t::metadata.eq(&metadata))
            .execute(&mut conn)
            .await?;
            Ok(n > 0)
        })
        .await
    }

    async fn holder(&self, group: &str, member: &str) -> Result<Option<StoredHolder>, DbError> {
        bounded(self.timeout, async {
            let mut conn = self.conn().await?;
            Ok(t::table
                .filter(t::group_id.eq(group))
                .filter(t::member_id.eq(member))
                .select((t::holder, t::epoch))
                .get_result::<StoredHolder>(&mut conn)
                .await
                .optional()?)
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
            let rows = sql::<RecordColumns>(RECORDS)
                .bind::<Text, _>(group)
                .sql(" AND member_id = ")
                .bind::<Text, _>(member)
                .load::<RecordRow>(&mut conn)
                .await?;
            Ok(records(rows)?.pop())
        })
        .await
    }

    async fn list(&self, group: &str, which: Which) -> Result<Vec<Row>, DbError> {
        bounded(self.timeout, async {
            let mut conn = self.conn().await?;
            let query = sql::<RecordColumns>(RECORDS).bind::<Text, _>(group);
            let rows = match which {
                Which::All => query.load::<RecordRow>(&mut conn).await?,
                Which::In(state, service_down_time) => {
                    let (before, after) = state_predicate(state, FRESH);
                    query
                        .sql(" AND ")
                        .sql(&before)
                        .bind::<Interval, _>(interval(service_down_time))
                        .sql(&after)
                        .load::<RecordRow>(&mut conn)
                        .await?
                }
            };
            records(rows)
        })
        .await
    }

    async fn summary(&self, group: &str, service_down_time: Duration) -> Result<Summary, DbError> {
        bounded(self.timeout, async {
            let mut conn = self.conn().await?;
            let (select, from) = summary_select(FRESH);
            let rows = sql::<(Bool, Bool, BigInt)>(&select)
                .bind::<Interval, _>(interval(service_down_time))
                .sql(&from)
                .bind::<Text, _>(group)
                .sql(SUMMARY_GROUPING)
                .load::<(bool, bool, i64)>(&mut conn)
                .await?;
            Ok(summary_of(&rows))
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

    async fn bump(&self, group: &str, lane: Lane) -> Result<(), DbError> {
        bounded(self.timeout, async {
            let mut conn = match lane {
                Lane::Heartbeat => self.lane_conn().await?,
                Lane::General => self.conn().await?,
            };
            diesel::sql_query(BUMP)
                .bind::<Text, _>(group)
                .execute(&mut conn)
                .await?;
            Ok(())
        })
        .await
    }

    async fn revision(&self, group: &str) -> Result<u64, DbError> {
        bounded(self.timeout, async {
            let mut conn = self.conn().await?;
            let stored = rev::table
                .filter(rev::group_id.eq(group))
                .select(rev::revision)
                .get_result::<i64>(&mut conn)
                .await
                .optional()?;
            Ok(super::revision_of(stored))
        })
        .await
    }
}

/// The `(id, instance)` pairs of `beats` as two arrays (the instances as 16 bytes).
fn pairs(beats: &[Beat]) -> (Vec<RowId>, Vec<[u8; 16]>) {
    beats.iter().map(|b| (b.id, b.instance.to_bytes())).unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::url::{parse, Target};
    use servicegroup_core::DatabaseUrl;

    #[test]
    fn holder_epoch_and_flag_are_split_exactly() {
        let id = [7u8; 16];
        let mut raw = id.to_vec();
        raw.extend_from_slice(&(-2i64).to_be_bytes());
        raw.push(1);
        let held = Held::from_bytes(&raw).unwrap();
        assert_eq!(held.instance.instance(), Some(InstanceId::from_bytes(id)));
        assert_eq!((held.epoch, held.forced_down), (-2, true));
        // A stored holder of another length keeps its length.
        let mut short = vec![1, 2, 3];
        short.extend_from_slice(&u64::MAX.to_be_bytes()[..]);
        short.push(0);
        let held = Held::from_bytes(&short).unwrap();
        assert_eq!(
            (held.instance.len(), held.epoch, held.forced_down),
            (3, -1, false)
        );
        assert_eq!(Held::from_bytes(&[0; 8]), None);
        assert_eq!(Held::from_bytes(&[]), None);
    }

    #[test]
    fn timestamps_and_intervals_are_exact_microseconds() {
        // 2026-12-01T23:23:41.980449Z
        let pg = PgTimestamp(1_796_167_421_980_449 - PG_EPOCH_UNIX_MICROS);
        assert_eq!(
            pg_utc(pg).unwrap().timestamp_micros(),
            1_796_167_421_980_449
        );
        assert_eq!(pg_utc(PgTimestamp(i64::MAX)), None);
        assert_eq!(
            interval(Duration::from_nanos(60_000_000_999)),
            PgInterval::from_microseconds(60_000_000)
        );
    }

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
    fn client_config_adds_timeouts_and_keeps_options() {
        use tokio_postgres::config::SslMode;
        let Target::Postgres(url) = parse(&DatabaseUrl::new(
            "postgresql://u:pw@h:5/db?options=-c%20search_path%3Dx",
        ))
        .unwrap() else {
            panic!()
        };
        let config = client_config(&url, PgSslMode::VerifyFull, Duration::from_millis(1500));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(
            config.get_options(),
            Some("-c search_path=x -c statement_timeout=1500")
        );
        assert_eq!(config.get_application_name(), Some("servicegroup"));
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        let config = client_config(&url, PgSslMode::Disable, Duration::from_secs(1));
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);
    }

    /// The server of `scripts/test` (`SERVICEGROUP_TEST_POSTGRES_URL`); `None` (the
    /// test is skipped) only outside CI.
    fn test_server() -> Option<String> {
        match std::env::var("SERVICEGROUP_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("SERVICEGROUP_TEST_POSTGRES_URL is not set under CI=true (scripts/test sets it)")
            }
            _ => None,
        }
    }

    #[derive(QueryableByName)]
    struct PlanLine {
        #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
        line: String,
    }

    /// `loops=` of every `LockRows` node of an `EXPLAIN ANALYZE` plan.
    fn lock_loops(plan: &[PlanLine]) -> Vec<u64> {
        plan.iter()
            .filter(|l| l.line.contains("LockRows"))
            .filter_map(|l| {
                let loops = l.line.rsplit("loops=").next()?;
                loops.trim_end_matches(')').trim().parse().ok()
            })
            .collect()
    }

    /// Both heartbeat statements lock each row once, so they stay linear in the batch
    /// whatever the planner estimates: the earlier form joined the target to its
    /// locking sub-select, and with the holder filter estimated at one row the
    /// planner rescanned the sub-select (locks and all) for every row: 8.9 s for a
    /// relay's batch of 1,000 beats. The rows live in a temporary table of the same
    /// name (it shadows the real one in this session), analyzed as the real one is.
    #[tokio::test]
    async fn heartbeat_statements_lock_each_row_once() {
        let Some(url) = test_server() else {
            eprintln!("skipped: SERVICEGROUP_TEST_POSTGRES_URL is not set");
            return;
        };
        let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
        // Every row its own holder, as in a fleet of one member per process: with
        // 200,000 such rows the old form's plan rescanned its lock step 1,000 times.
        for statement in [
            "CREATE TEMP TABLE servicegroup_members \
             (id bigint PRIMARY KEY, holder bytea NOT NULL, last_seen timestamptz NOT NULL)",
            "INSERT INTO servicegroup_members SELECT g, \
             decode(lpad(to_hex(g), 32, '0'), 'hex'), now() FROM generate_series(1, 200000) g",
            "ANALYZE servicegroup_members",
        ] {
            diesel::sql_query(statement)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let ids: Vec<i64> = (1..=1_000).map(|i| i * 7).collect();
        let holder_of = |id: i64| {
            let mut h = [0u8; 16];
            h[8..].copy_from_slice(&id.to_be_bytes());
            h
        };
        let holders: Vec<[u8; 16]> = ids.iter().map(|&id| holder_of(id)).collect();
        let holders: Vec<&[u8]> = holders.iter().map(|h| &h[..]).collect();
        let explain = |sql: &str| format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql}");
        // A relay's batch: many instances, each beating its own member.
        let many: Vec<PlanLine> = diesel::sql_query(explain(TOUCH_MANY))
            .bind::<Array<BigInt>, _>(&ids)
            .bind::<Array<BigInt>, _>(&ids)
            .bind::<Array<Binary>, _>(&holders)
            .load(&mut conn)
            .await
            .unwrap();
        // A handle's batch: one instance holding every member it beats.
        let mine = [0xffu8; 16];
        diesel::sql_query("UPDATE servicegroup_members SET holder = $2 WHERE id = ANY($1)")
            .bind::<Array<BigInt>, _>(&ids)
            .bind::<Binary, _>(&mine[..])
            .execute(&mut conn)
            .await
            .unwrap();
        diesel::sql_query("ANALYZE servicegroup_members")
            .execute(&mut conn)
            .await
            .unwrap();
        let one: Vec<PlanLine> = diesel::sql_query(explain(TOUCH_ONE))
            .bind::<Array<BigInt>, _>(&ids)
            .bind::<Binary, _>(&mine[..])
            .load(&mut conn)
            .await
            .unwrap();
        for (name, plan) in [("TOUCH_MANY", &many), ("TOUCH_ONE", &one)] {
            let text: Vec<&str> = plan.iter().map(|l| l.line.as_str()).collect();
            let loops = lock_loops(plan);
            assert!(
                !loops.is_empty() && loops.iter().all(|&n| n == 1),
                "{name} must lock its rows in one pass (LockRows loops {loops:?}):\n{}",
                text.join("\n")
            );
        }
    }
}
