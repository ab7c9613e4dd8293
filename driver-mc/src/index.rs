//! Values of the index keys: a group's index buckets and a server's group list.
//!
//! Both hold one escaped id per line ([`crate::keys::escape_value`]), are kept
//! without TTL, grow by memcached `append` (atomic on the server, so concurrent
//! joins from many processes never overwrite each other) and shrink by a
//! compare-and-swap rewrite. A line may appear twice after two processes
//! registered the same member at the same moment; readers deduplicate and a
//! removal strips every copy.

use std::collections::BTreeSet;

use crate::keys::{escape_value, unescape_value};

/// Index buckets per group and server. A bucket holds the ids of the group's
/// members placed on that server whose id hashes to it; 64 keep each bucket well
/// under memcached's default 1 MiB item size up to about a million members of
/// 30-byte ids per group and server.
pub const BUCKETS: u32 = 64;

/// One line of an index value for `id`.
pub fn line(id: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(id.len() + 1);
    escape_value(id, &mut out);
    out.push(b'\n');
    out
}

/// The ids in an index value, deduplicated. Malformed lines (never written by
/// this crate) are skipped and counted in the second element.
pub fn parse(value: &[u8]) -> (BTreeSet<Vec<u8>>, usize) {
    let mut ids = BTreeSet::new();
    let mut malformed = 0;
    for raw in value.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match unescape_value(raw) {
            Some(id) if !id.is_empty() => {
                ids.insert(id);
            }
            _ => malformed += 1,
        }
    }
    (ids, malformed)
}

/// The value without any line for `id`; `None` when `id` was not in it.
pub fn without(value: &[u8], id: &[u8]) -> Option<Vec<u8>> {
    let wanted = line(id);
    let wanted = &wanted[..wanted.len() - 1];
    let mut found = false;
    let mut out = Vec::with_capacity(value.len());
    for raw in value.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if raw == wanted {
            found = true;
        } else {
            out.extend_from_slice(raw);
            out.push(b'\n');
        }
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_dedupe() {
        let mut v = Vec::new();
        for id in [&b"a"[..], b"b c", b"a", b"x\r\ny"] {
            v.extend(line(id));
        }
        let (ids, bad) = parse(&v);
        assert_eq!(bad, 0);
        assert_eq!(ids.len(), 3);
        assert!(ids.contains(b"b c".as_slice()) && ids.contains(b"x\r\ny".as_slice()));
        let w = without(&v, b"a").unwrap();
        assert_eq!(parse(&w).0.len(), 2);
        assert!(without(&w, b"a").is_none());
        assert_eq!(parse(b"ok\n%zz\n\n").1, 1);
    }
}
