//! [`DbDriver`]: the [`Driver`] implementation shared by every backend.
//!
//! It keeps a cache from member key to row id (filled by registrations and by a
//! first look-up by name), so a heartbeat tick is one `UPDATE … WHERE id IN (…)` on
//! the backend that refreshes only rows the beating instance holds; rows the
//! database no longer has are reported missing (core registers them again), rows
//! another instance holds superseded (core stops heartbeating them). Ids are never
//! reused, so a cached id is right for as long as its row lives, whoever holds it.
//! Records carry ages computed by the database on its own clock, the holder and the
//! metadata, every stored value checked (a bad row is a `Backend` error naming the
//! database and the member, never a panic).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use servicegroup_core::{
    async_trait, Beats, Capabilities, Config, DatabaseUrl, Driver, Error, Freshness, GroupId,
    HeartbeatReport, Holder, HolderUpdate, InstanceId, MemberId, MemberKey, MemberRecord, Metadata,
    Registered, Registration, Result, State, Summary, Superseded,
};

use crate::backend::{
    Beat, Lane, Outcome, Reg, Row, RowId, Settings, Store, StoredHolder, StoredMetadata, Which,
};
use crate::config::DbConfig;
use crate::error::{DbError, Redactor};
use crate::url::{self, BackendKind, SqliteLocation, Target};

/// The granularity of this driver's liveness judgement: ages come from the
/// database's clock with sub-millisecond (PostgreSQL) or ~1 ms (SQLite) precision.
pub const LIVENESS_RESOLUTION: Duration = Duration::from_millis(10);

/// Counters of what a driver did, for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Statistics {
    /// Statements sent on the driver's pooled connections (counted by diesel's
    /// instrumentation at the connection: what the database actually received).
    pub statements: u64,
    /// Batch heartbeat calls ([`Driver::heartbeat`]) completed successfully.
    pub heartbeat_calls: u64,
    /// Members heartbeated, summed over those calls.
    pub heartbeated_members: u64,
}

/// The `db` driver: SQLite, PostgreSQL or MySQL/MariaDB, picked by `[db] url`.
pub struct DbDriver {
    store: Box<dyn Store>,
    target: Target,
    location: String,
    redactor: Redactor,
    ids: Mutex<HashMap<MemberKey, RowId>>,
    statements: Arc<AtomicU64>,
    heartbeat_calls: AtomicU64,
    heartbeated_members: AtomicU64,
}

impl std::fmt::Debug for DbDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbDriver")
            .field("backend", &self.target.kind())
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// The embedded default database file: `$XDG_STATE_HOME/servicegroup/servicegroup.db`,
/// or `$HOME/.local/state/servicegroup/servicegroup.db` when `XDG_STATE_HOME` is unset,
/// empty or relative (the XDG base directory rules). The driver creates the
/// directory on first use. Error (`Config`) when neither variable gives a path.
pub fn default_sqlite_path() -> Result<PathBuf> {
    default_sqlite_path_from(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

/// [`default_sqlite_path`] for given `XDG_STATE_HOME` and `HOME` values.
fn default_sqlite_path_from(
    xdg_state_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf> {
    let from_xdg = xdg_state_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = match from_xdg {
        Some(state) => state,
        None => home
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .map(|home| home.join(".local").join("state"))
            .ok_or_else(|| {
                Error::config(format!(
                    "`{}` is not set and neither XDG_STATE_HOME nor HOME gives a directory for \
                     the default SQLite database: set `{}`",
                    url::URL_KEY,
                    url::URL_KEY
                ))
                .with_driver(crate::NAME)
            })?,
    };
    Ok(base.join("servicegroup").join("servicegroup.db"))
}

impl DbDriver {
    /// Connects to the database `db.url` names (the embedded default SQLite file when
    /// unset), applies pending migrations, and builds the pools, with the options of
    /// `config`'s `[db]` table ([`DbConfig`]).
    ///
    /// Errors: a bad URL or a backend not compiled in is `Config` (naming `db.url`);
    /// a database that cannot be reached is `Unavailable` or `Timeout`.
    pub async fn connect(config: &Config) -> Result<Self> {
        let db: DbConfig = config
            .driver_config(crate::NAME)
            .map_err(|e| e.with_driver(crate::NAME))?;
        Self::open(&db).await
    }

    /// Like [`connect`](Self::connect), from the driver's options themselves.
    pub async fn open(db: &DbConfig) -> Result<Self> {
        let (target, is_default) = resolve(db.url.as_ref())?;
        tls_keys_fit(&target, db)?;
        let redactor = match &target {
            #[cfg(feature = "postgres")]
            Target::Postgres(pg) => Redactor::new(pg.secrets().to_vec()),
            #[cfg(feature = "mysql")]
            Target::Mysql(my) => Redactor::new(my.secrets().to_vec()),
            _ => Redactor::default(),
        };
        if let Target::Sqlite(SqliteLocation::File(path)) = &target {
            prepare_sqlite_dir(path, is_default)?;
        }
        if db.pool_size == 0 {
            return Err(
                Error::config("invalid value for `db.pool_size`: must be at least 1")
                    .with_driver(crate::NAME),
            );
        }
        let location = target.redacted();
        let statements = Arc::new(AtomicU64::new(0));
        let settings = Settings {
            timeout: db.timeout,
            pool_size: db.pool_size as usize,
            heartbeat_pool_size: db.heartbeat_pool_size as usize,
            statements: vec![statements.clone(), shared_counter(&location)],
        };
        let store = open(&target, db, &redactor, &settings)
            .await
            .map_err(|e| redactor.error(&location, "connecting and migrating", &e))?;
        tracing::debug!(
            driver = crate::NAME,
            backend = %target.kind(),
            location = %location,
            pool_size = db.pool_size,
            heartbeat_pool_size = db.heartbeat_pool_size,
            timeout = ?db.timeout,
            "db driver ready"
        );
        Ok(Self {
            store,
            target,
            location,
            redactor,
            ids: Mutex::new(HashMap::new()),
            statements,
            heartbeat_calls: AtomicU64::new(0),
            heartbeated_members: AtomicU64::new(0),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        self.target.kind()
    }

    /// Where the database is, without any password (`sqlite:///…`, `postgresql://user:***@…`).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// What the driver did so far.
    pub fn statistics(&self) -> Statistics {
        Statistics {
            statements: self.statements.load(Ordering::Relaxed),
            heartbeat_calls: self.heartbeat_calls.load(Ordering::Relaxed),
            heartbeated_members: self.heartbeated_members.load(Ordering::Relaxed),
        }
    }

    fn ids(&self) -> MutexGuard<'_, HashMap<MemberKey, RowId>> {
        // The map holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, what: &str, e: DbError) -> Error {
        let error = self.redactor.error(&self.location, what, &e);
        tracing::debug!(driver = crate::NAME, kind = %error.kind(), error = %error, "db call failed");
        error
    }

    /// A record of `group` from its stored row. Every stored value is checked: a
    /// member id, holder or metadata that is not valid (a row written by something
    /// else) is a `Backend` error naming the database and the member.
    fn record(&self, group: &GroupId, row: Row) -> Result<MemberRecord> {
        let member = MemberId::new(row.member).map_err(|e| self.bad_row(e))?;
        let key = MemberKey::new(group.clone(), member);
        let holder = self.holder_of(&key, (row.instance, row.epoch))?;
        let metadata = match &row.metadata {
            StoredMetadata::Empty => Metadata::new(),
            StoredMetadata::Json(text) => Metadata::from_json(text).map_err(|e| {
                self.bad_member_row(&key, &format!("its metadata is not valid: {}", e.message()))
            })?,
        };
        Ok(MemberRecord {
            key,
            last_heartbeat: row.last_seen,
            freshness: Freshness::Age(row.age),
            forced_down: row.forced_down,
            holder,
            holder_since: row.holder_since,
            metadata,
        })
    }

    /// The holder a row of `key` stores, checked (16 bytes, an epoch >= 0).
    fn holder_of(&self, key: &MemberKey, (instance, epoch): StoredHolder) -> Result<Holder> {
        let Some(id) = instance.instance() else {
            return Err(self.bad_member_row(
                key,
                &format!(
                    "its holder instance is {} bytes long, not 16",
                    instance.len()
                ),
            ));
        };
        let epoch = self.epoch_of(key, epoch)?;
        Ok(Holder::new(id, epoch))
    }

    /// An epoch a row of `key` stores, checked.
    fn epoch_of(&self, key: &MemberKey, epoch: i64) -> Result<u64> {
        u64::try_from(epoch)
            .map_err(|_| self.bad_member_row(key, &format!("its epoch {epoch} is negative")))
    }

    /// The holder of a row that refused a heartbeat. A stored holder that is not
    /// valid is logged and reported as the unknown instance: the row is fenced
    /// either way (it is not the beating instance's), and one bad row must not fail
    /// the heartbeat of every other member of the batch.
    fn fencing_holder(&self, key: &MemberKey, found: StoredHolder) -> Holder {
        match self.holder_of(key, found) {
            Ok(holder) => holder,
            Err(error) => {
                tracing::warn!(driver = crate::NAME, %error, "heartbeat refused by a row with an invalid holder");
                Holder::new(InstanceId::NIL, u64::try_from(found.1).unwrap_or(0))
            }
        }
    }

    fn bad_row(&self, e: Error) -> Error {
        Error::backend(format!(
            "the database {} holds a row that is not a valid member: {}",
            self.location,
            e.message()
        ))
        .with_driver(crate::NAME)
    }

    fn bad_member_row(&self, key: &MemberKey, what: &str) -> Error {
        Error::backend(format!(
            "the database {} holds an invalid row for member {key}: {what}",
            self.location
        ))
        .with_driver(crate::NAME)
    }

    /// Applies registrations with unique keys through the store (one statement, or
    /// one transaction when some are conditional) and caches the row ids.
    async fn apply(&self, registrations: &[Registration]) -> Result<Vec<Registered>> {
        let regs: Vec<Reg<'_>> = registrations
            .iter()
            .map(|r| Reg {
                group: r.key.group.as_str(),
                member: r.key.member.as_str(),
                instance: r.instance,
                metadata: r.metadata.to_json(),
                condition: r.condition,
            })
            .collect();
        let what = if registrations.len() == 1 {
            format!("registering {}", registrations[0].key)
        } else {
            format!("registering {} members", registrations.len())
        };
        let outcomes = self
            .store
            .register(&regs)
            .await
            .map_err(|e| self.fail(&what, e))?;
        if outcomes.len() != registrations.len() {
            return Err(Error::backend(format!(
                "{what} on {}: {} outcomes for {} registrations",
                self.location,
                outcomes.len(),
                registrations.len()
            ))
            .with_driver(crate::NAME));
        }
        let mut out = Vec::with_capacity(outcomes.len());
        let mut changed: Vec<&GroupId> = Vec::new();
        {
            let mut ids = self.ids();
            for (registration, outcome) in registrations.iter().zip(outcomes) {
                let key = &registration.key;
                out.push(match outcome {
                    Outcome::Stored { id, epoch } => {
                        // A re-created row has a new id: the cache follows.
                        ids.insert(key.clone(), id);
                        changed.push(&key.group);
                        Registered::Stored {
                            epoch: self.epoch_of(key, epoch)?,
                        }
                    }
                    Outcome::Refused { found } => Registered::Refused {
                        found: found.map(|h| self.holder_of(key, h)).transpose()?,
                    },
                });
            }
        }
        self.bump(changed, Lane::Heartbeat).await;
        Ok(out)
    }

    /// Moves the revision of each of `groups` after a change of their records was
    /// stored (one statement per group, in order). A failure is logged, not returned:
    /// the change itself is stored, and a watch lists it at its next
    /// resynchronisation ([`servicegroup_core::watch::resync_polls`]) or after the next change.
    async fn bump(&self, mut groups: Vec<&GroupId>, lane: Lane) {
        groups.sort_unstable();
        groups.dedup();
        for group in groups {
            if let Err(e) = self.store.bump(group.as_str(), lane).await {
                let error = self.fail(&format!("moving the revision of group {group}"), e);
                tracing::warn!(driver = crate::NAME, %group, %error, "membership revision not moved: watches see the change at their next full listing");
            }
        }
    }
}

/// The target `[db] url` names (the default SQLite file when unset), with a
/// relative SQLite path made absolute; and whether it is the default.
fn resolve(url: Option<&DatabaseUrl>) -> Result<(Target, bool)> {
    let (target, is_default) = match url {
        Some(u) => (url::parse(u)?, false),
        None => (
            Target::Sqlite(SqliteLocation::File(default_sqlite_path()?)),
            true,
        ),
    };
    let target = match target {
        Target::Sqlite(SqliteLocation::File(path)) if !path.is_absolute() => {
            let cwd = std::env::current_dir().map_err(|e| {
                Error::config(format!(
                    "`{}`: cannot resolve the relative SQLite path {}: {e}",
                    url::URL_KEY,
                    path.display()
                ))
                .with_driver(crate::NAME)
            })?;
            Target::Sqlite(SqliteLocation::File(cwd.join(path)))
        }
        other => other,
    };
    Ok((target, is_default))
}

/// Checks (and for the default, creates) the directory of a SQLite file.
fn prepare_sqlite_dir(path: &std::path::Path, is_default: bool) -> Result<()> {
    if let Some(dir) = path.parent() {
        if is_default {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::unavailable(format!(
                    "cannot create the directory {} of the default SQLite database \
                     (set `{}` to use another place): {e}",
                    dir.display(),
                    url::URL_KEY
                ))
                .with_driver(crate::NAME)
            })?;
        } else if !dir.is_dir() {
            return Err(Error::config(format!(
                "`{}`: the directory {} of the SQLite database {} does not exist",
                url::URL_KEY,
                dir.display(),
                path.display()
            ))
            .with_driver(crate::NAME));
        }
    }
    Ok(())
}

/// Statement counters shared by every driver of this process on one database.
static SHARED_COUNTERS: LazyLock<Mutex<HashMap<String, Arc<AtomicU64>>>> =
    LazyLock::new(Default::default);

fn shared_counter(location: &str) -> Arc<AtomicU64> {
    SHARED_COUNTERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(location.to_owned())
        .or_default()
        .clone()
}

/// How many statements every `db` driver of this process has sent to the database
/// `url` names (`None`: the default SQLite file) so far, counted at the connections
/// by diesel's instrumentation. For tests and the conformance suite's heartbeat
/// operation counter; [`DbDriver::statistics`] gives one driver's own count.
pub fn statements_sent(url: Option<&DatabaseUrl>) -> Result<u64> {
    let (target, _) = resolve(url)?;
    Ok(shared_counter(&target.redacted()).load(Ordering::Relaxed))
}

/// The TLS keys of `[db]` must be the backend's: PostgreSQL's `sslmode` /
/// `sslrootcert`, MySQL's `ssl_mode` / `ssl_ca`, none for SQLite. A key of another
/// backend is a `Config` error saying which key to use.
fn tls_keys_fit(target: &Target, db: &DbConfig) -> Result<()> {
    let pg = [
        ("sslmode", db.sslmode.is_some(), "ssl_mode"),
        ("sslrootcert", db.sslrootcert.is_some(), "ssl_ca"),
    ];
    let my = [
        ("ssl_mode", db.ssl_mode.is_some(), "sslmode"),
        ("ssl_ca", db.ssl_ca.is_some(), "sslrootcert"),
    ];
    let (foreign, owner): (&[(&str, bool, &str)], &str) = match target.kind() {
        BackendKind::Postgres => (&my, "MySQL/MariaDB"),
        BackendKind::Mysql => (&pg, "PostgreSQL"),
        _ => {
            if let Some((key, ..)) = pg.iter().chain(&my).find(|(_, set, _)| *set) {
                return Err(Error::config(format!(
                    "`db.{key}` is set, but `{}` names a SQLite database, which has no TLS: \
                     remove `db.{key}`",
                    url::URL_KEY
                ))
                .with_driver(crate::NAME));
            }
            return Ok(());
        }
    };
    if let Some((key, _, instead)) = foreign.iter().find(|(_, set, _)| *set) {
        return Err(Error::config(format!(
            "`db.{key}` is a {owner} option, but `{}` names a {} database: use `db.{instead}`",
            url::URL_KEY,
            target.kind()
        ))
        .with_driver(crate::NAME));
    }
    Ok(())
}

/// Opens the backend the target names, with the TLS options of the URL and `[db]`.
async fn open(
    target: &Target,
    db: &DbConfig,
    redactor: &Redactor,
    settings: &Settings,
) -> std::result::Result<Box<dyn Store>, DbError> {
    match target {
        #[cfg(feature = "sqlite")]
        Target::Sqlite(location) => Ok(Box::new(
            crate::backend::sqlite::connect(location, settings).await?,
        )),
        #[cfg(feature = "postgres")]
        Target::Postgres(url) => {
            use crate::tls::{resolve, PgSslMode, TlsParams, PG_NAMES};
            let keys = TlsParams {
                mode: db.sslmode,
                ca: db.sslrootcert.clone(),
            };
            let tls = resolve(&PG_NAMES, url.tls(), &keys, PgSslMode::Prefer);
            Ok(Box::new(
                crate::backend::postgres::connect(url, &tls, redactor, settings).await?,
            ))
        }
        #[cfg(feature = "mysql")]
        Target::Mysql(url) => {
            use crate::tls::{resolve, MysqlSslMode, TlsParams, MYSQL_NAMES};
            let keys = TlsParams {
                mode: db.ssl_mode,
                ca: db.ssl_ca.clone(),
            };
            let tls = resolve(&MYSQL_NAMES, url.tls(), &keys, MysqlSslMode::VerifyIdentity);
            Ok(Box::new(
                crate::backend::mysql::connect(url, &tls, redactor, settings).await?,
            ))
        }
        #[allow(unreachable_patterns)]
        other => {
            let _ = (settings, db, redactor);
            Err(DbError::Other(format!(
                "the {} backend is not compiled in (cargo feature `{}`)",
                other.kind(),
                other.kind().feature()
            )))
        }
    }
}

#[async_trait]
impl Driver for DbDriver {
    fn name(&self) -> &str {
        crate::NAME
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::new(LIVENESS_RESOLUTION);
        caps.shared_between_processes =
            !matches!(self.target, Target::Sqlite(SqliteLocation::Memory));
        caps.follows_tokio_clock = false;
        caps
    }

    async fn register(&self, registration: &Registration) -> Result<Registered> {
        let mut outcomes = self.apply(std::slice::from_ref(registration)).await?;
        outcomes.pop().ok_or_else(|| {
            Error::backend(format!("registering {}: no outcome", registration.key))
                .with_driver(crate::NAME)
        })
    }

    async fn register_many(&self, registrations: &[Registration]) -> Result<Vec<Registered>> {
        if registrations.is_empty() {
            return Ok(Vec::new());
        }
        // The statements need unique keys (an upsert cannot touch one row twice).
        // Core never sends a key twice; should it happen, each is applied on its own.
        let mut seen = HashSet::with_capacity(registrations.len());
        if registrations.iter().all(|r| seen.insert(&r.key)) {
            return self.apply(registrations).await;
        }
        let mut out = Vec::with_capacity(registrations.len());
        for registration in registrations {
            out.extend(self.apply(std::slice::from_ref(registration)).await?);
        }
        Ok(out)
    }

    async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        let total: usize = batch.iter().map(|part| part.keys.len()).sum();
        if total == 0 {
            return Ok(HeartbeatReport::default());
        }
        // Split into members known by id and members to look up by name.
        let mut beats: Vec<(Beat, &MemberKey)> = Vec::with_capacity(total);
        let mut unknown: BTreeMap<&GroupId, Vec<(&MemberKey, InstanceId)>> = BTreeMap::new();
        {
            let ids = self.ids();
            for part in batch {
                for key in part.keys {
                    match ids.get(key) {
                        Some(id) => beats.push((
                            Beat {
                                id: *id,
                                instance: part.instance,
                            },
                            key,
                        )),
                        None => unknown
                            .entry(&key.group)
                            .or_default()
                            .push((key, part.instance)),
                    }
                }
            }
        }
        let mut report = HeartbeatReport::default();
        // Members this driver has no id for (another handle or process registered
        // them): their ids, one query per group, cached for the next ticks.
        for (group, members) in unknown {
            let mut names: Vec<String> = members
                .iter()
                .map(|(key, _)| key.member.as_str().to_owned())
                .collect();
            names.sort_unstable();
            names.dedup();
            let found = self
                .store
                .lookup(group.as_str(), names)
                .await
                .map_err(|e| {
                    self.fail(
                        &format!("heartbeat of {} members of group {group}", members.len()),
                        e,
                    )
                })?;
            let found: HashMap<String, RowId> =
                found.into_iter().map(|(id, member)| (member, id)).collect();
            let mut cache = self.ids();
            for (key, instance) in members {
                match found.get(key.member.as_str()) {
                    Some(id) => {
                        cache.insert(key.clone(), *id);
                        beats.push((Beat { id: *id, instance }, key));
                    }
                    None => report.missing.push((instance, key.clone())),
                }
            }
        }
        // Sorted by id: the statement locks rows in id order (no deadlocks between
        // processes), and the refused beats are found by binary search.
        beats.sort_unstable_by_key(|(beat, _)| *beat);
        beats.dedup_by_key(|(beat, _)| *beat);
        if !beats.is_empty() {
            let plain: Vec<Beat> = beats.iter().map(|(beat, _)| *beat).collect();
            let unrefreshed = self
                .store
                .touch(&plain)
                .await
                .map_err(|e| self.fail(&format!("heartbeat of {total} members"), e))?;
            if !unrefreshed.is_empty() {
                let mut cache = self.ids();
                for u in unrefreshed {
                    let wanted = Beat {
                        id: u.id,
                        instance: u.instance,
                    };
                    let Ok(at) = beats.binary_search_by_key(&wanted, |(beat, _)| *beat) else {
                        continue;
                    };
                    let key = beats[at].1;
                    match u.found {
                        None => {
                            // Gone. Only this id leaves the cache: a registration may
                            // have cached the id of a re-created row meanwhile.
                            if cache.get(key) == Some(&u.id) {
                                cache.remove(key);
                            }
                            report.missing.push((u.instance, key.clone()));
                        }
                        Some(found) => report.superseded.push(Superseded {
                            key: key.clone(),
                            instance: u.instance,
                            holder: self.fencing_holder(key, found),
                        }),
                    }
                }
            }
        }
        report.missing.sort();
        report
            .superseded
            .sort_by(|a, b| (&a.key, a.instance).cmp(&(&b.key, b.instance)));
        self.heartbeat_calls.fetch_add(1, Ordering::Relaxed);
        self.heartbeated_members
            .fetch_add(total as u64, Ordering::Relaxed);
        Ok(report)
    }

    async fn remove(&self, key: &MemberKey, holder: Option<InstanceId>) -> Result<bool> {
        let deleted = self
            .store
            .delete(key.group.as_str(), key.member.as_str(), holder)
            .await
            .map_err(|e| self.fail(&format!("removing {key}"), e))?;
        // A row another instance holds stays, and so does its (valid) cached id.
        if deleted || holder.is_none() {
            self.ids().remove(key);
        }
        if deleted {
            self.bump(vec![&key.group], Lane::General).await;
        }
        Ok(deleted)
    }

    async fn set_metadata(
        &self,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        let what = format!("setting the metadata of {key}");
        let json = metadata.to_json();
        // The update is conditional on the holder; when it changes nothing, one read
        // tells why. Should the row be taken back by this instance in between, the
        // update is tried again.
        for _ in 0..3 {
            if self
                .store
                .set_metadata(
                    key.group.as_str(),
                    key.member.as_str(),
                    instance,
                    json.clone(),
                )
                .await
                .map_err(|e| self.fail(&what, e))?
            {
                self.bump(vec![&key.group], Lane::General).await;
                return Ok(HolderUpdate::Stored);
            }
            let found = self
                .store
                .holder(key.group.as_str(), key.member.as_str())
                .await
                .map_err(|e| self.fail(&what, e))?;
            match found {
                None => return Ok(HolderUpdate::Missing),
                Some(found) => {
                    let holder = self.holder_of(key, found)?;
                    if holder.instance != instance {
                        return Ok(HolderUpdate::NotHeld(holder));
                    }
                }
            }
        }
        Err(Error::backend(format!(
            "{what} on {}: the record kept changing under the update",
            self.location
        ))
        .with_driver(crate::NAME))
    }

    async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool> {
        let found = self
            .store
            .set_forced_down(key.group.as_str(), key.member.as_str(), forced_down)
            .await
            .map_err(|e| self.fail(&format!("setting forced_down of {key}"), e))?;
        if found {
            self.bump(vec![&key.group], Lane::General).await;
        }
        Ok(found)
    }

    async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>> {
        let row = self
            .store
            .get(key.group.as_str(), key.member.as_str())
            .await
            .map_err(|e| self.fail(&format!("reading {key}"), e))?;
        row.map(|r| self.record(&key.group, r)).transpose()
    }

    async fn list(&self, group: &GroupId) -> Result<Vec<MemberRecord>> {
        let rows = self
            .store
            .list(group.as_str(), Which::All)
            .await
            .map_err(|e| self.fail(&format!("listing group {group}"), e))?;
        rows.into_iter().map(|r| self.record(group, r)).collect()
    }

    async fn list_in(
        &self,
        group: &GroupId,
        state: State,
        service_down_time: Duration,
    ) -> Result<Vec<MemberRecord>> {
        let rows = self
            .store
            .list(group.as_str(), Which::In(state, service_down_time))
            .await
            .map_err(|e| self.fail(&format!("listing the {state} members of group {group}"), e))?;
        rows.into_iter().map(|r| self.record(group, r)).collect()
    }

    async fn summary(&self, group: &GroupId, service_down_time: Duration) -> Result<Summary> {
        self.store
            .summary(group.as_str(), service_down_time)
            .await
            .map_err(|e| self.fail(&format!("counting the members of group {group}"), e))
    }

    async fn revision(&self, group: &GroupId) -> Result<Option<u64>> {
        let revision = self
            .store
            .revision(group.as_str())
            .await
            .map_err(|e| self.fail(&format!("reading the revision of group {group}"), e))?;
        Ok(Some(revision))
    }

    async fn groups(&self) -> Result<Vec<GroupId>> {
        let groups = self
            .store
            .groups()
            .await
            .map_err(|e| self.fail("listing groups", e))?;
        groups
            .into_iter()
            .map(|g| GroupId::new(g).map_err(|e| self.bad_row(e)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_follows_xdg() {
        let p = |x: Option<&str>, h: Option<&str>| {
            default_sqlite_path_from(x.map(Into::into), h.map(Into::into))
        };
        assert_eq!(
            p(Some("/state"), Some("/home/u")).unwrap(),
            PathBuf::from("/state/servicegroup/servicegroup.db")
        );
        for xdg in [None, Some(""), Some("relative")] {
            assert_eq!(
                p(xdg, Some("/home/u")).unwrap(),
                PathBuf::from("/home/u/.local/state/servicegroup/servicegroup.db")
            );
        }
        let err = p(None, None).unwrap_err();
        assert_eq!(err.kind(), servicegroup_core::ErrorKind::Config);
        assert!(err.to_string().contains("db.url"), "{err}");
    }
}
