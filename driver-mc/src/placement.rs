//! Where a member's keys live: rendezvous (highest random weight) hashing over the
//! configured servers, with a hash fixed by this crate.
//!
//! The hash is 64-bit FNV-1a followed by the SplitMix64 finalizer, implemented
//! here over bytes, so placement is the same in every process, on every Rust
//! version and after every restart (std's `DefaultHasher`, which the memcache
//! crate's classic client uses, promises none of that). Rendezvous hashing moves
//! only the keys of the server that was added or removed: adding a fourth server
//! moves about a quarter of the members, and the order of the server list does
//! not matter.
//!
//! Placement is per member, not per memcached key: a member's heartbeat key,
//! record key and index entry all live on one server, so a member stays fully
//! usable whenever its own server is, whatever happens to the others.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a over `parts`, each followed by a 0xff separator byte (a byte
/// that never occurs in UTF-8, so `("ab", "c")` and `("a", "bc")` differ).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = FNV_OFFSET;
    for part in parts {
        for &byte in *part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The SplitMix64 finalizer: spreads FNV's weak low bits over the whole word.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The servers, by the identity every process must spell the same way
/// (`host:port` as configured).
#[derive(Debug, Clone)]
pub struct Placement {
    seeds: Vec<u64>,
}

impl Placement {
    /// Placement over servers named `identities` (order does not matter for the result).
    pub fn new<S: AsRef<str>>(identities: &[S]) -> Self {
        Self {
            seeds: identities
                .iter()
                .map(|id| fnv1a(&[b"server", id.as_ref().as_bytes()]))
                .collect(),
        }
    }

    /// Index of the server that holds the member `(group, member)`.
    pub fn server_of(&self, group: &str, member: &str) -> usize {
        let key = fnv1a(&[b"member", group.as_bytes(), member.as_bytes()]);
        let mut best = (0usize, 0u64);
        for (index, seed) in self.seeds.iter().enumerate() {
            let score = mix(key ^ seed);
            // Ties (astronomically rare) go to the lower seed, not the list order.
            if index == 0 || score > best.1 || (score == best.1 && *seed < self.seeds[best.0]) {
                best = (index, score);
            }
        }
        best.0
    }
}

/// Index bucket of a member within its group (module `index`: 64 buckets per group and server).
pub fn bucket_of(member: &str, buckets: u32) -> u32 {
    (mix(fnv1a(&[b"bucket", member.as_bytes()])) % u64::from(buckets)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_the_published_function() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; ours appends a 0xff separator.
        let mut h = FNV_OFFSET;
        h ^= u64::from(b'a');
        h = h.wrapping_mul(FNV_PRIME);
        assert_eq!(h, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(&[b"a"]), (h ^ 0xff).wrapping_mul(FNV_PRIME));
    }

    #[test]
    fn placement_is_pinned() {
        // Placement must never change between releases: these values are part of
        // the on-memcached format. Changing them moves every member.
        let p = Placement::new(&["127.0.0.1:11211", "127.0.0.1:11212", "127.0.0.1:11213"]);
        let got: Vec<usize> = (0..12)
            .map(|i| p.server_of("compute", &format!("host-{i}")))
            .collect();
        assert_eq!(got, PINNED.to_vec());
        assert_eq!(bucket_of("host-1", 64), PINNED_BUCKET);
    }

    const PINNED: [usize; 12] = [0, 0, 2, 0, 2, 0, 0, 0, 1, 1, 1, 2];
    const PINNED_BUCKET: u32 = 40;

    #[test]
    fn order_does_not_matter() {
        let a = Placement::new(&["a:1", "b:2", "c:3"]);
        let b = Placement::new(&["c:3", "a:1", "b:2"]);
        let ids_a = ["a:1", "b:2", "c:3"];
        let ids_b = ["c:3", "a:1", "b:2"];
        for i in 0..1000 {
            let m = format!("m{i}");
            assert_eq!(ids_a[a.server_of("g", &m)], ids_b[b.server_of("g", &m)]);
        }
    }

    #[test]
    fn balanced_and_minimal_movement() {
        let three = Placement::new(&["a:1", "b:2", "c:3"]);
        let four = Placement::new(&["a:1", "b:2", "c:3", "d:4"]);
        let n = 30_000;
        let mut counts = [0usize; 3];
        let mut moved = 0;
        for i in 0..n {
            let m = format!("host-{i}.example.org");
            let s3 = three.server_of("compute", &m);
            let s4 = four.server_of("compute", &m);
            counts[s3] += 1;
            if s3 != s4 {
                assert_eq!(s4, 3, "a key moved between old servers");
                moved += 1;
            }
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        // About 1/4 move to the new server.
        assert!((6_500..8_500).contains(&moved), "{moved}");
    }

    #[test]
    fn buckets_spread() {
        let mut counts = [0usize; 64];
        for i in 0..64_000 {
            counts[bucket_of(&format!("h{i}"), 64) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}
