//! [`Instrumented`]: a [`Driver`] wrapper that delegates every call and records
//! what core asked of the driver (calls, batch sizes, when writes happened, what
//! heartbeats reported).
//!
//! The suite wraps the driver the registry builds
//! (`ServiceGroup::with_driver(Arc::new(Instrumented::new(Registry::build(&config).await?)), config)`)
//! to see how core drives it: one heartbeat call per tick carrying every member, at
//! the configured cadence; the exact window in which the last heartbeat of a crashed
//! member was stored; which members a heartbeat found missing or held by another
//! instance; and that invalid input never reaches the driver.
//!
//! `ServiceGroup::with_driver` puts core's coalescer
//! ([`servicegroup_core::coalesce::Coalescer`]) in front of the driver it is given, so
//! the wrapper sits between the coalescer and the real driver and counts what reaches
//! the backend: handles built on one `Arc<Instrumented>` share one coalescer, and
//! [`Counters::heartbeats`] shows their merged calls (several parts, one per
//! instance); `conformance/tests/coalesce.rs` counts them for 10,000 handles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use servicegroup_core::{
    Beats, Capabilities, Driver, GroupId, HeartbeatReport, HolderUpdate, InstanceId, MemberKey,
    MemberRecord, Metadata, Registered, Registration, Result, State, Summary, Superseded,
};
use tokio::time::Instant;

/// One heartbeat call as the wrapper saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatCall {
    /// When core called the driver.
    pub started: Instant,
    /// How many keys the batch carried (over all its parts).
    pub keys: usize,
    /// The batch's parts: each heartbeating instance and how many keys it sent.
    pub parts: Vec<(InstanceId, usize)>,
}

/// The time window in which a write (register or heartbeat) was stored: the backend
/// stored it at some moment between `started` and `ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteWindow {
    /// When the call started.
    pub started: Instant,
    /// When it returned (or was abandoned by core's timeout).
    pub ended: Instant,
}

/// What the wrapper recorded. Shared: clone the `Arc` from [`Instrumented::counters`].
#[derive(Debug, Default)]
pub struct Counters {
    register_calls: AtomicU64,
    register_many_calls: AtomicU64,
    registrations: AtomicU64,
    heartbeat_calls: AtomicU64,
    remove_calls: AtomicU64,
    set_metadata_calls: AtomicU64,
    set_forced_down_calls: AtomicU64,
    get_calls: AtomicU64,
    list_calls: AtomicU64,
    list_in_calls: AtomicU64,
    summary_calls: AtomicU64,
    revision_calls: AtomicU64,
    groups_calls: AtomicU64,
    writes_in_flight: AtomicU64,
    /// Nanoseconds each group read waits before reaching the driver.
    read_delay_nanos: AtomicU64,
    heartbeats: Mutex<Vec<HeartbeatCall>>,
    missing_reported: Mutex<Vec<MemberKey>>,
    superseded_reported: Mutex<Vec<Superseded>>,
    last_ok_write: Mutex<Option<WriteWindow>>,
    last_write_end: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Counters {
    /// `register` calls so far (one registration each).
    pub fn register_calls(&self) -> u64 {
        self.register_calls.load(Ordering::SeqCst)
    }

    /// `register_many` calls so far.
    pub fn register_many_calls(&self) -> u64 {
        self.register_many_calls.load(Ordering::SeqCst)
    }

    /// Registrations sent so far, through `register` and `register_many` together.
    pub fn registrations(&self) -> u64 {
        self.registrations.load(Ordering::SeqCst)
    }

    /// `heartbeat` calls so far.
    pub fn heartbeat_calls(&self) -> u64 {
        self.heartbeat_calls.load(Ordering::SeqCst)
    }

    /// `remove` calls so far.
    pub fn remove_calls(&self) -> u64 {
        self.remove_calls.load(Ordering::SeqCst)
    }

    /// `set_metadata` calls so far.
    pub fn set_metadata_calls(&self) -> u64 {
        self.set_metadata_calls.load(Ordering::SeqCst)
    }

    /// `list` calls so far (whole listings of a group).
    pub fn list_calls(&self) -> u64 {
        self.list_calls.load(Ordering::SeqCst)
    }

    /// `list_in` calls so far (the members of a group in one state).
    pub fn list_in_calls(&self) -> u64 {
        self.list_in_calls.load(Ordering::SeqCst)
    }

    /// `revision` calls so far.
    pub fn revision_calls(&self) -> u64 {
        self.revision_calls.load(Ordering::SeqCst)
    }

    /// Makes every group read that core asks of the driver from now on (`list`,
    /// `list_in`, `revision`) wait `delay` first: a backend whose reads are slow, as
    /// a table of millions of rows under load is. Heartbeats and writes are not
    /// delayed.
    pub fn set_read_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.read_delay_nanos.store(nanos, Ordering::SeqCst);
    }

    /// Waits the delay [`Self::set_read_delay`] set (none by default).
    async fn read_delay(&self) {
        let nanos = self.read_delay_nanos.load(Ordering::SeqCst);
        if nanos > 0 {
            tokio::time::sleep(Duration::from_nanos(nanos)).await;
        }
    }

    /// Calls of any method so far.
    pub fn total_calls(&self) -> u64 {
        self.calls_except_heartbeats() + self.heartbeat_calls()
    }

    /// Calls of any method but `heartbeat` so far (what an API call made, while the
    /// handle's heartbeat loop goes on).
    pub fn calls_except_heartbeats(&self) -> u64 {
        [
            &self.register_calls,
            &self.register_many_calls,
            &self.remove_calls,
            &self.set_metadata_calls,
            &self.set_forced_down_calls,
            &self.get_calls,
            &self.list_calls,
            &self.list_in_calls,
            &self.summary_calls,
            &self.revision_calls,
            &self.groups_calls,
        ]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .sum()
    }

    /// Every heartbeat call so far, oldest first.
    pub fn heartbeats(&self) -> Vec<HeartbeatCall> {
        lock(&self.heartbeats).clone()
    }

    /// Every key a heartbeat reported missing so far.
    pub fn missing_reported(&self) -> Vec<MemberKey> {
        lock(&self.missing_reported).clone()
    }

    /// Every key a heartbeat reported held by another instance so far.
    pub fn superseded_reported(&self) -> Vec<Superseded> {
        lock(&self.superseded_reported).clone()
    }

    /// Register or heartbeat calls running right now.
    pub fn writes_in_flight(&self) -> u64 {
        self.writes_in_flight.load(Ordering::SeqCst)
    }

    /// The window of the latest register or heartbeat call that succeeded.
    pub fn last_ok_write(&self) -> Option<WriteWindow> {
        *lock(&self.last_ok_write)
    }

    /// When the latest register or heartbeat call ended, whatever its result.
    pub fn last_write_end(&self) -> Option<Instant> {
        *lock(&self.last_write_end)
    }
}

/// Tracks one write call; records its end even if core's timeout drops the future.
struct WriteGuard<'a> {
    counters: &'a Counters,
    started: Instant,
    ok: bool,
}

impl<'a> WriteGuard<'a> {
    fn new(counters: &'a Counters) -> Self {
        counters.writes_in_flight.fetch_add(1, Ordering::SeqCst);
        Self {
            counters,
            started: Instant::now(),
            ok: false,
        }
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let ended = Instant::now();
        if self.ok {
            let mut last = lock(&self.counters.last_ok_write);
            if last.is_none_or(|w| w.started <= self.started) {
                *last = Some(WriteWindow {
                    started: self.started,
                    ended,
                });
            }
        }
        {
            let mut end = lock(&self.counters.last_write_end);
            if end.is_none_or(|e| e <= ended) {
                *end = Some(ended);
            }
        }
        self.counters
            .writes_in_flight
            .fetch_sub(1, Ordering::SeqCst);
    }
}

/// A driver wrapper that delegates every call to `inner` and records it in [`Counters`].
#[derive(Debug)]
pub struct Instrumented {
    inner: Arc<dyn Driver>,
    counters: Arc<Counters>,
}

impl Instrumented {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Driver>) -> Self {
        Self {
            inner,
            counters: Arc::new(Counters::default()),
        }
    }

    /// The shared counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }
}

#[async_trait]
impl Driver for Instrumented {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn register(&self, registration: &Registration) -> Result<Registered> {
        self.counters.register_calls.fetch_add(1, Ordering::SeqCst);
        self.counters.registrations.fetch_add(1, Ordering::SeqCst);
        let mut guard = WriteGuard::new(&self.counters);
        let result = self.inner.register(registration).await;
        guard.ok = result.is_ok();
        result
    }

    async fn register_many(&self, registrations: &[Registration]) -> Result<Vec<Registered>> {
        self.counters
            .register_many_calls
            .fetch_add(1, Ordering::SeqCst);
        self.counters
            .registrations
            .fetch_add(registrations.len() as u64, Ordering::SeqCst);
        let mut guard = WriteGuard::new(&self.counters);
        let result = self.inner.register_many(registrations).await;
        guard.ok = result.is_ok();
        result
    }

    async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        self.counters.heartbeat_calls.fetch_add(1, Ordering::SeqCst);
        let mut guard = WriteGuard::new(&self.counters);
        lock(&self.counters.heartbeats).push(HeartbeatCall {
            started: guard.started,
            keys: batch.iter().map(|part| part.keys.len()).sum(),
            parts: batch
                .iter()
                .map(|part| (part.instance, part.keys.len()))
                .collect(),
        });
        let result = self.inner.heartbeat(batch).await;
        if let Ok(report) = &result {
            guard.ok = true;
            lock(&self.counters.missing_reported)
                .extend(report.missing.iter().map(|(_, key)| key.clone()));
            lock(&self.counters.superseded_reported).extend(report.superseded.iter().cloned());
        }
        result
    }

    async fn remove(&self, key: &MemberKey, holder: Option<InstanceId>) -> Result<bool> {
        self.counters.remove_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.remove(key, holder).await
    }

    async fn set_metadata(
        &self,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        self.counters
            .set_metadata_calls
            .fetch_add(1, Ordering::SeqCst);
        self.inner.set_metadata(key, instance, metadata).await
    }

    async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool> {
        self.counters
            .set_forced_down_calls
            .fetch_add(1, Ordering::SeqCst);
        self.inner.set_forced_down(key, forced_down).await
    }

    async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>> {
        self.counters.get_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }

    async fn list(&self, group: &GroupId) -> Result<Vec<MemberRecord>> {
        self.counters.list_calls.fetch_add(1, Ordering::SeqCst);
        self.counters.read_delay().await;
        self.inner.list(group).await
    }

    async fn list_in(
        &self,
        group: &GroupId,
        state: State,
        service_down_time: Duration,
    ) -> Result<Vec<MemberRecord>> {
        self.counters.list_in_calls.fetch_add(1, Ordering::SeqCst);
        self.counters.read_delay().await;
        self.inner.list_in(group, state, service_down_time).await
    }

    async fn summary(&self, group: &GroupId, service_down_time: Duration) -> Result<Summary> {
        self.counters.summary_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.summary(group, service_down_time).await
    }

    async fn groups(&self) -> Result<Vec<GroupId>> {
        self.counters.groups_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.groups().await
    }

    async fn revision(&self, group: &GroupId) -> Result<Option<u64>> {
        self.counters.revision_calls.fetch_add(1, Ordering::SeqCst);
        self.counters.read_delay().await;
        self.inner.revision(group).await
    }

    async fn change_feed(
        &self,
        group: &GroupId,
    ) -> Result<Option<Box<dyn servicegroup_core::ChangeFeed>>> {
        self.inner.change_feed(group).await
    }
}
