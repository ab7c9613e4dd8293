//! [`Backend`]: the driver's operations on etcd.
//!
//! - **Registration** reads the records, decides per core's identity contract, and
//!   writes record, alive key (on the instance's lease) and group index in one
//!   transaction that compares each record's `mod_revision` with the one read, so
//!   two concurrent joins or takeovers of one member never both win.
//! - **Heartbeat** of an instance is one keep-alive of its lease and one put of the
//!   lease's beat key, whatever the number of members. Which records changed
//!   (takeover, removal) the driver learns from its fence watch
//!   ([`crate::fence`]); only those are read at the next tick. A lease etcd lost is
//!   granted again and every member is checked: those still held get their alive
//!   key back, the others are reported missing or superseded.
//! - A member the instance stopped heartbeating (crashed membership, handle still
//!   alive) gets its alive key moved to a lease of its own that expires
//!   `service_down_time` after its last heartbeat.
//!
//! One module per role: `lease` (the instances' leases and the beat keys),
//! `register`, `heartbeat`, `update` (holder and operator writes of one
//! record) and `read` (lookups and listings); this one holds the state and the
//! record reads they share. Listings are answered through [`crate::mirror`].

mod heartbeat;
mod lease;
mod read;
mod register;
mod update;

pub(crate) use read::Snapshot;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use servicegroup_core::{Error, Holder, MemberKey, Result};
use tokio::time::Instant;

use crate::client::Client;
use crate::holders::Instances;
use crate::keys::Keys;
use crate::kv::{Kv, ModIs, Op, Range};
use crate::mirror::Mirrors;
use crate::stored::Record;
use crate::{lock, NAME};

/// Attempts of a read-decide-write cycle whose compare failed before giving up.
const ATTEMPTS: usize = 8;

/// The driver's state and connection.
pub struct Backend {
    pub(crate) client: Client,
    pub(crate) keys: Keys,
    service_down_time: Duration,
    ttl: i64,
    pub(crate) instances: Mutex<Instances>,
    grant_lock: tokio::sync::Mutex<()>,
    beat_lease: tokio::sync::Mutex<Option<(i64, Instant)>>,
    pub(crate) fence_restart: Arc<tokio::sync::Notify>,
    fence_task: Mutex<Option<tokio::task::AbortHandle>>,
    heartbeat_requests: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) mirrors: Mirrors,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("client", &self.client)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.fence_task).take() {
            task.abort();
        }
    }
}

/// The record a key holds, or an error naming the key.
pub(crate) fn decode_record(kv: &Kv) -> Result<Record> {
    Record::decode(&kv.value).map_err(|why| {
        Error::backend(format!(
            "the etcd key {:?} holds no valid member record: {why}",
            String::from_utf8_lossy(&kv.key)
        ))
        .with_driver(NAME)
    })
}

/// A record read with its `mod_revision` (0: absent).
#[derive(Debug, Clone)]
struct Found {
    record: Option<Record>,
    revision: i64,
}

impl Found {
    fn holder(&self) -> Option<Holder> {
        self.record.as_ref().map(Record::holder)
    }
}

impl Backend {
    /// A backend on `client` with keys under `keys`, leases of `ceil(service_down_time)` s,
    /// group mirrors kept `mirror_idle` after their last listing (`None`: none).
    pub(crate) fn new(
        client: Client,
        keys: Keys,
        service_down_time: Duration,
        heartbeat_requests: Arc<std::sync::atomic::AtomicU64>,
        mirror_idle: Option<Duration>,
    ) -> Self {
        let secs = service_down_time.as_secs() + u64::from(service_down_time.subsec_nanos() > 0);
        Self {
            client,
            keys,
            service_down_time,
            ttl: i64::try_from(secs.max(1)).unwrap_or(i64::MAX),
            instances: Mutex::new(Instances::default()),
            grant_lock: tokio::sync::Mutex::new(()),
            beat_lease: tokio::sync::Mutex::new(None),
            fence_restart: Arc::new(tokio::sync::Notify::new()),
            fence_task: Mutex::new(None),
            heartbeat_requests,
            mirrors: Mirrors::new(mirror_idle),
        }
    }

    pub(crate) fn set_fence_task(&self, task: tokio::task::AbortHandle) {
        *lock(&self.fence_task) = Some(task);
    }

    /// The TTL of the instances' leases, in seconds.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// How far from `service_down_time` a verdict may flip: the TTL's rounding up to
    /// whole seconds, etcd's lease expiry check (every 500 ms) and the revocation's
    /// trip through raft.
    pub fn resolution(&self) -> Duration {
        let slack = Duration::from_secs(u64::try_from(self.ttl).unwrap_or(0))
            .saturating_sub(self.service_down_time);
        slack + Duration::from_millis(1500)
    }

    fn count_heartbeat_request(&self, n: u64) {
        self.heartbeat_requests
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// A put of `record` as the record of `key`, and the compare that lets it happen
    /// only while the record is still at `revision` (the one read; 0: absent): the
    /// guard of every read-decide-write of a record.
    fn guarded_put(&self, key: &MemberKey, revision: i64, record: &Record) -> (ModIs, Op) {
        let compare = ModIs {
            key: self.keys.record(key),
            revision,
        };
        let put = Op::Put {
            key: self.keys.record(key),
            value: record.encode(),
            lease: 0,
        };
        (compare, put)
    }

    /// The records of `keys` at one revision.
    async fn read_records(&self, keys: &[MemberKey]) -> Result<(i64, Vec<Found>)> {
        let ranges = keys
            .iter()
            .map(|k| Range::key(self.keys.record(k)))
            .collect();
        let (revision, answers) = self
            .client
            .ranges(ranges, 0)
            .await
            .map_err(|e| e.into_error("reading member records"))?;
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(match answer.kvs.first() {
                Some(kv) => Found {
                    record: Some(decode_record(kv)?),
                    revision: kv.mod_revision,
                },
                None => Found {
                    record: None,
                    revision: 0,
                },
            });
        }
        Ok((revision, out))
    }

    async fn read_record(&self, key: &MemberKey) -> Result<Found> {
        let (_, mut found) = self.read_records(std::slice::from_ref(key)).await?;
        found
            .pop()
            .ok_or_else(|| Error::backend("etcd answered no range").with_driver(NAME))
    }
}
