//! [`Coalescer`]: one driver call for the heartbeats (and registrations) of every
//! handle built on one driver instance.
//!
//! Our batching lives in the handle: one heartbeat call per tick carries all of a
//! handle's members. A process that builds many handles on one driver (one per
//! service, or a relay serving thousands of clients) would still send one call per
//! handle per tick, and those calls would hold every pooled connection. A
//! `Coalescer` wraps the driver and is itself a [`Driver`]:
//!
//! - **Heartbeats** of concurrent callers are merged into one
//!   [`Driver::heartbeat`] call per window: the first caller opens a batch, callers
//!   arriving within [`CoalesceOptions::window`] join it, and it goes out when the
//!   window has passed, or at once when it holds [`CoalesceOptions::max_keys`] keys
//!   (a caller with that many keys or more is sent on its own, as it is).
//!   Parts are merged per instance, so callers with different [`InstanceId`]s share a
//!   call as separate parts. Each caller gets, once the call returned (its keys are
//!   stored), only the missing and superseded keys of its own parts, so fencing
//!   reaches the right handle.
//! - **Registrations** (`register`, `register_many`) are merged the same way into one
//!   [`Driver::register_many`] (at most [`CoalesceOptions::max_registrations`], each
//!   key once: a caller whose keys are already in the open batch opens the next one),
//!   each caller getting its own outcomes in its own order. By default they wait for
//!   no window (`register_window` is zero): a batch goes out as soon as a call slot is
//!   free, so a lone join is not delayed, and joins that arrive while calls are in
//!   flight share the next call (group commit).
//! - Heartbeats and registrations have **separate call slots**
//!   ([`CoalesceOptions::heartbeat_calls`], [`CoalesceOptions::register_calls`]): at
//!   most that many calls of each kind run at once, so joins never queue behind
//!   heartbeats for a connection, and heartbeats never hold a whole pool. A batch
//!   waiting for a slot keeps filling (up to its bound).
//! - Every other method (reads, `remove`, `set_metadata`, `set_forced_down`, ...)
//!   passes straight through.
//!
//! A failed call (an error, or no answer within [`CoalesceOptions::call_timeout`]) is
//! reported to every caller whose keys were in it, with the driver's error kind
//! (`Unavailable`, `Timeout`, ...), never as an empty answer. Each batch is sent by a
//! task of its own: a caller that is dropped or times out while waiting never takes
//! the others' call down; its keys are left out if the batch had not gone yet.
//!
//! # One coalescer per driver instance
//!
//! [`crate::ServiceGroup::with_driver`] (and so [`crate::ServiceGroup::connect`])
//! wraps its driver with [`Coalescer::shared`]: the coalescer of that driver
//! instance (`Arc` identity) in this process, made by the first handle built on it
//! with that handle's options (`coalesce_window`, `call_timeout`); later handles on
//! the same `Arc` share it, whatever their own options. A driver that is itself a
//! coalescer (built with [`Coalescer::new`] or [`Coalescer::shared`]) is used as it
//! is, never wrapped twice. Handles of separate `connect` calls have separate driver
//! instances (their own connections), so separate coalescers, as separate
//! processes would.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use servicegroup_core::coalesce::{CoalesceOptions, Coalescer};
//! # use servicegroup_core::Driver;
//! # fn wrap(driver: Arc<dyn Driver>) {
//! let mut options = CoalesceOptions::default();
//! options.window = Duration::from_millis(2);
//! let coalescer: Arc<Coalescer> = Coalescer::new(driver, options);
//! let as_driver: Arc<dyn Driver> = coalescer; // what a relay serves its clients with
//! # let _ = as_driver;
//! # }
//! ```

mod heartbeat;
mod queue;
mod register;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::driver::{Capabilities, Driver};
use crate::engine::{lock, JOIN_CHUNK};
use crate::error::{Error, Result};
use crate::id::{GroupId, MemberKey};
use crate::instance::InstanceId;
use crate::liveness::State;
use crate::metadata::Metadata;
use crate::record::{
    Beats, HeartbeatReport, HolderUpdate, MemberRecord, Registered, Registration, Summary,
};
use heartbeat::BeatEntry;
use queue::{Limits, Queue};
use register::RegisterEntry;

/// The default [`CoalesceOptions::window`] and `coalesce_window`: 5 ms.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(5);

/// How a [`Coalescer`] merges calls. Build it with [`CoalesceOptions::default`] or
/// [`CoalesceOptions::from_config`] and set fields as needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoalesceOptions {
    /// How long a heartbeat batch collects callers after its first one. Default 5 ms
    /// (`coalesce_window`).
    pub window: Duration,
    /// The keys at which a heartbeat batch goes out without waiting for the window.
    /// A caller with more keys than this is sent alone, never split. Default 10,000.
    pub max_keys: usize,
    /// How long a registration batch collects callers after its first one. Default
    /// zero: it goes out as soon as a call slot is free (group commit).
    pub register_window: Duration,
    /// The registrations at which a registration batch goes out at once (also the
    /// most merged into one `register_many`). Default [`JOIN_CHUNK`] (1,000).
    pub max_registrations: usize,
    /// Heartbeat calls that may run at once. Default 2.
    pub heartbeat_calls: usize,
    /// Registration calls that may run at once (apart from heartbeats). Default 4.
    pub register_calls: usize,
    /// Bound on each merged driver call; a call that does not finish in time is a
    /// `Timeout` for all its callers and frees its slot. Default 10 s (`call_timeout`).
    pub call_timeout: Duration,
}

impl Default for CoalesceOptions {
    fn default() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            max_keys: 10_000,
            register_window: Duration::ZERO,
            max_registrations: JOIN_CHUNK,
            heartbeat_calls: 2,
            register_calls: 4,
            call_timeout: Duration::from_secs(10),
        }
    }
}

impl CoalesceOptions {
    /// The defaults with `coalesce_window` and `call_timeout` from `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            window: config.coalesce_window,
            call_timeout: config.call_timeout,
            ..Self::default()
        }
    }
}

/// A [`Driver`] that merges the heartbeats and registrations of concurrent callers
/// into few calls of the driver it wraps; see the [module docs](self).
pub struct Coalescer {
    inner: Arc<dyn Driver>,
    options: CoalesceOptions,
    heartbeats: Arc<Queue<BeatEntry>>,
    registrations: Arc<Queue<RegisterEntry>>,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("inner", &self.inner)
            .field("options", &self.options)
            .field("heartbeats", &self.heartbeats)
            .field("registrations", &self.registrations)
            .finish()
    }
}

/// The coalescers of this process by the address of what they answer for (their
/// driver's and their own), so handles on one driver instance share one.
fn shared_map() -> &'static Mutex<HashMap<usize, Weak<Coalescer>>> {
    static MAP: OnceLock<Mutex<HashMap<usize, Weak<Coalescer>>>> = OnceLock::new();
    MAP.get_or_init(|| Mutex::new(HashMap::new()))
}

fn address<T: ?Sized>(arc: &Arc<T>) -> usize {
    Arc::as_ptr(arc).cast::<()>() as usize
}

impl Coalescer {
    /// A coalescer of its own in front of `driver` (a relay builds one for its
    /// backend). Handles built on the returned coalescer use it as it is.
    pub fn new(driver: Arc<dyn Driver>, options: CoalesceOptions) -> Arc<Self> {
        let coalescer = Arc::new(Self::build(driver, options));
        lock(shared_map()).insert(address(&coalescer), Arc::downgrade(&coalescer));
        coalescer
    }

    /// The coalescer of this driver instance in this process: the one made earlier
    /// for the same `Arc` (with the options it was made with), `driver` itself when it
    /// is a coalescer, or a new one with `options`.
    pub fn shared(driver: &Arc<dyn Driver>, options: CoalesceOptions) -> Arc<Self> {
        let mut map = lock(shared_map());
        let at = address(driver);
        if let Some(found) = map.get(&at).and_then(Weak::upgrade) {
            if address(&found) == at || Arc::ptr_eq(&found.inner, driver) {
                return found;
            }
        }
        let coalescer = Arc::new(Self::build(driver.clone(), options));
        map.insert(at, Arc::downgrade(&coalescer));
        map.insert(address(&coalescer), Arc::downgrade(&coalescer));
        coalescer
    }

    fn build(inner: Arc<dyn Driver>, options: CoalesceOptions) -> Self {
        let timeout = options.call_timeout;
        let driver = inner.clone();
        let heartbeats = Queue::new(
            Limits {
                window: options.window,
                max_size: options.max_keys,
                in_flight: options.heartbeat_calls,
            },
            Box::new(move |entries| Box::pin(heartbeat::send(driver.clone(), timeout, entries))),
        );
        let driver = inner.clone();
        let registrations = Queue::new(
            Limits {
                window: options.register_window,
                max_size: options.max_registrations,
                in_flight: options.register_calls,
            },
            Box::new(move |entries| Box::pin(register::send(driver.clone(), timeout, entries))),
        );
        Self {
            inner,
            options,
            heartbeats: Arc::new(heartbeats),
            registrations: Arc::new(registrations),
        }
    }

    /// The driver this coalescer calls.
    pub fn inner(&self) -> &Arc<dyn Driver> {
        &self.inner
    }

    /// The options it was built with.
    pub fn options(&self) -> &CoalesceOptions {
        &self.options
    }

    /// Waits for the answer of a queued entry.
    async fn answer<T>(&self, what: &str, answer: oneshot::Receiver<Result<T>>) -> Result<T> {
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(Error::backend(format!(
                "the coalesced {what} call ended without an answer (the driver panicked, or the runtime running the call shut down)"
            ))
            .with_driver(self.inner.name().to_owned())),
        }
    }
}

impl Drop for Coalescer {
    fn drop(&mut self) {
        let mut map = lock(shared_map());
        for at in [address(&self.inner), self as *const Self as usize] {
            if map.get(&at).is_some_and(|w| w.strong_count() == 0) {
                map.remove(&at);
            }
        }
    }
}

/// Runs one merged driver call under `timeout`.
async fn call<T>(
    driver: &str,
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result.map_err(|e| e.with_driver(driver.to_owned())),
        Err(_) => Err(Error::timeout(format!(
            "coalesced {what} did not finish within {timeout:?} (call_timeout)"
        ))
        .with_driver(driver.to_owned())),
    }
}

/// A copy of `error` for one of the callers of a failed call: same kind, driver and
/// message, the original's source as text.
fn shared_error(error: &Arc<Error>) -> Error {
    let mut copy = Error::new(error.kind(), error.message());
    if let Some(driver) = error.driver() {
        copy = copy.with_driver(driver.to_owned());
    }
    if let Some(source) = std::error::Error::source(&**error) {
        copy = copy.with_source(source.to_string());
    }
    copy
}

#[async_trait]
impl Driver for Coalescer {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn register(&self, registration: &Registration) -> Result<Registered> {
        let (entry, answer) = RegisterEntry::new(std::slice::from_ref(registration));
        self.registrations.push(entry);
        let mut outcomes = self.answer("register", answer).await?;
        outcomes.pop().ok_or_else(|| {
            Error::backend("the coalesced register call returned no outcome")
                .with_driver(self.inner.name().to_owned())
        })
    }

    async fn register_many(&self, registrations: &[Registration]) -> Result<Vec<Registered>> {
        if registrations.is_empty() {
            return Ok(Vec::new());
        }
        if registrations.len() >= self.registrations.max_size() {
            // A full batch on its own: sent as it is, from here, in its slot.
            let _slot = self.registrations.slot().await;
            let timeout = self.options.call_timeout;
            return call(
                self.name(),
                timeout,
                "register_many",
                self.inner.register_many(registrations),
            )
            .await;
        }
        let (entry, answer) = RegisterEntry::new(registrations);
        self.registrations.push(entry);
        self.answer("register_many", answer).await
    }

    async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        if batch.iter().all(|part| part.keys.is_empty()) {
            return Ok(HeartbeatReport::default());
        }
        let keys: usize = batch.iter().map(|part| part.keys.len()).sum();
        if keys >= self.heartbeats.max_size() {
            // A full batch on its own: sent as it is, from here, in its slot.
            let _slot = self.heartbeats.slot().await;
            let timeout = self.options.call_timeout;
            return call(
                self.name(),
                timeout,
                "heartbeat",
                self.inner.heartbeat(batch),
            )
            .await;
        }
        let (entry, answer) = BeatEntry::new(batch);
        self.heartbeats.push(entry);
        self.answer("heartbeat", answer).await
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
    ) -> Result<Option<Box<dyn crate::feed::ChangeFeed>>> {
        self.inner.change_feed(group).await
    }
}
