//! What drivers report: facts about a member, never verdicts.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::id::MemberKey;

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
}

/// What a batch heartbeat found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatReport {
    /// Members of the batch whose record no longer exists (removed by an operator,
    /// lost by the backend). Core registers them again.
    pub missing: Vec<MemberKey>,
}
