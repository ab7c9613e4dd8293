//! The one liveness rule. Every up/down verdict in servicegroup comes from [`is_up`].

use std::time::Duration;

use crate::record::{Freshness, MemberRecord};

/// Up or down: the verdict for one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Heartbeating within `service_down_time` and not forced down.
    Up,
    /// Heartbeat too old or expired, or forced down by an operator.
    Down,
}

impl State {
    /// `"up"` or `"down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The liveness rule: a member is up when it is not forced down and its last
/// heartbeat is no older than `service_down_time` (inclusive: an age exactly equal
/// to `service_down_time` is up), or, for TTL backends, is still present.
///
/// Forced down wins over any heartbeat.
pub fn is_up(forced_down: bool, freshness: Freshness, service_down_time: Duration) -> bool {
    !forced_down && is_fresh(freshness, service_down_time)
}

/// The heartbeat half of the rule: whether the last heartbeat is no older than
/// `service_down_time` (inclusive), or, for TTL backends, still present, whatever
/// the forced-down flag says. An exclusive join refuses a member held by another
/// instance while this holds: an operator's flag does not make its process dead.
pub fn is_fresh(freshness: Freshness, service_down_time: Duration) -> bool {
    match freshness {
        Freshness::Age(age) => age <= service_down_time,
        Freshness::Present => true,
        Freshness::Absent => false,
    }
}

/// [`is_up`] applied to a record, as a [`State`].
pub fn state_of(record: &MemberRecord, service_down_time: Duration) -> State {
    if is_up(record.forced_down, record.freshness, service_down_time) {
        State::Up
    } else {
        State::Down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDT: Duration = Duration::from_secs(60);

    #[test]
    fn boundary_is_inclusive() {
        assert!(is_up(false, Freshness::Age(Duration::ZERO), SDT));
        assert!(is_up(
            false,
            Freshness::Age(Duration::from_millis(59_999)),
            SDT
        ));
        assert!(is_up(false, Freshness::Age(SDT), SDT));
        assert!(!is_up(
            false,
            Freshness::Age(Duration::from_millis(60_001)),
            SDT
        ));
        assert!(!is_up(
            false,
            Freshness::Age(SDT + Duration::from_nanos(1)),
            SDT
        ));
    }

    #[test]
    fn forced_down_wins() {
        assert!(!is_up(true, Freshness::Age(Duration::ZERO), SDT));
        assert!(!is_up(true, Freshness::Present, SDT));
    }

    #[test]
    fn ttl_presence() {
        assert!(is_up(false, Freshness::Present, SDT));
        assert!(!is_up(false, Freshness::Absent, SDT));
    }
}
