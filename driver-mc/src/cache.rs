//! What one driver object remembers about one memcached server between calls: the
//! live records it holds (their CAS tokens and values), the index keys it
//! verified, and the server's boot token they belong to.
//!
//! CAS tokens are unique on a server only within one life of it: memcached's CAS
//! counter starts again at 1 when it restarts, so a remembered token could match
//! an item written after the restart by someone else. Each work item that uses
//! remembered tokens reads the server's boot token first and checks it in every
//! later exchange (module `server`); what is remembered is filed under the token
//! read by the work item it was learnt in, and compared or sent only in work items
//! that read that same token. When a work item reads another token, everything
//! remembered about the server is forgotten ([`ServerCache::observe`]), and an
//! entry is only stored under the token that is current ([`ServerCache::insert`]
//! refuses it otherwise).
//!
//! Forgetting is always safe: a member the cache does not know costs its heartbeat
//! one more exchange (the live record is read to see who holds it).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use servicegroup_core::{InstanceId, MemberKey};

use crate::placement::{fnv1a, mix};

/// A boot token as compared: a 64-bit hash of the boot key's value.
pub type Token = u64;

/// The token of a boot key's value.
pub fn token_of(value: &[u8]) -> Token {
    mix(fnv1a(&[b"boot", value]))
}

/// The cache slot of a member: a 64-bit hash of its ids. Two members sharing a slot
/// only cost each other extra exchanges (a remembered CAS of one never matches the
/// other's item), never a wrong answer.
pub fn slot_of(key: &MemberKey) -> u64 {
    mix(fnv1a(&[
        b"held",
        key.group.as_str().as_bytes(),
        key.member.as_str().as_bytes(),
    ]))
}

/// The hasher of the member map: slots are hashes already.
#[derive(Debug, Default)]
pub struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the map's key is a u64); fold anything else.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Entries not used for this long are dropped (members of crashed handles).
const IDLE_SECS: u32 = 3_600;
/// How often idle entries are looked for.
const SWEEP_EVERY_SECS: u32 = 600;

/// A member this driver object holds for `instance`: the live record as this
/// driver last wrote it (its CAS token and value), so a heartbeat can rewrite it
/// conditionally without reading it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The holding instance, as two words (keeps the entry 8-aligned).
    instance: [u64; 2],
    /// The live record's CAS after this driver's last write of it.
    pub cas: u64,
    /// The live record's value as written (compacted, see [`crate::stored`]).
    pub value: Box<[u8]>,
    /// Where the value's header line ends ([`crate::stored::header_end`]).
    pub header_end: u32,
    /// The record's revision (the durable record should have the same).
    pub rev: u32,
    /// When the entry was last used (seconds since the backend was built).
    touched: u32,
    /// When the durable record was last found at `rev` (seconds since the backend
    /// was built; 0 = not yet).
    pub synced: u32,
}

impl Held {
    /// An entry used at `now` for a live record written with `value` and `cas`;
    /// `None` when the value is not in the form a heartbeat can rewrite in place.
    pub fn new(
        instance: InstanceId,
        cas: u64,
        value: Vec<u8>,
        rev: u32,
        now: u32,
        synced: u32,
    ) -> Option<Self> {
        let header_end = u32::try_from(crate::stored::header_end(&value)?).ok()?;
        let bits = instance.as_u128();
        Some(Self {
            instance: [(bits >> 64) as u64, bits as u64],
            cas,
            value: value.into_boxed_slice(),
            header_end,
            rev,
            touched: now,
            synced,
        })
    }

    /// The holding instance.
    pub fn instance(&self) -> InstanceId {
        InstanceId::from_u128((u128::from(self.instance[0]) << 64) | u128::from(self.instance[1]))
    }

    /// Marks the entry used at `now`.
    pub fn touch(&mut self, now: u32) {
        self.touched = now;
    }
}

/// What this driver last confirmed about one index key.
#[derive(Debug)]
pub struct Verified {
    /// The key's CAS then.
    pub cas: u64,
    /// Ids found in the key at that CAS.
    pub confirmed: HashSet<Vec<u8>>,
}

/// What the boot token a work item read means for the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// The token this cache already knew: remembered CAS tokens are valid.
    Same,
    /// Another token (the server restarted, or this is the first contact): the
    /// cache was emptied; new entries go under this token.
    Changed,
}

/// One server's cache (see the module docs).
#[derive(Debug, Default)]
pub struct ServerCache {
    boot: Option<Token>,
    held: HashMap<u64, Held, BuildHasherDefault<SlotHasher>>,
    /// Index keys by name.
    pub verified: HashMap<String, Verified>,
    last_sweep: u32,
}

impl ServerCache {
    /// Records the boot token a work item read, forgetting
    /// everything when it is not the one known.
    pub fn observe(&mut self, token: Token) -> Boot {
        if self.boot == Some(token) {
            return Boot::Same;
        }
        self.held.clear();
        self.verified.clear();
        self.boot = Some(token);
        Boot::Changed
    }

    /// The known boot token.
    pub fn boot(&self) -> Option<Token> {
        self.boot
    }

    /// The entry of `slot`, if it is held by `instance`.
    pub fn held_by(&self, slot: u64, instance: InstanceId) -> Option<&Held> {
        self.held.get(&slot).filter(|h| h.instance() == instance)
    }

    /// The entry of `slot`, for an update in place.
    pub fn entry(&mut self, slot: u64) -> Option<&mut Held> {
        self.held.get_mut(&slot)
    }

    /// Stores `held` for `slot` if `token` (the boot token of the work item the
    /// entry's CAS came from) is still the known one. Returns whether it was stored.
    pub fn insert(&mut self, token: Option<Token>, slot: u64, held: Held) -> bool {
        if token.is_none() || token != self.boot {
            self.held.remove(&slot);
            return false;
        }
        self.held.insert(slot, held);
        true
    }

    /// Forgets `slot`.
    pub fn remove(&mut self, slot: u64) {
        self.held.remove(&slot);
    }

    /// Drops entries idle for [`IDLE_SECS`], at most once per [`SWEEP_EVERY_SECS`].
    pub fn sweep(&mut self, now: u32) {
        if now.saturating_sub(self.last_sweep) < SWEEP_EVERY_SECS {
            return;
        }
        self.last_sweep = now;
        self.held
            .retain(|_, h| now.saturating_sub(h.touched) < IDLE_SECS);
    }

    /// Number of members remembered.
    pub fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored::StoredRecord;
    use servicegroup_core::{Holder, Metadata};

    fn value() -> Vec<u8> {
        StoredRecord {
            holder: Holder::new(InstanceId::from_u128(1), 1),
            holder_since_ms: 1,
            registered_ms: 1,
            rev: 1,
            forced: false,
            live: true,
            beat_ms: 1,
            metadata: Metadata::new(),
        }
        .encode()
    }

    fn held(instance: InstanceId, cas: u64, now: u32) -> Held {
        Held::new(instance, cas, value(), 1, now, 0).unwrap()
    }

    #[test]
    fn a_new_boot_token_forgets_everything() {
        let a = InstanceId::from_u128(1);
        let mut c = ServerCache::default();
        assert_eq!(c.observe(7), Boot::Changed);
        assert!(c.insert(Some(7), 1, held(a, 10, 0)));
        assert_eq!(c.observe(7), Boot::Same);
        assert_eq!(c.held_by(1, a).unwrap().cas, 10);
        assert!(c.held_by(1, InstanceId::from_u128(2)).is_none());
        assert_eq!(c.held_by(1, a).unwrap().instance(), a);
        assert_eq!(std::mem::size_of::<(u64, Held)>(), 64);
        // Stored under an older token: refused.
        assert!(!c.insert(Some(6), 2, held(a, 1, 0)));
        assert!(!c.insert(None, 2, held(a, 1, 0)));
        assert_eq!(c.observe(8), Boot::Changed);
        assert_eq!(c.len(), 0);
        assert!(!c.insert(Some(7), 1, held(a, 10, 0)));
        assert!(c.insert(Some(8), 1, held(a, 10, 0)));
        assert_eq!(c.observe(9), Boot::Changed);
        assert_eq!(c.len(), 0);
        assert!(Held::new(a, 1, b"3 x\n".to_vec(), 1, 0, 0).is_none());
    }

    #[test]
    fn idle_entries_are_swept() {
        let a = InstanceId::from_u128(1);
        let mut c = ServerCache::default();
        c.observe(1);
        c.insert(Some(1), 1, held(a, 1, 0));
        c.insert(Some(1), 2, held(a, 1, 0));
        // Refreshed by a later heartbeat.
        c.entry(2).unwrap().touch(3_000);
        c.sweep(3_700);
        assert!(c.held_by(1, a).is_none());
        assert!(c.held_by(2, a).is_some());
    }
}
