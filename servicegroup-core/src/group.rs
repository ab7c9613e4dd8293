//! [`ServiceGroup`]: the handle applications use, and [`Membership`].

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::driver::{Capabilities, Driver};
use crate::error::{Error, Result};
use crate::heartbeat::{self, Health};
use crate::id::{GroupId, IntoId, MemberId, MemberKey};
use crate::members::Joined;
use crate::registry::Registry;
use crate::status::MemberStatus;
use crate::watch::Watch;

/// Most keys registered by one driver call in [`ServiceGroup::join_many`].
pub const JOIN_CHUNK: usize = 1000;

/// State shared by every clone of a [`ServiceGroup`] and its memberships.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) config: Config,
    /// Members joined through this handle, and the sorted keys heartbeated each
    /// tick (updated in place on join, leave and crash; see [`Joined`]).
    joined: Mutex<Joined>,
    /// Serializes a tick's re-registrations with `leave`, so a member that left
    /// is never registered again by a heartbeat that was in flight.
    write_lock: tokio::sync::Mutex<()>,
    health: Health,
    heartbeat_task: OnceLock<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat_task.get() {
            task.abort();
        }
    }
}

impl Inner {
    fn joined(&self) -> MutexGuard<'_, Joined> {
        // Every change to the set completes under the lock without panicking paths
        // that could leave it half done; a panic elsewhere cannot make it inconsistent.
        self.joined.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The keys to heartbeat: every registered member, sorted.
    fn batch(&self) -> Arc<Vec<MemberKey>> {
        self.joined().batch()
    }

    /// Runs one driver call under core's timeout, tagging errors with the driver name.
    pub(crate) async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let name = self.driver.name();
        match tokio::time::timeout(self.config.call_timeout, fut).await {
            Ok(result) => result.map_err(|e| e.with_driver(name.to_owned())),
            Err(_) => Err(Error::timeout(format!(
                "{what} did not finish within {:?} (call_timeout)",
                self.config.call_timeout
            ))
            .with_driver(name.to_owned())),
        }
    }

    /// One heartbeat tick: every joined member in one driver call.
    pub(crate) async fn tick(&self) {
        let keys = self.batch();
        if keys.is_empty() {
            return;
        }
        let driver = self.driver.name();
        let report = match self.call("heartbeat", self.driver.heartbeat(&keys)).await {
            Ok(report) => {
                self.health.succeeded(driver);
                report
            }
            Err(error) => {
                self.health.failed(driver, &error);
                return;
            }
        };
        if report.missing.is_empty() {
            return;
        }
        let _guard = self.write_lock.lock().await;
        // Members that left meanwhile are not brought back.
        let missing: Vec<MemberKey> = report
            .missing
            .into_iter()
            .filter(|key| self.joined().is_joined(key))
            .collect();
        // After a backend lost everything (memcached restarted empty) every member
        // of the handle is missing at once: one WARN for the tick, not one per member.
        if let Err(error) = self.register_all(&missing).await {
            self.health.failed(driver, &error);
            return;
        }
        if let Some(first) = missing.first() {
            tracing::warn!(
                driver,
                count = missing.len(),
                first = %first,
                "{} member record(s) were gone from the {driver} backend (first: {first}); registered them again",
                missing.len()
            );
        }
        for key in &missing {
            tracing::debug!(driver, group = %key.group, member = %key.member, "registered again");
        }
    }

    /// Registers `keys` (sorted) in chunks of [`JOIN_CHUNK`], one driver call per chunk.
    async fn register_all(&self, keys: &[MemberKey]) -> Result<()> {
        for chunk in keys.chunks(JOIN_CHUNK) {
            if let [key] = chunk {
                self.call("register", self.driver.register(key)).await?;
            } else {
                self.call("register_many", self.driver.register_many(chunk))
                    .await?;
            }
        }
        Ok(())
    }
}

/// Converts anything id-like into a validated id.
fn group_id<G>(group: G) -> Result<GroupId>
where
    G: IntoId<GroupId>,
{
    group.into_id()
}

fn key_of<G, M>(group: G, member: M) -> Result<MemberKey>
where
    G: IntoId<GroupId>,
    M: IntoId<MemberId>,
{
    Ok(MemberKey::new(group.into_id()?, member.into_id()?))
}

/// The handle applications use: join groups, ask who is up, watch changes.
///
/// Cheap to clone; clones share one heartbeat loop. All members joined through
/// one handle (and its clones) are heartbeated together, one driver call per tick.
#[derive(Debug, Clone)]
pub struct ServiceGroup {
    inner: Arc<Inner>,
}

impl ServiceGroup {
    /// Validates `config` and builds the driver it names through the [`Registry`].
    pub async fn connect(config: Config) -> Result<Self> {
        let config = config.validated()?;
        let driver = Registry::build(&config).await?;
        Self::with_driver(driver, config)
    }

    /// Uses an already built driver (wrappers, tests, drivers outside the registry).
    pub fn with_driver(driver: Arc<dyn Driver>, config: Config) -> Result<Self> {
        let config = config.validated()?;
        Ok(Self {
            inner: Arc::new(Inner {
                driver,
                config,
                joined: Mutex::new(Joined::default()),
                write_lock: tokio::sync::Mutex::new(()),
                health: Health::new(),
                heartbeat_task: OnceLock::new(),
            }),
        })
    }

    /// The configuration in effect (`service_down_time` already adjusted by Nova's rule).
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The driver's name.
    pub fn driver_name(&self) -> &str {
        self.inner.driver.name()
    }

    /// The driver's capabilities.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.driver.capabilities()
    }

    /// Whether the last heartbeat tick of this handle reached the backend.
    pub fn is_healthy(&self) -> bool {
        self.inner.health.is_healthy()
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Joins `group` as `member`. Returns once the first heartbeat is stored; from
    /// then on the member is heartbeated every `report_interval` until the
    /// [`Membership`] leaves or is dropped.
    ///
    /// Joining a member that this handle already has is [`crate::ErrorKind::AlreadyJoined`].
    /// Joining a member another handle or process registered (a restart) takes it over.
    pub async fn join<G, M>(&self, group: G, member: M) -> Result<Membership>
    where
        G: IntoId<GroupId>,
        M: IntoId<MemberId>,
    {
        let key = key_of(group, member)?;
        let mut joined = self.join_keys(vec![key]).await?;
        // join_keys returns one membership per key given.
        joined
            .pop()
            .ok_or_else(|| Error::backend("join registered no membership"))
    }

    /// Joins many members of one group at once: validates every id first, registers
    /// them in chunks of [`JOIN_CHUNK`] keys per driver call (one round trip each
    /// where the driver supports it), and returns the memberships in the order given.
    /// All or nothing: if a chunk fails, no member of the call stays joined on this
    /// handle (records already stored go down after `service_down_time`).
    pub async fn join_many<G, M, I>(&self, group: G, members: I) -> Result<Vec<Membership>>
    where
        G: IntoId<GroupId>,
        I: IntoIterator<Item = M>,
        M: IntoId<MemberId>,
    {
        let group = group_id(group)?;
        let keys = members
            .into_iter()
            .map(|m| Ok(MemberKey::new(group.clone(), m.into_id()?)))
            .collect::<Result<Vec<_>>>()?;
        self.join_keys(keys).await
    }

    async fn join_keys(&self, keys: Vec<MemberKey>) -> Result<Vec<Membership>> {
        let inner = &self.inner;
        if let Err(dup) = inner.joined().start_joining(&keys) {
            return Err(Error::new(
                crate::ErrorKind::AlreadyJoined,
                format!("member {dup} is already joined on this handle"),
            )
            .with_driver(inner.driver.name().to_owned()));
        }
        let mut sorted = keys.clone();
        sorted.sort();
        if let Err(error) = inner.register_all(&sorted).await {
            inner.joined().abort_joining(&keys);
            return Err(error);
        }
        inner.joined().finish_joining(&keys);
        inner.heartbeat_task.get_or_init(|| heartbeat::spawn(inner));
        tracing::debug!(driver = self.driver_name(), members = keys.len(), "joined");
        Ok(keys
            .into_iter()
            .map(|key| Membership {
                group: self.clone(),
                key,
                active: true,
            })
            .collect())
    }

    /// Nova's `is_up`: whether the member is up now. Unknown member: `NotFound`.
    pub async fn is_up<G, M>(&self, group: G, member: M) -> Result<bool>
    where
        G: IntoId<GroupId>,
        M: IntoId<MemberId>,
    {
        Ok(self.member(group, member).await?.is_up())
    }

    /// Nova's `get_updated_time`: the time of the last stored heartbeat. Unknown member: `NotFound`.
    pub async fn get_updated_time<G, M>(&self, group: G, member: M) -> Result<Option<DateTime<Utc>>>
    where
        G: IntoId<GroupId>,
        M: IntoId<MemberId>,
    {
        Ok(self.member(group, member).await?.last_heartbeat)
    }

    /// One member with its state. Unknown member: `NotFound`.
    pub async fn member<G, M>(&self, group: G, member: M) -> Result<MemberStatus>
    where
        G: IntoId<GroupId>,
        M: IntoId<MemberId>,
    {
        let key = key_of(group, member)?;
        match self.inner.call("get", self.inner.driver.get(&key)).await? {
            Some(record) => Ok(MemberStatus::from_record(
                record,
                self.inner.config.service_down_time,
            )),
            None => Err(self.not_found(&key)),
        }
    }

    /// Every member of `group` with its state, sorted by member id. Members that
    /// stopped heartbeating are listed as down until they leave or are removed.
    pub async fn members<G>(&self, group: G) -> Result<Vec<MemberStatus>>
    where
        G: IntoId<GroupId>,
    {
        let group = group_id(group)?;
        let records = self
            .inner
            .call("list", self.inner.driver.list(&group))
            .await?;
        let sdt = self.inner.config.service_down_time;
        let mut members: Vec<MemberStatus> = records
            .into_iter()
            .map(|r| MemberStatus::from_record(r, sdt))
            .collect();
        // Ids are unique within a group, so an unstable sort gives the same order
        // without the stable sort's buffer (a listing can hold 1,000,000 members).
        members.sort_unstable_by(|a, b| a.member.cmp(&b.member));
        Ok(members)
    }

    /// Every group with at least one member, sorted.
    pub async fn groups(&self) -> Result<Vec<GroupId>> {
        let mut groups = self
            .inner
            .call("groups", self.inner.driver.groups())
            .await?;
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// Sets or clears the operator's forced-down flag (Nova's `service set --down/--up`).
    /// Forced down wins over heartbeats, which go on. Unknown member: `NotFound`.
    pub async fn set_forced_down<G, M>(&self, group: G, member: M, forced_down: bool) -> Result<()>
    where
        G: IntoId<GroupId>,
        M: IntoId<MemberId>,
    {
        let key = key_of(group, member)?;
        let found = self
            .inner
            .call(
                "set_forced_down",
                self.inner.driver.set_forced_down(&key, forced_down),
            )
            .await?;
        if found {
            tracing::info!(driver = self.driver_name(), group = %key.group, member = %key.member, forced_down, "forced-down flag set");
            Ok(())
        } else {
            Err(self.not_found(&key))
        }
    }

    /// Deletes a member record (Nova's `service delete`). Unknown member: `NotFound`.
    /// A member still heartbeating through some handle registers itself again.
    pub async fn remove<G, M>(&self, group: G, member: M) -> Result<()>
    where
        G: IntoId<GroupId>,
        M: IntoId<MemberId>,
    {
        let key = key_of(group, member)?;
        if self
            .inner
            .call("remove", self.inner.driver.remove(&key))
            .await?
        {
            Ok(())
        } else {
            Err(self.not_found(&key))
        }
    }

    /// Watches `group` with the configured `watch_interval`. See [`Watch`].
    pub async fn watch<G>(&self, group: G) -> Result<Watch>
    where
        G: IntoId<GroupId>,
    {
        let interval = self.inner.config.effective_watch_interval();
        self.watch_with_interval(group, interval).await
    }

    /// Watches `group`, polling its listing every `interval`.
    pub async fn watch_with_interval<G>(
        &self,
        group: G,
        interval: std::time::Duration,
    ) -> Result<Watch>
    where
        G: IntoId<GroupId>,
    {
        if interval.is_zero() {
            return Err(Error::config("watch interval must be greater than zero"));
        }
        Watch::start(self.clone(), group_id(group)?, interval).await
    }

    fn not_found(&self, key: &MemberKey) -> Error {
        Error::not_found(format!("no member {} in group {}", key.member, key.group))
            .with_driver(self.driver_name().to_owned())
    }
}

/// A joined member. It is heartbeated as long as this value lives.
///
/// - [`Membership::leave`] leaves gracefully: the record is removed at once.
/// - Dropping it (or [`Membership::crash`]) stops the heartbeats **without**
///   removing the record, exactly what a crashed process looks like: the member
///   stays up until `service_down_time` has passed, then is listed as down.
#[derive(Debug)]
pub struct Membership {
    group: ServiceGroup,
    key: MemberKey,
    active: bool,
}

impl Membership {
    /// The group joined.
    pub fn group(&self) -> &GroupId {
        &self.key.group
    }

    /// The member id.
    pub fn member(&self) -> &MemberId {
        &self.key.member
    }

    /// Group and member.
    pub fn key(&self) -> &MemberKey {
        &self.key
    }

    /// The handle this membership belongs to.
    pub fn service_group(&self) -> &ServiceGroup {
        &self.group
    }

    /// Leaves gracefully: stops heartbeating and removes the record, so the member
    /// disappears from listings at once. If the backend cannot be reached the
    /// heartbeats still stop and the error is returned; the record then goes down
    /// after `service_down_time`.
    pub async fn leave(mut self) -> Result<()> {
        let inner = self.group.inner().clone();
        // Heartbeats stop before the first await: a leave cancelled while it waits
        // (a `select!`, a timeout) must not leave the key heartbeated with no
        // membership. A tick that already picked the member to re-register still
        // holds the write lock, so the record is removed after it, not before.
        inner.joined().remove(&self.key);
        self.active = false;
        let _guard = inner.write_lock.lock().await;
        inner
            .call("remove", inner.driver.remove(&self.key))
            .await
            .map(|_| ())
    }

    /// Simulates a crash: stops heartbeating without removing the record.
    /// Same as dropping the membership; named for tests and demos.
    pub fn crash(self) {
        drop(self);
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.active {
            self.group.inner().joined().remove(&self.key);
        }
    }
}
