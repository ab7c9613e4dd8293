//! Values of the index keys: a group's index buckets and a server's group list.
//!
//! Both hold one escaped id per line ([`crate::keys::escape_value`]), are kept
//! without TTL, grow by memcached `append` (atomic on the server, so concurrent
//! joins from many processes never overwrite each other) and shrink by a
//! compare-and-swap rewrite. A line may appear twice after two processes
//! registered the same member at the same moment; readers deduplicate and a
//! removal strips every copy.

use std::collections::{BTreeSet, HashSet};

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

/// Calls `f` with each id of an index value, in order, duplicates included (the
/// same ids as [`parse`], without building a set): lines without an escape are
/// passed as they are, without allocating. Returns the count of malformed lines.
pub fn for_each(value: &[u8], mut f: impl FnMut(&[u8])) -> usize {
    let mut malformed = 0;
    for raw in value.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if raw.contains(&b'%') {
            match unescape_value(raw) {
                Some(id) if !id.is_empty() => f(&id),
                _ => malformed += 1,
            }
        } else {
            f(raw);
        }
    }
    malformed
}

/// Which of `wanted` (raw ids) are in an index value: the same answer as
/// looking them up in [`parse`]'s set, without building that set. Only lines with
/// an escape are decoded (and allocate); the others are compared as they are, so
/// a scan of a large bucket for a few ids costs no allocation per line.
pub fn find<'a>(value: &[u8], wanted: &HashSet<&'a [u8]>) -> HashSet<&'a [u8]> {
    let mut found = HashSet::with_capacity(wanted.len());
    if wanted.is_empty() {
        return found;
    }
    for raw in value.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let hit = if raw.contains(&b'%') {
            match unescape_value(raw) {
                Some(id) if !id.is_empty() => wanted.get(id.as_slice()).copied(),
                _ => None,
            }
        } else {
            wanted.get(raw).copied()
        };
        if let Some(id) = hit {
            found.insert(id);
            if found.len() == wanted.len() {
                break;
            }
        }
    }
    found
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

    #[test]
    fn find_agrees_with_parse() {
        let mut v = Vec::new();
        for id in [&b"a"[..], b"b c", b"a", b"x\r\ny", b"100%", b"plain"] {
            v.extend(line(id));
        }
        // A lowercase (non-canonical) escape and a malformed line decode as parse does.
        v.extend_from_slice(b"%7a\n%zz\n\n");
        let (all, _) = parse(&v);
        let candidates: Vec<&[u8]> = vec![
            b"a", b"b c", b"x\r\ny", b"100%", b"z", b"nope", b"%zz", b"b",
        ];
        let wanted: HashSet<&[u8]> = candidates.iter().copied().collect();
        let found = find(&v, &wanted);
        for id in candidates {
            assert_eq!(found.contains(id), all.contains(id), "{id:?}");
        }
        assert!(find(&v, &HashSet::new()).is_empty());
        let mut seen = BTreeSet::new();
        let bad = for_each(&v, |id| {
            seen.insert(id.to_vec());
        });
        assert_eq!((seen, bad), parse(&v));
    }
}
