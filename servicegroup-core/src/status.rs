//! [`MemberStatus`]: a member as the API reports it (facts plus the verdict), and
//! the listing every reader of the API goes through.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::engine::Inner;
use crate::error::Result;
use crate::id::{GroupId, MemberId, MemberKey};
use crate::instance::Holder;
use crate::liveness::{state_of, State};
use crate::metadata::Metadata;
use crate::record::{Freshness, MemberRecord, Summary};

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
    /// The instance holding the record and its epoch.
    pub holder: Holder,
    /// When the current holder registered.
    pub holder_since: Option<DateTime<Utc>>,
    /// What the member says about itself.
    pub metadata: Metadata,
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
            holder: record.holder,
            holder_since: record.holder_since,
            metadata: record.metadata,
        }
    }

    /// True when the member is up.
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }
}

/// One member with its state; `None` when there is no such member.
pub(crate) async fn member(inner: &Inner, key: &MemberKey) -> Result<Option<MemberStatus>> {
    let record = inner.call("get", inner.driver.get(key)).await?;
    Ok(record.map(|r| MemberStatus::from_record(r, inner.config.service_down_time)))
}

/// Every member of `group` with its state, sorted by member id.
pub(crate) async fn members(inner: &Inner, group: &GroupId) -> Result<Vec<MemberStatus>> {
    let records = inner.call("list", inner.driver.list(group)).await?;
    let sdt = inner.config.service_down_time;
    let mut members: Vec<MemberStatus> = records
        .into_iter()
        .map(|r| MemberStatus::from_record(r, sdt))
        .collect();
    // Ids are unique within a group, so an unstable sort gives the same order
    // without the stable sort's buffer (a listing can hold 1,000,000 members).
    members.sort_unstable_by(|a, b| a.member.cmp(&b.member));
    Ok(members)
}

/// The members of `group` in `state`, sorted by member id (see [`crate::Driver::list_in`]).
pub(crate) async fn members_in(
    inner: &Inner,
    group: &GroupId,
    state: State,
) -> Result<Vec<MemberStatus>> {
    let sdt = inner.config.service_down_time;
    let records = inner
        .call("list_in", inner.driver.list_in(group, state, sdt))
        .await?;
    let mut members: Vec<MemberStatus> = records
        .into_iter()
        .map(|r| MemberStatus::from_record(r, sdt))
        .filter(|m| m.state == state)
        .collect();
    members.sort_unstable_by(|a, b| a.member.cmp(&b.member));
    Ok(members)
}

/// How many members of a group are in each state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupSummary {
    /// The group.
    pub group: GroupId,
    /// Up: not forced down, heartbeat fresh.
    pub up: u64,
    /// Down: not forced down, heartbeat too old or expired.
    pub down: u64,
    /// Forced down by an operator.
    pub forced_down: u64,
}

impl GroupSummary {
    /// Every member of the group.
    pub fn total(&self) -> u64 {
        self.up + self.down + self.forced_down
    }
}

/// Counts of `group`'s members by state, from one driver call.
pub(crate) async fn summary(inner: &Inner, group: &GroupId) -> Result<GroupSummary> {
    let sdt = inner.config.service_down_time;
    let Summary {
        up,
        down,
        forced_down,
    } = inner
        .call("summary", inner.driver.summary(group, sdt))
        .await?;
    Ok(GroupSummary {
        group: group.clone(),
        up,
        down,
        forced_down,
    })
}
