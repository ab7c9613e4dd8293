//! # servicegroup-driver-mc
//!
//! The `mc` driver: servicegroup membership in memcached, on one or several
//! servers. Select it with `driver = "mc"` (Nova: `servicegroup_driver = mc`) and
//! list the servers in `[mc] servers` (Nova: `memcached_servers`).
//!
//! What it fixes in Nova's memcached driver:
//!
//! - **Liveness on memcached's clock.** A member is fresh while memcached reports
//!   its live record younger than `ceil(service_down_time) + 1` seconds (the key
//!   is written with a 30-day TTL by every heartbeat and judged by its remaining
//!   TTL, memcached's own whole-second clock). So a member is never judged down
//!   before `service_down_time` and always by `ceil(service_down_time) + 1` s (see
//!   [`backend::heartbeat_ttl`]). No two hosts' wall clocks are compared; the
//!   stored heartbeat and holder times are this host's clock and informational
//!   (`get_updated_time`, `holder_since`).
//! - **One read per member.** A member's holder, epoch, metadata, forced-down
//!   flag and heartbeat time are one value, the *live record*, so a listing or
//!   `get` reads one key per member ([`stored`]). A *durable record* without TTL
//!   keeps a copy, read only where the live record is gone (a crashed member after
//!   30 days, an eviction).
//! - **Unreachable is not down.** A server that refuses, resets or does not answer
//!   within `[mc] timeout` gives `Unavailable` or `Timeout`, never "absent".
//! - **Who holds a member.** The live record names the holding instance, the
//!   epoch, since when, and the metadata, and every write of it is conditional on
//!   its CAS token. Heartbeats are fenced without an extra round trip: the driver
//!   remembers the CAS and value of its own last write of each record it holds,
//!   and writes the record again on condition that the CAS is unchanged, one
//!   operation per member in the batch's pipelined exchange; it looks again only
//!   at the records that changed (superseded, missing, new metadata, or written by
//!   another process of the same instance). Each work item reads the server's
//!   boot token before it sends remembered tokens and checks it in every exchange,
//!   so remembered tokens are not sent to a restarted memcached ([`backend`]).
//! - **It heals itself.** Listings come from index keys without TTL. Every
//!   heartbeat batch checks, in the same pipelined round trip, that each member's
//!   record, index bucket entry and group-list entry are still there; a member
//!   memcached lost entirely (restart, eviction, `flush_all`) is reported missing
//!   and core registers it again, a live record lost alone is written again from
//!   the durable one, and lost index entries or durable records of a held member
//!   are written back by the driver, so every live member is listed up again
//!   within one `report_interval`.
//! - **Safe keys.** Ids are encoded injectively into printable ASCII and long ones
//!   hashed ([`keys`]), so no id can inject a command, collide or exceed 250 bytes.
//! - **Several servers, stable placement.** Members are placed by rendezvous
//!   hashing with a hash fixed by this crate ([`placement`]): the same in every
//!   process and release, moving only ~1/N of the members when a server is added.
//!   Each server has its own connection pool, built lazily, so a server that is
//!   down at start (or later) fails only the members placed on it.
//!
//! Why core registers lost records again instead of the driver restoring them in
//! the heartbeat call: core does it under the lock that `leave` takes, so a member
//! that is leaving while a heartbeat is in flight is never brought back; core
//! registers with `Condition::Absent`, so it never takes a member another process
//! registered meanwhile; and core logs each re-registration, which tells an
//! operator that memcached lost data.
//!
//! With no servers (an empty list or `<None>`), the driver keeps membership in
//! this process, as Nova's driver did, and says so with a WARN: membership is
//! then not shared between processes.
//!
//! Client: the `memcache` crate's meta-protocol client (`memcache::exp::MetaClient`,
//! one per server, module `server`): every exchange is one pipelined batch on one
//! connection, encoded, stamped with opaque tokens and checked by the crate, with
//! connect and exchange timeouts. Work that sends remembered CAS tokens first reads
//! the server's boot token and opens each exchange with it (module `server`), so
//! tokens of one life of a server are never applied in another; see
//! `docs/mc-driver.md`.
//! memcached 1.6 or newer is required (meta protocol).
//!
//! Register the driver by naming the crate once in your binary
//! (`use servicegroup_driver_mc as _;`) or through the `servicegroup` facade's
//! `mc` feature.
#![deny(missing_docs)]

pub mod backend;
mod cache;
mod config;
mod index;
pub mod keys;
mod ops;
pub mod placement;
mod server;
pub mod stored;

use std::sync::Arc;
use std::time::Duration;

use servicegroup_core::{
    async_trait, Beats, Capabilities, Config, Driver, Error, GroupId, HeartbeatReport,
    HolderUpdate, InstanceId, MemberKey, MemberRecord, Metadata, Registered, Registration, Result,
    State, Summary,
};
use servicegroup_driver_inproc::{InprocConfig, InprocDriver};

pub use backend::{heartbeat_exchanges, Backend};
pub use config::{McConfig, CONFIG};

/// The name this driver registers under, and the name of its table (`[mc]`).
pub const NAME: &str = "mc";

servicegroup_core::register_driver! {
    name: NAME,
    description: "memcached, one or several servers (TTL liveness, self-healing); in-process when no servers are set",
    config: CONFIG,
    build: |config: Config| Box::pin(async move {
        Ok(Arc::new(McDriver::connect(&config).await?) as Arc<dyn Driver>)
    }),
}

/// The `mc` driver: memcached servers, or the in-process store when none are set.
#[derive(Debug, Clone)]
pub enum McDriver {
    /// Membership in memcached.
    Memcached(Arc<Backend>),
    /// No servers configured: membership in this process (`[inproc] name`).
    InProcess(InprocDriver),
}

impl McDriver {
    /// Builds the driver from `config`: its `[mc]` table ([`McConfig`]: servers,
    /// timeout, prefix), `service_down_time` for the heartbeat TTL, and `[inproc] name`
    /// for the in-process store used when no servers are set. Servers are not dialed
    /// here: one that is down only fails the operations placed on it.
    pub async fn connect(config: &Config) -> Result<Self> {
        let options: McConfig = config
            .driver_config(NAME)
            .map_err(|e| e.with_driver(NAME))?;
        let servers = options.server_list();
        if servers.is_empty() {
            let store = config
                .driver_config::<InprocConfig>(servicegroup_driver_inproc::NAME)
                .map_err(|e| e.with_driver(NAME))?
                .name;
            tracing::warn!(
                driver = NAME,
                store = %store,
                "no memcached servers configured (`mc.servers` / memcached_servers is empty or <None>): \
                 the mc driver keeps membership in this process only; it is NOT shared with other processes"
            );
            return Ok(Self::InProcess(InprocDriver::new(&store)));
        }
        if options.timeout.is_zero() {
            return Err(
                Error::config("invalid value for `mc.timeout`: must be greater than zero")
                    .with_driver(NAME),
            );
        }
        let (timeout, prefix, sdt) = (options.timeout, options.prefix, config.service_down_time);
        // Resolving host names may block: not on a runtime worker.
        let backend =
            tokio::task::spawn_blocking(move || Backend::new(servers, timeout, &prefix, sdt))
                .await
                .map_err(|e| {
                    Error::backend(format!("building the mc driver failed: {e}")).with_driver(NAME)
                })?;
        tracing::info!(
            driver = NAME,
            servers = ?backend.addresses(),
            ttl_secs = backend.ttl(),
            "mc driver on {} memcached server(s)",
            backend.addresses().len()
        );
        Ok(Self::Memcached(Arc::new(backend)))
    }

    /// The memcached backend, unless the driver runs in-process.
    pub fn backend(&self) -> Option<&Arc<Backend>> {
        match self {
            Self::Memcached(backend) => Some(backend),
            Self::InProcess(_) => None,
        }
    }
}

#[async_trait]
impl Driver for McDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        match self {
            Self::Memcached(backend) => Capabilities::new(backend.resolution()),
            Self::InProcess(inproc) => Driver::capabilities(inproc),
        }
    }

    async fn register(&self, registration: &Registration) -> Result<Registered> {
        match self {
            Self::Memcached(b) => {
                let mut outcomes = b.register_many(std::slice::from_ref(registration)).await?;
                outcomes.pop().ok_or_else(|| {
                    Error::backend("memcached registration returned no outcome").with_driver(NAME)
                })
            }
            Self::InProcess(d) => Driver::register(d, registration).await,
        }
    }

    async fn register_many(&self, registrations: &[Registration]) -> Result<Vec<Registered>> {
        match self {
            Self::Memcached(b) => b.register_many(registrations).await,
            Self::InProcess(d) => Driver::register_many(d, registrations).await,
        }
    }

    async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        match self {
            Self::Memcached(b) => b.heartbeat(batch).await,
            Self::InProcess(d) => Driver::heartbeat(d, batch).await,
        }
    }

    async fn remove(&self, key: &MemberKey, holder: Option<InstanceId>) -> Result<bool> {
        match self {
            Self::Memcached(b) => b.remove(key, holder).await,
            Self::InProcess(d) => Driver::remove(d, key, holder).await,
        }
    }

    async fn set_metadata(
        &self,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        match self {
            Self::Memcached(b) => b.set_metadata(key, instance, metadata).await,
            Self::InProcess(d) => Driver::set_metadata(d, key, instance, metadata).await,
        }
    }

    async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool> {
        match self {
            Self::Memcached(b) => b.set_forced_down(key, forced_down).await,
            Self::InProcess(d) => Driver::set_forced_down(d, key, forced_down).await,
        }
    }

    async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>> {
        match self {
            Self::Memcached(b) => b.get(key).await,
            Self::InProcess(d) => Driver::get(d, key).await,
        }
    }

    async fn list(&self, group: &GroupId) -> Result<Vec<MemberRecord>> {
        match self {
            Self::Memcached(b) => b.list(group).await,
            Self::InProcess(d) => Driver::list(d, group).await,
        }
    }

    async fn list_in(
        &self,
        group: &GroupId,
        state: State,
        service_down_time: Duration,
    ) -> Result<Vec<MemberRecord>> {
        match self {
            // Freshness is memcached's verdict (present or absent), so the
            // caller's service_down_time does not move it (as with the default).
            Self::Memcached(b) => b.list_in(group, state).await,
            Self::InProcess(d) => Driver::list_in(d, group, state, service_down_time).await,
        }
    }

    async fn summary(&self, group: &GroupId, service_down_time: Duration) -> Result<Summary> {
        match self {
            Self::Memcached(b) => b.summary(group).await,
            Self::InProcess(d) => Driver::summary(d, group, service_down_time).await,
        }
    }

    async fn groups(&self) -> Result<Vec<GroupId>> {
        match self {
            Self::Memcached(b) => b.groups().await,
            Self::InProcess(d) => Driver::groups(d).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(servers: &[&str]) -> Config {
        let mut c = Config::with_driver(NAME);
        c.set("mc.servers", servers.to_vec()).unwrap();
        c
    }

    #[tokio::test]
    async fn no_servers_means_in_process() {
        let mut c = config(&["<None>"]);
        c.set("inproc.name", "mc-unit-fallback").unwrap();
        let d = McDriver::connect(&c).await.unwrap();
        assert!(d.backend().is_none());
        assert!(!d.capabilities().shared_between_processes);
        assert_eq!(d.name(), "mc");
    }

    #[tokio::test]
    async fn bad_prefix_is_a_config_error() {
        // Set while another driver is selected (set() would refuse it for mc).
        let mut c = Config::with_driver("inproc");
        c.set("mc.servers", ["127.0.0.1:1"]).unwrap();
        c.set("mc.prefix", "a b").unwrap();
        c.driver = NAME.into();
        let e = McDriver::connect(&c).await.unwrap_err();
        assert_eq!(e.kind(), servicegroup_core::ErrorKind::Config);
        assert!(e.to_string().contains("mc.prefix"), "{e}");
    }
}
