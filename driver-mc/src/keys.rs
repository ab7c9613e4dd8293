//! Safe memcached keys for (prefix, group, member).
//!
//! memcached's text and meta protocols break on keys with spaces or control
//! characters and refuse keys over 250 bytes. Ids are validated by core (no
//! whitespace or control characters, at most 255 bytes), but this module does not
//! rely on it: every id is encoded so that
//!
//! - a key contains only printable ASCII `0x21..=0x7e` (no space, no control
//!   character, no byte of a multi-byte character);
//! - a key is at most [`MAX_KEY_LEN`] (228) bytes, below memcached's 250;
//! - the encoding is injective: different (group, member) pairs give different
//!   keys (for ids over [`READABLE_MAX`] encoded bytes, up to a SHA-256 collision).
//!
//! An id *segment* is the id with every byte outside `0x21..=0x7e`, and `%`, `:`
//! and `#`, written as `%XX` (uppercase hex): `compute`, `host-1.example.org` stay
//! readable. A segment that would exceed [`READABLE_MAX`] bytes is replaced by
//! its first 40 encoded bytes, `#`, and 40 hex digits of the SHA-256 of the raw
//! id. Readable segments never contain `#` and hashed ones always do, so the two
//! forms cannot meet; segments never contain `:`, so `prefix:kind:group:member`
//! splits back uniquely.
//!
//! Member keys are `prefix:kind:group:member` with kind `m3` (live record), `d3`
//! (durable record) or `f` (the forced-down flag of releases before format 3, read
//! once when a member is first registered in format 3); the other keys are
//! `prefix:i:group:BB` (index bucket), `prefix:groups` and `prefix:boot`, so no two
//! kinds of key can meet. Earlier formats used `r`/`h` (1), `r2`/`h2` (2) and a
//! group marker `prefix:fi:group`; this release neither reads nor writes them.

use sha2::{Digest, Sha256};

/// Longest encoded segment kept readable; longer ones are hashed.
pub const READABLE_MAX: usize = 96;
/// Readable head kept in front of a hashed segment.
const HASHED_HEAD: usize = 40;
/// Hex digits of the SHA-256 kept in a hashed segment (160 bits).
const HASH_HEX: usize = 40;
/// Longest prefix accepted (`[mc] prefix`).
pub const MAX_PREFIX_LEN: usize = 32;
/// Upper bound of every key this module makes:
/// prefix + `:m3:` + segment + `:` + segment.
pub const MAX_KEY_LEN: usize = MAX_PREFIX_LEN + 4 + READABLE_MAX + 1 + READABLE_MAX;

/// Key kind of the live record (format 3: holder, epoch, metadata, forced-down
/// flag and heartbeat time in one value, 30-day TTL, liveness from the remaining
/// TTL; see [`crate::stored`]). Formats 1 and 2 (`r`/`h`, `r2`/`h2`) are neither
/// read nor written, so processes of an earlier release and this one never misread
/// each other's values.
const LIVE: &str = "m3";
/// Key kind of the durable record (format 3, no TTL): a copy of the live record,
/// read only where the live record is gone.
const DURABLE: &str = "d3";
/// Key kind of the forced-down flag of formats 1 and 2 (presence only): read when
/// a member is first registered in format 3, so an operator's flag survives the
/// upgrade; deleted when the flag is cleared or the member removed.
const LEGACY_FORCED: &str = "f";

/// Whether `byte` may appear verbatim in a key segment.
fn verbatim(byte: u8) -> bool {
    (0x21..=0x7e).contains(&byte) && !matches!(byte, b'%' | b':' | b'#')
}

fn push_escaped(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(byte >> 4)] as char);
    out.push(HEX[usize::from(byte & 0xf)] as char);
}

/// The key segment of one id (see the module docs).
pub fn segment(id: &[u8]) -> String {
    let mut out = String::with_capacity(id.len());
    for &byte in id {
        if verbatim(byte) {
            out.push(byte as char);
        } else {
            push_escaped(&mut out, byte);
        }
    }
    if out.len() <= READABLE_MAX {
        return out;
    }
    // Cut the readable head on an escape boundary (never inside `%XX`).
    let mut head = HASHED_HEAD;
    while out.as_bytes()[..head]
        .iter()
        .rev()
        .take(2)
        .any(|&b| b == b'%')
    {
        head -= 1;
    }
    let digest = Sha256::digest(id);
    let mut hashed = String::with_capacity(head + 1 + HASH_HEX);
    hashed.push_str(&out[..head]);
    hashed.push('#');
    for byte in &digest[..HASH_HEX / 2] {
        hashed.push_str(&format!("{byte:02x}"));
    }
    hashed
}

/// Checks a configured prefix: 1 to [`MAX_PREFIX_LEN`] bytes of `A-Z a-z 0-9 . _ -`.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "`mc.prefix` {prefix:?} must be 1 to {MAX_PREFIX_LEN} bytes long"
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`mc.prefix` {prefix:?} contains {c:?}; only A-Z a-z 0-9 . _ - are allowed"
        ));
    }
    Ok(())
}

/// Builds the keys of one deployment (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`, which must pass [`check_prefix`].
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn member_key(&self, kind: &str, group: &[u8], member: &[u8]) -> String {
        format!(
            "{}:{kind}:{}:{}",
            self.prefix,
            segment(group),
            segment(member)
        )
    }

    /// The live record (30-day TTL; liveness from its remaining TTL, see
    /// [`crate::backend`]; value: [`crate::stored`]).
    pub fn live(&self, group: &[u8], member: &[u8]) -> String {
        self.member_key(LIVE, group, member)
    }

    /// The durable record (no TTL; a copy of the live record, read where that one
    /// is gone).
    pub fn durable(&self, group: &[u8], member: &[u8]) -> String {
        self.member_key(DURABLE, group, member)
    }

    /// The forced-down key of formats 1 and 2 (no TTL; present = forced down).
    pub fn legacy_forced(&self, group: &[u8], member: &[u8]) -> String {
        self.member_key(LEGACY_FORCED, group, member)
    }

    /// A builder of the member keys of `group`, with the group's segment
    /// encoded once (for batches: [`GroupKeys::live`] and friends give the
    /// same keys as [`Self::live`] and friends).
    pub fn group(&self, group: &[u8]) -> GroupKeys {
        GroupKeys {
            head: format!("{}:", self.prefix),
            tail: format!(":{}:", segment(group)),
        }
    }

    /// One index bucket of a group on one server (no TTL; value = member ids).
    pub fn bucket(&self, group: &[u8], bucket: u32) -> String {
        format!("{}:i:{}:{bucket:02x}", self.prefix, segment(group))
    }

    /// The list of groups with members on one server (no TTL).
    pub fn groups(&self) -> String {
        format!("{}:groups", self.prefix)
    }

    /// The server's boot token (no TTL; value = 32 random hex digits written by
    /// whichever driver finds it missing). It is gone after memcached restarted, so
    /// a new value tells a driver that the CAS tokens it remembers belong to an
    /// earlier life of the server (memcached's CAS counter restarts at 1).
    pub fn boot(&self) -> String {
        format!("{}:boot", self.prefix)
    }
}

/// Member keys of one group (see [`Keys::group`]).
#[derive(Debug, Clone)]
pub struct GroupKeys {
    /// `prefix:`
    head: String,
    /// `:group-segment:`
    tail: String,
}

impl GroupKeys {
    fn key(&self, kind: &str, member: &str) -> String {
        let mut out =
            String::with_capacity(self.head.len() + kind.len() + self.tail.len() + member.len());
        out.push_str(&self.head);
        out.push_str(kind);
        out.push_str(&self.tail);
        out.push_str(member);
        out
    }

    /// The segment of `member`, to pass to the key methods.
    pub fn member(&self, member: &[u8]) -> String {
        segment(member)
    }

    /// Appends the key of `kind` for the member `member` (raw id) to `out`.
    fn write(&self, kind: &str, member: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(self.tail.as_bytes());
        if member.len() <= READABLE_MAX && member.iter().all(|&b| verbatim(b)) {
            out.extend_from_slice(member);
        } else {
            out.extend_from_slice(segment(member).as_bytes());
        }
    }

    /// Appends the live record's key of the member `member` (raw id, not a
    /// segment) to `out`: the same bytes as [`Self::live`] of its segment.
    pub fn live_into(&self, member: &[u8], out: &mut Vec<u8>) {
        self.write(LIVE, member, out);
    }

    /// Appends the durable record's key of the member `member` (raw id) to `out`.
    pub fn durable_into(&self, member: &[u8], out: &mut Vec<u8>) {
        self.write(DURABLE, member, out);
    }

    /// The live record of the member whose segment is `member` ([`Self::member`]).
    pub fn live(&self, member: &str) -> String {
        self.key(LIVE, member)
    }

    /// The durable record of the member whose segment is `member`.
    pub fn durable(&self, member: &str) -> String {
        self.key(DURABLE, member)
    }

    /// The forced-down key of formats 1 and 2 of the member whose segment is `member`.
    pub fn legacy_forced(&self, member: &str) -> String {
        self.key(LEGACY_FORCED, member)
    }
}

/// Escapes an id for a line of an index value: bytes `<= 0x20`, `0x7f` and `%`
/// become `%XX`, so a line never holds a newline and decodes back exactly.
pub fn escape_value(id: &[u8], out: &mut Vec<u8>) {
    for &byte in id {
        if byte <= 0x20 || byte == 0x7f || byte == b'%' {
            let mut s = String::new();
            push_escaped(&mut s, byte);
            out.extend_from_slice(s.as_bytes());
        } else {
            out.push(byte);
        }
    }
}

/// Reverses [`escape_value`]; `None` for a malformed escape.
pub fn unescape_value(line: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i] == b'%' {
            let hex = line.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safe(key: &str) -> bool {
        key.len() <= MAX_KEY_LEN && key.bytes().all(|b| (0x21..=0x7e).contains(&b))
    }

    #[test]
    fn short_ids_stay_readable() {
        let k = Keys::new("sg");
        assert_eq!(
            k.live(b"compute", b"host-1.example.org"),
            "sg:m3:compute:host-1.example.org"
        );
        assert_eq!(
            k.durable(b"a b", b"x\r\nflush_all"),
            "sg:d3:a%20b:x%0D%0Aflush_all"
        );
        assert_eq!(k.live(b"g", "ü:#%".as_bytes()), "sg:m3:g:%C3%BC%3A%23%25");
        assert_eq!(k.legacy_forced(b"g", b"m"), "sg:f:g:m");
        assert_eq!(k.boot(), "sg:boot");
        assert_eq!(k.bucket(b"compute", 7), "sg:i:compute:07");
        assert_eq!(k.groups(), "sg:groups");
    }

    #[test]
    fn group_keys_match_the_single_key_methods() {
        let k = Keys::new("sg");
        let long = "é".repeat(127) + "x";
        for (g, m) in [
            (&b"compute"[..], &b"host-1"[..]),
            (b"a b", b"x\r\nflush_all"),
            (long.as_bytes(), "ü:#%".as_bytes()),
        ] {
            let gk = k.group(g);
            let seg = gk.member(m);
            assert_eq!(gk.live(&seg), k.live(g, m));
            let (mut live, mut durable) = (Vec::new(), Vec::new());
            gk.live_into(m, &mut live);
            gk.durable_into(m, &mut durable);
            assert_eq!(live, k.live(g, m).into_bytes());
            assert_eq!(durable, k.durable(g, m).into_bytes());
            assert_eq!(gk.durable(&seg), k.durable(g, m));
            assert_eq!(gk.legacy_forced(&seg), k.legacy_forced(g, m));
        }
    }

    #[test]
    fn long_ids_are_hashed_and_fit() {
        let k = Keys::new(&"p".repeat(MAX_PREFIX_LEN));
        let long = "é".repeat(127) + "x";
        let key = k.live(long.as_bytes(), long.as_bytes());
        assert!(safe(&key), "{key} ({} bytes)", key.len());
        assert!(key.contains('#'));
        let a = "y".repeat(200) + "a";
        let b = "y".repeat(200) + "b";
        assert_ne!(k.live(b"g", a.as_bytes()), k.live(b"g", b.as_bytes()));
        // The head is never cut inside an escape.
        let s = segment(&[0xffu8; 200]);
        let head = s.split('#').next().unwrap();
        assert_eq!(head.len() % 3, 0, "{s}");
    }

    #[test]
    fn value_escaping_round_trips() {
        for id in [
            &b"a b"[..],
            b"x\r\nflush_all",
            b"%41",
            b"plain",
            &[0u8, 0x7f, 0xff],
        ] {
            let mut out = Vec::new();
            escape_value(id, &mut out);
            assert!(!out.contains(&b'\n') && !out.contains(&b' '));
            assert_eq!(unescape_value(&out).unwrap(), id);
        }
        assert_eq!(unescape_value(b"%4"), None);
        assert_eq!(unescape_value(b"%zz"), None);
    }

    #[test]
    fn prefixes() {
        assert!(check_prefix("sg").is_ok());
        assert!(check_prefix("test-123_a.b").is_ok());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("a b").is_err());
        assert!(check_prefix("a:b").is_err());
        assert!(check_prefix(&"x".repeat(33)).is_err());
    }
}
