//! The key layout under the prefix `P`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `P/r/<group>\0<member>` | the member's record ([`crate::stored::Record`]) | none: outlives its holder |
//! | `P/a/<group>\0<member>` | the member is alive ([`crate::stored::Alive`]) | its holder's lease |
//! | `P/b/<lease id, hex>` | last keep-alive of a lease ([`crate::stored::Beat`]) | a day-long lease of the driver |
//! | `P/i/<group>` | (empty) the group has (had) members | none |
//!
//! Ids contain no control characters, so `\0` ends a group id unambiguously and the
//! keys of one group form one contiguous range (`P/r/<group>\0`).
//!
//! A group's mirror ([`crate::mirror`]) writes three *sync keys* to learn that its
//! watch has caught up: `P/r/<group>\x01` and `P/a/<group>\x01` (just past the
//! group's records and alive keys, so its watch ranges take them in while no member
//! key and no other group's range does) and `P/b/~` (not a lease id). They ride on
//! the driver's day-long lease; nothing reads them as members or beats.

use servicegroup_core::{GroupId, MemberId, MemberKey};

/// The keys of one deployment (one prefix).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn join(&self, kind: &str, rest: &[&[u8]]) -> Vec<u8> {
        let mut key = format!("{}/{kind}/", self.prefix).into_bytes();
        for part in rest {
            key.extend_from_slice(part);
        }
        key
    }

    /// Every record (`P/r/`).
    pub(crate) fn records(&self) -> Vec<u8> {
        self.join("r", &[])
    }

    /// The records of `group`.
    pub(crate) fn group_records(&self, group: &GroupId) -> Vec<u8> {
        self.join("r", &[group.as_str().as_bytes(), b"\0"])
    }

    /// The alive keys of `group`.
    pub(crate) fn group_alive(&self, group: &GroupId) -> Vec<u8> {
        self.join("a", &[group.as_str().as_bytes(), b"\0"])
    }

    pub(crate) fn record(&self, key: &MemberKey) -> Vec<u8> {
        self.join(
            "r",
            &[
                key.group.as_str().as_bytes(),
                b"\0",
                key.member.as_str().as_bytes(),
            ],
        )
    }

    pub(crate) fn alive(&self, key: &MemberKey) -> Vec<u8> {
        self.join(
            "a",
            &[
                key.group.as_str().as_bytes(),
                b"\0",
                key.member.as_str().as_bytes(),
            ],
        )
    }

    /// The range of `group`'s records and its sync key: `[start, end)`.
    pub(crate) fn group_records_synced(&self, group: &GroupId) -> (Vec<u8>, Vec<u8>) {
        self.synced_range("r", group)
    }

    /// The range of `group`'s alive keys and its sync key: `[start, end)`.
    pub(crate) fn group_alive_synced(&self, group: &GroupId) -> (Vec<u8>, Vec<u8>) {
        self.synced_range("a", group)
    }

    fn synced_range(&self, kind: &str, group: &GroupId) -> (Vec<u8>, Vec<u8>) {
        let g = group.as_str().as_bytes();
        (self.join(kind, &[g, b"\0"]), self.join(kind, &[g, b"\x02"]))
    }

    /// The sync keys of `group`'s mirror: after its records, after its alive keys,
    /// and among the beat keys.
    pub(crate) fn sync_keys(&self, group: &GroupId) -> [Vec<u8>; 3] {
        let g = group.as_str().as_bytes();
        [
            self.join("r", &[g, b"\x01"]),
            self.join("a", &[g, b"\x01"]),
            self.join("b", &[b"~"]),
        ]
    }

    /// Every beat key.
    pub(crate) fn beats(&self) -> Vec<u8> {
        self.join("b", &[])
    }

    pub(crate) fn beat(&self, lease: i64) -> Vec<u8> {
        self.join("b", &[format!("{lease:x}").as_bytes()])
    }

    /// Every group index key.
    pub(crate) fn indexes(&self) -> Vec<u8> {
        self.join("i", &[])
    }

    pub(crate) fn index(&self, group: &GroupId) -> Vec<u8> {
        self.join("i", &[group.as_str().as_bytes()])
    }

    /// The member of a record or alive key (`None`: not one of ours).
    pub(crate) fn member_of(&self, key: &[u8]) -> Option<MemberKey> {
        let rest = key.strip_prefix(self.prefix.as_bytes())?;
        let rest = rest
            .strip_prefix(b"/r/")
            .or_else(|| rest.strip_prefix(b"/a/"))?;
        let at = rest.iter().position(|&b| b == 0)?;
        let group = GroupId::from_bytes(&rest[..at]).ok()?;
        let member = MemberId::from_bytes(&rest[at + 1..]).ok()?;
        Some(MemberKey::new(group, member))
    }

    /// The lease a beat key is for.
    pub(crate) fn lease_of_beat(&self, key: &[u8]) -> Option<i64> {
        let rest = key.strip_prefix(self.beats().as_slice())?;
        i64::from_str_radix(std::str::from_utf8(rest).ok()?, 16).ok()
    }

    /// The group of an index key.
    pub(crate) fn group_of_index(&self, key: &[u8]) -> Option<GroupId> {
        GroupId::from_bytes(key.strip_prefix(self.indexes().as_slice())?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(g: &str, m: &str) -> MemberKey {
        MemberKey::new(GroupId::new(g).unwrap(), MemberId::new(m).unwrap())
    }

    #[test]
    fn keys_round_trip() {
        let keys = Keys::new("sg");
        for k in [key("compute", "host-1"), key("a/b", "c/d"), key("é", "ü:x")] {
            assert_eq!(keys.member_of(&keys.record(&k)), Some(k.clone()));
            assert_eq!(keys.member_of(&keys.alive(&k)), Some(k.clone()));
            assert!(keys.record(&k).starts_with(&keys.group_records(&k.group)));
        }
        assert_eq!(keys.lease_of_beat(&keys.beat(0x1234abcd)), Some(0x1234abcd));
        let g = GroupId::new("compute").unwrap();
        assert_eq!(keys.group_of_index(&keys.index(&g)), Some(g));
    }

    #[test]
    fn sync_keys_are_in_the_watched_ranges_and_nobody_elses() {
        let keys = Keys::new("sg");
        let g = GroupId::new("compute").unwrap();
        let [records, alive, beats] = keys.sync_keys(&g);
        let inside = |k: &[u8], (start, end): (Vec<u8>, Vec<u8>)| k >= &start[..] && k < &end[..];
        assert!(inside(&records, keys.group_records_synced(&g)));
        assert!(inside(&alive, keys.group_alive_synced(&g)));
        assert!(beats.starts_with(&keys.beats()));
        // Not a member, not a beat, not in the group's own ranges or another group's.
        for k in [&records, &alive] {
            assert_eq!(keys.member_of(k), None);
            assert!(!k.starts_with(&keys.group_records(&g)));
            assert!(!k.starts_with(&keys.group_alive(&g)));
            let other = GroupId::new("compute-2").unwrap();
            assert!(!inside(k, keys.group_records_synced(&other)));
        }
        assert_eq!(keys.lease_of_beat(&beats), None);
        let member = keys.record(&key("compute", "zzz"));
        assert!(inside(&member, keys.group_records_synced(&g)));
    }

    #[test]
    fn a_group_prefix_is_not_another_groups() {
        let keys = Keys::new("sg");
        let a = keys.record(&key("ab", "x"));
        assert!(!a.starts_with(&keys.group_records(&GroupId::new("a").unwrap())));
        assert_eq!(Keys::new("other").member_of(&a), None);
    }
}
