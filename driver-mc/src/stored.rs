//! The values of a member's record and heartbeat keys, and their decoding.
//!
//! - **Record** (`P:r2:G:M`, no TTL): one header line and the metadata,
//!   `1 <instance> <epoch> <holder_since_ms> <registered_ms>\n<metadata>`.
//!   `1` is the format version, `<instance>` 32 lowercase hex digits, times are
//!   unix milliseconds of the registering host's clock (informational), and
//!   `<metadata>` is [`Metadata::to_json`], or nothing when there is none. The record
//!   is written only by registrations and `set_metadata`, never by heartbeats, so
//!   its CAS token changes only when its holder or metadata does.
//! - **Heartbeat** (`P:h2:G:M`): `<instance>`, the instance that wrote it, with the
//!   low 32 bits of the heartbeat time (unix ms, this host's clock, informational)
//!   in memcached's client flags ([`beat_flags`], [`beat_time`]).
//!
//! A value that does not decode is reported with the reason; callers turn it into a
//! `Backend` error naming the server and the key. Nothing here panics on bad input.

use servicegroup_core::{Holder, InstanceId, Metadata};

/// The format version written first in every record.
const VERSION: &str = "1";

/// What a member record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The holding instance and the record's epoch.
    pub holder: Holder,
    /// When the current holder registered (unix ms, registering host's clock).
    pub holder_since_ms: u64,
    /// When the record was last registered (unix ms): the last heartbeat known
    /// once the heartbeat key itself is gone.
    pub registered_ms: u64,
    /// The member's metadata.
    pub metadata: Metadata,
}

impl StoredRecord {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let metadata = if self.metadata.is_empty() {
            String::new()
        } else {
            self.metadata.to_json()
        };
        format!(
            "{VERSION} {} {} {} {}\n{metadata}",
            self.holder.instance, self.holder.epoch, self.holder_since_ms, self.registered_ms
        )
        .into_bytes()
    }

    /// Reads [`Self::encode`]'s form back; the error says what is wrong with it.
    pub fn decode(value: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8".to_owned())?;
        let (header, metadata) = text.split_once('\n').unwrap_or((text, ""));
        let mut fields = header.split(' ');
        let version = fields.next().unwrap_or_default();
        if version != VERSION {
            return Err(format!(
                "unknown record format {:?} (this driver writes format {VERSION})",
                shown(version)
            ));
        }
        let instance = instance(fields.next())?;
        let epoch = number(fields.next(), "epoch")?;
        let holder_since_ms = number(fields.next(), "holder_since")?;
        let registered_ms = number(fields.next(), "registered")?;
        if fields.next().is_some() {
            return Err("the header has more than five fields".to_owned());
        }
        let metadata = Metadata::from_json(metadata).map_err(|e| e.message().to_owned())?;
        Ok(Self {
            holder: Holder::new(instance, epoch),
            holder_since_ms,
            registered_ms,
            metadata,
        })
    }
}

/// The heartbeat key's value: the instance that wrote it.
pub fn encode_beat(instance: InstanceId) -> Vec<u8> {
    instance.to_hex().into_bytes()
}

/// Reads [`encode_beat`]'s form back.
pub fn decode_beat(value: &[u8]) -> Result<InstanceId, String> {
    let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8".to_owned())?;
    instance(Some(text))
}

/// The client flags a heartbeat key is written with: the low 32 bits of the
/// heartbeat's unix time in milliseconds. memcached returns an item's flags with
/// every read, so a listing learns the heartbeat time without reading the value.
pub fn beat_flags(at_ms: u64) -> u32 {
    (at_ms & 0xffff_ffff) as u32
}

/// The heartbeat time (unix ms) of a heartbeat key read with `flags` and
/// `remaining` seconds of its TTL, written with a TTL of `key_ttl` seconds, read at
/// `now_ms` (this host's clock). The remaining TTL dates the write to within a few
/// seconds (memcached's clock against this host's); the flags give the exact
/// milliseconds, which repeat only every 2^32 ms (49 days).
pub fn beat_time(flags: u32, remaining: Option<i64>, key_ttl: u32, now_ms: u64) -> u64 {
    const WRAP: i128 = 1 << 32;
    let age_secs = remaining.map_or(0, |t| (i64::from(key_ttl) - t).max(0));
    let estimate = i128::from(now_ms) - i128::from(age_secs) * 1000;
    let low = i128::from(flags);
    let base = estimate - estimate.rem_euclid(WRAP) + low;
    let best = [base - WRAP, base, base + WRAP]
        .into_iter()
        .min_by_key(|candidate| (candidate - estimate).abs())
        .unwrap_or(base);
    u64::try_from(best.max(0)).unwrap_or(0)
}

fn instance(field: Option<&str>) -> Result<InstanceId, String> {
    let field = field.ok_or_else(|| "the instance is missing".to_owned())?;
    InstanceId::parse(field).map_err(|e| e.message().to_owned())
}

fn number(field: Option<&str>, what: &str) -> Result<u64, String> {
    let field = field.ok_or_else(|| format!("the {what} is missing"))?;
    field
        .parse()
        .map_err(|_| format!("the {what} {:?} is not a number", shown(field)))
}

fn shown(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(metadata: Metadata) -> StoredRecord {
        StoredRecord {
            holder: Holder::new(InstanceId::from_u128(0xabc), 7),
            holder_since_ms: 1_700_000_000_123,
            registered_ms: 1_700_000_001_456,
            metadata,
        }
    }

    #[test]
    fn records_round_trip() {
        let empty = record(Metadata::new());
        let bytes = empty.encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "1 00000000000000000000000000000abc 7 1700000000123 1700000001456\n"
        );
        assert_eq!(StoredRecord::decode(&bytes).unwrap(), empty);

        let md = Metadata::from_pairs([
            ("address", "10.0.0.1:8774"),
            ("note", "line one\nline two ✓ \"quoted\""),
        ])
        .unwrap();
        let full = record(md);
        assert_eq!(StoredRecord::decode(&full.encode()).unwrap(), full);
    }

    #[test]
    fn bad_records_are_errors() {
        for (bad, why) in [
            (&b""[..], "unknown record format"),
            (b"12345", "unknown record format"),
            (b"2 x", "unknown record format"),
            (b"1 nothex 1 2 3\n", "32 hex digits"),
            (b"1 00000000000000000000000000000abc x 2 3\n", "epoch"),
            (
                b"1 00000000000000000000000000000abc 1 2\n",
                "registered is missing",
            ),
            (
                b"1 00000000000000000000000000000abc 1 2 3 4\n",
                "more than five",
            ),
            (
                b"1 00000000000000000000000000000abc 1 2 3\n[1]",
                "JSON object",
            ),
            (b"\xff\xfe", "UTF-8"),
        ] {
            let e = StoredRecord::decode(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn beats_round_trip() {
        let id = InstanceId::from_u128(u128::MAX - 5);
        assert_eq!(decode_beat(&encode_beat(id)).unwrap(), id);
        assert!(decode_beat(b"1700000000000").is_err());
        assert!(decode_beat(b"").is_err());
    }

    #[test]
    fn beat_times_come_back_from_flags_and_remaining_ttl() {
        let ttl = 2_592_000;
        for at in [
            1_764_000_000_000u64,
            1_764_000_000_000 + (1 << 32) - 1,
            (1 << 32) * 411,
            (1 << 32) * 411 - 1,
            5,
        ] {
            let flags = beat_flags(at);
            // Read at once, 1 s later, 20 days later, with a few seconds of skew
            // between this host and memcached either way.
            for (age_secs, skew_ms) in [(0, 0), (1, -900), (20 * 86_400, 4_000), (59, -7_000)] {
                let now = (at + age_secs * 1000).saturating_add_signed(skew_ms);
                let remaining = Some(i64::from(ttl) - age_secs as i64);
                assert_eq!(
                    beat_time(flags, remaining, ttl, now),
                    at,
                    "{at} {age_secs} {skew_ms}"
                );
            }
        }
    }
}
