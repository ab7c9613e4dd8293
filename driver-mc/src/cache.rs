//! What one driver object remembers about one memcached server between calls: the
//! CAS tokens of the records and heartbeat keys it holds, the index keys it
//! verified, and the server's boot token they belong to.
//!
//! CAS tokens are unique on a server only within one life of it: memcached's CAS
//! counter starts again at 1 when it restarts, so a remembered token could match
//! an item written after the restart by someone else. Every exchange that uses or
//! produces remembered tokens therefore reads the boot token first (in the same
//! pipeline, so both come from the same life of the server). When it changed or is
//! gone, everything remembered about the server is forgotten; and an entry is only
//! stored under the boot token that was read before the CAS it carries
//! ([`ServerCache::insert`] refuses it otherwise).
//!
//! Forgetting is always safe: a member the cache does not know costs its heartbeat
//! one more exchange (the record is read to see who holds it).

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

/// A member this driver object saw held by `instance`: the CAS of the record as
/// it was then, and of the heartbeat key as this driver last wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The holding instance, as two words (keeps the entry 8-aligned: 40 bytes).
    instance: [u64; 2],
    /// The record's CAS when it was seen held by `instance`.
    pub record_cas: u64,
    /// The heartbeat key's CAS after this driver's last write of it.
    pub beat_cas: u64,
    /// When the entry was last used (seconds since the backend was built).
    touched: u32,
}

impl Held {
    /// An entry used at `now` (seconds since the backend was built).
    pub fn new(instance: InstanceId, record_cas: u64, beat_cas: u64, now: u32) -> Self {
        let bits = instance.as_u128();
        Self {
            instance: [(bits >> 64) as u64, bits as u64],
            record_cas,
            beat_cas,
            touched: now,
        }
    }
}

impl Held {
    /// The holding instance.
    pub fn instance(&self) -> InstanceId {
        InstanceId::from_u128((u128::from(self.instance[0]) << 64) | u128::from(self.instance[1]))
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

/// What a boot-token read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// The token this cache already knew: remembered CAS tokens are valid.
    Same(Token),
    /// Another token (the server restarted, or this is the first contact): the
    /// cache was emptied; new entries go under this token.
    Changed(Token),
    /// No token (restarted or flushed, and nobody wrote a new one yet): the cache
    /// was emptied; nothing may be stored until a token exists.
    Missing,
}

impl Boot {
    /// The token the data read after it belongs to, if any.
    pub fn token(self) -> Option<Token> {
        match self {
            Boot::Same(t) | Boot::Changed(t) => Some(t),
            Boot::Missing => None,
        }
    }

    /// Whether remembered CAS tokens may be compared with what was read.
    pub fn trusted(self) -> bool {
        matches!(self, Boot::Same(_))
    }
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
    /// Records a boot-token read (`None`: the key was missing), forgetting
    /// everything when the token is not the one known.
    pub fn observe(&mut self, read: Option<Token>) -> Boot {
        match read {
            Some(t) if self.boot == Some(t) => Boot::Same(t),
            Some(t) => {
                self.forget_all();
                self.boot = Some(t);
                Boot::Changed(t)
            }
            None => {
                self.forget_all();
                self.boot = None;
                Boot::Missing
            }
        }
    }

    /// The known boot token.
    pub fn boot(&self) -> Option<Token> {
        self.boot
    }

    fn forget_all(&mut self) {
        self.held.clear();
        self.verified.clear();
    }

    /// The entry of `slot`, if it is held by `instance`.
    pub fn held_by(&self, slot: u64, instance: InstanceId) -> Option<Held> {
        self.held
            .get(&slot)
            .filter(|h| h.instance() == instance)
            .copied()
    }

    /// Stores `held` for `slot` if `token` (the boot token read before the CAS
    /// tokens in `held`) is still the known one. Returns whether it was stored.
    pub fn insert(&mut self, token: Option<Token>, slot: u64, held: Held) -> bool {
        if token.is_none() || token != self.boot {
            return false;
        }
        self.held.insert(slot, held);
        true
    }

    /// Updates the record CAS of `slot` if it is held by `instance` (after that
    /// instance rewrote the record).
    pub fn set_record_cas(
        &mut self,
        token: Option<Token>,
        slot: u64,
        instance: InstanceId,
        cas: u64,
    ) {
        if token.is_none() || token != self.boot {
            self.held.remove(&slot);
            return;
        }
        if let Some(held) = self.held.get_mut(&slot) {
            if held.instance() == instance {
                held.record_cas = cas;
            } else {
                self.held.remove(&slot);
            }
        }
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

    #[test]
    fn a_new_boot_token_forgets_everything() {
        let a = InstanceId::from_u128(1);
        let mut c = ServerCache::default();
        assert_eq!(c.observe(Some(7)), Boot::Changed(7));
        assert!(c.insert(Some(7), 1, Held::new(a, 10, 11, 0)));
        assert_eq!(c.observe(Some(7)), Boot::Same(7));
        assert_eq!(c.held_by(1, a).unwrap().record_cas, 10);
        assert!(c.held_by(1, InstanceId::from_u128(2)).is_none());
        assert_eq!(c.held_by(1, a).unwrap().instance(), a);
        assert_eq!(std::mem::size_of::<(u64, Held)>(), 48);
        // Stored under an older token: refused.
        assert!(!c.insert(Some(6), 2, Held::new(a, 1, 1, 0)));
        assert!(!c.insert(None, 2, Held::new(a, 1, 1, 0)));
        assert_eq!(c.observe(None), Boot::Missing);
        assert_eq!(c.len(), 0);
        assert!(!c.insert(Some(7), 1, Held::new(a, 10, 11, 0)));
        assert_eq!(c.observe(Some(8)), Boot::Changed(8));
        assert!(c.insert(Some(8), 1, Held::new(a, 10, 11, 0)));
        assert_eq!(c.observe(Some(9)), Boot::Changed(9));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn idle_entries_are_swept() {
        let a = InstanceId::from_u128(1);
        let mut c = ServerCache::default();
        c.observe(Some(1));
        c.insert(Some(1), 1, Held::new(a, 1, 1, 0));
        c.insert(Some(1), 2, Held::new(a, 1, 1, 0));
        // Refreshed by a later heartbeat.
        c.insert(Some(1), 2, Held::new(a, 1, 2, 3_000));
        c.sweep(3_700);
        assert!(c.held_by(1, a).is_none());
        assert!(c.held_by(2, a).is_some());
    }
}
