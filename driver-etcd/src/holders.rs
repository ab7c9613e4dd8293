//! What the driver remembers of the instances (handles) it heartbeats for: each
//! one's lease, the members it holds, and which of them need a look at the next tick.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// Every instance of the driver.
#[derive(Debug, Default)]
pub(crate) struct Instances {
    pub map: HashMap<InstanceId, Instance>,
    /// The revision up to which the fence watch has applied every record change
    /// (0: none yet). A change after it reaches [`Instances::mark_dirty`] later, so
    /// a member newly held as of a revision below it may have missed one.
    pub fence_seen: i64,
}

impl Instances {
    /// `instance` holds `key` as of `revision` (the registration's transaction, or
    /// the read that found its record). When the fence watch is already past that
    /// revision, a change in between went by while nobody held the key here: the
    /// member is read at the instance's next tick.
    pub(crate) fn hold(
        &mut self,
        instance: InstanceId,
        key: &MemberKey,
        held: Held,
        revision: i64,
    ) {
        let missed = self.fence_seen > revision;
        let state = self.map.entry(instance).or_default();
        state.held.insert(key.clone(), held);
        if missed {
            state.dirty.insert(key.clone());
        }
    }

    /// The fence watch applied every record change up to `revision`.
    pub(crate) fn fence_at(&mut self, revision: i64) {
        self.fence_seen = self.fence_seen.max(revision);
    }

    /// The record of `key` changed: every instance holding it looks at the next tick.
    pub(crate) fn mark_dirty(&mut self, key: &MemberKey) {
        for instance in self.map.values_mut() {
            if instance.held.contains_key(key) {
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
        }
    }

    #[test]
    fn a_member_held_as_of_a_revision_the_fence_is_past_is_read_at_the_next_tick() {
        let (a, b) = (InstanceId::from_u128(1), InstanceId::from_u128(2));
        let mut all = Instances::default();
        all.fence_at(10);
        // Registered at revision 12: any change after it is still to come.
        all.hold(a, &key("x"), held(), 12);
        // Registered at 8, but the watch already passed 10: a change at 9 or 10 went by.
        all.hold(b, &key("y"), held(), 8);
        all.fence_at(5); // never moves back
        assert_eq!(all.fence_seen, 10);
        assert!(all.map[&a].dirty.is_empty());
        assert_eq!(
            all.map[&b].dirty.iter().collect::<Vec<_>>(),
            vec![&key("y")]
        );
        let plan = all.map.get_mut(&b).unwrap().plan(&[key("y")]);
        assert_eq!(plan.check, vec![key("y")]);
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
