//! What drivers store and report: facts about a member, never verdicts.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::id::MemberKey;
use crate::instance::{Holder, InstanceId};
use crate::metadata::Metadata;

/// How fresh a member's last heartbeat is, as measured by the backend itself.
///
/// A driver reports exactly one of these; the liveness rule in
/// [`crate::liveness`] turns it into up or down. No variant involves comparing
/// two hosts' wall clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Age of the last heartbeat on the backend's own clock
    /// (database `now() - last_seen`, or the in-process monotonic clock).
    Age(Duration),
    /// The backend's own expiry (memcached TTL) still holds the heartbeat.
    Present,
    /// The backend's own expiry has dropped the heartbeat.
    Absent,
}

/// One member's stored state, as a driver returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// Group and member.
    pub key: MemberKey,
    /// Wall-clock time of the last stored heartbeat, as the backend recorded it
    /// (informational: liveness is judged on [`Self::freshness`]).
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Freshness of the last heartbeat on the backend's clock.
    pub freshness: Freshness,
    /// The operator's forced-down flag.
    pub forced_down: bool,
    /// The instance holding the record and the record's epoch
    /// ([`Holder::UNKNOWN`] for records written before records named their holder).
    pub holder: Holder,
    /// When the current holder registered (on the backend's clock where it has one).
    pub holder_since: Option<DateTime<Utc>>,
    /// What the member says about itself.
    pub metadata: Metadata,
}

/// What a registration requires of the record it finds. Drivers check it and write
/// atomically (one statement, a transaction or a compare-and-set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Whoever holds the record: this instance takes it (join's default takeover).
    Always,
    /// Only if there is no record.
    Absent,
    /// Only if the record is still held as the caller read it (same instance, same
    /// epoch): what an exclusive join of a down member, and re-registration of a
    /// member found missing, use to take it without racing another process.
    HeldAs(Holder),
}

/// One registration: take `key` for `instance`, store `metadata` and a first heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Group and member.
    pub key: MemberKey,
    /// The registering instance (the handle's [`crate::ServiceGroup::instance`]).
    pub instance: InstanceId,
    /// The metadata to store (replaces what the record held).
    pub metadata: Metadata,
    /// What the record must look like for the registration to apply.
    pub condition: Condition,
}

/// The outcome of one [`Registration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// Stored, with a fresh heartbeat; the record is held by the registering instance
    /// with this epoch.
    Stored {
        /// The record's epoch now.
        epoch: u64,
    },
    /// The [`Condition`] did not hold and nothing was changed; this is what was found
    /// (`None`: there was no record).
    Refused {
        /// The holder found, if there was a record.
        found: Option<Holder>,
    },
}

/// One instance's part of a heartbeat batch: the keys it heartbeats (sorted, unique).
#[derive(Debug, Clone, Copy)]
pub struct Beats<'a> {
    /// The heartbeating instance.
    pub instance: InstanceId,
    /// Its members, sorted and unique.
    pub keys: &'a [MemberKey],
}

/// A heartbeat that did not refresh its record because another instance holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    /// The member.
    pub key: MemberKey,
    /// The instance whose heartbeat was refused.
    pub instance: InstanceId,
    /// Who holds the record now.
    pub holder: Holder,
}

/// What a batch heartbeat found besides the records it refreshed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatReport {
    /// Members of the batch whose record no longer exists (removed by an operator,
    /// lost by the backend), with the instance that heartbeated them. Core registers
    /// them again.
    pub missing: Vec<(InstanceId, MemberKey)>,
    /// Members of the batch held by another instance: their records were left
    /// untouched (fencing). Core stops heartbeating them and tells their memberships.
    pub superseded: Vec<Superseded>,
}

/// The outcome of a holder-only update ([`crate::Driver::set_metadata`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderUpdate {
    /// Stored.
    Stored,
    /// Nothing changed: another instance holds the record.
    NotHeld(Holder),
    /// Nothing changed: there is no record.
    Missing,
}

/// How many members of a group are in each state, as a driver counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Summary {
    /// Not forced down, heartbeat fresh.
    pub up: u64,
    /// Not forced down, heartbeat too old or expired.
    pub down: u64,
    /// Forced down by an operator (whatever their heartbeat).
    pub forced_down: u64,
}

impl Summary {
    /// Every member counted.
    pub fn total(&self) -> u64 {
        self.up + self.down + self.forced_down
    }

    /// Counts one record under the liveness rule.
    pub fn add(&mut self, record: &MemberRecord, service_down_time: Duration) {
        self.count(record.forced_down, record.freshness, service_down_time);
    }

    /// Counts one member by its forced-down flag and freshness (for a driver that
    /// counts without building records).
    pub fn count(&mut self, forced_down: bool, freshness: Freshness, service_down_time: Duration) {
        if forced_down {
            self.forced_down += 1;
        } else if crate::liveness::is_fresh(freshness, service_down_time) {
            self.up += 1;
        } else {
            self.down += 1;
        }
    }
}
