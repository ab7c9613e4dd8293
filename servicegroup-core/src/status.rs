//! [`MemberStatus`]: a member as the API reports it (facts plus the verdict).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::id::{GroupId, MemberId};
use crate::liveness::{state_of, State};
use crate::record::{Freshness, MemberRecord};

/// One member of a group with its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// The group.
    pub group: GroupId,
    /// The member.
    pub member: MemberId,
    /// Up or down (forced down counts as down).
    pub state: State,
    /// The operator's forced-down flag.
    pub forced_down: bool,
    /// Time of the last stored heartbeat, if known.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Age of the last heartbeat: on the backend's clock when the driver measures it;
    /// for TTL backends estimated from `last_heartbeat` on this host's clock
    /// (informational only, never used for the verdict).
    pub age: Option<Duration>,
}

impl MemberStatus {
    /// Applies the liveness rule to a driver record.
    pub fn from_record(record: MemberRecord, service_down_time: Duration) -> Self {
        let state = state_of(&record, service_down_time);
        let age = match record.freshness {
            Freshness::Age(age) => Some(age),
            Freshness::Present | Freshness::Absent => record
                .last_heartbeat
                .and_then(|t| (Utc::now() - t).to_std().ok()),
        };
        Self {
            group: record.key.group,
            member: record.key.member,
            state,
            forced_down: record.forced_down,
            last_heartbeat: record.last_heartbeat,
            age,
        }
    }

    /// True when the member is up.
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }
}
