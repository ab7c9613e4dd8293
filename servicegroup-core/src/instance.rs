//! Who holds a member: [`InstanceId`] (one per [`crate::ServiceGroup`] handle) and
//! [`Holder`] (an instance and its epoch, the fencing token).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The identity of one [`crate::ServiceGroup`] handle: 128 random bits, shown as
/// 32 lowercase hex digits. Every record a handle registers names it, so a second
/// process claiming the same member is noticed (takeover, `Conflict`, fencing).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(u128);

impl InstanceId {
    /// The instance of records written before records named their holder (all
    /// zeros). No handle ever has it.
    pub const NIL: InstanceId = InstanceId(0);

    /// A new random instance id from the operating system's random source.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        loop {
            if getrandom::fill(&mut bytes).is_err() {
                // No OS randomness (never seen on Linux): fall back to std's
                // randomly keyed hasher, mixed with the time and the process id.
                bytes = fallback_random();
            }
            let id = u128::from_be_bytes(bytes);
            if id != 0 {
                return Self(id);
            }
        }
    }

    /// The id of these 128 bits.
    pub const fn from_u128(bits: u128) -> Self {
        Self(bits)
    }

    /// The 128 bits of the id.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The id as 16 big-endian bytes (for backends that store binary).
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The id of 16 big-endian bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(bytes))
    }

    /// The id as 32 lowercase hex digits (its `Display` form).
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Parses 32 hex digits (either case). Anything else is an
    /// [`crate::ErrorKind::InvalidId`] error naming what was wrong.
    pub fn parse(text: &str) -> Result<Self> {
        let valid = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            let shown: String = text.chars().take(40).collect();
            return Err(Error::invalid_id(format!(
                "invalid instance id {shown:?}: expected 32 hex digits"
            )));
        }
        u128::from_str_radix(text, 16)
            .map(Self)
            .map_err(|e| Error::invalid_id(format!("invalid instance id {text:?}: {e}")))
    }
}

fn fallback_random() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let mut out = [0u8; 16];
    for (i, half) in out.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        half.copy_from_slice(&h.finish().to_be_bytes());
    }
    out
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({:032x})", self.0)
    }
}

impl FromStr for InstanceId {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Self::parse(text)
    }
}

impl Serialize for InstanceId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InstanceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(|e| serde::de::Error::custom(e.message()))
    }
}

/// Who holds a record: the instance that registered it and the record's epoch.
///
/// The epoch is 1 when a member is first registered and grows by one each time a
/// different instance takes the member over (it never changes while one instance
/// holds it). It is a fencing token: put it in your own writes and reject writes
/// carrying a smaller one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Holder {
    /// The holding instance.
    pub instance: InstanceId,
    /// The record's epoch.
    pub epoch: u64,
}

impl Holder {
    /// A holder.
    pub const fn new(instance: InstanceId, epoch: u64) -> Self {
        Self { instance, epoch }
    }

    /// The holder of records written before records named their holder
    /// ([`InstanceId::NIL`], epoch 0).
    pub const UNKNOWN: Holder = Holder::new(InstanceId::NIL, 0);

    /// The epoch a registration by `instance` gives a record held by `self`:
    /// unchanged when `instance` already holds it, one more otherwise.
    /// (A new record starts at 1.) The one place of this rule for every driver.
    pub fn next_epoch(self, instance: InstanceId) -> u64 {
        if self.instance == instance {
            self.epoch.max(1)
        } else {
            self.epoch.saturating_add(1)
        }
    }
}

impl fmt::Display for Holder {
    /// `instance <hex> (epoch <n>)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "instance {} (epoch {})", self.instance, self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_differ_and_round_trip_as_hex() {
        let a = InstanceId::random();
        let b = InstanceId::random();
        assert_ne!(a, b);
        assert_ne!(a, InstanceId::NIL);
        let hex = a.to_string();
        assert_eq!(hex.len(), 32);
        assert!(hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(hex.parse::<InstanceId>().unwrap(), a);
        assert_eq!(InstanceId::parse(&hex.to_uppercase()).unwrap(), a);
        assert_eq!(InstanceId::from_bytes(a.to_bytes()), a);
    }

    #[test]
    fn bad_hex_is_invalid_id() {
        for bad in [
            "",
            "abc",
            &"g".repeat(32),
            &"0".repeat(33),
            " 0000000000000000000000000000000",
        ] {
            let e = InstanceId::parse(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidId, "{bad:?}");
            assert!(e.message().contains("32 hex digits"), "{e}");
        }
    }

    #[test]
    fn epoch_moves_only_on_takeover() {
        let a = InstanceId::from_u128(1);
        let b = InstanceId::from_u128(2);
        let held = Holder::new(a, 3);
        assert_eq!(held.next_epoch(a), 3);
        assert_eq!(held.next_epoch(b), 4);
        assert_eq!(Holder::UNKNOWN.next_epoch(a), 1);
        assert_eq!(held.to_string(), format!("instance {a} (epoch 3)"));
    }
}
