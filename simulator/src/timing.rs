//! [`TimingDriver`]: wraps the configured driver, delegates every call, and records
//! heartbeat batch latencies, heartbeat counts and errors, so the simulator measures
//! exactly the driver calls the heartbeat loops make.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use servicegroup::{
    async_trait, Beats, Capabilities, Driver, ErrorKind, GroupId, HeartbeatReport, HolderUpdate,
    InstanceId, MemberKey, MemberRecord, Metadata, Registered, Registration, Result, State,
    Summary,
};

use crate::latency::Latency;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stable snake_case name per error kind, used as the report's `errors` keys
/// ([`ErrorKind::code`]).
pub fn kind_key(kind: ErrorKind) -> &'static str {
    kind.code()
}

/// Error counts by kind.
#[derive(Debug, Default)]
pub struct ErrorCounts(Mutex<BTreeMap<&'static str, u64>>);

impl ErrorCounts {
    /// Counts one error of `kind`.
    pub fn add(&self, kind: ErrorKind) {
        *lock(&self.0).entry(kind_key(kind)).or_default() += 1;
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.0)
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }
}

/// What the heartbeat loops did, as seen at the driver.
#[derive(Debug, Default)]
pub struct Stats {
    /// Members heartbeated successfully (batch size minus missing and superseded ones).
    pub heartbeats: AtomicU64,
    /// Successful heartbeat batches.
    pub batches: AtomicU64,
    /// Latency of successful batches.
    batch_latency: Mutex<Latency>,
    /// Errors of every kind seen anywhere in the simulation.
    pub errors: ErrorCounts,
    /// Set when the simulation shuts its handles down: calls cancelled after that are
    /// not counted as timeouts.
    closing: AtomicBool,
}

impl Stats {
    /// Starts a new measurement window for the batch latency.
    pub fn reset_latency(&self) {
        *lock(&self.batch_latency) = Latency::new();
    }

    /// The batch latency histogram so far.
    pub fn batch_latency(&self) -> Latency {
        lock(&self.batch_latency).clone()
    }

    /// Records one successful heartbeat call of `stored` members that took `elapsed`.
    pub fn record_heartbeat(&self, elapsed: std::time::Duration, stored: u64) {
        lock(&self.batch_latency).record(elapsed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.heartbeats.fetch_add(stored, Ordering::Relaxed);
    }

    /// Marks the shutdown: cancelled calls are no longer errors.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }
}

/// Counts a heartbeat call that was dropped before it finished (core's call_timeout).
struct InFlight<'a> {
    stats: &'a Stats,
    finished: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.finished && !self.stats.closing.load(Ordering::SeqCst) {
            self.stats.errors.add(ErrorKind::Timeout);
        }
    }
}

/// A driver that delegates to another and measures its heartbeat calls.
#[derive(Debug)]
pub struct TimingDriver {
    inner: Arc<dyn Driver>,
    stats: Arc<Stats>,
}

impl TimingDriver {
    /// Wraps `inner`, recording into `stats`.
    pub fn new(inner: Arc<dyn Driver>, stats: Arc<Stats>) -> Self {
        Self { inner, stats }
    }
}

#[async_trait]
impl Driver for TimingDriver {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn register(&self, registration: &Registration) -> Result<Registered> {
        self.inner.register(registration).await
    }

    async fn register_many(&self, registrations: &[Registration]) -> Result<Vec<Registered>> {
        self.inner.register_many(registrations).await
    }

    async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        let mut in_flight = InFlight {
            stats: &self.stats,
            finished: false,
        };
        let start = Instant::now();
        let result = self.inner.heartbeat(batch).await;
        let elapsed = start.elapsed();
        in_flight.finished = true;
        match &result {
            Ok(report) => {
                let sent: usize = batch.iter().map(|part| part.keys.len()).sum();
                let refused = report.missing.len() + report.superseded.len();
                self.stats
                    .record_heartbeat(elapsed, sent.saturating_sub(refused) as u64);
            }
            Err(error) => self.stats.errors.add(error.kind()),
        }
        result
    }

    async fn remove(&self, key: &MemberKey, holder: Option<InstanceId>) -> Result<bool> {
        self.inner.remove(key, holder).await
    }

    async fn set_metadata(
        &self,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        self.inner.set_metadata(key, instance, metadata).await
    }

    async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool> {
        self.inner.set_forced_down(key, forced_down).await
    }

    async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>> {
        self.inner.get(key).await
    }

    async fn list(&self, group: &GroupId) -> Result<Vec<MemberRecord>> {
        self.inner.list(group).await
    }

    // Delegated explicitly: the trait's defaults would list the whole group through
    // `list` above, hiding the inner driver's own down-set and counting queries.
    async fn list_in(
        &self,
        group: &GroupId,
        state: State,
        service_down_time: Duration,
    ) -> Result<Vec<MemberRecord>> {
        self.inner.list_in(group, state, service_down_time).await
    }

    async fn summary(&self, group: &GroupId, service_down_time: Duration) -> Result<Summary> {
        self.inner.summary(group, service_down_time).await
    }

    async fn groups(&self) -> Result<Vec<GroupId>> {
        self.inner.groups().await
    }

    async fn revision(&self, group: &GroupId) -> Result<Option<u64>> {
        self.inner.revision(group).await
    }

    async fn change_feed(
        &self,
        group: &GroupId,
    ) -> Result<Option<Box<dyn servicegroup::ChangeFeed>>> {
        self.inner.change_feed(group).await
    }
}
