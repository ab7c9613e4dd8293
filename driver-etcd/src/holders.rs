//! What the driver remembers of the instances (handles) it heartbeats for: each
//! one's lease, the members it holds, and which of them need a look at the next tick.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use servicegroup_core::{InstanceId, MemberKey};
use tokio::time::Instant;

/// One instance's lease: every member it holds rides on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// etcd's lease id.
    pub id: i64,
    /// Its TTL in seconds.
    pub ttl: i64,
}

/// A member an instance holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    /// The record's epoch as registered.
    pub epoch: u64,
    /// When its last heartbeat was confirmed (the keep-alive's answer, or the
    /// registration), on this host's monotonic clock and as unix ms.
    pub beat: Instant,
    /// The same, unix ms.
    pub beat_ms: i64,
    /// The revision of the record it is held as of (the registration's transaction,
    /// or the read that found it): a change the fence watch reports at or below it
    /// is already known (the member's own registration, most of all).
    pub revision: i64,
}

/// A member an instance stopped heartbeating: its alive key must move off the
/// instance's lease onto one that expires `service_down_time` after `beat`.
#[derive(Debug, Clone)]
pub(crate) struct Dropped {
    pub key: MemberKey,
    pub held: Held,
}

/// The state of one instance.
#[derive(Debug, Default)]
pub(crate) struct Instance {
    pub lease: Option<Lease>,
    pub held: BTreeMap<MemberKey, Held>,
    /// Members whose record changed (seen by the fence watch): read at the next tick.
    pub dirty: BTreeSet<MemberKey>,
    /// Read every member at the next tick (the fence watch may have missed changes).
    pub resync: bool,
    /// Members dropped whose alive key could not be moved yet (retried each tick).
    pub dropped: Vec<Dropped>,
}

/// Changes kept by [`Changes`]: far more than can reach the fence watch between a
/// transaction's (or a read's) answer and the member being held, a matter of
/// microseconds.
const KEPT_CHANGES: usize = 16_384;

/// The record changes the fence watch applied lately. A member becomes held after
/// its registration's transaction (or the read that found it) returned, so the watch
/// may already have passed a later change of it (a takeover) while nobody here held
/// it; this log tells whether it did.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// The revision up to which the watch has applied every change (0: none yet).
    /// A change after it reaches [`Instances::mark_dirty`] later.
    pub seen: i64,
    /// Every change of a member record with a revision above `floor`, oldest first.
    log: VecDeque<(i64, MemberKey)>,
    floor: i64,
}

impl Changes {
    /// The watch applied a change at `revision`, of the record of `key` if it is one.
    pub(crate) fn applied(&mut self, revision: i64, key: Option<MemberKey>) {
        self.seen = self.seen.max(revision);
        if let Some(key) = key {
            self.log.push_back((revision, key));
            if self.log.len() > KEPT_CHANGES {
                if let Some((oldest, _)) = self.log.pop_front() {
                    self.floor = oldest;
                }
            }
        }
    }

    /// The watch starts afresh at `revision`: what changed before it is unknown.
    pub(crate) fn restart(&mut self, revision: i64) {
        self.log.clear();
        self.floor = revision;
        self.seen = self.seen.max(revision);
    }

    /// Whether the record of `key` may have changed after `revision` in a change the
    /// watch already applied (true too when the log no longer reaches back that far).
    pub(crate) fn since(&self, key: &MemberKey, revision: i64) -> bool {
        if revision >= self.seen {
            return false;
        }
        if revision < self.floor {
            return true;
        }
        self.log
            .iter()
            .rev()
            .take_while(|(at, _)| *at > revision)
            .any(|(_, changed)| changed == key)
    }
}

/// Every instance of the driver.
#[derive(Debug, Default)]
pub(crate) struct Instances {
    pub map: HashMap<InstanceId, Instance>,
    /// What the fence watch applied lately.
    pub changes: Changes,
}

impl Instances {
    /// `instance` holds `key` as of `revision` (the registration's transaction, or
    /// the read that found its record). When the fence watch already applied a
    /// change of the record after that revision, it went by while nobody held the
    /// key here: the member is read at the instance's next tick.
    pub(crate) fn hold(
        &mut self,
        instance: InstanceId,
        key: &MemberKey,
        held: Held,
        revision: i64,
    ) {
        let missed = self.changes.since(key, revision);
        let state = self.map.entry(instance).or_default();
        state.held.insert(key.clone(), held);
        if missed {
            state.dirty.insert(key.clone());
        }
    }

    /// The record of `key` changed at `revision`: every instance holding it as of an
    /// earlier revision looks at the next tick. (A fleet joining fast reaches the fence
    /// watch after its registrations returned; marking each for its own write would
    /// read every member at its first tick.)
    pub(crate) fn mark_dirty(&mut self, key: &MemberKey, revision: i64) {
        for instance in self.map.values_mut() {
            if instance
                .held
                .get(key)
                .is_some_and(|held| held.revision < revision)
            {
                instance.dirty.insert(key.clone());
            }
        }
    }

    /// Changes may have been missed: every instance reads all its members.
    pub(crate) fn mark_resync(&mut self) {
        for instance in self.map.values_mut() {
            instance.resync = true;
        }
    }

    /// Forgets `key` for every instance (removed).
    pub(crate) fn forget(&mut self, key: &MemberKey) {
        for instance in self.map.values_mut() {
            instance.held.remove(key);
            instance.dirty.remove(key);
        }
    }
}

/// What one tick of an instance has to do, taken from its state at the start.
#[derive(Debug, Default)]
pub(crate) struct TickPlan {
    pub lease: Option<Lease>,
    /// Held members not in the batch.
    pub dropped: Vec<Dropped>,
    /// Members of the batch to read (changed, not known, or all on a resync).
    pub check: Vec<MemberKey>,
}

impl Instance {
    /// Splits the batch `keys` (sorted, unique) against what is held: one merge walk
    /// over both sorted sequences, no lookups (a tick of 100,000 members stays cheap).
    pub(crate) fn plan(&mut self, keys: &[MemberKey]) -> TickPlan {
        let mut plan = TickPlan {
            lease: self.lease,
            dropped: std::mem::take(&mut self.dropped),
            check: Vec::new(),
        };
        let resync = std::mem::take(&mut self.resync);
        let dirty = std::mem::take(&mut self.dirty);
        let mut gone = Vec::new();
        let mut batch = keys.iter().peekable();
        for (key, held) in &self.held {
            while let Some(next) = batch.next_if(|k| *k < key) {
                // In the batch, not held: read it.
                plan.check.push(next.clone());
            }
            if batch.next_if(|k| *k == key).is_some() {
                if resync || dirty.contains(key) {
                    plan.check.push(key.clone());
                }
            } else {
                gone.push(Dropped {
                    key: key.clone(),
                    held: *held,
                });
            }
        }
        plan.check.extend(batch.cloned());
        for dropped in &gone {
            self.held.remove(&dropped.key);
        }
        plan.dropped.extend(gone);
        plan
    }

    /// Records that the members of `keys` (sorted) that are held heartbeated at
    /// `beat` / `beat_ms`: one merge walk.
    pub(crate) fn beat(&mut self, keys: &[MemberKey], beat: Instant, beat_ms: i64) {
        let mut batch = keys.iter().peekable();
        for (key, held) in self.held.iter_mut() {
            while batch.next_if(|k| *k < key).is_some() {}
            if batch.next_if(|k| *k == key).is_some() {
                held.beat = beat;
                held.beat_ms = beat_ms;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use servicegroup_core::{GroupId, MemberId};

    fn key(m: &str) -> MemberKey {
        MemberKey::new(GroupId::new("g").unwrap(), MemberId::new(m).unwrap())
    }

    fn held() -> Held {
        Held {
            epoch: 1,
            beat: Instant::now(),
            beat_ms: 0,
            revision: 0,
        }
    }

    #[test]
    fn a_member_is_not_marked_for_its_own_registration_but_for_later_changes() {
        let a = InstanceId::from_u128(1);
        let mut all = Instances::default();
        all.changes.restart(1);
        all.hold(
            a,
            &key("x"),
            Held {
                revision: 5,
                ..held()
            },
            5,
        );
        // The fence watch reports the registration itself after it returned.
        all.mark_dirty(&key("x"), 5);
        assert!(all.map[&a].dirty.is_empty());
        // A takeover elsewhere, later.
        all.mark_dirty(&key("x"), 8);
        assert!(all.map[&a].dirty.contains(&key("x")));
    }

    #[test]
    fn a_member_whose_record_changed_before_it_was_held_is_read_at_the_next_tick() {
        let (a, b, c) = (
            InstanceId::from_u128(1),
            InstanceId::from_u128(2),
            InstanceId::from_u128(3),
        );
        let mut all = Instances::default();
        // The watch starts at 4; then y is registered (5), x changes (7), y is
        // taken over elsewhere (9) and a key that is no record changes (10).
        all.changes.restart(4);
        all.changes.applied(5, Some(key("y")));
        all.changes.applied(7, Some(key("x")));
        all.changes.applied(9, Some(key("y")));
        all.changes.applied(10, None);
        all.changes.applied(6, Some(key("z"))); // seen never moves back
        assert_eq!(all.changes.seen, 10);
        // x as of 12: its changes are still to come, the watch will mark it.
        all.hold(a, &key("x"), held(), 12);
        // y as of 5 (its registration): the takeover at 9 went by.
        all.hold(b, &key("y"), held(), 5);
        // x as of 7 (the change at 7 is the one read): nothing after it.
        all.hold(c, &key("x"), held(), 7);
        assert!(all.map[&a].dirty.is_empty());
        assert_eq!(
            all.map[&b].dirty.iter().collect::<Vec<_>>(),
            vec![&key("y")]
        );
        assert!(all.map[&c].dirty.is_empty());
        let plan = all.map.get_mut(&b).unwrap().plan(&[key("y")]);
        assert_eq!(plan.check, vec![key("y")]);
        // Before the watch's start nothing is known: held as of 3, it is read.
        all.hold(c, &key("w"), held(), 3);
        assert!(all.map[&c].dirty.contains(&key("w")));
    }

    #[test]
    fn the_change_log_is_bounded_and_then_answers_conservatively() {
        let mut changes = Changes::default();
        for revision in 1..=(KEPT_CHANGES as i64 + 10) {
            changes.applied(revision, Some(key(&format!("m{revision}"))));
        }
        assert_eq!(changes.log.len(), KEPT_CHANGES);
        // Reaching back past what is kept: maybe changed.
        assert!(changes.since(&key("other"), 5));
        // Within what is kept: exactly.
        let recent = KEPT_CHANGES as i64;
        assert!(!changes.since(&key("other"), recent));
        assert!(changes.since(&key(&format!("m{}", recent + 3)), recent));
    }

    #[test]
    fn a_plan_drops_what_the_batch_lacks_and_checks_what_changed() {
        let mut i = Instance::default();
        for m in ["a", "b", "c"] {
            i.held.insert(key(m), held());
        }
        i.dirty.insert(key("b"));
        let plan = i.plan(&[key("a"), key("b"), key("d")]);
        assert_eq!(
            plan.dropped
                .iter()
                .map(|d| d.key.clone())
                .collect::<Vec<_>>(),
            vec![key("c")]
        );
        assert_eq!(plan.check, vec![key("b"), key("d")]);
        assert!(!i.held.contains_key(&key("c")));
        i.resync = true;
        assert_eq!(
            i.plan(&[key("a"), key("b")]).check,
            vec![key("a"), key("b")]
        );
        assert!(i.plan(&[key("a"), key("b")]).check.is_empty());
    }
}
