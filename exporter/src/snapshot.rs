//! One group as the exporter last saw it: counts by state, the oldest heartbeat of
//! the members up, and the members not up (down or forced down), sorted for the
//! page, all from one listing.

use std::collections::HashMap;
use std::time::Duration;

use servicegroup_core::{GroupId, MemberId, MemberStatus, State};

/// The state of a member as the exporter counts it: forced down is its own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shown {
    /// Up.
    Up,
    /// Down: heartbeat too old or expired (not forced down).
    Down,
    /// Forced down by an operator (whatever its heartbeat).
    ForcedDown,
}

impl Shown {
    /// The member's state as the exporter counts it.
    pub fn of(member: &MemberStatus) -> Shown {
        if member.forced_down {
            Shown::ForcedDown
        } else if member.state == State::Up {
            Shown::Up
        } else {
            Shown::Down
        }
    }

    /// The `state` label value: `up`, `down` or `forced_down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Shown::Up => "up",
            Shown::Down => "down",
            Shown::ForcedDown => "forced_down",
        }
    }
}

/// One group from one listing.
#[derive(Debug, Clone)]
pub struct GroupSnapshot {
    /// The group.
    pub group: GroupId,
    /// Members up.
    pub up: u64,
    /// Members down (not forced down).
    pub down: u64,
    /// Members forced down.
    pub forced_down: u64,
    /// Age of the oldest heartbeat among the members up (`None`: none up, or no ages).
    pub oldest_up_age: Option<Duration>,
    /// The members not up: down first, then forced down, each oldest heartbeat first.
    pub not_up: Vec<MemberStatus>,
}

impl GroupSnapshot {
    /// Builds the snapshot of `group` from its listing.
    pub fn from_members(group: GroupId, members: Vec<MemberStatus>) -> Self {
        let mut snapshot = GroupSnapshot {
            group,
            up: 0,
            down: 0,
            forced_down: 0,
            oldest_up_age: None,
            not_up: Vec::new(),
        };
        for member in members {
            match Shown::of(&member) {
                Shown::Up => {
                    snapshot.up += 1;
                    if let Some(age) = member.age {
                        snapshot.oldest_up_age = snapshot.oldest_up_age.max(Some(age));
                    }
                }
                Shown::Down => {
                    snapshot.down += 1;
                    snapshot.not_up.push(member);
                }
                Shown::ForcedDown => {
                    snapshot.forced_down += 1;
                    snapshot.not_up.push(member);
                }
            }
        }
        // Down before forced down; within each, the oldest heartbeat (the longest
        // silent) first; no age last; then by member id for a stable order.
        snapshot.not_up.sort_by(|a, b| {
            (
                a.forced_down,
                std::cmp::Reverse(a.age.map(|d| d.as_nanos())),
                &a.member,
            )
                .cmp(&(
                    b.forced_down,
                    std::cmp::Reverse(b.age.map(|d| d.as_nanos())),
                    &b.member,
                ))
        });
        snapshot
    }

    /// Every member counted: `up + down + forced_down`.
    pub fn total(&self) -> u64 {
        self.up + self.down + self.forced_down
    }
}

/// Each member's state at the previous listing of one group, to count changes.
#[derive(Debug, Default)]
pub struct Transitions {
    last: HashMap<MemberId, Shown>,
    seen_once: bool,
}

impl Transitions {
    /// Counts the members whose state differs from the previous listing (a member
    /// that appeared or went away counts once); the first listing counts nothing.
    pub fn update(&mut self, members: &[MemberStatus]) -> u64 {
        let mut next = HashMap::with_capacity(members.len());
        let mut changed = 0;
        for member in members {
            let shown = Shown::of(member);
            match self.last.remove(&member.member) {
                Some(before) if before == shown => {}
                _ => changed += 1,
            }
            next.insert(member.member.clone(), shown);
        }
        changed += self.last.len() as u64; // gone since the last listing
        self.last = next;
        let first = !self.seen_once;
        self.seen_once = true;
        if first {
            0
        } else {
            changed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use servicegroup_core::{Holder, Metadata};

    fn member(id: &str, state: State, forced: bool, age: u64) -> MemberStatus {
        MemberStatus {
            group: GroupId::new("g").unwrap(),
            member: MemberId::new(id).unwrap(),
            state,
            forced_down: forced,
            last_heartbeat: None,
            age: Some(Duration::from_secs(age)),
            holder: Holder::UNKNOWN,
            holder_since: None,
            metadata: Metadata::new(),
        }
    }

    #[test]
    fn counts_and_orders_the_members_not_up() {
        let s = GroupSnapshot::from_members(
            GroupId::new("g").unwrap(),
            vec![
                member("a", State::Up, false, 3),
                member("b", State::Down, false, 70),
                member("c", State::Down, true, 1),
                member("d", State::Down, false, 900),
                member("e", State::Up, false, 9),
            ],
        );
        assert_eq!((s.up, s.down, s.forced_down, s.total()), (2, 2, 1, 5));
        assert_eq!(s.oldest_up_age, Some(Duration::from_secs(9)));
        let order: Vec<&str> = s.not_up.iter().map(|m| m.member.as_str()).collect();
        assert_eq!(order, ["d", "b", "c"]);
    }

    #[test]
    fn transitions_count_changes_arrivals_and_departures_once() {
        let mut t = Transitions::default();
        assert_eq!(t.update(&[member("a", State::Up, false, 1)]), 0);
        assert_eq!(t.update(&[member("a", State::Up, false, 1)]), 0);
        // a goes down, b arrives.
        assert_eq!(
            t.update(&[
                member("a", State::Down, false, 80),
                member("b", State::Up, false, 1)
            ]),
            2
        );
        // a is forced down, b leaves.
        assert_eq!(t.update(&[member("a", State::Down, true, 80)]), 2);
    }
}
