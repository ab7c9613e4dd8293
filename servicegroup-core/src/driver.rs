//! The [`Driver`] trait: what a backend must store and report.
//!
//! A driver is storage, not policy. It keeps registrations (holder, epoch,
//! metadata), heartbeats and the forced-down flag, and reports facts
//! ([`MemberRecord`]). Timeouts around calls, batching, re-registration, fencing
//! decisions, the up/down rule and watch all live in core, so drivers cannot
//! disagree about them.
//!
//! # The identity contract
//!
//! - A record names the [`InstanceId`] that holds it and an epoch. A registration
//!   that finds no record creates it with epoch 1; one by the holding instance keeps
//!   the epoch; one by another instance adds one to it ([`Holder::next_epoch`]).
//!   `holder_since` is set when the holder changes (or the record is created).
//! - A registration replaces the metadata and keeps the forced-down flag.
//! - [`Driver::heartbeat`] refreshes a record only while the heartbeating instance
//!   holds it; otherwise the record is left untouched and reported
//!   [`HeartbeatReport::superseded`]. A record that does not exist is reported
//!   missing, never created.
//! - [`Driver::remove`] with a holder deletes only a record that instance holds.
//!
//! None of this may cost an extra round trip on the heartbeat path: the batch stays
//! one statement (or one pipelined exchange) per tick; only the rare refused keys may
//! need a second look.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::feed::ChangeFeed;
use crate::id::{GroupId, MemberKey};
use crate::instance::{Holder, InstanceId};
use crate::liveness::{state_of, State};
use crate::metadata::Metadata;
use crate::record::{
    Beats, HeartbeatReport, HolderUpdate, MemberRecord, Registered, Registration, Summary,
};

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
/// its own connects and queries (its `timeout` option). See the module docs for
/// the identity contract every method follows.
#[async_trait]
pub trait Driver: Send + Sync + fmt::Debug + 'static {
    /// The registered name (`db`, `mc`, `inproc`, ...).
    fn name(&self) -> &str;

    /// What this driver can do.
    fn capabilities(&self) -> Capabilities;

    /// Applies one [`Registration`] atomically: checks its [`crate::Condition`], then
    /// takes the record for the instance (epoch per the identity contract), replaces
    /// its metadata, keeps its forced-down flag and stores a first heartbeat,
    /// returning only once that heartbeat is stored.
    async fn register(&self, registration: &Registration) -> Result<Registered>;

    /// [`Self::register`] for several registrations (sorted by key, unique keys, at
    /// most a few thousand), one outcome each, in order. The default calls `register`
    /// once per registration, one backend operation each; drivers override it with
    /// one round trip (core's `join_many` and the re-registration after a backend lost
    /// its data register thousands of members at once).
    async fn register_many(&self, registrations: &[Registration]) -> Result<Vec<Registered>> {
        let mut out = Vec::with_capacity(registrations.len());
        for registration in registrations {
            out.push(self.register(registration).await?);
        }
        Ok(out)
    }

    /// Records one heartbeat for every key of every part, in as few backend
    /// operations as the backend allows (one statement for a database), refreshing
    /// only records held by the part's instance. Keys within a part are sorted and
    /// unique; one key may appear in two parts (two handles of one process claiming a
    /// member: at most one of them holds it). Records that do not exist are not
    /// created: they are [`HeartbeatReport::missing`]; records held by another
    /// instance are left untouched: they are [`HeartbeatReport::superseded`].
    async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport>;

    /// Deletes the record of `key`: any record when `holder` is `None` (an
    /// operator's delete), only one held by that instance otherwise (a member
    /// leaving). Returns whether a record was deleted.
    async fn remove(&self, key: &MemberKey, holder: Option<InstanceId>) -> Result<bool>;

    /// Replaces the metadata of a record `instance` holds, leaving everything else
    /// (heartbeat, epoch, forced-down flag) as it is.
    async fn set_metadata(
        &self,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate>;

    /// Sets or clears the forced-down flag. Returns `false` if there is no such member.
    async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool>;

    /// One member's record, or `None` if there is no such member.
    async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>>;

    /// Every record of `group` (any order; empty for an unknown group), in one query
    /// where the backend allows.
    async fn list(&self, group: &GroupId) -> Result<Vec<MemberRecord>>;

    /// The records of `group` whose member is in `state` under the liveness rule
    /// ([`crate::liveness::state_of`]) with `service_down_time`: `State::Down` is every
    /// member forced down or whose heartbeat is older than `service_down_time` (or
    /// expired), `State::Up` the others. A backend that can judge on its own clock in
    /// the query (a database: `now() - last_seen > $1`) overrides this and ships only
    /// the matching rows; the default lists the group and filters. Core checks every
    /// returned record against the rule again, so a record whose state changed while
    /// the answer travelled is dropped, never misreported.
    async fn list_in(
        &self,
        group: &GroupId,
        state: State,
        service_down_time: Duration,
    ) -> Result<Vec<MemberRecord>> {
        let mut records = self.list(group).await?;
        records.retain(|r| state_of(r, service_down_time) == state);
        Ok(records)
    }

    /// How many members of `group` are up, down and forced down under the liveness
    /// rule with `service_down_time` ([`Summary::add`] is the rule). The default lists
    /// the group and counts; a database overrides it with one counting query.
    async fn summary(&self, group: &GroupId, service_down_time: Duration) -> Result<Summary> {
        let mut summary = Summary::default();
        for record in self.list(group).await? {
            summary.add(&record, service_down_time);
        }
        Ok(summary)
    }

    /// Every group with at least one member.
    async fn groups(&self) -> Result<Vec<GroupId>>;

    /// The revision of `group`'s membership: a number that changes whenever one of its
    /// records changes other than by a heartbeat (a registration or takeover, a leave
    /// or operator remove, metadata, the forced-down flag), and changes only once the
    /// change is visible to [`Driver::list`]. A heartbeat (including one that brings a
    /// stale member back up) leaves it as it is. With it, [`crate::Watch`] lists the
    /// whole group only when the revision moved and otherwise asks only for the down
    /// set ([`Driver::list_in`]), so a watch of a million members does not ship a
    /// million rows every poll. The default, `None`, keeps the watch listing every
    /// poll; wrappers forward it to the driver they wrap.
    async fn revision(&self, group: &GroupId) -> Result<Option<u64>> {
        let _ = group;
        Ok(None)
    }

    /// Change notifications for `group`, if the backend can push them (etcd's watch):
    /// [`crate::Watch`] then lists the group when notified instead of every
    /// `watch_interval`. The feed must see every change before this returns, so the
    /// watch's first listing (taken after it) misses nothing. The default, `None`,
    /// keeps the watch polling; wrappers forward it to the driver they wrap.
    async fn change_feed(&self, group: &GroupId) -> Result<Option<Box<dyn ChangeFeed>>> {
        let _ = group;
        Ok(None)
    }
}

/// The holder a record held by `found` gets when `instance` registers it, with the
/// epoch rule of the identity contract (`None`: a new record, epoch 1).
pub fn registered_holder(found: Option<Holder>, instance: InstanceId) -> Holder {
    match found {
        None => Holder::new(instance, 1),
        Some(holder) => Holder::new(instance, holder.next_epoch(instance)),
    }
}

/// Whether a [`crate::Condition`] holds for the record found (`None`: no record).
/// The one place of this rule for drivers that check it in Rust.
pub fn condition_holds(condition: crate::Condition, found: Option<Holder>) -> bool {
    match condition {
        crate::Condition::Always => true,
        crate::Condition::Absent => found.is_none(),
        crate::Condition::HeldAs(expected) => found == Some(expected),
    }
}
