//! The [`Driver`] trait: what a backend must store and report.
//!
//! A driver is storage, not policy. It keeps registrations, heartbeats and the
//! forced-down flag, and reports facts ([`MemberRecord`]). Timeouts around calls,
//! batching, re-registration, the up/down rule and watch all live in core, so
//! drivers cannot disagree about them.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::id::{GroupId, MemberKey};
use crate::record::{HeartbeatReport, MemberRecord};

/// What a driver can do and how precise it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The granularity of the driver's liveness judgement: how far from
    /// `service_down_time` a verdict may flip (memcached TTLs are whole seconds,
    /// so 1 s; databases a few milliseconds). Conformance uses it as the margin of
    /// its boundary cases.
    pub liveness_resolution: Duration,
    /// Whether handles in different OS processes see the same membership.
    pub shared_between_processes: bool,
    /// Whether the driver follows tokio's clock (so tests may pause and advance it).
    pub follows_tokio_clock: bool,
}

impl Capabilities {
    /// Capabilities with the given liveness resolution, shared between processes,
    /// not following tokio's clock. Adjust the fields as needed.
    pub fn new(liveness_resolution: Duration) -> Self {
        Self {
            liveness_resolution,
            shared_between_processes: true,
            follows_tokio_clock: false,
        }
    }
}

/// A servicegroup storage backend.
///
/// Implementations must be cheap to share (`Arc<dyn Driver>`) and safe to call
/// concurrently. Errors must use the right [`crate::ErrorKind`]: an unreachable
/// backend is `Unavailable` or `Timeout`, never an empty or "absent" answer.
/// Core wraps every call in a timeout, so a driver need not, but it should bound
/// its own connects and queries (its `timeout` option).
#[async_trait]
pub trait Driver: Send + Sync + fmt::Debug + 'static {
    /// The registered name (`db`, `mc`, `inproc`, ...).
    fn name(&self) -> &str;

    /// What this driver can do.
    fn capabilities(&self) -> Capabilities;

    /// Creates or refreshes the record of `key` and stores its first heartbeat,
    /// returning only once that heartbeat is stored. An existing record keeps its
    /// forced-down flag (an operator's decision survives a restart).
    async fn register(&self, key: &MemberKey) -> Result<()>;

    /// [`Self::register`] for several keys (sorted, unique, at most a few thousand):
    /// every record exists with a fresh heartbeat when this returns. The default
    /// calls `register` once per key; drivers override it with one round trip.
    async fn register_many(&self, keys: &[MemberKey]) -> Result<()> {
        for key in keys {
            self.register(key).await?;
        }
        Ok(())
    }

    /// Records one heartbeat for every key, in as few backend operations as the
    /// backend allows (one statement for a database). Keys are sorted and unique.
    /// Keys whose record does not exist are not created; they are returned in
    /// [`HeartbeatReport::missing`].
    async fn heartbeat(&self, keys: &[MemberKey]) -> Result<HeartbeatReport>;

    /// Deletes the record of `key`. Returns whether it existed.
    async fn remove(&self, key: &MemberKey) -> Result<bool>;

    /// Sets or clears the forced-down flag. Returns `false` if there is no such member.
    async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool>;

    /// One member's record, or `None` if there is no such member.
    async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>>;

    /// Every record of `group` (any order; empty for an unknown group), in one query
    /// where the backend allows.
    async fn list(&self, group: &GroupId) -> Result<Vec<MemberRecord>>;

    /// Every group with at least one member.
    async fn groups(&self) -> Result<Vec<GroupId>>;
}
