//! The heartbeat engine of one [`crate::ServiceGroup`] handle: the state its
//! clones and memberships share ([`Inner`]), core's timeout around every driver
//! call, the tick, re-registration of lost records, connection health, fencing
//! (members taken over by another instance), and the loop that runs the tick.
//!
//! - The first tick comes at a random point of the first `report_interval` (never
//!   later: members joined just before it already stored a heartbeat at join), then
//!   every `report_interval` minus up to 10 % jitter (never later, so jitter cannot
//!   push a member towards `service_down_time`). So handles and processes started
//!   together spread their writes over the interval instead of writing at once.
//! - A tick that finds the previous one still running is skipped, not piled up.
//! - Every driver call has core's `call_timeout`.
//! - A failure is logged once at WARN (`lost connection to <driver> backend`),
//!   the recovery once at INFO; the loop never ends while the handle lives.
//! - Members the driver reports missing are registered again (logged once per tick),
//!   unless another instance registered them meanwhile.
//! - Members the driver reports held by another instance are fenced: logged once at
//!   ERROR, dropped from the batch (no re-registration fight), and their
//!   memberships are told ([`Inner::superseded_by`], [`Inner::wait_superseded`]).
//!
//! This module imports nothing of the handle, the memberships or watch; they build
//! on it.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::coalesce::{CoalesceOptions, Coalescer};
use crate::config::Config;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::id::MemberKey;
use crate::instance::{Holder, InstanceId};
use crate::joined::Joined;
use crate::metadata::Metadata;
use crate::metrics;
use crate::record::{Beats, Condition, Registered, Registration, Superseded};

/// Most registrations sent in one driver call (`join_many`, re-registration).
pub const JOIN_CHUNK: usize = 1000;

/// Fraction of `report_interval` by which a tick may come early.
const JITTER: f64 = 0.1;

/// Locks a mutex whose data stays consistent even if a holder panicked (every
/// change under these locks completes without a panicking path).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by every clone of a [`crate::ServiceGroup`] and its memberships.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) config: Config,
    /// This handle's identity, stored in every record it registers.
    pub(crate) instance: InstanceId,
    /// Members joined through this handle, and the sorted keys heartbeated each
    /// tick (updated in place on join, leave and crash; see [`Joined`]).
    joined: Mutex<Joined>,
    /// The metadata of joined members that have any, so a re-registration stores it
    /// again (most members have none: nothing is kept for them).
    metadata: Mutex<HashMap<MemberKey, Metadata>>,
    /// Members of this handle taken over by another instance, until their
    /// membership is dropped or leaves.
    fenced: Mutex<HashMap<MemberKey, Holder>>,
    /// Bumped whenever `fenced` grows, to wake [`Inner::wait_superseded`].
    fenced_changed: tokio::sync::watch::Sender<u64>,
    /// Serializes a tick's re-registrations with `leave` and `set_metadata`, so a
    /// member that left is never registered again by a heartbeat that was in flight
    /// and a re-registration never stores metadata older than the latest.
    pub(crate) write_lock: tokio::sync::Mutex<()>,
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
    /// The shared state of a new handle.
    /// Its driver is the coalescer of `driver` ([`Coalescer::shared`]), so every
    /// handle on one driver instance shares one.
    pub(crate) fn new(driver: Arc<dyn Driver>, config: Config) -> Self {
        let driver: Arc<dyn Driver> =
            Coalescer::shared(&driver, CoalesceOptions::from_config(&config));
        Self {
            driver,
            config,
            instance: InstanceId::random(),
            joined: Mutex::new(Joined::default()),
            metadata: Mutex::new(HashMap::new()),
            fenced: Mutex::new(HashMap::new()),
            fenced_changed: tokio::sync::watch::Sender::new(0),
            write_lock: tokio::sync::Mutex::new(()),
            health: Health::new(),
            heartbeat_task: OnceLock::new(),
        }
    }

    pub(crate) fn joined(&self) -> MutexGuard<'_, Joined> {
        lock(&self.joined)
    }

    /// Whether the last heartbeat tick reached the backend.
    pub(crate) fn is_healthy(&self) -> bool {
        self.health.is_healthy()
    }

    /// Starts the heartbeat loop if it is not running yet.
    pub(crate) fn ensure_heartbeating(self: &Arc<Self>) {
        self.heartbeat_task.get_or_init(|| spawn(self));
    }

    /// Runs one driver call under core's timeout, tagging errors with the driver name.
    /// `what` is the driver operation, as named in [`crate::metrics`]'s labels.
    pub(crate) async fn call<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        crate::claim::timed(self.driver.name(), self.config.call_timeout, what, fut).await
    }

    /// A registration of `key` by this handle.
    pub(crate) fn registration(
        &self,
        key: MemberKey,
        metadata: Metadata,
        condition: Condition,
    ) -> Registration {
        Registration {
            key,
            instance: self.instance,
            metadata,
            condition,
        }
    }

    /// Applies `registrations` (sorted by key) in chunks of [`JOIN_CHUNK`], one
    /// driver call per chunk; one outcome per registration, in order.
    pub(crate) async fn register_all(
        &self,
        registrations: &[Registration],
    ) -> Result<Vec<Registered>> {
        let mut outcomes = Vec::with_capacity(registrations.len());
        for chunk in registrations.chunks(JOIN_CHUNK) {
            let got = if let [one] = chunk {
                vec![self.call("register", self.driver.register(one)).await?]
            } else {
                self.call("register_many", self.driver.register_many(chunk))
                    .await?
            };
            if got.len() != chunk.len() {
                return Err(Error::backend(format!(
                    "register_many returned {} outcomes for {} registrations",
                    got.len(),
                    chunk.len()
                ))
                .with_driver(self.driver.name().to_owned()));
            }
            outcomes.extend(got);
        }
        Ok(outcomes)
    }

    /// The metadata this handle keeps for `key` (empty when it has none).
    pub(crate) fn metadata_of(&self, key: &MemberKey) -> Metadata {
        lock(&self.metadata).get(key).cloned().unwrap_or_default()
    }

    /// Remembers `key`'s metadata for re-registrations (forgets it when empty).
    pub(crate) fn keep_metadata(&self, key: &MemberKey, metadata: Metadata) {
        let mut kept = lock(&self.metadata);
        if metadata.is_empty() {
            kept.remove(key);
        } else {
            kept.insert(key.clone(), metadata);
        }
    }

    /// Forgets everything kept about a member that left or was dropped.
    pub(crate) fn forget(&self, key: &MemberKey) {
        lock(&self.metadata).remove(key);
        lock(&self.fenced).remove(key);
    }

    /// Who took `key` over from this handle, if anyone did.
    pub(crate) fn superseded_by(&self, key: &MemberKey) -> Option<Holder> {
        lock(&self.fenced).get(key).copied()
    }

    /// Waits until `key` is taken over from this handle; returns the new holder.
    pub(crate) async fn wait_superseded(&self, key: &MemberKey) -> Holder {
        let mut changes = self.fenced_changed.subscribe();
        loop {
            if let Some(holder) = self.superseded_by(key) {
                return holder;
            }
            // The sender lives as long as `self`, so this only fails if it is gone.
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops heartbeating `key` because `holder` took it over: logs one ERROR (if
    /// the member was still heartbeated here) and tells its membership. A membership
    /// asking for itself (`set_metadata`) fences whatever incarnation is joined.
    pub(crate) fn fence(&self, key: &MemberKey, holder: Holder) {
        if self.joined().remove(key) {
            self.fenced(key, holder);
        }
    }

    /// [`Self::fence`] for a tick's report, which speaks of the batch the tick sent:
    /// a member that left and joined again meanwhile (and may hold the record again,
    /// at a higher epoch) is a later incarnation and is left alone.
    fn fence_batched(&self, key: &MemberKey, holder: Holder) {
        if self.joined().remove_batched(key) {
            self.fenced(key, holder);
        }
    }

    fn fenced(&self, key: &MemberKey, holder: Holder) {
        lock(&self.fenced).insert(key.clone(), holder);
        lock(&self.metadata).remove(key);
        tracing::error!(
            driver = self.driver.name(),
            group = %key.group,
            member = %key.member,
            instance = %self.instance,
            holder = %holder.instance,
            epoch = holder.epoch,
            "{key} was taken over by instance {} (epoch {}); two processes claim one member",
            holder.instance,
            holder.epoch,
        );
        metrics::count(metrics::SUPERSEDED_TOTAL, self.driver.name(), 1);
        self.fenced_changed.send_modify(|n| *n += 1);
    }

    /// One heartbeat tick: every joined member in one driver call.
    pub(crate) async fn tick(&self) {
        // Held until the tick ends: the report speaks of this batch (see
        // `Joined::remove_batched`), and nothing is folded into it meanwhile.
        let keys = self.joined().batch();
        if keys.is_empty() {
            return;
        }
        let driver = self.driver.name();
        let batch = [Beats {
            instance: self.instance,
            keys: &keys,
        }];
        let started = Instant::now();
        let result = self.call("heartbeat", self.driver.heartbeat(&batch)).await;
        metrics::heartbeat_batch(driver, keys.len(), started.elapsed());
        let report = match result {
            Ok(report) => {
                self.health.succeeded(driver);
                report
            }
            Err(error) => {
                self.health.failed(driver, &error);
                return;
            }
        };
        for Superseded { key, holder, .. } in &report.superseded {
            self.fence_batched(key, *holder);
        }
        if report.missing.is_empty() {
            return;
        }
        self.register_missing(report.missing.into_iter().map(|(_, key)| key))
            .await;
    }

    /// Registers again members whose record was gone, unless they left meanwhile or
    /// another instance registered them since (then they are fenced).
    async fn register_missing(&self, missing: impl Iterator<Item = MemberKey>) {
        let driver = self.driver.name();
        let _guard = self.write_lock.lock().await;
        // Members that left meanwhile are not brought back.
        let mut missing: Vec<MemberKey> =
            missing.filter(|key| self.joined().is_joined(key)).collect();
        missing.sort();
        let registrations: Vec<Registration> = missing
            .iter()
            .map(|key| self.registration(key.clone(), self.metadata_of(key), Condition::Absent))
            .collect();
        // After a backend lost everything (memcached restarted empty) every member
        // of the handle is missing at once: one WARN for the tick, not one per member.
        let outcomes = match self.register_all(&registrations).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                self.health.failed(driver, &error);
                return;
            }
        };
        let mut stored = 0;
        for (key, outcome) in missing.iter().zip(outcomes) {
            match outcome {
                Registered::Stored { .. } => {
                    stored += 1;
                    tracing::debug!(driver, group = %key.group, member = %key.member, "registered again");
                }
                Registered::Refused {
                    found: Some(holder),
                } if holder.instance != self.instance => {
                    self.fence_batched(key, holder);
                }
                // Recreated by this instance meanwhile, or gone again: the next tick sees.
                Registered::Refused { .. } => {}
            }
        }
        metrics::count(metrics::REREGISTRATIONS_TOTAL, driver, stored);
        if let Some(first) = missing.first() {
            tracing::warn!(
                driver,
                count = missing.len(),
                first = %first,
                "{} member record(s) were gone from the {driver} backend (first: {first}); registered them again",
                missing.len()
            );
        }
    }
}

/// Connection health as seen by the loop, for logging transitions once.
#[derive(Debug)]
struct Health {
    healthy: AtomicBool,
}

impl Health {
    fn new() -> Self {
        Self {
            healthy: AtomicBool::new(true),
        }
    }

    /// Records a failed heartbeat; logs WARN only on the healthy → lost transition.
    fn failed(&self, driver: &str, error: &Error) {
        if self.healthy.swap(false, Ordering::SeqCst) {
            metrics::count(metrics::BACKEND_LOST_TOTAL, driver, 1);
            tracing::warn!(
                driver,
                error = %error,
                kind = %error.kind(),
                "lost connection to {driver} backend: {error}"
            );
        }
    }

    /// Records a successful heartbeat; logs INFO only on the lost → healthy transition.
    fn succeeded(&self, driver: &str) {
        if !self.healthy.swap(true, Ordering::SeqCst) {
            metrics::count(metrics::BACKEND_RECOVERED_TOTAL, driver, 1);
            tracing::info!(driver, "recovered connection to {driver} backend");
        }
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
}

/// A random fraction in `[0, 1)`, good enough for jitter (no crate needed).
fn random_fraction() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait before the next tick: `interval * (1 - JITTER * r)`.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(1.0 - JITTER * random_fraction())
}

/// The wait before the first tick: uniform in `(0, interval]`.
fn first_phase(interval: Duration) -> Duration {
    interval.mul_f64(1.0 - random_fraction())
}

/// Spawns the loop for `inner`; it ends when the handle (every clone and membership) is gone.
fn spawn(inner: &Arc<Inner>) -> tokio::task::JoinHandle<()> {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let interval = inner.config.report_interval;
    tokio::spawn(async move {
        let mut next = Instant::now() + first_phase(interval);
        loop {
            tokio::time::sleep_until(next).await;
            let Some(inner) = weak.upgrade() else { break };
            inner.tick().await;
            drop(inner);
            next += jittered(interval);
            let now = Instant::now();
            if next <= now {
                // The tick overran: skip the missed ticks instead of bursting.
                next = now + jittered(interval);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_tick_is_spread_over_the_interval_and_never_late() {
        let i = Duration::from_secs(10);
        let phases: Vec<Duration> = (0..1000).map(|_| first_phase(i)).collect();
        assert!(phases.iter().all(|p| *p > Duration::ZERO && *p <= i));
        // Spread, not clustered: both halves of the interval are used.
        let early = phases.iter().filter(|p| **p < i / 2).count();
        assert!(
            (300..=700).contains(&early),
            "{early} of 1000 in the first half"
        );
    }

    #[test]
    fn jitter_is_never_late() {
        let i = Duration::from_secs(10);
        for _ in 0..1000 {
            let j = jittered(i);
            assert!(j <= i && j >= i.mul_f64(1.0 - JITTER), "{j:?}");
        }
    }
}
