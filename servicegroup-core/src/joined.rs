//! [`Joined`]: the members joined through one handle, and the sorted batch of
//! keys its heartbeat loop sends each tick.
//!
//! The batch is kept, not rebuilt: a leave or crash only marks its key's slot as
//! gone (one bit), a join queues its key, and the next tick folds both into the
//! batch in one pass that moves keys but clones none. A tick after an unchanged
//! membership does no work per member at all. The batch stays sorted and unique,
//! as [`crate::Driver::heartbeat`] promises drivers.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::id::MemberKey;

/// Bits per word of the gone-set.
const WORD: usize = u64::BITS as usize;

/// Joins queued before they are folded into the batch without waiting for a tick,
/// at least (see [`Joined::finish_joining`]).
const FOLD_MIN: usize = 1024;

/// The members of one handle: being registered, or registered (heartbeated).
#[derive(Debug, Default)]
pub(crate) struct Joined {
    /// Sorted, unique keys of the registered members as of the last [`Self::batch`],
    /// including members gone since.
    batch: Arc<Vec<MemberKey>>,
    /// Bit `i` set: `batch[i]` left or crashed since the last [`Self::batch`].
    /// Sized on the first removal.
    gone: Vec<u64>,
    /// Number of bits set in `gone`.
    gone_count: usize,
    /// Registered since the last [`Self::batch`] (never also live in `batch`).
    added: BTreeSet<MemberKey>,
    /// Being registered: not heartbeated yet, but already taken on this handle.
    joining: BTreeSet<MemberKey>,
}

impl Joined {
    fn is_gone(&self, i: usize) -> bool {
        self.gone
            .get(i / WORD)
            .is_some_and(|word| word >> (i % WORD) & 1 == 1)
    }

    /// Where `key` is in `batch`, if it is there and not gone.
    fn position(&self, key: &MemberKey) -> Option<usize> {
        self.batch
            .binary_search(key)
            .ok()
            .filter(|&i| !self.is_gone(i))
    }

    /// Whether `key` is registered (heartbeated) through this handle.
    pub(crate) fn is_joined(&self, key: &MemberKey) -> bool {
        self.added.contains(key) || self.position(key).is_some()
    }

    /// Whether `key` is registered or being registered through this handle.
    fn contains(&self, key: &MemberKey) -> bool {
        self.joining.contains(key) || self.is_joined(key)
    }

    /// Takes `keys` for registration, or, if one of them is already on this handle
    /// (or given twice), returns it and takes none.
    pub(crate) fn start_joining<'k>(&mut self, keys: &'k [MemberKey]) -> Result<(), &'k MemberKey> {
        let mut seen = BTreeSet::new();
        if let Some(dup) = keys.iter().find(|k| self.contains(k) || !seen.insert(*k)) {
            return Err(dup);
        }
        self.joining.extend(keys.iter().cloned());
        Ok(())
    }

    /// Gives `keys` up after their registration failed.
    pub(crate) fn abort_joining(&mut self, keys: &[MemberKey]) {
        for key in keys {
            self.joining.remove(key);
        }
    }

    /// Marks `keys` registered: the next batch includes them.
    ///
    /// A fleet joining between two ticks would wait in the `added` tree, which costs
    /// about twice the sorted batch per key; once `added` holds an eighth of the
    /// batch (and at least [`FOLD_MIN`] keys) it is folded in at once, unless a
    /// tick still uses the batch. Each key is so moved a bounded number of times.
    pub(crate) fn finish_joining(&mut self, keys: &[MemberKey]) {
        for key in keys {
            if let Some(key) = self.joining.take(key) {
                self.added.insert(key);
            }
        }
        if self.added.len() >= FOLD_MIN.max(self.batch.len() / 8)
            && Arc::strong_count(&self.batch) == 1
        {
            self.fold();
        }
    }

    /// Removes a registered member (left or crashed): the next batch lacks it.
    /// Returns whether it was there.
    pub(crate) fn remove(&mut self, key: &MemberKey) -> bool {
        if self.added.remove(key) {
            return true;
        }
        self.remove_batched(key)
    }

    /// Removes `key` only if it is in the batch the last [`Self::batch`] returned,
    /// not if it left and joined again since. A tick's driver report speaks of the
    /// batch it sent: while the tick holds that batch nothing is folded into it, so a
    /// member joined again meanwhile waits in `added` and is a later incarnation the
    /// report says nothing about. Returns whether it was removed.
    pub(crate) fn remove_batched(&mut self, key: &MemberKey) -> bool {
        let Some(i) = self.position(key) else {
            return false;
        };
        // `gone` is emptied whenever `batch` changes, so it is sized for this batch.
        if self.gone.is_empty() {
            self.gone = vec![0; self.batch.len().div_ceil(WORD)];
        }
        if let Some(word) = self.gone.get_mut(i / WORD) {
            *word |= 1 << (i % WORD);
            self.gone_count += 1;
        }
        true
    }

    /// The keys to heartbeat: every registered member, sorted and unique.
    /// Folds in the joins and removals since the last call (one pass, no key cloned
    /// unless the previous batch is still in use).
    pub(crate) fn batch(&mut self) -> Arc<Vec<MemberKey>> {
        self.fold();
        self.batch.clone()
    }

    /// Folds the joins and removals since the last fold into the batch.
    fn fold(&mut self) {
        if self.gone_count == 0 && self.added.is_empty() {
            return;
        }
        let old = std::mem::take(&mut self.batch);
        let old = Arc::try_unwrap(old).unwrap_or_else(|shared| shared.as_ref().clone());
        let gone = std::mem::take(&mut self.gone);
        let gone_count = std::mem::take(&mut self.gone_count);
        let added = std::mem::take(&mut self.added);
        let is_gone = |i: usize| {
            gone.get(i / WORD)
                .is_some_and(|word| word >> (i % WORD) & 1 == 1)
        };
        let next = if added.is_empty() {
            let mut keys = old;
            let mut i = 0;
            keys.retain(|_| {
                let keep = !is_gone(i);
                i += 1;
                keep
            });
            if keys.len() < keys.capacity() / 2 {
                keys.shrink_to_fit();
            }
            keys
        } else {
            let mut keys = Vec::with_capacity(old.len().saturating_sub(gone_count) + added.len());
            let mut live = old
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !is_gone(*i))
                .map(|(_, key)| key)
                .peekable();
            let mut added = added.into_iter().peekable();
            loop {
                let next = match (live.peek(), added.peek()) {
                    (Some(a), Some(b)) if a < b => live.next(),
                    (Some(_), Some(_)) | (None, Some(_)) => added.next(),
                    (Some(_), None) => live.next(),
                    (None, None) => break,
                };
                keys.extend(next);
            }
            keys
        };
        self.batch = Arc::new(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{GroupId, MemberId};

    fn key(group: &str, member: &str) -> MemberKey {
        MemberKey::new(GroupId::new(group).unwrap(), MemberId::new(member).unwrap())
    }

    fn keys(members: &[&str]) -> Vec<MemberKey> {
        members.iter().map(|m| key("g", m)).collect()
    }

    fn join(set: &mut Joined, members: &[&str]) {
        let keys = keys(members);
        set.start_joining(&keys).unwrap();
        set.finish_joining(&keys);
    }

    /// The batch, checked to be sorted and unique, as member names.
    fn batch(set: &mut Joined) -> Vec<String> {
        let batch = set.batch();
        assert!(batch.windows(2).all(|w| w[0] < w[1]), "{batch:?}");
        batch.iter().map(|k| k.member.to_string()).collect()
    }

    fn names(members: &[&str]) -> Vec<String> {
        members.iter().map(|m| m.to_string()).collect()
    }

    #[test]
    fn batch_follows_joins_and_removals_in_any_order() {
        let mut set = Joined::default();
        assert!(batch(&mut set).is_empty());
        join(&mut set, &["c", "a", "e"]);
        assert_eq!(batch(&mut set), names(&["a", "c", "e"]));
        // Joins and removals between two ticks, interleaved.
        join(&mut set, &["b", "f"]);
        assert!(set.remove(&key("g", "c")));
        join(&mut set, &["d"]);
        assert!(
            set.remove(&key("g", "f")),
            "a member joined since the last tick"
        );
        assert!(!set.remove(&key("g", "f")), "removed twice");
        assert!(!set.remove(&key("g", "zz")), "never joined");
        assert_eq!(batch(&mut set), names(&["a", "b", "d", "e"]));
        // Removals only.
        assert!(set.remove(&key("g", "a")));
        assert!(set.remove(&key("g", "e")));
        assert_eq!(batch(&mut set), names(&["b", "d"]));
        // A member that left joins again before the next tick.
        assert!(set.remove(&key("g", "b")));
        assert!(!set.is_joined(&key("g", "b")));
        join(&mut set, &["b"]);
        assert!(set.is_joined(&key("g", "b")));
        assert_eq!(batch(&mut set), names(&["b", "d"]));
        // Everyone leaves.
        assert!(set.remove(&key("g", "b")));
        assert!(set.remove(&key("g", "d")));
        assert!(batch(&mut set).is_empty());
        join(&mut set, &["x"]);
        assert_eq!(batch(&mut set), names(&["x"]));
    }

    #[test]
    fn members_being_registered_are_taken_but_not_heartbeated() {
        let mut set = Joined::default();
        join(&mut set, &["a"]);
        let pending = keys(&["b", "c"]);
        set.start_joining(&pending).unwrap();
        assert!(!set.is_joined(&pending[0]));
        assert_eq!(batch(&mut set), names(&["a"]));
        // Taken: joining any of them again is refused, and nothing of the call is taken.
        let again = keys(&["d", "b"]);
        assert_eq!(set.start_joining(&again), Err(&again[1]));
        let twice = keys(&["e", "e"]);
        assert_eq!(set.start_joining(&twice), Err(&twice[1]));
        let live = keys(&["f", "a"]);
        assert_eq!(set.start_joining(&live), Err(&live[1]));
        assert!(set.start_joining(&keys(&["d", "e", "f"])).is_ok());
        set.abort_joining(&keys(&["d", "e", "f"]));
        set.finish_joining(&pending);
        assert_eq!(batch(&mut set), names(&["a", "b", "c"]));
        // A failed registration leaves nothing behind.
        let failed = keys(&["z"]);
        set.start_joining(&failed).unwrap();
        set.abort_joining(&failed);
        assert!(set.start_joining(&failed).is_ok());
        set.abort_joining(&failed);
        assert_eq!(batch(&mut set), names(&["a", "b", "c"]));
    }

    #[test]
    fn a_report_on_the_batch_spares_a_member_joined_again_since() {
        let mut set = Joined::default();
        join(&mut set, &["a", "b"]);
        let sent = set.batch();
        // a leaves and joins again while a tick holds `sent`.
        assert!(set.remove(&key("g", "a")));
        join(&mut set, &["a"]);
        assert!(!set.remove_batched(&key("g", "a")), "a later incarnation");
        assert!(set.is_joined(&key("g", "a")));
        assert!(
            set.remove_batched(&key("g", "b")),
            "the incarnation that was sent"
        );
        assert!(!set.is_joined(&key("g", "b")));
        drop(sent);
        assert_eq!(batch(&mut set), names(&["a"]));
    }

    #[test]
    fn unchanged_membership_reuses_the_batch() {
        let mut set = Joined::default();
        join(&mut set, &["a", "b"]);
        let first = set.batch();
        let second = set.batch();
        assert!(Arc::ptr_eq(&first, &second));
        // A tick still holding the batch does not see later changes.
        assert!(set.remove(&key("g", "a")));
        assert_eq!(batch(&mut set), names(&["b"]));
        assert_eq!(first.len(), 2);
    }

    #[test]
    fn large_joins_are_folded_at_once_unless_a_tick_holds_the_batch() {
        let mut set = Joined::default();
        let many: Vec<MemberKey> = (0..FOLD_MIN)
            .map(|i| key("g", &format!("m{i:05}")))
            .collect();
        let held = set.batch();
        set.start_joining(&many).unwrap();
        set.finish_joining(&many);
        assert_eq!(set.added.len(), FOLD_MIN, "a tick holds the batch");
        drop(held);
        let more = keys(&["x"]);
        set.start_joining(&more).unwrap();
        set.finish_joining(&more);
        assert!(set.added.is_empty());
        assert_eq!(set.batch.len(), FOLD_MIN + 1);
        // Removals still apply to folded members, and the batch stays sorted.
        assert!(set.remove(&many[7]));
        assert!(set.remove(&more[0]));
        let batch = set.batch();
        assert_eq!(batch.len(), FOLD_MIN - 1);
        assert!(batch.windows(2).all(|w| w[0] < w[1]));
        assert!(!batch.contains(&many[7]));
    }

    #[test]
    fn batch_matches_a_model_under_mixed_operations() {
        // Deterministic pseudo-random joins, leaves and ticks checked against a BTreeSet.
        let mut set = Joined::default();
        let mut model = BTreeSet::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let member = format!("m{:03}", next() % 300);
            let k = key(if next() % 3 == 0 { "g1" } else { "g2" }, &member);
            match next() % 10 {
                0..=4 => {
                    let joined = set.start_joining(std::slice::from_ref(&k)).is_ok();
                    assert_eq!(joined, model.insert(k.clone()), "{k}");
                    if joined {
                        set.finish_joining(std::slice::from_ref(&k));
                    }
                }
                5..=8 => assert_eq!(set.remove(&k), model.remove(&k), "{k}"),
                _ => {
                    let batch = set.batch();
                    assert!(batch.iter().eq(model.iter()));
                }
            }
            assert_eq!(set.is_joined(&k), model.contains(&k), "{k}");
        }
        assert!(set.batch().iter().eq(model.iter()));
    }
}
