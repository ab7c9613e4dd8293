//! [`Watch`]: membership events of one group, built on the group listing.
//!
//! A watch polls [`ServiceGroup::members`] every interval and diffs it against the
//! previous listing, so it works on every driver. Each transition is reported
//! exactly once: a member that appears is [`EventKind::Joined`] (followed by
//! [`EventKind::Down`] if it appears down), one that disappears is
//! [`EventKind::Left`], and state changes are [`EventKind::Down`] / [`EventKind::Up`].

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::error::Result;
use crate::group::ServiceGroup;
use crate::id::{GroupId, MemberId};
use crate::liveness::State;

/// What happened to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The member appeared in the group.
    Joined,
    /// The member disappeared (left, or removed by an operator).
    Left,
    /// The member went from up to down (heartbeats stopped, or forced down).
    Down,
    /// The member came back up.
    Up,
}

impl EventKind {
    /// `"joined"`, `"left"`, `"down"` or `"up"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Joined => "joined",
            EventKind::Left => "left",
            EventKind::Down => "down",
            EventKind::Up => "up",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One membership event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The group watched.
    pub group: GroupId,
    /// The member concerned.
    pub member: MemberId,
    /// When the watch noticed it (this host's clock).
    pub at: DateTime<Utc>,
}

/// A stream of [`Event`]s for one group; call [`Watch::next`] in a loop.
///
/// Transitions are relative to the listing taken when the watch was created.
/// If a poll fails (backend unreachable) `next` returns the error and the watch
/// stays usable: the next call polls again and reports what changed meanwhile.
#[derive(Debug)]
pub struct Watch {
    group: ServiceGroup,
    group_id: GroupId,
    interval: Duration,
    known: BTreeMap<MemberId, State>,
    pending: VecDeque<Event>,
    next_poll: Instant,
}

impl Watch {
    pub(crate) async fn start(
        group: ServiceGroup,
        group_id: GroupId,
        interval: Duration,
    ) -> Result<Self> {
        let known = group
            .members(group_id.clone())
            .await?
            .into_iter()
            .map(|m| (m.member, m.state))
            .collect();
        Ok(Self {
            group,
            group_id,
            interval,
            known,
            pending: VecDeque::new(),
            next_poll: Instant::now() + interval,
        })
    }

    /// The group watched.
    pub fn group(&self) -> &GroupId {
        &self.group_id
    }

    /// Waits for the next event. Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            tokio::time::sleep_until(self.next_poll).await;
            self.next_poll = Instant::now() + self.interval;
            self.poll().await?;
        }
    }

    /// Polls once and queues the differences against the last listing.
    async fn poll(&mut self) -> Result<()> {
        let current: BTreeMap<MemberId, State> = self
            .group
            .members(self.group_id.clone())
            .await?
            .into_iter()
            .map(|m| (m.member, m.state))
            .collect();
        let at = Utc::now();
        let mut push = |kind, member: &MemberId| {
            self.pending.push_back(Event {
                kind,
                group: self.group_id.clone(),
                member: member.clone(),
                at,
            })
        };
        for (member, state) in &current {
            match (self.known.get(member), state) {
                (None, State::Up) => push(EventKind::Joined, member),
                (None, State::Down) => {
                    push(EventKind::Joined, member);
                    push(EventKind::Down, member);
                }
                (Some(State::Up), State::Down) => push(EventKind::Down, member),
                (Some(State::Down), State::Up) => push(EventKind::Up, member),
                _ => {}
            }
        }
        for member in self.known.keys() {
            if !current.contains_key(member) {
                push(EventKind::Left, member);
            }
        }
        self.known = current;
        Ok(())
    }
}
