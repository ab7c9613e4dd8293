//! # servicegroup-driver-etcd
//!
//! The `etcd` driver: servicegroup membership on an etcd cluster (3.4 or newer), so
//! membership survives the loss of a store node without a failover step. Select it
//! with `driver = "etcd"` and list the cluster in `[etcd] endpoints`.
//!
//! - **Liveness from etcd's own expiry, on shared leases.** Each handle (instance)
//!   has one lease of `ceil(service_down_time)` seconds; every member it holds has an
//!   alive key on that lease. A heartbeat of any number of members is one keep-alive
//!   of the lease plus one put of the lease's beat key (the last heartbeat time that
//!   listings report), never a write per member. A member is fresh while its alive
//!   key exists ([`servicegroup_core::Freshness::Present`]); etcd deletes it when the
//!   lease expires. So a member is never down before `service_down_time` after its
//!   last heartbeat, and down within [`Backend::resolution`] after it.
//! - **Records outlive their lease.** The record (holder, epoch, metadata, forced
//!   down) is a key without lease, so a crashed member is listed down, not dropped.
//!   A member whose handle lives on but stopped heartbeating it (a dropped
//!   membership) has its alive key moved to a lease that expires `service_down_time`
//!   after its last heartbeat.
//! - **Identity with transactions.** Registrations compare each record's
//!   `mod_revision` with the one they read, so concurrent joins and takeovers of one
//!   member are atomic: one wins, the other reads again and decides again.
//!   Heartbeats learn of takeovers and removals from one watch per driver on the
//!   records (the fence watch); only changed records are read.
//! - **Native watch.** [`servicegroup_core::Driver::change_feed`] watches the
//!   group's keys from the revision of the watch's first listing; a watch that falls
//!   behind compaction resynchronises from a fresh listing.
//! - **Listings** are paged (4,000 keys a page) at the revision of the first page,
//!   which is the only linearizable read: the later pages are serializable reads of
//!   that revision, and the records, alive keys and beat keys are read side by side.
//!   After a group's first listing the driver keeps a **mirror** of it from its own
//!   watch (`etcd.mirror`, `etcd.mirror_idle`), so later `list`, `list_in` and `summary` calls cost
//!   one small write and the watch's latency instead of reading every member.
//! - **A silent watch is checked.** A watch stream that says nothing for a quarter of
//!   the lease TTL is followed by one small read; a cluster that does not answer it
//!   is reported to core as unreachable, so a watch through a stall holds back what
//!   the first listings after it show (see [`servicegroup_core::Watch`]).
//! - **Unreachable is not down.** A request goes to one endpoint and fails over to
//!   the next on connect errors and "unavailable" answers; an answer that never
//!   comes is `Timeout` (`[etcd] timeout`), a cluster without quorum `Unavailable`.
//!
//! Client: etcd's JSON gateway (`/v3/...`) over hyper 1, not gRPC: the gRPC clients
//! for Rust need `protoc` at build time, and the gateway needs no build tool at all.
//! TLS (`https://` endpoints, `[etcd] ca_file`) is rustls with the ring provider;
//! authentication (`username` / `password`, the password secret) is etcd's token
//! authentication. See `docs/etcd-driver.md`.
//!
//! Register the driver by naming the crate once in your binary
//! (`use servicegroup_driver_etcd as _;`) or through the `servicegroup` facade's
//! `etcd` feature.
#![deny(missing_docs)]

mod backend;
mod client;
mod config;
mod feed;
mod fence;
mod holders;
mod keys;
mod kv;
mod mirror;
mod stored;
mod watches;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use servicegroup_core::{
    async_trait, Beats, Capabilities, ChangeFeed, Config, Driver, Error, GroupId, HeartbeatReport,
    HolderUpdate, InstanceId, MemberKey, MemberRecord, Metadata, Registered, Registration, Result,
    State, Summary,
};

use mirror::GroupState;

pub use backend::Backend;
pub use config::{EtcdConfig, Password, CONFIG};

/// The name this driver registers under, and the name of its table (`[etcd]`).
pub const NAME: &str = "etcd";

servicegroup_core::register_driver! {
    name: NAME,
    description: "etcd cluster (shared leases, transactions, native watch; JSON gateway, no protoc)",
    config: CONFIG,
    build: |config: Config| Box::pin(async move {
        Ok(Arc::new(EtcdDriver::connect(&config).await?) as Arc<dyn Driver>)
    }),
}

/// Locks a std mutex, recovering from poisoning (state stays consistent per call).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn counters() -> &'static Mutex<HashMap<String, Arc<AtomicU64>>> {
    static COUNTERS: OnceLock<Mutex<HashMap<String, Arc<AtomicU64>>>> = OnceLock::new();
    COUNTERS.get_or_init(Default::default)
}

/// How many requests the drivers of this process with key prefix `prefix` have sent
/// to store heartbeats (keep-alives and beat keys; not the rare reads of changed
/// records). For tests and benchmarks: a heartbeat of any number of members costs two.
pub fn heartbeat_requests(prefix: &str) -> u64 {
    lock(counters())
        .get(prefix)
        .map(|c| c.load(Ordering::Relaxed))
        .unwrap_or(0)
}

/// The `etcd` driver.
#[derive(Debug, Clone)]
pub struct EtcdDriver {
    backend: Arc<Backend>,
}

impl EtcdDriver {
    /// Builds the driver from `config`: its `[etcd]` table ([`EtcdConfig`]) and
    /// `service_down_time` for the lease TTL. Nothing is dialed here; the fence watch
    /// connects in the background (an unreachable cluster fails the calls, not this).
    pub async fn connect(config: &Config) -> Result<Self> {
        let options: EtcdConfig = config
            .driver_config(NAME)
            .map_err(|e| e.with_driver(NAME))?;
        options.check_together().map_err(|e| {
            Error::config(format!(
                "invalid value for `etcd.{}`: {}",
                e.key(),
                e.message()
            ))
            .with_driver(NAME)
        })?;
        let client = client::Client::new(&options)?;
        let endpoints = client.endpoints().to_vec();
        let counter = lock(counters())
            .entry(options.prefix.clone())
            .or_insert_with(|| Arc::new(AtomicU64::new(0)))
            .clone();
        let backend = Arc::new(Backend::new(
            client,
            keys::Keys::new(&options.prefix),
            config.service_down_time,
            counter,
            options.mirror.then_some(options.mirror_idle),
        ));
        let task = tokio::spawn(fence::run(
            Arc::downgrade(&backend),
            backend.fence_restart.clone(),
        ));
        backend.set_fence_task(task.abort_handle());
        tracing::info!(
            driver = NAME,
            endpoints = ?endpoints,
            prefix = %options.prefix,
            lease_ttl_secs = backend.ttl(),
            "etcd driver on {} endpoint(s)",
            endpoints.len()
        );
        Ok(Self { backend })
    }

    /// The backend (for tests and benchmarks).
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// How many group mirrors this driver keeps now (for tests and benchmarks).
    pub fn mirrors_running(&self) -> usize {
        self.backend.mirrors.running()
    }

    /// How many group mirrors this driver has started (each start reads its group
    /// whole; for tests and benchmarks).
    pub fn mirrors_started(&self) -> u64 {
        self.backend.mirrors.started()
    }
}

#[async_trait]
impl Driver for EtcdDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.backend.resolution())
    }

    async fn register(&self, registration: &Registration) -> Result<Registered> {
        let mut outcomes = self
            .backend
            .register_many(std::slice::from_ref(registration))
            .await?;
        outcomes.pop().ok_or_else(|| {
            Error::backend("etcd registration returned no outcome").with_driver(NAME)
        })
    }

    async fn register_many(&self, registrations: &[Registration]) -> Result<Vec<Registered>> {
        self.backend.register_many(registrations).await
    }

    async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        self.backend.heartbeat(batch).await
    }

    async fn remove(&self, key: &MemberKey, holder: Option<InstanceId>) -> Result<bool> {
        self.backend.remove(key, holder).await
    }

    async fn set_metadata(
        &self,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        self.backend.set_metadata(key, instance, metadata).await
    }

    async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool> {
        self.backend.set_forced_down(key, forced_down).await
    }

    async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>> {
        self.backend.get(key).await
    }

    async fn list(&self, group: &GroupId) -> Result<Vec<MemberRecord>> {
        mirror::read(&self.backend, group, GroupState::records).await
    }

    async fn list_in(
        &self,
        group: &GroupId,
        state: State,
        service_down_time: Duration,
    ) -> Result<Vec<MemberRecord>> {
        mirror::read(&self.backend, group, |g| {
            g.records_in(state, service_down_time)
        })
        .await
    }

    async fn summary(&self, group: &GroupId, service_down_time: Duration) -> Result<Summary> {
        mirror::read(&self.backend, group, |g| g.summary(service_down_time)).await
    }

    async fn groups(&self) -> Result<Vec<GroupId>> {
        self.backend.groups().await
    }

    async fn change_feed(&self, group: &GroupId) -> Result<Option<Box<dyn ChangeFeed>>> {
        Ok(Some(Box::new(feed::open(&self.backend, group).await?)))
    }
}
