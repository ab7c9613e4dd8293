//! The value of a member's keys (format 3) and its decoding.
//!
//! The live record (`P:m3:G:M`, 30-day TTL) and the durable record (`P:d3:G:M`,
//! no TTL) hold the same form: one header line, the metadata as JSON (nothing when
//! empty), and, in the live record only, patch lines appended by changes that must
//! keep the item's TTL:
//!
//! ```text
//! 3 <instance> <epoch> <holder_since_ms> <registered_ms> <rev> <forced> <live> <beat_ms>
//! <metadata JSON>
//! p <rev> <forced> <metadata JSON>        (zero or more)
//! ```
//!
//! - `instance`: 32 hex digits (the holder), `epoch`: the holder's epoch;
//! - `holder_since_ms`, `registered_ms`, `beat_ms`: this host's wall clock when the
//!   holder took the member, when it registered last, and of the heartbeat that
//!   wrote the value (13 digits, zero-padded, so a heartbeat rewrites it in place);
//! - `rev`: counts the changes of holder, metadata and forced-down flag (not
//!   heartbeats); orders the copies of the record (the durable record is written only
//!   with a higher `rev`);
//! - `forced`: `1` = forced down; `live`: `1` when a heartbeat or registration wrote
//!   the value, `0` when another call had to create the live record (the member
//!   is then not fresh, whatever the TTL says);
//! - a patch line (`set_metadata`, `set_forced_down` on a live record: memcached's
//!   append keeps the item's TTL exactly) replaces `rev`, `forced` and the metadata;
//!   the next heartbeat writes the value compacted again.
//!
//! JSON text never holds a raw newline (strings escape it), so lines split cleanly.

use servicegroup_core::{Holder, InstanceId, Metadata};

/// The format digit of this module's values.
const FORMAT: &[u8] = b"3 ";
/// Width of the heartbeat time field (unix ms, zero-padded: until the year 2286).
pub const BEAT_DIGITS: usize = 13;

/// A member's record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Holder and epoch.
    pub holder: Holder,
    /// When the holder took the member (unix ms, informational).
    pub holder_since_ms: u64,
    /// When the member was last registered (unix ms, informational).
    pub registered_ms: u64,
    /// Changes of holder, metadata and forced-down flag.
    pub rev: u32,
    /// Forced down by an operator.
    pub forced: bool,
    /// Written by a heartbeat or registration (see the module docs).
    pub live: bool,
    /// The heartbeat that wrote the value (unix ms, informational).
    pub beat_ms: u64,
    /// The member's metadata.
    pub metadata: Metadata,
}

fn push_hex(out: &mut Vec<u8>, bits: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..32).rev() {
        out.push(HEX[((bits >> (i * 4)) & 0xf) as usize]);
    }
}

fn push_number(out: &mut Vec<u8>, n: u64) {
    use std::io::Write;
    // Writing to a `Vec` cannot fail.
    let _ = write!(out, "{n}");
}

/// The 13 digits of a heartbeat time, or `None` past the year 2286.
pub fn beat_digits(ms: u64) -> Option<[u8; BEAT_DIGITS]> {
    if ms >= 10u64.pow(BEAT_DIGITS as u32) {
        return None;
    }
    let mut out = [b'0'; BEAT_DIGITS];
    let mut n = ms;
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    Some(out)
}

fn push_metadata(out: &mut Vec<u8>, metadata: &Metadata) {
    if !metadata.is_empty() {
        out.extend_from_slice(metadata.to_json().as_bytes());
    }
}

impl StoredRecord {
    /// The value (compacted: no patch lines).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(FORMAT);
        push_hex(&mut out, self.holder.instance.as_u128());
        for n in [
            self.holder.epoch,
            self.holder_since_ms,
            self.registered_ms,
            u64::from(self.rev),
        ] {
            out.push(b' ');
            push_number(&mut out, n);
        }
        out.extend_from_slice(if self.forced { b" 1" } else { b" 0" });
        out.extend_from_slice(if self.live { b" 1 " } else { b" 0 " });
        match beat_digits(self.beat_ms) {
            Some(digits) => out.extend_from_slice(&digits),
            None => push_number(&mut out, self.beat_ms),
        }
        out.push(b'\n');
        push_metadata(&mut out, &self.metadata);
        out
    }

    /// A patch line that sets `rev`, `forced` and the metadata (appended to a live
    /// record).
    pub fn patch(rev: u32, forced: bool, metadata: &Metadata) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(b"\np ");
        push_number(&mut out, u64::from(rev));
        out.extend_from_slice(if forced { b" 1 " } else { b" 0 " });
        push_metadata(&mut out, metadata);
        out
    }

    /// Reads a value back (patch lines applied). An error names what is wrong.
    pub fn decode(value: &[u8]) -> Result<Self, String> {
        let Some(rest) = value.strip_prefix(FORMAT) else {
            return Err(format!(
                "unknown record format (expected a format-3 record, found {:?})",
                shown(value)
            ));
        };
        let mut lines = rest.split(|&b| b == b'\n');
        let header = lines.next().unwrap_or_default();
        let Some(base) = lines.next() else {
            return Err("the record has no metadata line".to_owned());
        };
        let mut fields = header.split(|&b| b == b' ');
        let instance = instance(fields.next())?;
        let epoch = number(fields.next(), "epoch")?;
        let holder_since_ms = number(fields.next(), "holder_since")?;
        let registered_ms = number(fields.next(), "registered")?;
        let mut rev = revision(fields.next())?;
        let mut forced = flag(fields.next(), "forced")?;
        let live = flag(fields.next(), "live")?;
        let beat_ms = number(fields.next(), "heartbeat time")?;
        if fields.next().is_some() {
            return Err("the header has more than nine fields".to_owned());
        }
        let mut metadata = base;
        for line in lines {
            let Some(patch) = line.strip_prefix(b"p ") else {
                return Err(format!("unknown line {:?} in the record", shown(line)));
            };
            let mut parts = patch.splitn(3, |&b| b == b' ');
            rev = revision(parts.next())?;
            forced = flag(parts.next(), "forced")?;
            metadata = parts.next().unwrap_or_default();
        }
        let metadata = if metadata.is_empty() {
            Metadata::new()
        } else {
            let text = std::str::from_utf8(metadata)
                .map_err(|_| "the metadata is not UTF-8".to_owned())?;
            Metadata::from_json(text).map_err(|e| e.message().to_owned())?
        };
        Ok(Self {
            holder: Holder::new(instance, epoch),
            holder_since_ms,
            registered_ms,
            rev,
            forced,
            live,
            beat_ms,
            metadata,
        })
    }
}

/// Where the header line of an encoded value ends (its `\n`), if the value ends
/// its header with ` <live> <13 digits>`, so [`set_beat`] can rewrite them.
pub fn header_end(value: &[u8]) -> Option<usize> {
    let end = value.iter().position(|&b| b == b'\n')?;
    let beat = end.checked_sub(BEAT_DIGITS)?;
    let live = beat.checked_sub(2)?;
    let ok = value[beat..end].iter().all(u8::is_ascii_digit)
        && value[beat - 1] == b' '
        && matches!(value[live], b'0' | b'1')
        && live >= 1
        && value[live - 1] == b' ';
    ok.then_some(end)
}

/// Rewrites, in an encoded value whose header ends at `end` ([`header_end`]), the
/// `live` flag to 1 and the heartbeat time to `digits`.
pub fn set_beat(value: &mut [u8], end: usize, digits: &[u8; BEAT_DIGITS]) {
    value[end - BEAT_DIGITS..end].copy_from_slice(digits);
    value[end - BEAT_DIGITS - 2] = b'1';
}

fn instance(field: Option<&[u8]>) -> Result<InstanceId, String> {
    let field = field.ok_or_else(|| "the instance is missing".to_owned())?;
    if field.len() != 32 {
        return Err(format!(
            "invalid instance id {:?}: expected 32 hex digits",
            shown(field)
        ));
    }
    let mut bits: u128 = 0;
    for &b in field {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => {
                return Err(format!(
                    "invalid instance id {:?}: expected 32 hex digits",
                    shown(field)
                ))
            }
        };
        bits = (bits << 4) | u128::from(digit);
    }
    Ok(InstanceId::from_u128(bits))
}

fn number(field: Option<&[u8]>, what: &str) -> Result<u64, String> {
    let field = field.ok_or_else(|| format!("the {what} is missing"))?;
    let mut n: u64 = 0;
    if field.is_empty() || field.len() > 20 {
        return Err(format!("the {what} {:?} is not a number", shown(field)));
    }
    for &b in field {
        if !b.is_ascii_digit() {
            return Err(format!("the {what} {:?} is not a number", shown(field)));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| format!("the {what} {:?} is too large", shown(field)))?;
    }
    Ok(n)
}

fn revision(field: Option<&[u8]>) -> Result<u32, String> {
    let n = number(field, "revision")?;
    u32::try_from(n).map_err(|_| format!("the revision {n} is too large"))
}

fn flag(field: Option<&[u8]>, what: &str) -> Result<bool, String> {
    match field {
        Some(b"0") => Ok(false),
        Some(b"1") => Ok(true),
        Some(other) => Err(format!("the {what} flag {:?} is not 0 or 1", shown(other))),
        None => Err(format!("the {what} flag is missing")),
    }
}

fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(metadata: Metadata) -> StoredRecord {
        StoredRecord {
            holder: Holder::new(InstanceId::from_u128(0xabc), 7),
            holder_since_ms: 1_700_000_000_123,
            registered_ms: 1_700_000_001_456,
            rev: 3,
            forced: false,
            live: true,
            beat_ms: 1_700_000_002_789,
            metadata,
        }
    }

    #[test]
    fn records_round_trip() {
        let empty = record(Metadata::new());
        let bytes = empty.encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "3 00000000000000000000000000000abc 7 1700000000123 1700000001456 3 0 1 1700000002789\n"
        );
        assert_eq!(StoredRecord::decode(&bytes).unwrap(), empty);

        let md = Metadata::from_pairs([
            ("address", "10.0.0.1:8774"),
            ("note", "line one\nline two ✓ \"quoted\" p 1 1"),
        ])
        .unwrap();
        let full = StoredRecord {
            forced: true,
            live: false,
            beat_ms: 5,
            ..record(md)
        };
        let bytes = full.encode();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(StoredRecord::decode(&bytes).unwrap(), full);
    }

    #[test]
    fn patches_replace_rev_forced_and_metadata() {
        let base = record(Metadata::from_pairs([("a", "1")]).unwrap());
        let mut value = base.encode();
        let md = Metadata::from_pairs([("b", "two words")]).unwrap();
        value.extend(StoredRecord::patch(4, true, &md));
        let got = StoredRecord::decode(&value).unwrap();
        assert_eq!((got.rev, got.forced, &got.metadata), (4, true, &md));
        value.extend(StoredRecord::patch(5, false, &Metadata::new()));
        let got = StoredRecord::decode(&value).unwrap();
        assert_eq!((got.rev, got.forced), (5, false));
        assert!(got.metadata.is_empty());
        assert_eq!(got.holder, base.holder);
        assert_eq!(got.beat_ms, base.beat_ms);
    }

    #[test]
    fn heartbeats_rewrite_live_and_time_in_place() {
        let stale = StoredRecord {
            live: false,
            ..record(Metadata::from_pairs([("zone", "a")]).unwrap())
        };
        let mut value = stale.encode();
        let end = header_end(&value).unwrap();
        set_beat(&mut value, end, &beat_digits(1_800_000_000_001).unwrap());
        let got = StoredRecord::decode(&value).unwrap();
        assert!(got.live);
        assert_eq!(got.beat_ms, 1_800_000_000_001);
        assert_eq!(got.metadata, stale.metadata);
        assert_eq!(beat_digits(7).unwrap(), *b"0000000000007");
        assert!(beat_digits(10_000_000_000_000).is_none());
        assert!(header_end(b"3 x\n").is_none());
    }

    #[test]
    fn bad_records_are_errors() {
        for (bad, why) in [
            (&b""[..], "unknown record format"),
            (b"1 00000000000000000000000000000abc 1 2 3\n", "format-3"),
            (b"3 nothex 1 2 3 1 0 1 4\n", "32 hex digits"),
            (
                b"3 00000000000000000000000000000abc x 2 3 1 0 1 4\n",
                "epoch",
            ),
            (
                b"3 00000000000000000000000000000abc 1 2 3 1 0 1\n",
                "heartbeat time is missing",
            ),
            (
                b"3 00000000000000000000000000000abc 1 2 3 1 2 1 4\n",
                "forced flag",
            ),
            (
                b"3 00000000000000000000000000000abc 1 2 3 1 0 1 4 5\n",
                "more than nine",
            ),
            (
                b"3 00000000000000000000000000000abc 1 2 3 1 0 1 4",
                "no metadata line",
            ),
            (
                b"3 00000000000000000000000000000abc 1 2 3 1 0 1 4\n[1]",
                "JSON object",
            ),
            (
                b"3 00000000000000000000000000000abc 1 2 3 1 0 1 4\n\nq 1",
                "unknown line",
            ),
            (
                b"3 00000000000000000000000000000abc 1 2 3 9999999999 0 1 4\n",
                "too large",
            ),
            (b"\xff\xfe", "unknown record format"),
        ] {
            let e = StoredRecord::decode(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
