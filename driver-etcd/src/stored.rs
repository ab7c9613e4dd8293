//! The values this driver stores (JSON), and how a record's freshness and last
//! heartbeat follow from them.
//!
//! Times are unix milliseconds of the writing host's clock: informational
//! (`last_heartbeat`, `holder_since`), never used for liveness, which is etcd's own
//! lease expiry (the alive key is there or not).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use servicegroup_core::{Freshness, Holder, InstanceId, MemberKey, MemberRecord, Metadata};

/// A member's record (`P/r/<group>\0<member>`, no lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Format version (1).
    pub v: u32,
    /// The holding instance.
    pub i: InstanceId,
    /// The epoch.
    pub e: u64,
    /// When the holder registered (ms).
    pub s: i64,
    /// The last heartbeat known once the alive key is gone: the registration, or the
    /// last beat of a member whose holder stopped heartbeating it (ms).
    pub b: i64,
    /// The lease (hex) whose beat key tells this member's last heartbeat, while its
    /// heartbeats ride on its holder's lease; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub l: String,
    /// Forced down by an operator.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub f: bool,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub m: Metadata,
}

impl Record {
    pub(crate) fn holder(&self) -> Holder {
        Holder::new(self.i, self.e)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Self, String> {
        let record: Record = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        if record.v != 1 {
            return Err(format!(
                "unknown record format {} (this driver writes 1)",
                record.v
            ));
        }
        Ok(record)
    }
}

/// The alive key's value (`P/a/<group>\0<member>`, on a lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Alive {
    /// The holding instance.
    pub i: InstanceId,
    /// The epoch.
    pub e: u64,
    /// The lease (hex) whose beat key tells the last heartbeat; empty when the
    /// member's holder stopped heartbeating it and `t` is its last heartbeat.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub l: String,
    /// The last heartbeat when `l` is empty, else the registration (ms).
    pub t: i64,
}

impl Alive {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(value).map_err(|e| e.to_string())
    }
}

/// A beat key's value (`P/b/<lease>`): when the lease was last kept alive (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Beat {
    /// The time of the keep-alive (ms).
    pub t: i64,
}

/// The lease id as the `l` fields write it.
pub(crate) fn lease_hex(lease: i64) -> String {
    format!("{lease:x}")
}

/// This host's clock, unix ms.
pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn time(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// The alive key if it is the record's holder's (another holder's, left by a
/// takeover, does not make this one fresh).
pub(crate) fn holders_alive<'a>(record: &Record, alive: Option<&'a Alive>) -> Option<&'a Alive> {
    alive.filter(|a| a.i == record.i && a.e == record.e)
}

/// Fresh while the holder's alive key exists.
pub(crate) fn freshness(holders_alive: Option<&Alive>) -> Freshness {
    match holders_alive {
        Some(_) => Freshness::Present,
        None => Freshness::Absent,
    }
}

/// The record core sees: fresh while an alive key of the same holder exists; the
/// last heartbeat from the beat key of the lease it rides on (`beat_of`), else from
/// the alive key or the record.
pub(crate) fn member_record(
    key: MemberKey,
    record: Record,
    alive: Option<&Alive>,
    beat_of: impl Fn(&str) -> Option<i64>,
) -> MemberRecord {
    let alive = holders_alive(&record, alive);
    let beat = match alive {
        Some(a) if !a.l.is_empty() => beat_of(&a.l).unwrap_or(a.t),
        Some(a) => a.t,
        None if !record.l.is_empty() => beat_of(&record.l).unwrap_or(record.b),
        None => record.b,
    };
    MemberRecord {
        key,
        last_heartbeat: time(beat.max(record.b)),
        freshness: freshness(alive),
        forced_down: record.f,
        holder: record.holder(),
        holder_since: time(record.s),
        metadata: record.m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use servicegroup_core::{GroupId, MemberId};

    fn record() -> Record {
        Record {
            v: 1,
            i: InstanceId::from_u128(7),
            e: 2,
            s: 1_000,
            b: 2_000,
            l: lease_hex(0xab),
            f: false,
            m: Metadata::from_pairs([("zone", "a")]).unwrap(),
        }
    }

    fn key() -> MemberKey {
        MemberKey::new(GroupId::new("g").unwrap(), MemberId::new("m").unwrap())
    }

    #[test]
    fn records_round_trip() {
        let r = record();
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        assert!(Record::decode(b"{}").is_err());
        assert!(Record::decode(
            br#"{"v":2,"i":"00000000000000000000000000000007","e":1,"s":0,"b":0}"#
        )
        .unwrap_err()
        .contains("unknown record format 2"));
    }

    #[test]
    fn freshness_follows_the_alive_key_of_the_same_holder() {
        let alive = Alive {
            i: InstanceId::from_u128(7),
            e: 2,
            l: lease_hex(0xab),
            t: 1_500,
        };
        let m = member_record(key(), record(), Some(&alive), |l| {
            (l == "ab").then_some(9_000)
        });
        assert_eq!(m.freshness, Freshness::Present);
        assert_eq!(m.last_heartbeat.unwrap().timestamp_millis(), 9_000);
        let stale = Alive { e: 1, ..alive };
        let m = member_record(key(), record(), Some(&stale), |_| Some(9_000));
        assert_eq!(m.freshness, Freshness::Absent);
        // The lease's last beat, once the alive key expired with it.
        assert_eq!(m.last_heartbeat.unwrap().timestamp_millis(), 9_000);
        let m = member_record(key(), record(), None, |_| None);
        assert_eq!(m.last_heartbeat.unwrap().timestamp_millis(), 2_000);
    }
}
