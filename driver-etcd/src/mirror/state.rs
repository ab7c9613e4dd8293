//! What a mirror holds: one group's records, alive keys and the beat keys, decoded,
//! and the changes its watch delivered that are not applied yet.
//!
//! The group's three ranges are watched by three watchers of one stream. etcd
//! orders the events of one watcher by revision, but not those of different
//! watchers, so a change is applied only once every watcher has delivered events up
//! to its revision: the state is always the group at one revision ([`Mirrored`]).
//! A takeover writes record and alive key in one transaction; applied by halves it
//! would show the new holder without its alive key, a live member as down.

use std::collections::HashMap;
use std::time::Duration;

use servicegroup_core::{
    liveness::is_up, Freshness, GroupId, MemberId, MemberKey, MemberRecord, Result, State, Summary,
};

use crate::backend::decode_record;
use crate::keys::Keys;
use crate::kv::Kv;
use crate::stored::{freshness, holders_alive, lease_hex, member_record, Alive, Beat, Record};

/// The watcher of a range: records, alive keys, beat keys.
pub(crate) const WATCHERS: usize = 3;

/// One key change of the group (`None`: deleted).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    Record(MemberId, Option<Record>),
    Alive(MemberId, Option<Alive>),
    Beat(String, Option<i64>),
    /// A sync key: only progress.
    Sync,
}

/// Reads keys of one group's ranges as [`Change`]s.
#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    keys: Keys,
    group: GroupId,
    records: Vec<u8>,
    alive: Vec<u8>,
    beats: Vec<u8>,
}

impl Decoder {
    pub(crate) fn new(keys: &Keys, group: &GroupId) -> Self {
        Self {
            keys: keys.clone(),
            group: group.clone(),
            records: keys.group_records(group),
            alive: keys.group_alive(group),
            beats: keys.beats(),
        }
    }

    /// The watcher `key` belongs to and its change (`Ok(None)`: not a key of ours).
    /// A record that does not decode is an error (the listing reports it).
    pub(crate) fn change(&self, kv: &Kv, deleted: bool) -> Result<Option<(usize, Change)>> {
        let member = || {
            self.keys
                .member_of(&kv.key)
                .filter(|k| k.group == self.group)
                .map(|k| k.member)
        };
        if kv.key.starts_with(&self.records) {
            let Some(id) = member() else { return Ok(None) };
            let record = if deleted {
                None
            } else {
                Some(decode_record(kv)?)
            };
            return Ok(Some((0, Change::Record(id, record))));
        }
        if kv.key.starts_with(&self.alive) {
            let Some(id) = member() else { return Ok(None) };
            // An alive key that does not decode counts as absent (as in a listing).
            let alive = if deleted {
                None
            } else {
                Alive::decode(&kv.value).ok()
            };
            return Ok(Some((1, Change::Alive(id, alive))));
        }
        if let Some(lease) = self.keys.lease_of_beat(&kv.key) {
            let beat = if deleted {
                None
            } else {
                serde_json::from_slice::<Beat>(&kv.value).ok().map(|b| b.t)
            };
            return Ok(Some((2, Change::Beat(lease_hex(lease), beat))));
        }
        let watcher = if kv.key.starts_with(&self.beats) {
            2
        } else if kv.key.starts_with(&self.keys.records()) {
            0
        } else {
            1
        };
        Ok(Some((watcher, Change::Sync)))
    }
}

/// One group as its keys say, at one revision.
#[derive(Debug)]
pub(crate) struct GroupState {
    group: GroupId,
    records: HashMap<MemberId, Record>,
    alive: HashMap<MemberId, Alive>,
    beats: HashMap<String, i64>,
}

impl GroupState {
    pub(crate) fn new(group: &GroupId) -> Self {
        Self {
            group: group.clone(),
            records: HashMap::new(),
            alive: HashMap::new(),
            beats: HashMap::new(),
        }
    }

    /// The state of a listing's pairs (records, alive keys, beat keys of one revision).
    pub(crate) fn from_pairs<'a>(
        decoder: &Decoder,
        pairs: impl IntoIterator<Item = &'a Kv>,
    ) -> Result<Self> {
        let mut state = Self::new(&decoder.group);
        for kv in pairs {
            if let Some((_, change)) = decoder.change(kv, false)? {
                state.apply(change);
            }
        }
        Ok(state)
    }

    pub(crate) fn apply(&mut self, change: Change) {
        fn set<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, k: K, v: Option<V>) {
            match v {
                Some(v) => {
                    map.insert(k, v);
                }
                None => {
                    map.remove(&k);
                }
            }
        }
        match change {
            Change::Record(id, r) => set(&mut self.records, id, r),
            Change::Alive(id, a) => set(&mut self.alive, id, a),
            Change::Beat(lease, t) => set(&mut self.beats, lease, t),
            Change::Sync => {}
        }
    }

    fn record(&self, id: &MemberId, record: &Record) -> MemberRecord {
        member_record(
            MemberKey::new(self.group.clone(), id.clone()),
            record.clone(),
            self.alive.get(id),
            |l| self.beats.get(l).copied(),
        )
    }

    /// Every member's record.
    pub(crate) fn records(&self) -> Vec<MemberRecord> {
        self.records
            .iter()
            .map(|(id, r)| self.record(id, r))
            .collect()
    }

    /// Whether `record`'s member is fresh (its holder's alive key exists).
    fn freshness(&self, id: &MemberId, record: &Record) -> Freshness {
        freshness(holders_alive(record, self.alive.get(id)))
    }

    /// The records of the members in `state` (the liveness rule with
    /// `service_down_time`); only those are built.
    pub(crate) fn records_in(
        &self,
        state: State,
        service_down_time: Duration,
    ) -> Vec<MemberRecord> {
        let wanted = state == State::Up;
        self.records
            .iter()
            .filter(|(id, r)| is_up(r.f, self.freshness(id, r), service_down_time) == wanted)
            .map(|(id, r)| self.record(id, r))
            .collect()
    }

    /// The members counted up, down and forced down.
    pub(crate) fn summary(&self, service_down_time: Duration) -> Summary {
        let mut summary = Summary::default();
        for (id, r) in &self.records {
            summary.count(r.f, self.freshness(id, r), service_down_time);
        }
        summary
    }

    /// How many records it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }
}

/// A group's state and the changes its watchers delivered, applied up to the
/// revision every watcher has passed.
#[derive(Debug)]
pub(crate) struct Mirrored {
    pub(crate) state: GroupState,
    pending: Vec<(i64, Change)>,
    /// The last revision each watcher delivered (or the listing's).
    seen: [i64; WATCHERS],
    /// The revision `state` is at.
    applied: i64,
}

impl Mirrored {
    /// `state` at `revision`; the watchers start after it.
    pub(crate) fn new(state: GroupState, revision: i64) -> Self {
        Self {
            state,
            pending: Vec::new(),
            seen: [revision; WATCHERS],
            applied: revision,
        }
    }

    /// Drops the state and the pending changes (a mirror that ended).
    pub(crate) fn clear(&mut self) {
        self.state = GroupState::new(&self.state.group);
        self.pending = Vec::new();
    }

    /// The revision the state is at.
    pub(crate) fn applied(&self) -> i64 {
        self.applied
    }

    /// The revision each watcher resumes from.
    pub(crate) fn resume_from(&self) -> [i64; WATCHERS] {
        self.seen.map(|s| s + 1)
    }

    /// Changes not applied yet.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes the changes of one watch answer of `watcher` (revision, change; etcd
    /// sends a revision's events in one answer) and applies every change up to the
    /// revision all watchers have passed. A resumed watcher's repeats of revisions
    /// it already delivered are dropped. Returns the revision the state is at.
    pub(crate) fn push(
        &mut self,
        watcher: usize,
        changes: impl IntoIterator<Item = (i64, Change)>,
    ) -> i64 {
        let floor = self.seen[watcher];
        for (revision, change) in changes {
            if revision > floor {
                self.seen[watcher] = self.seen[watcher].max(revision);
                self.pending.push((revision, change));
            }
        }
        self.settle()
    }

    fn settle(&mut self) -> i64 {
        let upto = self.seen.iter().copied().min().unwrap_or(self.applied);
        if upto > self.applied {
            // Stable: changes of one revision touch distinct keys anyway.
            self.pending.sort_by_key(|(rev, _)| *rev);
            let split = self.pending.partition_point(|(rev, _)| *rev <= upto);
            for (_, change) in self.pending.drain(..split) {
                self.state.apply(change);
            }
            self.applied = upto;
        }
        self.applied
    }
}

#[cfg(test)]
mod tests {
    use servicegroup_core::{InstanceId, Metadata};

    use super::*;

    fn id(m: &str) -> MemberId {
        MemberId::new(m).unwrap()
    }

    fn record(instance: u128, epoch: u64, lease: &str) -> Record {
        Record {
            v: 1,
            i: InstanceId::from_u128(instance),
            e: epoch,
            s: 1_000,
            b: 1_000,
            l: lease.to_owned(),
            f: false,
            m: Metadata::default(),
        }
    }

    fn alive(instance: u128, epoch: u64, lease: &str) -> Alive {
        Alive {
            i: InstanceId::from_u128(instance),
            e: epoch,
            l: lease.to_owned(),
            t: 1_000,
        }
    }

    fn group() -> GroupId {
        GroupId::new("g").unwrap()
    }

    fn up(m: &Mirrored, member: &str) -> Option<bool> {
        m.state
            .records()
            .into_iter()
            .find(|r| r.key.member == id(member))
            .map(|r| r.freshness == Freshness::Present)
    }

    #[test]
    fn a_takeover_is_applied_whole_once_both_watchers_passed_it() {
        let mut state = GroupState::new(&group());
        state.apply(Change::Record(id("m"), Some(record(1, 1, "a"))));
        state.apply(Change::Alive(id("m"), Some(alive(1, 1, "a"))));
        let mut m = Mirrored::new(state, 10);
        assert_eq!(up(&m, "m"), Some(true));
        // The takeover at 11: the record watcher delivers first.
        assert_eq!(
            m.push(0, [(11, Change::Record(id("m"), Some(record(2, 2, "b"))))]),
            10
        );
        assert_eq!(up(&m, "m"), Some(true), "half a transaction must not show");
        // The beat watcher at 12 is ahead; the alive watcher still at 10.
        assert_eq!(m.push(2, [(12, Change::Beat("b".into(), Some(5_000)))]), 10);
        assert_eq!(
            m.push(1, [(11, Change::Alive(id("m"), Some(alive(2, 2, "b"))))]),
            11
        );
        let r = m.state.records().pop().unwrap();
        assert_eq!(r.holder.instance, InstanceId::from_u128(2));
        assert_eq!(r.freshness, Freshness::Present);
        // The beat at 12 waits for the others to pass 12.
        assert_eq!(r.last_heartbeat.unwrap().timestamp_millis(), 1_000);
        assert_eq!(m.pending(), 1);
        m.push(0, [(13, Change::Sync)]);
        assert_eq!(m.push(1, [(13, Change::Sync)]), 12);
        m.push(2, [(13, Change::Sync)]);
        assert_eq!(m.applied(), 13);
        let r = m.state.records().pop().unwrap();
        assert_eq!(r.last_heartbeat.unwrap().timestamp_millis(), 5_000);
        assert_eq!(m.pending(), 0);
    }

    #[test]
    fn an_expired_lease_makes_its_members_down_and_a_delete_drops_them() {
        let mut state = GroupState::new(&group());
        for m in ["a", "b"] {
            state.apply(Change::Record(id(m), Some(record(1, 1, "l"))));
            state.apply(Change::Alive(id(m), Some(alive(1, 1, "l"))));
        }
        let mut m = Mirrored::new(state, 5);
        m.push(1, [(6, Change::Alive(id("a"), None))]);
        m.push(0, [(7, Change::Record(id("b"), None))]);
        m.push(2, [(7, Change::Sync)]);
        m.push(1, [(7, Change::Sync)]);
        assert_eq!(m.applied(), 7);
        assert_eq!(up(&m, "a"), Some(false));
        assert_eq!(up(&m, "b"), None);
        assert_eq!(
            m.state
                .records_in(State::Down, Duration::from_secs(60))
                .len(),
            1
        );
        let s = m.state.summary(Duration::from_secs(60));
        assert_eq!((s.up, s.down, s.forced_down), (0, 1, 0));
    }

    #[test]
    fn filtered_listings_and_counts_follow_the_liveness_rule_of_full_records() {
        use servicegroup_core::liveness::state_of;
        let mut state = GroupState::new(&group());
        // up; forced down while fresh; down (no alive key); another holder's alive key.
        state.apply(Change::Record(id("up"), Some(record(1, 1, "l"))));
        state.apply(Change::Alive(id("up"), Some(alive(1, 1, "l"))));
        let forced = Record {
            f: true,
            ..record(1, 1, "l")
        };
        state.apply(Change::Record(id("forced"), Some(forced)));
        state.apply(Change::Alive(id("forced"), Some(alive(1, 1, "l"))));
        state.apply(Change::Record(id("down"), Some(record(1, 1, "l"))));
        state.apply(Change::Record(id("taken"), Some(record(2, 2, "m"))));
        state.apply(Change::Alive(id("taken"), Some(alive(1, 1, "l"))));
        let sdt = Duration::from_secs(60);
        let names = |records: Vec<MemberRecord>| {
            let mut n: Vec<String> = records.iter().map(|r| r.key.member.to_string()).collect();
            n.sort();
            n
        };
        for wanted in [State::Up, State::Down] {
            let by_rule: Vec<MemberRecord> = state
                .records()
                .into_iter()
                .filter(|r| state_of(r, sdt) == wanted)
                .collect();
            assert_eq!(names(state.records_in(wanted, sdt)), names(by_rule));
        }
        assert_eq!(names(state.records_in(State::Up, sdt)), vec!["up"]);
        let mut by_rule = Summary::default();
        for r in state.records() {
            by_rule.add(&r, sdt);
        }
        assert_eq!(state.summary(sdt), by_rule);
        assert_eq!((by_rule.up, by_rule.down, by_rule.forced_down), (1, 2, 1));
    }

    #[test]
    fn a_resumed_watcher_repeating_a_revision_is_not_applied_twice() {
        let mut m = Mirrored::new(GroupState::new(&group()), 1);
        // Two puts of one transaction (one revision, one answer), then a delete.
        m.push(
            0,
            [
                (2, Change::Record(id("a"), Some(record(1, 1, "")))),
                (2, Change::Record(id("b"), Some(record(1, 1, "")))),
            ],
        );
        m.push(0, [(3, Change::Record(id("a"), None))]);
        // Resumed from 2 after a break: the put at 2 again must not resurrect it.
        m.push(0, [(2, Change::Record(id("a"), Some(record(1, 1, ""))))]);
        assert_eq!(m.resume_from(), [4, 2, 2]);
        m.push(1, [(3, Change::Sync)]);
        m.push(2, [(3, Change::Sync)]);
        assert_eq!(m.applied(), 3);
        assert_eq!(m.state.len(), 1, "b stays, a is deleted once");
    }

    #[test]
    fn keys_decode_to_their_watcher_and_bad_records_fail() {
        let keys = Keys::new("sg");
        let g = group();
        let d = Decoder::new(&keys, &g);
        let k = MemberKey::new(g.clone(), id("m"));
        let kv = |key: Vec<u8>, value: Vec<u8>| Kv {
            key,
            value,
            mod_revision: 1,
            create_revision: 1,
        };
        let r = record(1, 1, "");
        let got = d.change(&kv(keys.record(&k), r.encode()), false).unwrap();
        assert_eq!(got, Some((0, Change::Record(id("m"), Some(r)))));
        let got = d.change(&kv(keys.alive(&k), vec![]), true).unwrap();
        assert_eq!(got, Some((1, Change::Alive(id("m"), None))));
        let got = d
            .change(&kv(keys.beat(0xab), br#"{"t":7}"#.to_vec()), false)
            .unwrap();
        assert_eq!(got, Some((2, Change::Beat("ab".into(), Some(7)))));
        for (w, key) in keys.sync_keys(&g).into_iter().enumerate() {
            assert_eq!(
                d.change(&kv(key, vec![]), false).unwrap(),
                Some((w, Change::Sync))
            );
        }
        let bad = d.change(&kv(keys.record(&k), b"nope".to_vec()), false);
        assert!(bad
            .unwrap_err()
            .message()
            .contains("no valid member record"));
    }
}
