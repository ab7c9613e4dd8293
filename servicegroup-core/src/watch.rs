//! [`Watch`]: membership events of one group, built on the group listing.
//!
//! A watch polls [`crate::ServiceGroup::members`] every interval and diffs it against the
//! previous listing, so it works on every driver. When the driver offers a
//! [`ChangeFeed`] ([`crate::Driver::change_feed`]) the watch lists only when the feed
//! says the group changed (at most once per interval), and the diff is the same. When
//! the driver keeps a membership revision ([`crate::Driver::revision`]: the database
//! driver), a poll whose revision did not move asks only for the down set
//! ([`crate::Driver::list_in`]): that shows every member that went down by ageing,
//! while every other change (a join, a leave, a takeover, metadata, the forced-down
//! flag) moves the revision and is listed. A member leaving the down set (back up,
//! or gone) is listed too, and the whole group every [`resync_polls`] polls.
//! Each transition is reported
//! exactly once: a member that appears is [`EventKind::Joined`] (followed by
//! [`EventKind::Down`] if it appears down), one that disappears is
//! [`EventKind::Left`], and state changes are [`EventKind::Down`] / [`EventKind::Up`].
//! A member taken over by another instance is [`EventKind::Replaced`]; one whose
//! metadata changed under the same holder is [`EventKind::Updated`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::engine::Inner;
use crate::error::Result;
use crate::feed::ChangeFeed;
use crate::id::{GroupId, MemberId};
use crate::instance::Holder;
use crate::liveness::State;
use crate::metadata::Metadata;
use crate::status::{self, MemberStatus};

/// What happened to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The member appeared in the group.
    Joined,
    /// The member disappeared (left, or removed by an operator).
    Left,
    /// The member went from up to down (heartbeats stopped, or forced down).
    Down,
    /// The member came back up.
    Up,
    /// The member's metadata changed (same holder).
    Updated,
    /// A different instance took the member over (its metadata is the new holder's).
    Replaced,
}

impl EventKind {
    /// `"joined"`, `"left"`, `"down"`, `"up"`, `"updated"` or `"replaced"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Joined => "joined",
            EventKind::Left => "left",
            EventKind::Down => "down",
            EventKind::Up => "up",
            EventKind::Updated => "updated",
            EventKind::Replaced => "replaced",
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
    /// Who holds the member as of the event (the last holder seen, for `Left`).
    pub holder: Holder,
    /// The member's metadata as of the event (as last seen, for `Left`).
    pub metadata: Metadata,
}

/// What a watch remembers of a member between polls.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    state: State,
    holder: Holder,
    metadata: Metadata,
}

impl From<MemberStatus> for Seen {
    fn from(m: MemberStatus) -> Self {
        Self {
            state: m.state,
            holder: m.holder,
            metadata: m.metadata,
        }
    }
}

/// Polls answered from the down set (a driver with a [`crate::Driver::revision`])
/// between two listings of the whole group at least (see [`resync_polls`]): a record
/// changed without moving the revision (by a writer of an older version during a
/// rolling upgrade, or a change whose revision update failed) is seen within this
/// many polls, or at the next change that moves the revision.
pub const RESYNC_POLLS: u32 = 60;

/// Rows the periodic whole listing of [`resync_polls`] may cost per poll, on average.
pub const RESYNC_ROWS_PER_POLL: usize = 1_000;

/// Polls answered from the down set between two listings of a group of `members`:
/// [`RESYNC_POLLS`], or more for a large group, so that the resynchronisation ships at
/// most [`RESYNC_ROWS_PER_POLL`] rows per poll on average (1,000,000 members: a listing
/// every 1,000 polls). Measured with `scripts/bench-observers` (1,000,000 members on
/// PostgreSQL, 2 watches at one poll a second, 2026-12-03): a listing every 60 polls
/// took the heartbeats' p99 from 75 to 95-99 ms and their max from 158 ms to 1.3 s.
pub fn resync_polls(members: usize) -> u32 {
    let spread = members.div_ceil(RESYNC_ROWS_PER_POLL);
    u32::try_from(spread).unwrap_or(u32::MAX).max(RESYNC_POLLS)
}

fn listing(members: Vec<MemberStatus>) -> BTreeMap<MemberId, Seen> {
    members
        .into_iter()
        .map(|m| (m.member.clone(), Seen::from(m)))
        .collect()
}

/// What one stage of a poll read from the backend.
enum Reads {
    /// The revision moved before the down set was read: the group must be listed.
    Moved,
    /// The down set, read while the revision stayed where `known` was listed.
    DownSet {
        /// The group's members that are down.
        down: Vec<MemberStatus>,
        /// The revision read after the down set.
        after: Option<u64>,
    },
    /// The whole group, and the revision read before it (if the driver keeps one).
    Listing {
        /// The revision read before the listing.
        revision: Option<u64>,
        /// Every member of the group.
        members: Vec<MemberStatus>,
    },
}

/// The reads of a poll stage, running.
type Fetch = Pin<Box<dyn Future<Output = Result<Reads>> + Send>>;

/// The reads of the poll in progress, kept in the watch so that a `next` cancelled
/// while they run (`timeout(d, watch.next())` in a loop, with a backend slower than
/// `d`) resumes them at the next call instead of starting over: a poll slower than
/// the caller's timeout still completes. (The `Mutex` only keeps [`Watch`] `Sync`:
/// it is reached through `&mut self`, never locked.)
#[derive(Default)]
struct InFlight(Mutex<Option<Fetch>>);

impl InFlight {
    fn slot(&mut self) -> &mut Option<Fetch> {
        self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let running = self.0.try_lock().map(|slot| slot.is_some()).unwrap_or(true);
        f.write_str(if running {
            "InFlight(running)"
        } else {
            "InFlight(idle)"
        })
    }
}

/// A stream of [`Event`]s for one group; call [`Watch::next`] in a loop.
///
/// Transitions are relative to the listing taken when the watch was created.
/// If a poll fails (backend unreachable) `next` returns the error and the watch
/// stays usable: the next call polls again and reports what changed meanwhile.
///
/// After the backend could not be reached, the first listings that succeed can show
/// live members down only because none of their heartbeats could land meanwhile
/// (the backend's clock went on), or missing because the store lost its records
/// (memcached restarted empty; the members' next heartbeats register them again).
/// So for `report_interval` plus one watch interval after the backend answers again,
/// an up → down transition and the disappearance of a member that was up are held
/// back and reported only if a later listing still shows them: a member that really
/// died or left during the outage is reported that much later, and one that was
/// alive all along is not reported at all (scenario 10 of the fault matrix,
/// `docs/reliability.md`).
#[derive(Debug)]
pub struct Watch {
    inner: Arc<Inner>,
    group_id: GroupId,
    interval: Duration,
    known: BTreeMap<MemberId, Seen>,
    pending: VecDeque<Event>,
    next_poll: Instant,
    /// The driver's change feed, if it has one.
    feed: Option<Box<dyn ChangeFeed>>,
    /// The feed said "changed" and no listing has followed yet (kept across a
    /// cancelled `next`, so the notification is not lost).
    notified: bool,
    /// The last poll (or feed wait) failed because the backend could not be reached.
    unreachable: bool,
    /// Until then, up → down transitions wait for a later listing to confirm them.
    settle_until: Option<Instant>,
    /// A transition is held back: list again once `settle_until` passed, even if the
    /// change feed has nothing new to say.
    held: bool,
    /// The group's revision as of `known` (`None`: the driver keeps none, or offers a
    /// change feed; every poll lists).
    revision: Option<u64>,
    /// The members of `known` that are down.
    known_down: BTreeSet<MemberId>,
    /// Polls answered from the down set since the last listing of the whole group.
    since_listing: u32,
    /// The reads of the poll in progress (kept across a cancelled `next`).
    in_flight: InFlight,
}

impl Watch {
    pub(crate) async fn start(
        inner: Arc<Inner>,
        group_id: GroupId,
        interval: Duration,
    ) -> Result<Self> {
        // Opened before the first listing, so no change falls between the two.
        let feed = inner
            .call("change_feed", inner.driver.change_feed(&group_id))
            .await?;
        // Read before the listing, so a change between the two moves it again.
        let revision = match feed {
            Some(_) => None,
            None => revision(&inner, &group_id).await?,
        };
        let known = listing(status::members(&inner, &group_id).await?);
        let known_down = down_in(&known);
        Ok(Self {
            inner,
            group_id,
            interval,
            known,
            pending: VecDeque::new(),
            next_poll: Instant::now() + interval,
            feed,
            notified: false,
            unreachable: false,
            settle_until: None,
            held: false,
            revision,
            known_down,
            since_listing: 0,
            in_flight: InFlight::default(),
        })
    }

    /// The group watched.
    pub fn group(&self) -> &GroupId {
        &self.group_id
    }

    /// Waits for the next event. Cancel-safe: dropping the future loses no event,
    /// and a poll it had started resumes at the next call where it was (so
    /// `timeout(d, watch.next())` in a loop makes progress even when a poll takes
    /// longer than `d`).
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            if self.in_flight.slot().is_some() {
                // A poll a cancelled call started: resume it where it was.
                self.finish_poll().await?;
                continue;
            }
            if let Some(feed) = self.feed.as_mut() {
                if !self.notified {
                    let recheck = self.settle_until.filter(|_| self.held);
                    let changed = match recheck {
                        // Both are cancel-safe (the feed's contract, a sleep).
                        Some(at) => tokio::select! {
                            changed = feed.changed() => Some(changed),
                            () = tokio::time::sleep_until(at) => None,
                        },
                        None => Some(feed.changed().await),
                    };
                    match changed {
                        Some(Err(e)) => {
                            self.unreachable |= e.kind().is_unreachable();
                            return Err(e);
                        }
                        Some(Ok(())) => self.notified = true,
                        // The held transitions are due: list again.
                        None => {}
                    }
                }
            }
            tokio::time::sleep_until(self.next_poll).await;
            self.next_poll = Instant::now() + self.interval;
            let fetch = self.first_reads();
            *self.in_flight.slot() = Some(fetch);
            self.finish_poll().await?;
        }
    }

    /// Runs the poll in flight to its end (the reads of each stage kept in
    /// `in_flight` while they run) and queues the differences it found.
    async fn finish_poll(&mut self) -> Result<()> {
        while let Some(fetch) = self.in_flight.slot().as_mut() {
            let reads = fetch.as_mut().await;
            *self.in_flight.slot() = None;
            let reads = match reads {
                Ok(reads) => reads,
                Err(e) => {
                    self.unreachable |= e.kind().is_unreachable();
                    return Err(e);
                }
            };
            match reads {
                Reads::Moved => *self.in_flight.slot() = Some(self.listing_reads()),
                Reads::DownSet { down, after } => {
                    if !self.apply_down_set(&down, after) {
                        *self.in_flight.slot() = Some(self.listing_reads());
                    }
                }
                Reads::Listing { revision, members } => self.apply_listing(revision, members),
            }
        }
        self.notified = false;
        Ok(())
    }

    /// The first reads of a poll: the down set when the revision allows
    /// ([`Self::apply_down_set`]), else the whole group.
    fn first_reads(&self) -> Fetch {
        let settling = self
            .settle_until
            .is_some_and(|until| Instant::now() < until);
        if self.revision.is_some()
            && !self.unreachable
            && !settling
            && !self.held
            && self.since_listing < resync_polls(self.known.len())
        {
            self.down_set_reads()
        } else {
            self.listing_reads()
        }
    }

    /// Reads the revision, and the down set if the revision is still where `known`
    /// was listed, then the revision again.
    fn down_set_reads(&self) -> Fetch {
        let (inner, group, expected) = (self.inner.clone(), self.group_id.clone(), self.revision);
        Box::pin(async move {
            if revision(&inner, &group).await? != expected {
                return Ok(Reads::Moved);
            }
            let down = status::members_in(&inner, &group, State::Down).await?;
            let after = revision(&inner, &group).await?;
            Ok(Reads::DownSet { down, after })
        })
    }

    /// Reads the revision (if the driver keeps one), then the whole group.
    fn listing_reads(&self) -> Fetch {
        let (inner, group, keeps) = (
            self.inner.clone(),
            self.group_id.clone(),
            self.revision.is_some(),
        );
        Box::pin(async move {
            let revision = if keeps {
                revision(&inner, &group).await?
            } else {
                None
            };
            let members = status::members(&inner, &group).await?;
            Ok(Reads::Listing { revision, members })
        })
    }

    /// Answers a poll from the down set alone, when the revision did not move while
    /// it was read (so no record changed but by heartbeats) and the only differences
    /// are members that went down: queues their `Down` events and returns `true`.
    /// Returns `false` (nothing queued) when the group must be listed: the revision
    /// moved, a member left the down set (back up, gone or taken over), or a down
    /// member is unknown or differs from what the last listing showed.
    fn apply_down_set(&mut self, down: &[MemberStatus], after: Option<u64>) -> bool {
        // The down set was read with no change before or after it: every difference
        // from `known` is a member whose heartbeat aged.
        if after != self.revision {
            return false;
        }
        let now_down: BTreeSet<&MemberId> = down.iter().map(|m| &m.member).collect();
        if self.known_down.iter().any(|m| !now_down.contains(m)) {
            return false;
        }
        let mut newly = Vec::new();
        for m in down {
            if self.known_down.contains(&m.member) {
                continue;
            }
            match self.known.get(&m.member) {
                Some(seen) if seen.holder == m.holder && seen.metadata == m.metadata => {
                    newly.push(&m.member);
                }
                _ => return false,
            }
        }
        let at = Utc::now();
        for member in newly {
            if let Some(seen) = self.known.get_mut(member) {
                seen.state = State::Down;
                self.pending
                    .push_back(event(EventKind::Down, &self.group_id, member, seen, at));
            }
            self.known_down.insert(member.clone());
        }
        self.since_listing += 1;
        true
    }

    /// Queues the differences between the whole group's `members` (listed at
    /// `revision`) and the last listing, which they replace.
    fn apply_listing(&mut self, revision: Option<u64>, members: Vec<MemberStatus>) {
        let mut current = listing(members);
        let at = Utc::now();
        let now = Instant::now();
        if std::mem::take(&mut self.unreachable) {
            self.settle_until = Some(now + self.inner.config.report_interval + self.interval);
        }
        let settling = self.settle_until.is_some_and(|until| now < until);
        let mut held = Vec::new();
        let group = &self.group_id;
        let pending = &mut self.pending;
        let mut push = |kind, member: &MemberId, seen: &Seen| {
            pending.push_back(event(kind, group, member, seen, at))
        };
        for (member, now) in &current {
            let Some(before) = self.known.get(member) else {
                push(EventKind::Joined, member, now);
                if now.state == State::Down {
                    push(EventKind::Down, member, now);
                }
                continue;
            };
            if before.holder != now.holder {
                push(EventKind::Replaced, member, now);
            } else if before.metadata != now.metadata {
                push(EventKind::Updated, member, now);
            }
            match (before.state, now.state) {
                (State::Up, State::Down) if settling => held.push(member.clone()),
                (State::Up, State::Down) => push(EventKind::Down, member, now),
                (State::Down, State::Up) => push(EventKind::Up, member, now),
                _ => {}
            }
        }
        let mut held_left = Vec::new();
        for (member, before) in &self.known {
            if !current.contains_key(member) {
                if settling && before.state == State::Up {
                    // A store that lost its records (memcached restarted empty) gets
                    // them back from the members' next heartbeats: confirm later.
                    held_left.push((member.clone(), before.clone()));
                } else {
                    push(EventKind::Left, member, before);
                }
            }
        }
        self.held = !held.is_empty() || !held_left.is_empty();
        current.extend(held_left);
        // A held member stays known as up: the next listing decides.
        for member in held {
            if let Some(seen) = current.get_mut(&member) {
                seen.state = State::Up;
            }
        }
        self.known_down = down_in(&current);
        self.known = current;
        if revision.is_some() {
            self.revision = revision;
        }
        self.since_listing = 0;
    }
}

/// The event `kind` for `member`, as `seen`.
fn event(
    kind: EventKind,
    group: &GroupId,
    member: &MemberId,
    seen: &Seen,
    at: DateTime<Utc>,
) -> Event {
    Event {
        kind,
        group: group.clone(),
        member: member.clone(),
        at,
        holder: seen.holder,
        metadata: seen.metadata.clone(),
    }
}

/// The members of a listing that are down.
fn down_in(known: &BTreeMap<MemberId, Seen>) -> BTreeSet<MemberId> {
    known
        .iter()
        .filter(|(_, seen)| seen.state == State::Down)
        .map(|(member, _)| member.clone())
        .collect()
}

/// The group's revision, if the driver keeps one ([`crate::Driver::revision`]).
async fn revision(inner: &Inner, group: &GroupId) -> Result<Option<u64>> {
    inner.call("revision", inner.driver.revision(group)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_is_every_sixty_polls_and_spread_for_large_groups() {
        assert_eq!(resync_polls(0), RESYNC_POLLS);
        assert_eq!(resync_polls(60_000), RESYNC_POLLS);
        assert_eq!(resync_polls(60_001), 61);
        assert_eq!(resync_polls(1_000_000), 1_000);
        assert_eq!(resync_polls(usize::MAX), u32::MAX);
    }
}
