//! MySQL / MariaDB through diesel-async's pure-Rust connection (mysql_async, no
//! libmysqlclient; TLS with rustls on ring) and a deadpool pool.
//!
//! - The clock: `last_seen = NOW(6)` (microseconds) and ages
//!   `TIMESTAMPDIFF(MICROSECOND, last_seen, NOW(6))`, both on the server; every
//!   session runs in UTC (`time_zone = '+00:00'`, set by diesel-async).
//! - A heartbeat batch is one `UPDATE … SET last_seen = NOW(6) WHERE id IN (…) AND
//!   holder = X'…' ORDER BY id`: InnoDB locks the rows in primary-key order whatever
//!   the plan, so concurrent batches of several processes cannot deadlock, and only
//!   rows the beating instance holds are refreshed (a batch of several instances
//!   compares `(id, holder) IN ((…), …)` instead). The ids and instances (integers
//!   the database assigned, 16-byte ids: never user text) are written into the
//!   statement as literals: one short prepare instead of one placeholder definition
//!   per id, and no placeholder limit (65,535) to chunk around; a batch is split only
//!   past [`IDS_PER_STATEMENT`] ids. The row count is the number of *matched* rows
//!   (diesel-async sets `CLIENT_FOUND_ROWS`), so it tells whether every beat
//!   refreshed its row; when not, one `SELECT` of the rows' holders tells which.
//! - No `RETURNING` on MySQL: registering is one transaction, `INSERT … ON DUPLICATE
//!   KEY UPDATE` (the epoch rule in SQL) then one `SELECT` of the ids and epochs
//!   (the rows stay locked in between, so it reads what the insert wrote);
//!   conditional registrations first lock the rows they check (`SELECT … FOR
//!   UPDATE`). Members known only by name are looked up first and then touched by id
//!   (two statements, only on a handle's first tick for members another handle
//!   registered).
//! - Timeouts: every session gets `max_statement_time` (MariaDB; MySQL:
//!   `max_execution_time`, which bounds `SELECT`s), `innodb_lock_wait_timeout` and
//!   `lock_wait_timeout` from `[db] timeout`; the pool's checkout, connect and
//!   recycle timeouts and a bound on every call cover the rest (mysql_async has no
//!   connect timeout of its own).
//! - Pooled connections are not pinged on checkout (a heartbeat stays one
//!   statement). diesel-async cannot tell that a MySQL connection died, so a
//!   connection whose call failed with `Unavailable` or `Timeout`, or whose call
//!   was cancelled midway, is closed instead of being handed out again ([`Lease`]).
//! - URLs: the client is told `prefer_socket=false` (unless the URL says otherwise),
//!   so a TCP URL stays on TCP instead of switching to the server's Unix socket.
//! - Two pools: the heartbeat lane (`[db] heartbeat_pool_size` connections for
//!   heartbeats, their id look-ups and registrations) and the general one
//!   (`[db] pool_size`: everything else).
//! - Migrations run under `GET_LOCK('servicegroup_migrations', …)`, so processes
//!   starting together apply them once.
//! - TLS: every connection is opened by a [`Connector`], which gives mysql_async the
//!   `SslOpts` of the `ssl-mode` in force and hands the connection to diesel-async
//!   (`AsyncMysqlConnection::try_from`, with the options diesel-async's `establish`
//!   sets: no statement cache, `CLIENT_FOUND_ROWS`). `PREFERRED` falls back to plain
//!   TCP when the server offers no TLS. `VERIFY_CA` (and `PREFERRED`/`REQUIRED` with
//!   a CA file): mysql_async's "skip the name" switch does not work with rustls
//!   0.23.46 (it looks for `NotValidForName` in the error's text, which now reads
//!   "certificate not valid for name …"), so a certificate refused *only* for its
//!   name (rustls checks the chain first) is tried again with the name check made
//!   against a name the certificate carries: the chain is still verified, the host
//!   name is not, which is `VERIFY_CA`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use diesel::dsl::sql;
use diesel::mysql::data_types::MysqlTime;
use diesel::mysql::Mysql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary, Bool, Datetime, Nullable, Text};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use servicegroup_core::{async_trait, Condition, ErrorKind, InstanceId, Summary};

use super::{
    age_from_micros, bounded, condition_holds, micros_floor, push_hex, single_instance,
    state_predicate, summary_of, summary_select, unique_ids, unrefreshed_among, Beat, Fresh, Lane,
    Outcome, Reg, Row, RowId, Settings, StatementCounter, Store, StoredHolder, StoredInstance,
    StoredMetadata, Unrefreshed, Which, SUMMARY_GROUPING,
};
use crate::error::{DbError, Redactor};
use crate::schema::revisions::servicegroup_revisions as rev;
use crate::tls::rustls_config::{
    find_rustls_error, install_default_provider, presented_name, roots, tls_failure,
};
use crate::tls::{source_chain, MysqlSslMode, Tls};
use crate::url::MysqlUrl;

use self::schema::servicegroup_members as t;

/// The embedded MySQL/MariaDB migrations.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// Moves a group's membership revision ([`Store::bump`]).
const BUMP: &str = "INSERT INTO servicegroup_revisions (group_id, revision) VALUES (?, 1) \
     ON DUPLICATE KEY UPDATE revision = revision + 1";

/// Most ids in one heartbeat statement (ids as literals: ~0.5 MB of SQL at most,
/// far below `max_allowed_packet`), and most member names bound in one lookup
/// (below MySQL's 65,535 placeholders).
pub(crate) const IDS_PER_STATEMENT: usize = 50_000;

/// Most rows in one multi-row `INSERT` (four placeholders per row).
const ROWS_PER_UPSERT: usize = 10_000;

/// How often a statement (or a registration's transaction) InnoDB chose as a
/// deadlock victim is sent again. Batches lock rows in id order and registrations in
/// key order, so two batches never deadlock; a registration and another process's
/// batch over the same rows still can (key order and id order differ). A heartbeat
/// statement is its own transaction and a registration's transaction is rolled back
/// whole, so sending it again is safe.
const DEADLOCK_RETRIES: u32 = 2;

/// Whether InnoDB rolled the statement back as a deadlock victim (error 1213).
fn is_deadlock(e: &diesel::result::Error) -> bool {
    matches!(e, diesel::result::Error::DatabaseError(_, info) if info.message().starts_with("Deadlock found"))
}

/// The `GET_LOCK` name serializing migrations.
const MIGRATION_LOCK: &str = "servicegroup_migrations";

/// The table as diesel sees it on MySQL: `last_seen DATETIME(6)` written with `NOW(6)`.
mod schema {
    diesel::table! {
        servicegroup_members (id) {
            id -> BigInt,
            group_id -> Text,
            member_id -> Text,
            last_seen -> Datetime,
            forced_down -> Bool,
            created_at -> Datetime,
            holder -> Binary,
            epoch -> BigInt,
            holder_since -> Nullable<Datetime>,
            metadata -> Text,
        }
    }
}

type Conn = AsyncMysqlConnection;

/// The heartbeat half of the rule on the database's clock ([`super::state_predicate`],
/// bound with `service_down_time` in whole microseconds): `last_seen` no older than
/// the cutoff `NOW(6) - INTERVAL d MICROSECOND`, a constant of the statement (`NOW(6)`
/// is the statement's, one instant for every row), instead of a `TIMESTAMPDIFF` per
/// row. Exact: `DATETIME(6)` and the interval are whole microseconds, so the age
/// the listing reports ([`db_age_and_flag`]) is `<= d` exactly when
/// `last_seen >= NOW(6) - d` (the cutoff stays inside `DATETIME`'s range:
/// `service_down_time` is at most 100 years).
const FRESH: Fresh = Fresh {
    before: "last_seen >= NOW(6) - INTERVAL ",
    after: " MICROSECOND",
};

/// The age in µs (`TIMESTAMPDIFF(MICROSECOND, last_seen, NOW(6))`) times two plus the forced-down flag: one column for two facts. Each
/// column of each row costs mysql_async and diesel-async a value, a column-name
/// conversion and, for numbers and dates, an allocation (~9 ms per column of a
/// 100,000-member listing), so the listing selects as few as it can without losing
/// anything. Exact: two `DATETIME`s (years 1000–9999) are less than 2^59 µs apart,
/// so the product never overflows, `>> 1` gives the age back (negative too) and
/// `& 1` the flag. `last_seen` and `holder_since` come as stored and are converted
/// here (`UNIX_TIMESTAMP()` of each, a time-zone conversion and a `DECIMAL`, cost
/// the server 25 ms of that listing).
fn db_age_and_flag() -> diesel::expression::SqlLiteral<BigInt> {
    sql::<BigInt>("TIMESTAMPDIFF(MICROSECOND, last_seen, NOW(6)) * 2 + (forced_down <> 0)")
}

/// The age in µs of a [`db_age_and_flag`] value (an arithmetic shift: negative
/// ages too).
fn age_of(age_and_flag: i64) -> i64 {
    age_and_flag >> 1
}

/// The forced-down flag of a [`db_age_and_flag`] value.
fn forced_down_of(age_and_flag: i64) -> bool {
    age_and_flag & 1 == 1
}

/// `metadata`, NULL for `{}` (a member without metadata: nothing to ship and
/// allocate for the common case).
fn db_metadata() -> diesel::expression::SqlLiteral<Nullable<Text>> {
    sql::<Nullable<Text>>("NULLIF(metadata, '{}')")
}

/// The rule's filter for `which` ([`super::state_predicate`] around the bound
/// `service_down_time` in microseconds); `None` for every row.
fn state_filter(
    which: Which,
) -> Option<Box<dyn BoxableExpression<t::table, Mysql, SqlType = Bool>>> {
    let Which::In(state, service_down_time) = which else {
        return None;
    };
    let (before, after) = state_predicate(state, FRESH);
    Some(Box::new(
        sql::<Bool>(&before)
            .bind::<BigInt, _>(micros_floor(service_down_time))
            .sql(&after),
    ))
}

/// A `DATETIME(6)` as a time, converted as the column is read (sessions run in UTC;
/// `None` for a zero or invalid date).
#[derive(Debug, Clone, Copy, diesel::deserialize::FromSqlRow)]
struct Utc6(Option<DateTime<Utc>>);

impl diesel::deserialize::FromSql<Datetime, Mysql> for Utc6 {
    fn from_sql(value: diesel::mysql::MysqlValue<'_>) -> diesel::deserialize::Result<Self> {
        let time = <MysqlTime as diesel::deserialize::FromSql<Datetime, Mysql>>::from_sql(value)?;
        Ok(Self(mysql_utc(time)))
    }
}

/// A `DATETIME(6)` as a time; `None` for a zero or invalid date.
fn mysql_utc(time: MysqlTime) -> Option<DateTime<Utc>> {
    let date = NaiveDate::from_ymd_opt(i32::try_from(time.year).ok()?, time.month, time.day)?;
    let micros = u32::try_from(time.second_part).ok()?;
    Some(
        date.and_hms_micro_opt(time.hour, time.minute, time.second, micros)?
            .and_utc(),
    )
}

/// A row of a read of records: `(member, last_seen, age in µs * 2 + forced_down,
/// holder, epoch, holder_since, metadata or NULL for {})`.
type Selected = (
    String,
    Utc6,
    i64,
    StoredInstance,
    i64,
    Option<Utc6>,
    Option<StoredMetadata>,
);

/// Turns a selected tuple into a [`Row`].
fn row(
    (member, last_seen, age_and_flag, instance, epoch, holder_since, metadata): Selected,
) -> Row {
    Row {
        member,
        last_seen: last_seen.0,
        age: age_from_micros(age_of(age_and_flag)),
        forced_down: forced_down_of(age_and_flag),
        instance,
        epoch,
        holder_since: holder_since.and_then(|t| t.0),
        metadata: metadata.unwrap_or(StoredMetadata::Empty),
    }
}

/// `X'…'`: an instance as a binary literal (hex digits: nothing can be injected).
fn push_binary(sql: &mut String, instance: InstanceId) {
    sql.push_str("X'");
    push_hex(sql, instance);
    sql.push('\'');
}

/// `UPDATE … WHERE id IN (1,2,3) AND holder = X'…' ORDER BY id` (one instance), or
/// `… AND (id, holder) IN ((1,X'…'),…) ORDER BY id` (several): ids and instances
/// written as literals (integers and hex digits, so nothing can be injected).
fn touch_sql(beats: &[Beat]) -> String {
    let ids = unique_ids(beats);
    let single = single_instance(beats);
    let per_pair = if single.is_some() { 0 } else { 44 };
    let mut sql = String::with_capacity(128 + ids.len() * 8 + beats.len() * per_pair);
    sql.push_str("UPDATE servicegroup_members SET last_seen = NOW(6) WHERE id IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&id.to_string());
    }
    sql.push(')');
    match single {
        Some(instance) => {
            sql.push_str(" AND holder = ");
            push_binary(&mut sql, instance);
        }
        None => {
            sql.push_str(" AND (id, holder) IN (");
            for (i, beat) in beats.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                sql.push_str(&beat.id.to_string());
                sql.push(',');
                push_binary(&mut sql, beat.instance);
                sql.push(')');
            }
            sql.push(')');
        }
    }
    sql.push_str(" ORDER BY id");
    sql
}

/// The columns every registering statement writes, and its values for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(160 + rows * 40);
    sql.push_str(
        "INSERT INTO servicegroup_members \
         (group_id, member_id, last_seen, holder, epoch, holder_since, metadata) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, NOW(6), ?, 1, NOW(6), ?)");
    }
    sql
}

/// Registering unconditionally for `rows` rows, the identity contract in SQL: a new
/// row gets epoch 1 and `holder_since` now; on a duplicate key the holding instance
/// keeps its epoch and `holder_since`, another instance adds one and sets
/// `holder_since`; metadata is replaced, `forced_down` and `created_at` kept. MySQL
/// assigns left to right and later expressions see earlier assignments, so `holder`
/// is assigned after the expressions that compare with the old one.
fn upsert_sql(rows: usize) -> String {
    let mut sql = insert_sql(rows);
    sql.push_str(
        " ON DUPLICATE KEY UPDATE \
         epoch = IF(holder = VALUES(holder), GREATEST(epoch, 1), epoch + 1), \
         holder_since = IF(holder = VALUES(holder), COALESCE(holder_since, VALUES(holder_since)), VALUES(holder_since)), \
         holder = VALUES(holder), last_seen = VALUES(last_seen), metadata = VALUES(metadata)",
    );
    sql
}

/// Inserting members found absent under the lock: a row another process inserted
/// meanwhile is left as it is (a no-op update, not `INSERT IGNORE`, which would also
/// turn other errors into warnings).
fn insert_absent_sql(rows: usize) -> String {
    let mut sql = insert_sql(rows);
    sql.push_str(" ON DUPLICATE KEY UPDATE id = id");
    sql
}

/// Runs a registering statement (`sql_for(rows)`) for `regs`, in chunks.
async fn write(
    conn: &mut Conn,
    regs: &[&Reg<'_>],
    sql_for: fn(usize) -> String,
) -> QueryResult<()> {
    for chunk in regs.chunks(ROWS_PER_UPSERT) {
        let sql = sql_for(chunk.len());
        let holders: Vec<[u8; 16]> = chunk.iter().map(|r| r.instance.to_bytes()).collect();
        let mut insert = diesel::sql_query(sql.as_str()).into_boxed::<Mysql>();
        for (r, holder) in chunk.iter().zip(&holders) {
            insert = insert
                .bind::<Text, _>(r.group)
                .bind::<Text, _>(r.member)
                .bind::<Binary, _>(&holder[..])
                .bind::<Text, _>(r.metadata.as_str());
        }
        insert.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A row as registrations read it: `(id, group, member, holder, epoch)`.
type Keyed = (i64, String, String, super::StoredInstance, i64);

/// The rows of the keys of `regs`, one query per group (locking them when `lock`).
async fn read_keys(conn: &mut Conn, regs: &[&Reg<'_>], lock: bool) -> QueryResult<Vec<Keyed>> {
    let mut rows = Vec::with_capacity(regs.len());
    let mut start = 0;
    while start < regs.len() {
        let group = regs[start].group;
        let end = start + regs[start..].partition_point(|r| r.group == group);
        for chunk in regs[start..end].chunks(IDS_PER_STATEMENT) {
            let members: Vec<&str> = chunk.iter().map(|r| r.member).collect();
            let query = t::table
                .filter(t::group_id.eq(group))
                .filter(t::member_id.eq_any(members))
                .select((t::id, t::group_id, t::member_id, t::holder, t::epoch))
                .order(t::id);
            rows.extend(if lock {
                query.for_update().load::<Keyed>(&mut *conn).await?
            } else {
                query.load::<Keyed>(&mut *conn).await?
            });
        }
        start = end;
    }
    Ok(rows)
}

/// One registering transaction: lock the rows conditional registrations check,
/// decide, write, read the ids and epochs back (the written rows stay locked until
/// the commit, so the read sees what this transaction wrote).
async fn register_in(conn: &mut Conn, regs: &[Reg<'_>]) -> QueryResult<Vec<Outcome>> {
    let mut sorted: Vec<(usize, &Reg<'_>)> = regs.iter().enumerate().collect();
    // Sorted by key, so concurrent registrations lock index entries in the same order
    // (and `read_keys` sees each group in one run).
    sorted.sort_unstable_by_key(|(_, r)| (r.group, r.member));
    let checked: Vec<&Reg<'_>> = sorted
        .iter()
        .map(|(_, r)| *r)
        .filter(|r| r.condition != Condition::Always)
        .collect();
    let found: std::collections::HashMap<(String, String), StoredHolder> = if checked.is_empty() {
        Default::default()
    } else {
        read_keys(conn, &checked, true)
            .await?
            .into_iter()
            .map(|(_, g, m, holder, epoch)| ((g, m), (holder, epoch)))
            .collect()
    };
    let mut out: Vec<Option<Outcome>> = vec![None; regs.len()];
    let (mut upsert, mut insert) = (Vec::new(), Vec::new());
    for (i, r) in &sorted {
        let holder = found
            .get(&(r.group.to_owned(), r.member.to_owned()))
            .copied();
        if r.condition == Condition::Always
            || (holder.is_some() && condition_holds(r.condition, holder))
        {
            upsert.push(*r);
        } else if condition_holds(r.condition, holder) {
            insert.push(*r);
        } else {
            out[*i] = Some(Outcome::Refused { found: holder });
        }
    }
    if !upsert.is_empty() {
        write(conn, &upsert, upsert_sql).await?;
    }
    if !insert.is_empty() {
        write(conn, &insert, insert_absent_sql).await?;
    }
    let mut stored: Vec<&Reg<'_>> = upsert.iter().chain(&insert).copied().collect();
    stored.sort_unstable_by_key(|r| (r.group, r.member));
    let rows: std::collections::HashMap<(String, String), (i64, StoredHolder)> =
        read_keys(conn, &stored, false)
            .await?
            .into_iter()
            .map(|(id, g, m, holder, epoch)| ((g, m), (id, (holder, epoch))))
            .collect();
    let index: std::collections::HashMap<(&str, &str), usize> = regs
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.group, r.member), i))
        .collect();
    for r in stored {
        let i = index[&(r.group, r.member)];
        out[i] = Some(match rows.get(&(r.group.to_owned(), r.member.to_owned())) {
            // Ours, as written (an inserted row another process's insert did not
            // beat, or an upserted row).
            Some((id, (holder, epoch))) if holder.instance() == Some(r.instance) => {
                Outcome::Stored {
                    id: *id,
                    epoch: *epoch,
                }
            }
            // An absent member another process inserted first.
            Some((_, found)) => Outcome::Refused {
                found: Some(*found),
            },
            None => Outcome::Refused { found: None },
        });
    }
    out.into_iter()
        .map(|o| {
            o.ok_or_else(|| {
                diesel::result::Error::QueryBuilderError("a registration got no outcome".into())
            })
        })
        .collect()
}

/// The columns of a record, in [`Selected`]'s order.
macro_rules! record_columns {
    () => {
        (
            t::member_id,
            t::last_seen,
            db_age_and_flag(),
            t::holder,
            t::epoch,
            t::holder_since,
            db_metadata(),
        )
    };
}

/// The MySQL/MariaDB store.
pub(crate) struct MysqlStore {
    /// The general lane: listings, watch polls, operator calls.
    pool: Pool<Conn>,
    /// The heartbeat lane: heartbeats, their id look-ups and registrations, on
    /// connections nothing else takes (the general pool itself when
    /// `[db] heartbeat_pool_size` is 0).
    lane: Pool<Conn>,
    timeout: Duration,
}

impl std::fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Opens connections to the server with the `ssl-mode` in force. A failure's
/// message carries the source chain, names the TLS options, and holds no password.
#[derive(Clone)]
pub(crate) struct Connector {
    /// The URL's options, plus what diesel-async's `establish` sets and
    /// `prefer_socket=false` unless the URL says otherwise (a TCP URL stays on TCP
    /// instead of switching to the server's Unix socket).
    opts: mysql_async::Opts,
    tls: Tls<MysqlSslMode>,
    /// `VERIFY_CA`: the name the server's certificate was found valid for.
    learned_name: Arc<Mutex<Option<String>>>,
    redactor: Redactor,
}

impl Connector {
    /// A connector for `url` with the TLS options `tls` (a CA file that cannot be
    /// read is a `Tls` error naming its option).
    pub(crate) fn new(
        url: &MysqlUrl,
        tls: &Tls<MysqlSslMode>,
        redactor: Redactor,
    ) -> Result<Self, DbError> {
        install_default_provider();
        if let Some(ca) = &tls.ca {
            roots(Some(ca), &tls.ca_option).map_err(|e| DbError::Tls(e.to_string()))?;
        }
        let mut builder = mysql_async::OptsBuilder::from_opts(url.opts().clone())
            .stmt_cache_size(0)
            .client_found_rows(true)
            .ssl_opts(None::<mysql_async::SslOpts>);
        if !url.prefer_socket_set() {
            builder = builder.prefer_socket(false);
        }
        Ok(Self {
            opts: builder.into(),
            tls: tls.clone(),
            learned_name: Arc::new(Mutex::new(None)),
            redactor,
        })
    }

    /// The `SslOpts` of the mode (`None`: plain TCP), the name check made against
    /// `name` when given.
    fn ssl_opts(&self, name: Option<String>) -> Option<mysql_async::SslOpts> {
        if self.tls.mode == MysqlSslMode::Disabled {
            return None;
        }
        let mut ssl = mysql_async::SslOpts::default();
        if let Some(ca) = &self.tls.ca {
            ssl = ssl
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true);
        }
        if !self.tls.mode.checks_chain(self.tls.ca.is_some()) {
            ssl = ssl.with_danger_accept_invalid_certs(true);
        }
        if let Some(name) = name {
            ssl = ssl.with_danger_tls_hostname_override(Some(name));
        }
        Some(ssl)
    }

    /// Whether the chain is checked but not the name.
    fn chain_only(&self) -> bool {
        self.tls.mode != MysqlSslMode::VerifyIdentity
            && self.tls.mode.checks_chain(self.tls.ca.is_some())
    }

    async fn open(
        &self,
        ssl: Option<mysql_async::SslOpts>,
    ) -> Result<mysql_async::Conn, mysql_async::Error> {
        mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(self.opts.clone()).ssl_opts(ssl))
            .await
    }

    /// Opens one connection.
    pub(crate) async fn connect(&self) -> Result<Conn, DbError> {
        let learned = if self.chain_only() {
            self.learned_name
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        } else {
            None
        };
        let conn = match self.open(self.ssl_opts(learned)).await {
            Ok(conn) => conn,
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if self.tls.mode == MysqlSslMode::Preferred => {
                self.open(None).await.map_err(|e| self.failure(&e))?
            }
            Err(e) if self.chain_only() => {
                let name = find_rustls_error(&e).and_then(presented_name);
                let Some(name) = name else {
                    return Err(self.failure(&e));
                };
                let conn = self
                    .open(self.ssl_opts(Some(name.clone())))
                    .await
                    .map_err(|e| self.failure(&e))?;
                *self.learned_name.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
                conn
            }
            Err(e) => return Err(self.failure(&e)),
        };
        Ok(Conn::try_from(conn).await?)
    }

    /// A failed connect as a [`DbError`]: `Tls` when rustls refused (naming the TLS
    /// options), else `Connect` with the source chain and the TLS options.
    fn failure(&self, e: &mysql_async::Error) -> DbError {
        if let Some(refused) = find_rustls_error(e) {
            let message = self
                .redactor
                .clean(&tls_failure(&self.tls.described, refused));
            tracing::warn!(
                driver = crate::NAME,
                backend = "mysql",
                tls = %self.tls.described,
                error = %message,
                "TLS to MySQL/MariaDB failed"
            );
            return DbError::Tls(message);
        }
        let chain = self.redactor.clean(&source_chain(e));
        tracing::debug!(
            driver = crate::NAME,
            backend = "mysql",
            tls = %self.tls.described,
            error = %chain,
            "connecting to MySQL/MariaDB failed"
        );
        DbError::Connect(diesel::ConnectionError::BadConnection(format!(
            "{chain} ({})",
            self.tls.described
        )))
    }
}

/// Session settings bounding statements and lock waits by `timeout`: MariaDB's
/// form first, MySQL's as the fallback. READ COMMITTED takes no gap locks, so
/// concurrent registrations of neighbouring keys do not block each other.
fn session_sql(timeout: Duration) -> [String; 2] {
    let secs = timeout.as_secs_f64().max(0.001);
    let whole = timeout.as_secs_f64().ceil().max(1.0) as u64;
    let ms = timeout.as_millis().max(1);
    let common = format!("innodb_lock_wait_timeout = {whole}, lock_wait_timeout = {whole}");
    [
        format!(
            "SET SESSION max_statement_time = {secs:.3}, {common}; \
             SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"
        ),
        format!(
            "SET SESSION max_execution_time = {ms}, {common}; \
             SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"
        ),
    ]
}

async fn apply_session(conn: &mut Conn, session: &[String; 2]) -> QueryResult<()> {
    match conn.batch_execute(&session[0]).await {
        Ok(()) => Ok(()),
        // Not MariaDB (unknown variable max_statement_time): MySQL's variable.
        Err(_) => conn.batch_execute(&session[1]).await,
    }
}

/// Applies the migrations and builds the pool.
pub(crate) async fn connect(
    url: &MysqlUrl,
    tls: &Tls<MysqlSslMode>,
    redactor: &Redactor,
    settings: &Settings,
) -> Result<MysqlStore, DbError> {
    let connector = Connector::new(url, tls, redactor.clone())?;
    migrate(&connector, settings.timeout).await?;
    let session = session_sql(settings.timeout);
    let manager = || {
        let counter = settings.statements.clone();
        let session = session.clone();
        let mut config = ManagerConfig::<Conn>::default();
        config.recycling_method = RecyclingMethod::Fast;
        let connector = connector.clone();
        config.custom_setup = Box::new(move |_location: &str| {
            let counter = counter.clone();
            let session = session.clone();
            let connector = connector.clone();
            Box::pin(async move {
                let mut conn = connector
                    .connect()
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                apply_session(&mut conn, &session)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                conn.set_instrumentation(StatementCounter(counter));
                Ok(conn)
            })
        });
        // The manager's URL is only handed to `custom_setup`, which does not read it.
        AsyncDieselConnectionManager::<Conn>::new_with_config(url.redacted().to_owned(), config)
    };
    let pool = super::pool(manager(), settings.pool_size, settings.timeout)?;
    let lane = match settings.heartbeat_pool_size {
        0 => pool.clone(),
        size => super::pool(manager(), size, settings.timeout)?,
    };
    Ok(MysqlStore {
        pool,
        lane,
        timeout: settings.timeout,
    })
}

/// Applies pending migrations on a dedicated connection holding the named lock
/// `servicegroup_migrations`, so concurrent processes run them one after the other
/// (the later ones find nothing pending). The connection and the lock are taken
/// here, under `[db] timeout`; diesel_migrations (synchronous) then runs in a
/// blocking task, which works on any tokio runtime flavour.
async fn migrate(connector: &Connector, timeout: Duration) -> Result<(), DbError> {
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = Nullable<BigInt>)]
        locked: Option<i64>,
    }
    let wait = timeout * 2;
    let wait_secs = wait.as_secs_f64().ceil().max(1.0) as i64;
    let mut conn = bounded(timeout, connector.connect()).await?;
    let locked = bounded(wait + timeout, async {
        Ok(diesel::sql_query("SELECT GET_LOCK(?, ?) AS locked")
            .bind::<Text, _>(MIGRATION_LOCK)
            .bind::<BigInt, _>(wait_secs)
            .get_result::<Locked>(&mut conn)
            .await?)
    })
    .await?;
    if locked.locked != Some(1) {
        // 0: another process held the lock all that time; NULL: an error.
        return Err(DbError::TimedOut(wait));
    }
    let mut wrapper: AsyncConnectionWrapper<Conn> = conn.into();
    let task = tokio::task::spawn_blocking(move || -> Result<usize, DbError> {
        let applied = wrapper
            .run_pending_migrations(MIGRATIONS)
            .map(|v| v.len())
            .map_err(|e| DbError::Other(format!("migration failed: {e}")));
        let unlocked = diesel::RunQueryDsl::execute(
            diesel::sql_query(format!("DO RELEASE_LOCK('{MIGRATION_LOCK}')")),
            &mut wrapper,
        );
        let applied = applied?;
        unlocked?;
        Ok(applied)
    });
    // The blocking task cannot be cancelled, but the caller gets its answer in time.
    let applied = bounded(wait, async {
        task.await
            .map_err(|e| DbError::Other(format!("the migration task failed: {e}")))?
    })
    .await?;
    if applied > 0 {
        tracing::info!(applied, backend = "mysql", "applied database migrations");
    }
    Ok(())
}

/// A pooled connection lent to one call. It goes back to the pool only through
/// [`Lease::finish`] with a result that leaves it usable. Dropped unfinished (the
/// caller's future was cancelled mid-call, by `call_timeout` or a shutdown) or
/// finished with `Unavailable` / `Timeout`, the connection may be dead or in the
/// middle of a protocol exchange (a later statement then fails with "Statement takes
/// 1 parameters but 3 was supplied"), so it is closed instead: the pool cannot tell
/// on its own that a MySQL connection is broken.
struct Lease(Option<Object<Conn>>);

impl Lease {
    /// Returns the connection to the pool unless `result` says it may be broken.
    fn finish<T>(mut self, result: Result<T, DbError>) -> Result<T, DbError> {
        let reusable = match &result {
            Ok(_) => true,
            Err(e) => !matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        };
        if reusable {
            // Dropping the pool object hands the connection back.
            drop(self.0.take());
        }
        result
    }
}

impl std::ops::Deref for Lease {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        // Some until `finish` consumes the lease or `drop` runs.
        self.0.as_deref().expect("a lease holds its connection")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Conn {
        self.0.as_deref_mut().expect("a lease holds its connection")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            // Out of the pool for good; dropping it closes the connection.
            drop(Object::take(conn));
        }
    }
}

impl MysqlStore {
    /// A connection of the general lane, within `[db] timeout`.
    async fn checkout(&self) -> Result<Lease, DbError> {
        bounded(self.timeout, async {
            Ok(Lease(Some(self.pool.get().await?)))
        })
        .await
    }

    /// A connection of the heartbeat lane, within `[db] timeout`.
    async fn lane_checkout(&self) -> Result<Lease, DbError> {
        bounded(self.timeout, async {
            Ok(Lease(Some(self.lane.get().await?)))
        })
        .await
    }

    /// Runs the heartbeat statement for `beats` in chunks on `conn` (each bounded by
    /// `[db] timeout`); returns the beats that did not refresh their row.
    async fn touch_on(&self, conn: &mut Conn, beats: &[Beat]) -> Result<Vec<Unrefreshed>, DbError> {
        let mut unrefreshed = Vec::new();
        for chunk in beats.chunks(IDS_PER_STATEMENT) {
            // The row count tells whether every beat refreshed its row; only when some
            // did not (rare: a member removed or taken over) a second statement reads
            // the rows' holders. Ids are never reused, so nothing can appear in between.
            let sql = touch_sql(chunk);
            let updated = bounded(self.timeout, async {
                let mut attempt = 0;
                loop {
                    match diesel::sql_query(sql.as_str()).execute(&mut *conn).await {
                        Err(e) if is_deadlock(&e) && attempt < DEADLOCK_RETRIES => attempt += 1,
                        other => return Ok(other?),
                    }
                }
            })
            .await?;
            if updated == chunk.len() {
                continue;
            }
            let ids = unique_ids(chunk);
            let found = bounded(self.timeout, async {
                Ok(t::table
                    .select((t::id, (t::holder, t::epoch)))
                    .filter(t::id.eq_any(&ids))
                    .load::<(i64, StoredHolder)>(&mut *conn)
                    .await?)
            })
            .await?;
            let found: std::collections::HashMap<RowId, StoredHolder> = found.into_iter().collect();
            unrefreshed.extend(unrefreshed_among(chunk, &found));
        }
        Ok(unrefreshed)
    }
}

#[async_trait]
impl Store for MysqlStore {
    async fn register(&self, regs: &[Reg<'_>]) -> Result<Vec<Outcome>, DbError> {
        let mut conn = self.lane_checkout().await?;
        let result = bounded(self.timeout, async {
            let mut attempt = 0;
            loop {
                let outcome = conn
                    .transaction::<_, diesel::result::Error, _>(async |c| {
                        register_in(c, regs).await
                    })
                    .await;
                match outcome {
                    Err(e) if is_deadlock(&e) && attempt < DEADLOCK_RETRIES => attempt += 1,
                    other => return Ok(other?),
                }
            }
        })
        .await;
        conn.finish(result)
    }

    async fn touch(&self, beats: &[Beat]) -> Result<Vec<Unrefreshed>, DbError> {
        let mut conn = self.lane_checkout().await?;
        let result = self.touch_on(&mut conn, beats).await;
        conn.finish(result)
    }

    async fn lookup(
        &self,
        group: &str,
        members: Vec<String>,
    ) -> Result<Vec<(RowId, String)>, DbError> {
        let mut conn = self.lane_checkout().await?;
        let result = async {
            let mut rows: Vec<(i64, String)> = Vec::with_capacity(members.len());
            for chunk in members.chunks(IDS_PER_STATEMENT) {
                rows.extend(
                    bounded(self.timeout, async {
                        Ok(t::table
                            .filter(t::group_id.eq(group))
                            .filter(t::member_id.eq_any(chunk))
                            .select((t::id, t::member_id))
                            .load::<(i64, String)>(&mut *conn)
                            .await?)
                    })
                    .await?,
                );
            }
            Ok(rows)
        }
        .await;
        conn.finish(result)
    }

    async fn delete(
        &self,
        group: &str,
        member: &str,
        holder: Option<InstanceId>,
    ) -> Result<bool, DbError> {
        let mut conn = self.checkout().await?;
        let result = bounded(self.timeout, async {
            let of_key = t::table
                .filter(t::group_id.eq(group))
                .filter(t::member_id.eq(member));
            let n = match holder {
                None => diesel::delete(of_key).execute(&mut *conn).await?,
                Some(instance) => {
                    diesel::delete(of_key.filter(t::holder.eq(&instance.to_bytes()[..])))
                        .execute(&mut *conn)
                        .await?
                }
            };
            Ok(n > 0)
        })
        .await;
        conn.finish(result)
    }

    async fn set_metadata(
        &self,
        group: &str,
        member: &str,
        instance: InstanceId,
        metadata: String,
    ) -> Result<bool, DbError> {
        let mut conn = self.checkout().await?;
        let result = bounded(self.timeout, async {
            // CLIENT_FOUND_ROWS: a row already holding the value still counts.
            let n = diesel::update(
                t::table
                    .filter(t::group_id.eq(group))
                    .filter(t::member_id.eq(member))
                    .filter(t::holder.eq(&instance.to_bytes()[..])),
            )
            .set(t::metadata.eq(&metadata))
            .execute(&mut *conn)
            .await?;
            Ok(n > 0)
        })
        .await;
        conn.finish(result)
    }

    async fn holder(&self, group: &str, member: &str) -> Result<Option<StoredHolder>, DbError> {
        let mut conn = self.checkout().await?;
        let result = bounded(self.timeout, async {
            Ok(t::table
                .filter(t::group_id.eq(group))
                .filter(t::member_id.eq(member))
                .select((t::holder, t::epoch))
                .get_result::<StoredHolder>(&mut *conn)
                .await
                .optional()?)
        })
        .await;
        conn.finish(result)
    }

    async fn set_forced_down(
        &self,
        group: &str,
        member: &str,
        forced_down: bool,
    ) -> Result<bool, DbError> {
        let mut conn = self.checkout().await?;
        let result = bounded(self.timeout, async {
            // CLIENT_FOUND_ROWS: a row already holding the value still counts.
            let n = diesel::update(
                t::table
                    .filter(t::group_id.eq(group))
                    .filter(t::member_id.eq(member)),
            )
            .set(t::forced_down.eq(forced_down))
            .execute(&mut *conn)
            .await?;
            Ok(n > 0)
        })
        .await;
        conn.finish(result)
    }

    async fn get(&self, group: &str, member: &str) -> Result<Option<Row>, DbError> {
        let mut conn = self.checkout().await?;
        let result = bounded(self.timeout, async {
            let found = t::table
                .filter(t::group_id.eq(group))
                .filter(t::member_id.eq(member))
                .select(record_columns!())
                .get_result::<Selected>(&mut *conn)
                .await
                .optional()?;
            Ok(found.map(row))
        })
        .await;
        conn.finish(result)
    }

    async fn list(&self, group: &str, which: Which) -> Result<Vec<Row>, DbError> {
        let mut conn = self.checkout().await?;
        let result = bounded(self.timeout, async {
            let query = t::table
                .filter(t::group_id.eq(group))
                .select(record_columns!())
                .into_boxed();
            let query = match state_filter(which) {
                Some(filter) => query.filter(filter),
                None => query,
            };
            let rows = query.load::<Selected>(&mut *conn).await?;
            Ok(rows.into_iter().map(row).collect())
        })
        .await;
        conn.finish(result)
    }

    async fn summary(&self, group: &str, service_down_time: Duration) -> Result<Summary, DbError> {
        let mut conn = self.checkout().await?;
        let result = bounded(self.timeout, async {
            let (select, from) = summary_select(FRESH);
            let rows = sql::<(Bool, Bool, BigInt)>(&select)
                .bind::<BigInt, _>(micros_floor(service_down_time))
                .sql(&from)
                .bind::<Text, _>(group)
                .sql(SUMMARY_GROUPING)
                .load::<(bool, bool, i64)>(&mut *conn)
                .await?;
            Ok(summary_of(&rows))
        })
        .await;
        conn.finish(result)
    }

    async fn groups(&self) -> Result<Vec<String>, DbError> {
        let mut conn = self.checkout().await?;
        let result = bounded(self.timeout, async {
            Ok(t::table
                .select(t::group_id)
                .distinct()
                .order(t::group_id)
                .load::<String>(&mut *conn)
                .await?)
        })
        .await;
        conn.finish(result)
    }

    async fn bump(&self, group: &str, lane: Lane) -> Result<(), DbError> {
        let mut conn = match lane {
            Lane::Heartbeat => self.lane_checkout().await?,
            Lane::General => self.checkout().await?,
        };
        let result = bounded(self.timeout, async {
            diesel::sql_query(BUMP)
                .bind::<diesel::sql_types::Text, _>(group)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
        .await;
        conn.finish(result)
    }

    async fn revision(&self, group: &str) -> Result<u64, DbError> {
        let mut conn = self.checkout().await?;
        let result = bounded(self.timeout, async {
            let stored = rev::table
                .filter(rev::group_id.eq(group))
                .select(rev::revision)
                .get_result::<i64>(&mut *conn)
                .await
                .optional()?;
            Ok(super::revision_of(stored))
        })
        .await;
        conn.finish(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url::{parse, Target};
    use servicegroup_core::DatabaseUrl;

    #[test]
    fn connections_stay_on_tcp_and_take_the_tls_mode() {
        use crate::tls::{resolve, TlsParams, MYSQL_NAMES};
        let connector = |raw: &str| {
            let Target::Mysql(url) = parse(&DatabaseUrl::new(raw)).unwrap() else {
                panic!()
            };
            let tls = resolve(
                &MYSQL_NAMES,
                url.tls(),
                &TlsParams::default(),
                MysqlSslMode::VerifyIdentity,
            );
            Connector::new(&url, &tls, Redactor::default()).unwrap()
        };
        let c = connector("mysql+pymysql://nova:pw@h:3306/nova?charset=utf8");
        assert!(!c.opts.prefer_socket());
        assert_eq!(c.opts.stmt_cache_size(), 0);
        assert!(c.opts.client_found_rows());
        assert_eq!(c.tls.mode, MysqlSslMode::Preferred);
        let ssl = c.ssl_opts(None).unwrap();
        assert!(
            ssl.accept_invalid_certs(),
            "PREFERRED without a CA: encryption only"
        );
        assert!(connector("mysql://nova:pw@h/nova?prefer_socket=true")
            .opts
            .prefer_socket());
        assert!(connector("mysql://nova:pw@h/nova?ssl-mode=disabled")
            .ssl_opts(None)
            .is_none());
        let c = connector("mysql://nova:pw@h/nova?ssl-mode=VERIFY_IDENTITY");
        let ssl = c.ssl_opts(None).unwrap();
        assert!(!ssl.accept_invalid_certs() && !c.chain_only());
        let c = connector("mysql://nova:pw@h/nova?ssl-mode=VERIFY_CA");
        assert!(c.chain_only());
        assert!(!c.ssl_opts(None).unwrap().accept_invalid_certs());
    }

    #[test]
    fn packed_age_and_flag_and_datetimes() {
        for age in [0i64, 1, 1_416_207_835, -3, -1, 284_012_568_000_000_000] {
            for flag in [false, true] {
                let packed = age * 2 + i64::from(flag);
                assert_eq!((age_of(packed), forced_down_of(packed)), (age, flag));
            }
        }
        let kind = diesel::mysql::data_types::MysqlTimestampType::MYSQL_TIMESTAMP_DATETIME;
        let t = MysqlTime::new(2026, 12, 1, 23, 23, 41, 980_449, false, kind, 0);
        assert_eq!(
            mysql_utc(t).unwrap().timestamp_micros(),
            1_796_167_421_980_449
        );
        let zero = MysqlTime::new(0, 0, 0, 0, 0, 0, 0, false, kind, 0);
        assert_eq!(mysql_utc(zero), None);
    }

    #[test]
    fn deadlocks_are_recognized() {
        use diesel::result::{DatabaseErrorKind, Error};
        let deadlock = Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(
                "Deadlock found when trying to get lock; try restarting transaction".to_owned(),
            ),
        );
        assert!(is_deadlock(&deadlock));
        assert!(!is_deadlock(&Error::NotFound));
    }

    #[test]
    fn statements() {
        let a = InstanceId::from_u128(0xab);
        let b = InstanceId::from_u128(0xcd);
        let hex = |n: u128| format!("X'{n:032x}'");
        let beat = |id, instance| Beat { id, instance };
        assert_eq!(
            touch_sql(&[beat(1, a), beat(5, a), beat(9, a)]),
            format!(
                "UPDATE servicegroup_members SET last_seen = NOW(6) WHERE id IN (1,5,9) \
                 AND holder = {} ORDER BY id",
                hex(0xab)
            )
        );
        assert_eq!(
            touch_sql(&[beat(1, a), beat(5, a), beat(5, b)]),
            format!(
                "UPDATE servicegroup_members SET last_seen = NOW(6) WHERE id IN (1,5) \
                 AND (id, holder) IN ((1,{a}),(5,{a}),(5,{b})) ORDER BY id",
                a = hex(0xab),
                b = hex(0xcd)
            )
        );
        assert_eq!(
            insert_absent_sql(2),
            "INSERT INTO servicegroup_members (group_id, member_id, last_seen, holder, epoch, \
             holder_since, metadata) VALUES (?, ?, NOW(6), ?, 1, NOW(6), ?), \
             (?, ?, NOW(6), ?, 1, NOW(6), ?) ON DUPLICATE KEY UPDATE id = id"
        );
        assert!(upsert_sql(1).contains("holder = VALUES(holder), last_seen"));
        let [maria, mysql] = session_sql(Duration::from_millis(800));
        assert!(maria.contains("max_statement_time = 0.800"), "{maria}");
        assert!(maria.contains("innodb_lock_wait_timeout = 1"), "{maria}");
        assert!(mysql.contains("max_execution_time = 800"), "{mysql}");
    }
}
