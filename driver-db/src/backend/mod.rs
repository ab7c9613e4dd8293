//! What differs per database product: SQL dialect, the clock expression, connection
//! setup, pooling and migrations. Each backend implements [`Store`], a handful of
//! storage operations in its own SQL; everything else (the id cache, missing and
//! superseded members, records and their checks, errors) lives once in
//! [`crate::driver`]: SQLite, PostgreSQL and MySQL/MariaDB are one module each
//! implementing [`Store`].

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::connection::{Instrumentation, InstrumentationEvent};
use servicegroup_core::{async_trait, Condition, InstanceId, State, Summary};

use crate::error::DbError;

#[cfg(feature = "mysql")]
pub(crate) mod mysql;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

/// An instance id as a backend stores it (16 big-endian bytes: BLOB, `bytea`,
/// `BINARY(16)`), read without allocating. A value of another length (a row written
/// by something else) keeps its length, so the driver reports the row as invalid
/// instead of guessing an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::deserialize::FromSqlRow)]
pub(crate) struct StoredInstance {
    bytes: [u8; 16],
    /// The stored length (saturated at 255).
    len: u8,
}

impl StoredInstance {
    /// The stored bytes of a column value.
    pub(crate) fn from_slice(raw: &[u8]) -> Self {
        let mut bytes = [0u8; 16];
        if raw.len() == bytes.len() {
            bytes.copy_from_slice(raw);
        }
        Self {
            bytes,
            len: u8::try_from(raw.len()).unwrap_or(u8::MAX),
        }
    }

    /// The instance, if the value is 16 bytes long.
    pub(crate) fn instance(self) -> Option<InstanceId> {
        (usize::from(self.len) == self.bytes.len()).then(|| InstanceId::from_bytes(self.bytes))
    }

    /// The length of the stored value in bytes (255: 255 or more).
    pub(crate) fn len(self) -> usize {
        usize::from(self.len)
    }
}

/// Metadata as a backend stores it (`Metadata::to_json`'s text), read so that the
/// common `{}` (a member without metadata) costs no allocation; other text is kept
/// for the driver to decode and check.
#[derive(Debug, Clone, PartialEq, Eq, diesel::deserialize::FromSqlRow)]
pub(crate) enum StoredMetadata {
    /// `{}`.
    Empty,
    /// Any other stored text.
    Json(String),
}

impl StoredMetadata {
    /// The stored text of a column value (not UTF-8: kept lossily, so the driver
    /// reports it as invalid metadata instead of failing the whole query).
    fn from_bytes(raw: &[u8]) -> Self {
        if raw == b"{}" {
            Self::Empty
        } else {
            Self::Json(String::from_utf8_lossy(raw).into_owned())
        }
    }
}

#[cfg(feature = "postgres")]
impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for StoredMetadata {
    fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        Ok(Self::from_bytes(value.as_bytes()))
    }
}

#[cfg(feature = "sqlite")]
impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::sqlite::Sqlite>
    for StoredMetadata
{
    fn from_sql(
        mut value: diesel::sqlite::SqliteValue<'_, '_, '_>,
    ) -> diesel::deserialize::Result<Self> {
        Ok(Self::from_bytes(value.read_text().as_bytes()))
    }
}

#[cfg(feature = "mysql")]
impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::mysql::Mysql>
    for StoredMetadata
{
    fn from_sql(value: diesel::mysql::MysqlValue<'_>) -> diesel::deserialize::Result<Self> {
        Ok(Self::from_bytes(value.as_bytes()))
    }
}

#[cfg(feature = "postgres")]
impl diesel::deserialize::FromSql<diesel::sql_types::Binary, diesel::pg::Pg> for StoredInstance {
    fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        Ok(Self::from_slice(value.as_bytes()))
    }
}

#[cfg(feature = "sqlite")]
impl diesel::deserialize::FromSql<diesel::sql_types::Binary, diesel::sqlite::Sqlite>
    for StoredInstance
{
    fn from_sql(
        mut value: diesel::sqlite::SqliteValue<'_, '_, '_>,
    ) -> diesel::deserialize::Result<Self> {
        Ok(Self::from_slice(value.read_blob()))
    }
}

#[cfg(feature = "mysql")]
impl diesel::deserialize::FromSql<diesel::sql_types::Binary, diesel::mysql::Mysql>
    for StoredInstance
{
    fn from_sql(value: diesel::mysql::MysqlValue<'_>) -> diesel::deserialize::Result<Self> {
        Ok(Self::from_slice(value.as_bytes()))
    }
}

/// A holder as a backend stores it: the instance bytes and the epoch (`BIGINT`),
/// checked by the driver when it turns them into a [`servicegroup_core::Holder`].
pub(crate) type StoredHolder = (StoredInstance, i64);

/// One stored member of a known group as a backend returns it: facts measured on the
/// database's clock. The group is the query's parameter, so it is not selected again
/// (a listing of 1,000,000 rows would otherwise carry and decode it 1,000,000 times).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) member: String,
    /// The last heartbeat (database clock); `None` if out of chrono's range.
    pub(crate) last_seen: Option<DateTime<Utc>>,
    /// `now - last_seen`, computed on the database's clock for the same query (an
    /// age a clock that stepped back made negative is zero).
    pub(crate) age: Duration,
    pub(crate) forced_down: bool,
    /// The holding instance as stored.
    pub(crate) instance: StoredInstance,
    /// The record's epoch as stored.
    pub(crate) epoch: i64,
    /// When the current holder registered (database clock); `None` for rows written
    /// before rows named their holder.
    pub(crate) holder_since: Option<DateTime<Utc>>,
    /// The metadata as stored (`Metadata::to_json`'s form).
    pub(crate) metadata: StoredMetadata,
}

/// A member row as SQLite selects it: `(member, last_seen, age, forced_down,
/// holder, epoch, holder_since, metadata or NULL for {})` with times in seconds
/// (PostgreSQL and MySQL select other forms and have their own conversion).
#[cfg(feature = "sqlite")]
pub(crate) type Selected = (
    String,
    f64,
    f64,
    bool,
    StoredInstance,
    i64,
    Option<f64>,
    Option<StoredMetadata>,
);

/// Turns a selected SQLite tuple into a [`Row`].
#[cfg(feature = "sqlite")]
pub(crate) fn row(
    (member, last_seen, age, forced_down, instance, epoch, holder_since, metadata): Selected,
) -> Row {
    Row {
        member,
        last_seen: utc_from_secs(last_seen),
        age: age_from_secs(age),
        forced_down,
        instance,
        epoch,
        holder_since: holder_since.and_then(utc_from_secs),
        metadata: metadata.unwrap_or(StoredMetadata::Empty),
    }
}

/// Unix epoch seconds (SQLite's `REAL` timestamps) as a time; `None` if not finite
/// or out of range.
pub(crate) fn utc_from_secs(secs: f64) -> Option<DateTime<Utc>> {
    if !secs.is_finite() {
        return None;
    }
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9).round().min(999_999_999.0) as u32;
    DateTime::from_timestamp(whole as i64, nanos)
}

/// An age in seconds as computed by the database (a clock that stepped back can
/// give a tiny negative one: zero).
pub(crate) fn age_from_secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
}

/// An age in microseconds (negative: zero, as [`age_from_secs`]).
pub(crate) fn age_from_micros(micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// `service_down_time` in whole microseconds, rounded down: for an age in whole
/// microseconds `age <= service_down_time` holds exactly when `age_us <= this`.
pub(crate) fn micros_floor(service_down_time: Duration) -> i64 {
    i64::try_from(service_down_time.as_micros()).unwrap_or(i64::MAX)
}

/// Which rows of a group a read of records returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// Every row (a listing).
    All,
    /// The rows in `state` under core's liveness rule with `service_down_time`
    /// (`Driver::list_in`), judged by the database in the query.
    In(State, Duration),
}

/// A backend's heartbeat half of core's liveness rule (`age <= service_down_time`,
/// inclusive, on the database's clock) as SQL around its bound
/// `service_down_time`: the text before the bind and the text after it.
///
/// The backend writes it the cheapest exact way its database evaluates over a
/// million rows: PostgreSQL and MySQL compare `last_seen` with a cutoff
/// (`now - service_down_time`, computed once per statement) instead of computing an
/// age per row (in whole microseconds both ways: `now - last_seen <= d` exactly
/// when `last_seen >= now - d`); SQLite compares its own age in seconds, the one
/// its listing selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fresh {
    /// The SQL before the bound `service_down_time`.
    pub(crate) before: &'static str,
    /// The SQL after it.
    pub(crate) after: &'static str,
}

/// Core's liveness rule (`servicegroup_core::liveness::is_up`: up = not forced down
/// and age <= `service_down_time`, inclusive) as a SQL predicate for `state`, around
/// the backend's bound `service_down_time`: the text before the bind and the text
/// after it. `fresh` is the backend's heartbeat half of the rule, judged on the
/// database's clock exactly as the ages its listing reports. The one place the rule
/// is written in SQL; every backend builds its `list_in` filter and its counts from
/// it.
pub(crate) fn state_predicate(state: State, fresh: Fresh) -> (String, String) {
    let Fresh { before, after } = fresh;
    match state {
        State::Up => (
            format!("(NOT forced_down AND {before}"),
            format!("{after})"),
        ),
        // No column of the rule is NULL, so NOT (fresh) is exactly "stale".
        State::Down => (
            format!("(forced_down OR NOT ({before}"),
            format!("{after}))"),
        ),
    }
}

/// The counting query's select list around the bound `service_down_time`: one row
/// per `(forced_down, fresh)` pair with its count, `fresh` the heartbeat half of
/// [`state_predicate`]'s rule. [`summary_of`] turns the rows into a [`Summary`].
/// The text after the bind ends with [`SUMMARY_FROM`], up to the bound group.
pub(crate) fn summary_select(fresh: Fresh) -> (String, String) {
    (
        format!("SELECT forced_down, {}", fresh.before),
        format!("{}{SUMMARY_FROM}", fresh.after),
    )
}

/// The counting query's text after the select list, up to the bound group.
const SUMMARY_FROM: &str = ", COUNT(*) FROM servicegroup_members WHERE group_id = ";

/// The grouping of the counting query (after the bound group).
pub(crate) const SUMMARY_GROUPING: &str = " GROUP BY 1, 2";

/// Counts of `(forced_down, fresh, count)` rows as a [`Summary`], with
/// [`Summary::add`]'s precedence (forced down first, whatever the heartbeat).
pub(crate) fn summary_of(rows: &[(bool, bool, i64)]) -> Summary {
    let mut summary = Summary::default();
    for &(forced_down, fresh, count) in rows {
        let count = u64::try_from(count).unwrap_or(0);
        if forced_down {
            summary.forced_down += count;
        } else if fresh {
            summary.up += count;
        } else {
            summary.down += count;
        }
    }
    summary
}

/// An id assigned to a member by the database.
pub(crate) type RowId = i64;

/// One registration as a backend applies it.
#[derive(Debug, Clone)]
pub(crate) struct Reg<'a> {
    pub(crate) group: &'a str,
    pub(crate) member: &'a str,
    pub(crate) instance: InstanceId,
    /// The metadata to store, in `Metadata::to_json`'s form.
    pub(crate) metadata: String,
    pub(crate) condition: Condition,
}

/// What a backend did with one [`Reg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Stored (a first heartbeat included): the row's id and its epoch now.
    Stored { id: RowId, epoch: i64 },
    /// The condition did not hold; nothing changed. The holder found, if a row was.
    Refused { found: Option<StoredHolder> },
}

/// Whether `condition` holds for a row found with `found` (`None`: no row). A stored
/// instance of the wrong length never equals an expected holder.
pub(crate) fn condition_holds(condition: Condition, found: Option<StoredHolder>) -> bool {
    match condition {
        Condition::Always => true,
        Condition::Absent => found.is_none(),
        Condition::HeldAs(expected) => found.is_some_and(|(instance, epoch)| {
            instance.instance() == Some(expected.instance)
                && u64::try_from(epoch).ok() == Some(expected.epoch)
        }),
    }
}

/// One heartbeat of a batch: a row known by id, beaten by an instance. A batch is
/// sorted by `(id, instance)` and unique; one id may appear with two instances (two
/// handles claiming a member: at most one holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Beat {
    pub(crate) id: RowId,
    pub(crate) instance: InstanceId,
}

/// A heartbeat that did not refresh its row: the row is gone (`found: None`) or held
/// by another instance (`found`: who holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unrefreshed {
    pub(crate) id: RowId,
    pub(crate) instance: InstanceId,
    pub(crate) found: Option<StoredHolder>,
}

/// The one instance beating every row of `beats`, if there is one (the normal case:
/// a handle's tick). Then the statement compares the holder with one bound value.
pub(crate) fn single_instance(beats: &[Beat]) -> Option<InstanceId> {
    let first = beats.first()?.instance;
    beats.iter().all(|b| b.instance == first).then_some(first)
}

/// The distinct ids of `beats` (sorted, as `beats` is).
pub(crate) fn unique_ids(beats: &[Beat]) -> Vec<RowId> {
    let mut ids: Vec<RowId> = beats.iter().map(|b| b.id).collect();
    ids.dedup();
    ids
}

/// The beats of `beats` whose row is not in `found` (gone) or is held by another
/// instance: the second look of a batch whose row count fell short, for backends
/// that read the rows back and compare here.
#[cfg(feature = "mysql")]
pub(crate) fn unrefreshed_among(
    beats: &[Beat],
    found: &std::collections::HashMap<RowId, StoredHolder>,
) -> Vec<Unrefreshed> {
    beats
        .iter()
        .filter_map(|beat| match found.get(&beat.id) {
            None => Some(Unrefreshed {
                id: beat.id,
                instance: beat.instance,
                found: None,
            }),
            Some(holder) if holder.0.instance() != Some(beat.instance) => Some(Unrefreshed {
                id: beat.id,
                instance: beat.instance,
                found: Some(*holder),
            }),
            Some(_) => None,
        })
        .collect()
}

/// Writes `id` as 32 lowercase hex digits to `out` (no allocation).
pub(crate) fn push_hex(out: &mut String, id: InstanceId) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(out, "{:032x}", id.as_u128());
}

/// Storage operations, one statement (or one transaction) each, in the backend's SQL.
///
/// Every operation is bounded by `[db] timeout` (pool checkout included) and reports
/// failures as [`DbError`]; the caller classifies and redacts them.
#[async_trait]
pub(crate) trait Store: Send + Sync + fmt::Debug + 'static {
    /// Applies registrations (unique keys, sorted) atomically each, one outcome per
    /// registration in order: all of them unconditional in one statement (or one
    /// transaction where the backend needs it to read the result back); with
    /// conditions in one transaction that locks the rows it checks. The identity
    /// contract: a new row gets epoch 1 and `holder_since = <db now>`; the holding
    /// instance keeps the epoch; another instance adds one and sets `holder_since`;
    /// metadata is replaced, `forced_down` kept, `last_seen = <db now>`.
    async fn register(&self, regs: &[Reg<'_>]) -> Result<Vec<Outcome>, DbError>;

    /// `UPDATE … SET last_seen = <db now> WHERE id IN (…)` for the rows of `beats`
    /// still held by their beat's instance, one statement in the normal case; only
    /// when its row count falls short a second statement finds the beats that did
    /// not refresh their row (returned; empty when all did).
    async fn touch(&self, beats: &[Beat]) -> Result<Vec<Unrefreshed>, DbError>;

    /// The ids of the rows of `group` among `members` (any order).
    async fn lookup(
        &self,
        group: &str,
        members: Vec<String>,
    ) -> Result<Vec<(RowId, String)>, DbError>;

    /// Deletes a member (only if `holder` holds it, when given); whether a row was
    /// deleted.
    async fn delete(
        &self,
        group: &str,
        member: &str,
        holder: Option<InstanceId>,
    ) -> Result<bool, DbError>;

    /// Replaces the metadata of a member `instance` holds; whether it did.
    async fn set_metadata(
        &self,
        group: &str,
        member: &str,
        instance: InstanceId,
        metadata: String,
    ) -> Result<bool, DbError>;

    /// Who holds a member, if it exists.
    async fn holder(&self, group: &str, member: &str) -> Result<Option<StoredHolder>, DbError>;

    /// Sets the forced-down flag; whether the member exists.
    async fn set_forced_down(
        &self,
        group: &str,
        member: &str,
        forced_down: bool,
    ) -> Result<bool, DbError>;

    /// One member with its age, one query.
    async fn get(&self, group: &str, member: &str) -> Result<Option<Row>, DbError>;

    /// The members of `group` that `which` selects, with their ages, one query
    /// (the state judged by the database on its own clock).
    async fn list(&self, group: &str, which: Which) -> Result<Vec<Row>, DbError>;

    /// How many members of `group` are up, down and forced down with
    /// `service_down_time`, one counting query on the database's clock.
    async fn summary(&self, group: &str, service_down_time: Duration) -> Result<Summary, DbError>;

    /// Every group with at least one member, one query.
    async fn groups(&self) -> Result<Vec<String>, DbError>;

    /// Moves `group`'s membership revision by one (a group without one gets 1), one
    /// statement on `lane`: the lane of the change it follows, so a registration's
    /// never waits behind a listing.
    async fn bump(&self, group: &str, lane: Lane) -> Result<(), DbError>;

    /// `group`'s membership revision (0 when it has none), one query.
    async fn revision(&self, group: &str) -> Result<u64, DbError>;
}

/// Which of a store's pools a statement takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The heartbeat lane (heartbeats, registrations): `[db] heartbeat_pool_size`.
    Heartbeat,
    /// The general lane (listings, operator calls): `[db] pool_size`.
    General,
}

/// A stored revision as the driver reports it (a negative one, written by something
/// else, is read as 0: the watch lists at its next change or resynchronisation).
pub(crate) fn revision_of(stored: Option<i64>) -> u64 {
    stored.and_then(|r| u64::try_from(r).ok()).unwrap_or(0)
}

/// What every backend needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `[db] timeout`: connect, statement and pool-checkout bound.
    pub(crate) timeout: Duration,
    /// `[db] pool_size`: the general lane (listings, watch polls, operator calls).
    pub(crate) pool_size: usize,
    /// `[db] heartbeat_pool_size`: connections reserved for heartbeats and
    /// registrations (0: they share the general lane).
    pub(crate) heartbeat_pool_size: usize,
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

#[cfg(test)]
mod tests {
    use super::*;
    use servicegroup_core::Holder;

    #[test]
    fn stored_values_keep_what_cannot_be_decoded() {
        let id = InstanceId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let stored = StoredInstance::from_slice(&id.to_bytes());
        assert_eq!(stored.instance(), Some(id));
        let short = StoredInstance::from_slice(&[1, 2, 3]);
        assert_eq!((short.instance(), short.len()), (None, 3));
        assert_eq!(StoredInstance::from_slice(&[0; 300]).len(), 255);
        assert_eq!(StoredMetadata::from_bytes(b"{}"), StoredMetadata::Empty);
        assert_eq!(
            StoredMetadata::from_bytes(b"{\"a\":\"b\"}"),
            StoredMetadata::Json("{\"a\":\"b\"}".to_owned())
        );
        assert!(matches!(
            StoredMetadata::from_bytes(&[b'{', 0xff, b'}']),
            StoredMetadata::Json(_)
        ));
    }

    #[test]
    fn conditions_on_stored_holders() {
        let a = InstanceId::from_u128(1);
        let held = Some((StoredInstance::from_slice(&a.to_bytes()), 2));
        let bad = Some((StoredInstance::from_slice(&[1]), 2));
        assert!(condition_holds(Condition::Always, held));
        assert!(condition_holds(Condition::Absent, None));
        assert!(!condition_holds(Condition::Absent, held));
        assert!(condition_holds(Condition::HeldAs(Holder::new(a, 2)), held));
        assert!(!condition_holds(Condition::HeldAs(Holder::new(a, 1)), held));
        assert!(!condition_holds(Condition::HeldAs(Holder::new(a, 2)), None));
        assert!(!condition_holds(Condition::HeldAs(Holder::new(a, 2)), bad));
        assert!(!condition_holds(
            Condition::HeldAs(Holder::new(a, 2)),
            Some((StoredInstance::from_slice(&a.to_bytes()), -1))
        ));
    }

    #[test]
    fn times_and_ages() {
        let t = utc_from_secs(1_700_000_000.25).unwrap();
        assert_eq!(t.timestamp(), 1_700_000_000);
        assert_eq!(t.timestamp_subsec_millis(), 250);
        assert_eq!(utc_from_secs(f64::NAN), None);
        assert_eq!(age_from_secs(-0.001), Duration::ZERO);
        assert_eq!(age_from_secs(1.5), Duration::from_millis(1500));
        assert_eq!(age_from_micros(-7), Duration::ZERO);
        assert_eq!(age_from_micros(1_500_000), Duration::from_millis(1500));
        assert_eq!(micros_floor(Duration::from_nanos(1_000_999)), 1_000);
    }

    #[test]
    fn the_rule_in_sql_and_its_counts() {
        let fresh = Fresh {
            before: "age <= ",
            after: "",
        };
        assert_eq!(
            state_predicate(State::Up, fresh),
            ("(NOT forced_down AND age <= ".to_owned(), ")".to_owned())
        );
        assert_eq!(
            state_predicate(State::Down, fresh),
            ("(forced_down OR NOT (age <= ".to_owned(), "))".to_owned())
        );
        let cutoff = Fresh {
            before: "last_seen >= (SELECT now() - ",
            after: ")",
        };
        assert_eq!(
            state_predicate(State::Down, cutoff),
            (
                "(forced_down OR NOT (last_seen >= (SELECT now() - ".to_owned(),
                ")))".to_owned()
            )
        );
        assert_eq!(
            summary_select(cutoff),
            (
                "SELECT forced_down, last_seen >= (SELECT now() - ".to_owned(),
                "), COUNT(*) FROM servicegroup_members WHERE group_id = ".to_owned()
            )
        );
        // Forced down counts as forced down whatever the heartbeat, as Summary::add.
        let summary = summary_of(&[
            (false, true, 5),
            (false, false, 2),
            (true, true, 1),
            (true, false, 3),
        ]);
        assert_eq!((summary.up, summary.down, summary.forced_down), (5, 2, 4));
        assert_eq!(summary_of(&[]), Summary::default());
    }

    #[test]
    fn batch_shapes() {
        let (a, b) = (InstanceId::from_u128(1), InstanceId::from_u128(2));
        let beat = |id, instance| Beat { id, instance };
        let one = [beat(1, a), beat(4, a)];
        assert_eq!(single_instance(&one), Some(a));
        let two = [beat(1, a), beat(4, a), beat(4, b)];
        assert_eq!(single_instance(&two), None);
        assert_eq!(unique_ids(&two), vec![1, 4]);
        assert_eq!(single_instance(&[]), None);
        let mut hex = String::new();
        push_hex(&mut hex, InstanceId::from_u128(0xab));
        assert_eq!(hex, format!("{:032x}", 0xab));
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn unrefreshed_beats_are_found_by_holder() {
        let (a, b) = (InstanceId::from_u128(1), InstanceId::from_u128(2));
        let beat = |id, instance| Beat { id, instance };
        let held = |i: InstanceId, epoch| (StoredInstance::from_slice(&i.to_bytes()), epoch);
        let found: std::collections::HashMap<RowId, StoredHolder> =
            [(1, held(a, 1)), (4, held(b, 3))].into_iter().collect();
        let beats = [beat(1, a), beat(2, a), beat(4, a), beat(4, b)];
        assert_eq!(
            unrefreshed_among(&beats, &found),
            vec![
                Unrefreshed {
                    id: 2,
                    instance: a,
                    found: None
                },
                Unrefreshed {
                    id: 4,
                    instance: a,
                    found: Some(held(b, 3))
                },
            ]
        );
    }
}
