//! The memcached storage: what each driver call does on which server.
//!
//! Per member `(group, member)`, on the server [`Placement`] picks for it, with
//! prefix `P`:
//!
//! | key | value | TTL | meaning |
//! |---|---|---|---|
//! | `P:r2:G:M` (record) | holder instance, epoch, holder since, registered at, metadata ([`crate::stored`]) | none | the member exists, and who holds it |
//! | `P:h2:G:M` (heartbeat) | heartbeating instance; client flags: low 32 bits of the heartbeat wall time (unix ms) | 30 days | fresh while its remaining TTL is above 30 days − the liveness window |
//! | `P:f:G:M` (forced down) | `1` | none | present = forced down |
//! | `P:fi:G` (forced marker) | `1` | none | present = some member of G on this server may be forced down |
//! | `P:i:G:BB` (index bucket) | member ids, one per line | none | listing |
//! | `P:groups` | group ids, one per line | none | `groups()` |
//! | `P:boot` | random token | none | this life of the server (gone after a restart or flush) |
//!
//! **Liveness.** The heartbeat key is written with a TTL of 30 days (memcached's
//! largest relative TTL) and a member is fresh while memcached reports more than
//! `30 days − T` seconds left (`mg … t`), `T` = [`heartbeat_ttl`]: exactly when an
//! item written with TTL `T` would still exist, on memcached's own clock. The key
//! outlives the liveness window so that a crashed member keeps its last heartbeat
//! time (listed down with it) without heartbeats having to rewrite the record.
//!
//! **Fencing.** The record is written only when a member is registered (or its
//! metadata replaced), so its CAS token changes exactly when the holder (or the
//! metadata) does. The driver remembers, per member it holds, the record's CAS and
//! the CAS of its own last heartbeat write (module `cache`). A heartbeat is two
//! operations in the batch's one pipelined exchange: a value-less read of the
//! record's CAS, and a CAS-conditional write of the heartbeat key. A record whose
//! CAS moved, or a heartbeat key someone else wrote (`EX`), is looked at again, for
//! those rare keys only: held by the heartbeating instance → written again;
//! held by another → [`servicegroup_core::HeartbeatReport::superseded`], and the heartbeat key was not
//! refreshed; a record that is gone → [`servicegroup_core::HeartbeatReport::missing`]. The forced-down
//! flag is a key of its own that registrations and heartbeats never touch, so it
//! plays no part in fencing and survives takeover and re-registration.
//!
//! Index buckets and the group list only say where to look; entries without a
//! record are ignored, as are entries found on a server the member is not placed
//! on (left behind when the server list changed). A heartbeat that finds a held
//! member's index entry gone writes it again.

mod heartbeat;
mod pipeline;
mod register;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use memcache::exp::{Delete, Get, GetResult, Meta, MutationStatus, Op, OpResult, Set, Ttl};
use servicegroup_core::{
    Error, Freshness, GroupId, HolderUpdate, InstanceId, MemberId, MemberKey, MemberRecord,
    Metadata, Result,
};
use tokio::sync::Semaphore;

use crate::cache::{slot_of, ServerCache};
use crate::index::{self, BUCKETS};
use crate::keys::{GroupKeys, Keys};
use crate::placement::{bucket_of, Placement};
use crate::server::{get_at, mutation_at, Server};
use crate::stored::{beat_time, decode_beat, StoredRecord};
use crate::NAME;

pub use heartbeat::heartbeat_exchanges;

/// Members of one server whose heartbeats (or registrations) go out as one
/// sequence of pipelined exchanges; a larger share of a batch is split into parts
/// sent in parallel.
const PARALLEL_PART: usize = 5_000;

/// Work items (each one or a few pipelined exchanges in a row on one connection)
/// running at once per server; more wait for a slot. Two cores serve the whole
/// box here: more than a few in flight only add threads and connections, not
/// throughput, while a bounded set lets queued work be cancelled by core's
/// `call_timeout` before it starts.
pub const EXCHANGES_PER_SERVER: usize = 4;

/// Of the [`EXCHANGES_PER_SERVER`] slots, how many listings and other bulk
/// reads may hold at once: the rest stay free for heartbeats and joins.
pub const BULK_PER_SERVER: usize = 2;

/// memcached's largest relative TTL (30 days); larger values are absolute times.
pub const MAX_RELATIVE_TTL: u32 = 2_592_000;

/// Which queue a work item waits in (see [`Backend::on_servers`]).
#[derive(Debug, Clone, Copy)]
enum Lane {
    /// Heartbeats, joins, single-member calls: straight to the server's slots.
    Main,
    /// Listing parts: first one of [`BULK_PER_SERVER`] bulk permits, then a slot.
    Bulk,
}

/// Members per part of a listing; the parts of one server are read in parallel
/// (up to [`EXCHANGES_PER_SERVER`] at once), two or three keys per member.
const LIST_PART: usize = 5_000;

/// Attempts of a read-modify-write before giving up (each one only fails when
/// another process changed the key in between).
const MAX_ATTEMPTS: usize = 64;

/// The liveness window in whole seconds for `service_down_time`: a member is
/// fresh while its last heartbeat is younger than this on memcached's clock.
///
/// memcached counts time in whole seconds on a clock that ticks once a second, so
/// an item stored with TTL `T` disappears after more than `T - 1` and at most `T`
/// seconds; the driver judges the heartbeat key's remaining TTL by the same rule.
/// With `T = ceil(service_down_time) + 1` a member is never judged down before
/// `service_down_time` has passed since its last heartbeat, and always by
/// `ceil(service_down_time) + 1` seconds (60 s → down between 60 and 61 s).
pub fn heartbeat_ttl(service_down_time: Duration) -> u32 {
    let whole = service_down_time.as_secs() + u64::from(service_down_time.subsec_nanos() > 0);
    u32::try_from(whole.saturating_add(1)).unwrap_or(u32::MAX)
}

/// The memcached backend of the `mc` driver.
#[derive(Debug)]
pub struct Backend {
    servers: Vec<Arc<Server>>,
    placement: Placement,
    keys: Keys,
    /// The liveness window `T` ([`heartbeat_ttl`]).
    ttl: u32,
    /// TTL the heartbeat key is written with.
    beat_key_ttl: u32,
    /// Remaining TTL above which a heartbeat key is fresh (`beat_key_ttl - T`; 0
    /// when the window is as long as memcached's relative TTLs go: presence).
    grace: u32,
    service_down_time: Duration,
    /// Per server: boot token, held members, verified index keys.
    caches: Vec<Mutex<ServerCache>>,
    started: Instant,
    server_up: Vec<AtomicBool>,
    exchanges: Arc<AtomicU64>,
    /// Blocking exchanges per server: [`EXCHANGES_PER_SERVER`] permits each.
    slots: Vec<Arc<Semaphore>>,
    /// Bulk reads (listings) per server: [`BULK_PER_SERVER`] permits each,
    /// taken before a slot.
    bulk_slots: Vec<Arc<Semaphore>>,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn from_millis(ms: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
}

fn unexpected(what: &str, status: MutationStatus) -> Error {
    Error::backend(format!(
        "memcached answered {status:?} to {what}, which this driver never expects"
    ))
    .with_driver(NAME)
}

fn join_error(error: tokio::task::JoinError) -> Error {
    Error::backend(format!("memcached call did not complete: {error}")).with_driver(NAME)
}

/// `items` of `server` split (moved, not cloned) into parts of at most `size`.
fn parts<T>(server: usize, items: Vec<T>, size: usize) -> impl Iterator<Item = (usize, Vec<T>)> {
    let mut items = items.into_iter();
    std::iter::from_fn(move || {
        let part: Vec<T> = items.by_ref().take(size).collect();
        (!part.is_empty()).then_some((server, part))
    })
}

/// Keys of one member.
struct MemberKeys {
    heartbeat: String,
    record: String,
    forced: String,
    bucket: String,
}

/// Member keys of consecutive members (see [`Backend::group_keys`]): members of
/// one group come in runs, so the group's segment is encoded once per run.
struct KeyCache<'a> {
    keys: &'a Keys,
    current: Option<(GroupId, GroupKeys)>,
}

impl KeyCache<'_> {
    /// The group's key builder and the member's segment.
    fn of(&mut self, key: &MemberKey) -> (&GroupKeys, String) {
        if matches!(&self.current, Some((group, _)) if *group != key.group) {
            self.current = None;
        }
        let keys = self.keys;
        let (_, builder) = self
            .current
            .get_or_insert_with(|| (key.group.clone(), keys.group(key.group.as_str().as_bytes())));
        let member = builder.member(key.member.as_str().as_bytes());
        (builder, member)
    }
}

impl Backend {
    /// A backend on `servers` (`host:port`, already validated and deduplicated).
    pub fn new(
        servers: Vec<String>,
        timeout: Duration,
        prefix: &str,
        service_down_time: Duration,
    ) -> Self {
        let placement = Placement::new(&servers);
        let n = servers.len();
        let ttl = heartbeat_ttl(service_down_time);
        let (beat_key_ttl, grace) = if ttl < MAX_RELATIVE_TTL {
            (MAX_RELATIVE_TTL, MAX_RELATIVE_TTL - ttl)
        } else {
            // A window of 30 days or more: the key's presence is the verdict (its
            // TTL is then sent as an absolute time, memcached's rule).
            (ttl, 0)
        };
        Self {
            servers: servers
                .into_iter()
                .map(|address| Arc::new(Server::new(address, timeout)))
                .collect(),
            placement,
            keys: Keys::new(prefix),
            ttl,
            beat_key_ttl,
            grace,
            service_down_time,
            caches: (0..n).map(|_| Mutex::new(ServerCache::default())).collect(),
            started: Instant::now(),
            server_up: (0..n).map(|_| AtomicBool::new(true)).collect(),
            exchanges: heartbeat::exchange_counter(prefix),
            slots: (0..n)
                .map(|_| Arc::new(Semaphore::new(EXCHANGES_PER_SERVER)))
                .collect(),
            bulk_slots: (0..n)
                .map(|_| Arc::new(Semaphore::new(BULK_PER_SERVER)))
                .collect(),
        }
    }

    /// The liveness window in seconds ([`heartbeat_ttl`] of `service_down_time`).
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// How far past `service_down_time` a member may still be judged up: `ttl - sdt`,
    /// rounded up to whole seconds.
    pub fn resolution(&self) -> Duration {
        let slack = Duration::from_secs(u64::from(self.ttl)).saturating_sub(self.service_down_time);
        let whole = slack.as_secs() + u64::from(slack.subsec_nanos() > 0);
        Duration::from_secs(whole.max(1))
    }

    /// The addresses of the servers, in configured order.
    pub fn addresses(&self) -> Vec<&str> {
        self.servers.iter().map(|s| s.address()).collect()
    }

    /// Index of the server holding `key`.
    pub fn server_of(&self, key: &MemberKey) -> usize {
        self.placement
            .server_of(key.group.as_str(), key.member.as_str())
    }

    /// How many members this driver object remembers as held on `server` (their
    /// heartbeats need no second look). For tests and diagnostics.
    pub fn remembered(&self, server: usize) -> usize {
        self.cache(server).len()
    }

    fn member_keys(&self, key: &MemberKey) -> MemberKeys {
        let (g, m) = (
            key.group.as_str().as_bytes(),
            key.member.as_str().as_bytes(),
        );
        MemberKeys {
            heartbeat: self.keys.heartbeat(g, m),
            record: self.keys.record(g, m),
            forced: self.keys.forced(g, m),
            bucket: self.keys.bucket(g, bucket_of(key.member.as_str(), BUCKETS)),
        }
    }

    /// The index bucket key of `key`.
    fn bucket_key(&self, key: &MemberKey) -> String {
        self.keys.bucket(
            key.group.as_str().as_bytes(),
            bucket_of(key.member.as_str(), BUCKETS),
        )
    }

    /// Member keys for a run of members, the group's part encoded once per group.
    fn group_keys(&self) -> KeyCache<'_> {
        KeyCache {
            keys: &self.keys,
            current: None,
        }
    }

    fn cache(&self, server: usize) -> MutexGuard<'_, ServerCache> {
        self.caches[server]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds since this backend was built (the cache's clock).
    fn now_secs(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// The TTL heartbeat keys are written with.
    fn beat_ttl(&self) -> Ttl {
        Ttl::secs(self.beat_key_ttl)
    }

    /// Whether a heartbeat key read with its remaining TTL is fresh.
    fn freshness(&self, beat: &GetResult) -> Freshness {
        let fresh = beat.hit()
            && (self.grace == 0 || beat.item.ttl.is_some_and(|t| t > i64::from(self.grace)));
        if fresh {
            Freshness::Present
        } else {
            Freshness::Absent
        }
    }

    /// The error for a value of `key` on `server` this driver cannot read.
    fn undecodable(&self, server: usize, key: &str, why: &str) -> Error {
        Error::backend(format!(
            "memcached server {} holds a value under key {key} that this driver cannot read: {why}",
            self.servers[server].address()
        ))
        .with_driver(NAME)
    }

    /// The record in `got` (a read of `key` on `server`), `None` for a miss.
    fn record_in(&self, server: usize, key: &str, got: &GetResult) -> Result<Option<StoredRecord>> {
        if !got.hit() {
            return Ok(None);
        }
        let value = got.value.as_deref().unwrap_or_default();
        StoredRecord::decode(value)
            .map(Some)
            .map_err(|why| self.undecodable(server, key, &why))
    }

    fn run(&self, server: usize, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        self.servers[server].run_blocking(ops)
    }

    /// Runs `work` on tokio's blocking pool, at most [`EXCHANGES_PER_SERVER`]
    /// items per server at a time (the rest wait for a slot, in arrival order);
    /// results come back in the order of `work`.
    ///
    /// Items still waiting for a slot are dropped with the returned future (core's
    /// `call_timeout`), so an overloaded server makes work queue, not pile up:
    /// no more than [`EXCHANGES_PER_SERVER`] blocking threads and connections per
    /// server are ever busy for this backend.
    async fn on_servers<I, T, F>(
        self: &Arc<Self>,
        lane: Lane,
        work: Vec<(usize, I)>,
        f: F,
    ) -> Vec<(usize, Result<T>)>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: Fn(&Backend, usize, I) -> Result<T> + Copy + Send + 'static,
    {
        let n = work.len();
        if n == 1 {
            // One item (single-member calls, one-server listings): no task set.
            let Some((server, input)) = work.into_iter().next() else {
                return Vec::new();
            };
            return vec![(server, self.exchange(lane, server, input, f).await)];
        }
        let mut out: Vec<(usize, Result<T>)> = Vec::with_capacity(n);
        let mut tasks = tokio::task::JoinSet::new();
        for (position, (server, input)) in work.into_iter().enumerate() {
            // Replaced by the task's result; stays only if the task panicked.
            out.push((
                server,
                Err(Error::backend("memcached call did not complete").with_driver(NAME)),
            ));
            let me = Arc::clone(self);
            tasks.spawn(async move { (position, me.exchange(lane, server, input, f).await) });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((position, result)) => out[position].1 = result,
                Err(error) => {
                    tracing::error!(driver = NAME, error = %error, "a memcached task failed");
                }
            }
        }
        out
    }

    /// One item of work on `server`'s blocking slot (see [`Self::on_servers`]).
    async fn exchange<I, T, F>(
        self: &Arc<Self>,
        lane: Lane,
        server: usize,
        input: I,
        f: F,
    ) -> Result<T>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: Fn(&Backend, usize, I) -> Result<T> + Copy + Send + 'static,
    {
        let closed = |_| Error::backend("memcached slots closed").with_driver(NAME);
        // Bulk reads first queue among themselves, so a listing's many parts
        // never stand in front of heartbeats in the server's queue.
        let bulk = match lane {
            Lane::Bulk => Some(
                Arc::clone(&self.bulk_slots[server])
                    .acquire_owned()
                    .await
                    .map_err(closed)?,
            ),
            Lane::Main => None,
        };
        let slot = Arc::clone(&self.slots[server])
            .acquire_owned()
            .await
            .map_err(closed)?;
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _slots = (slot, bulk);
            f(&me, server, input)
        })
        .await
        .unwrap_or_else(|e| Err(join_error(e)))
    }

    /// Every server's part of `work`; the first error fails the whole call.
    async fn on_all<I, T, F>(
        self: &Arc<Self>,
        lane: Lane,
        work: Vec<(usize, I)>,
        f: F,
    ) -> Result<Vec<T>>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: Fn(&Backend, usize, I) -> Result<T> + Copy + Send + 'static,
    {
        self.on_servers(lane, work, f)
            .await
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    /// Makes every id of `pending` appear in its index key: reads the keys,
    /// appends the missing lines (atomic on the server), creates keys that do not
    /// exist, and starts over for keys another process created meanwhile.
    fn ensure_lines(
        &self,
        server: usize,
        mut pending: BTreeMap<String, BTreeSet<Vec<u8>>>,
    ) -> Result<()> {
        for _ in 0..MAX_ATTEMPTS {
            if pending.is_empty() {
                return Ok(());
            }
            let names: Vec<String> = pending.keys().cloned().collect();
            let results = self.run(server, names.iter().map(|k| Get::new(k).into()).collect())?;
            let mut appends: Vec<(String, Vec<u8>)> = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let got = get_at(&results, i)?;
                let wanted: std::collections::HashSet<&[u8]> =
                    pending[name].iter().map(Vec::as_slice).collect();
                let present = match (&got.value, got.hit()) {
                    (Some(value), true) => index::find(value, &wanted),
                    _ => std::collections::HashSet::new(),
                };
                let lines: Vec<u8> = pending[name]
                    .iter()
                    .filter(|id| !present.contains(id.as_slice()))
                    .flat_map(|id| index::line(id))
                    .collect();
                if lines.is_empty() {
                    pending.remove(name);
                } else {
                    appends.push((name.clone(), lines));
                }
            }
            if appends.is_empty() {
                return Ok(());
            }
            let ops = appends
                .iter()
                .map(|(k, v)| Set::new(k, v).append().into())
                .collect();
            let results = self.run(server, ops)?;
            let mut creates: Vec<&(String, Vec<u8>)> = Vec::new();
            for (i, append) in appends.iter().enumerate() {
                match mutation_at(&results, i)?.status {
                    MutationStatus::Applied => {
                        pending.remove(&append.0);
                    }
                    MutationStatus::NotFound => creates.push(append),
                    other => return Err(unexpected("appending to an index key", other)),
                }
            }
            if creates.is_empty() {
                continue;
            }
            let ops = creates
                .iter()
                .map(|(k, v)| Set::new(k, v).add().into())
                .collect();
            let results = self.run(server, ops)?;
            for (i, (name, _)) in creates.iter().enumerate() {
                match mutation_at(&results, i)?.status {
                    MutationStatus::Applied => {
                        pending.remove(name);
                    }
                    // Created by another process meanwhile: read again.
                    MutationStatus::AlreadyExists => {}
                    other => return Err(unexpected("creating an index key", other)),
                }
            }
        }
        Err(Error::backend(format!(
            "could not update the index on memcached server {} after {MAX_ATTEMPTS} attempts: \
             other processes kept changing the same keys",
            self.servers[server].address()
        ))
        .with_driver(NAME))
    }

    /// Index lines (bucket entries and group-list entries) for `keys`, all on one
    /// server, as [`Self::ensure_lines`] takes them.
    fn index_lines<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a MemberKey>,
    ) -> BTreeMap<String, BTreeSet<Vec<u8>>> {
        let mut lines: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
        let mut groups: BTreeSet<Vec<u8>> = BTreeSet::new();
        for key in keys {
            lines
                .entry(self.bucket_key(key))
                .or_default()
                .insert(key.member.as_str().as_bytes().to_vec());
            groups.insert(key.group.as_str().as_bytes().to_vec());
        }
        if !groups.is_empty() {
            lines.insert(self.keys.groups(), groups);
        }
        lines
    }

    // ---- single members -------------------------------------------------

    /// Deletes a member's record: any record when `holder` is `None`, only one
    /// held by that instance otherwise. Returns whether a record was deleted.
    pub async fn remove(
        self: &Arc<Self>,
        key: &MemberKey,
        holder: Option<InstanceId>,
    ) -> Result<bool> {
        let work = vec![(self.server_of(key), (key.clone(), holder))];
        self.on_all(Lane::Main, work, Backend::remove_on)
            .await
            .map(|v| v[0])
    }

    fn remove_on(
        &self,
        server: usize,
        (key, holder): (MemberKey, Option<InstanceId>),
    ) -> Result<bool> {
        let k = self.member_keys(&key);
        let removed = match holder {
            None => {
                // Whether it existed comes from the read, so a repeated batch (see
                // `Server::run_blocking`) cannot turn "deleted" into "not found".
                let results = self.run(
                    server,
                    vec![
                        Get::new(&k.record).without_value().into(),
                        Delete::new(&k.record).into(),
                        Delete::new(&k.heartbeat).into(),
                        Delete::new(&k.forced).into(),
                    ],
                )?;
                get_at(&results, 0)?.hit()
            }
            Some(instance) => {
                if !self.remove_held(server, &k, instance)? {
                    return Ok(false);
                }
                true
            }
        };
        self.cache(server).remove(slot_of(&key));
        self.unindex(server, &key, &k.bucket)?;
        Ok(removed)
    }

    /// Deletes the record of `k` if `instance` holds it (compare-and-delete on the
    /// CAS read), then its heartbeat key if `instance` wrote it last, then its
    /// forced-down flag. Returns whether the record was deleted.
    fn remove_held(&self, server: usize, k: &MemberKeys, instance: InstanceId) -> Result<bool> {
        for _ in 0..MAX_ATTEMPTS {
            let results = self.run(
                server,
                vec![
                    Get::new(&k.record).meta(Meta::NONE.cas()).into(),
                    Get::new(&k.heartbeat).meta(Meta::NONE.cas()).into(),
                ],
            )?;
            let got = get_at(&results, 0)?;
            let Some(record) = self.record_in(server, &k.record, got)? else {
                return Ok(false);
            };
            if record.holder.instance != instance {
                return Ok(false);
            }
            let Some(record_cas) = got.item.cas else {
                return Err(missing_cas(&k.record));
            };
            let mut ops: Vec<Op> = vec![Delete::new(&k.record).compare_cas(record_cas).into()];
            let beat = get_at(&results, 1)?;
            let own_beat = beat.hit()
                && beat
                    .value
                    .as_deref()
                    .and_then(|v| decode_beat(v).ok())
                    .is_some_and(|writer| writer == instance);
            if let (true, Some(cas)) = (own_beat, beat.item.cas) {
                // Only the heartbeat key this instance wrote: a new holder's stays.
                ops.push(Delete::new(&k.heartbeat).compare_cas(cas).into());
            }
            match mutation_at(&self.run(server, ops)?, 0)?.status {
                MutationStatus::Applied => {
                    self.run(server, vec![Delete::new(&k.forced).into()])?;
                    return Ok(true);
                }
                MutationStatus::CasMismatch => continue,
                MutationStatus::NotFound => return Ok(false),
                other => return Err(unexpected("deleting a member record", other)),
            }
        }
        Err(self.contention(server, "deleting a member record"))
    }

    /// Drops `key` from its index bucket `bucket` (a compare-and-swap rewrite).
    fn unindex(&self, server: usize, key: &MemberKey, bucket: &str) -> Result<()> {
        let id = key.member.as_str().as_bytes();
        for _ in 0..MAX_ATTEMPTS {
            let results = self.run(server, vec![Get::new(bucket).meta(Meta::NONE.cas()).into()])?;
            let got = get_at(&results, 0)?;
            let (Some(value), Some(cas), true) = (&got.value, got.item.cas, got.hit()) else {
                return Ok(());
            };
            let Some(rest) = index::without(value, id) else {
                return Ok(());
            };
            let op: Op = if rest.is_empty() {
                Delete::new(bucket).compare_cas(cas).into()
            } else {
                Set::new(bucket, rest).compare_cas(cas).into()
            };
            match mutation_at(&self.run(server, vec![op])?, 0)?.status {
                MutationStatus::Applied => return Ok(()),
                MutationStatus::CasMismatch | MutationStatus::NotFound => continue,
                other => return Err(unexpected("rewriting an index bucket", other)),
            }
        }
        // The record is gone, so listings already ignore the stale line.
        tracing::warn!(
            driver = NAME,
            group = %key.group,
            member = %key.member,
            "could not drop {key} from its index bucket after {MAX_ATTEMPTS} attempts (contention); listings ignore it since its record is gone"
        );
        Ok(())
    }

    fn contention(&self, server: usize, what: &str) -> Error {
        Error::backend(format!(
            "{what} on memcached server {} failed after {MAX_ATTEMPTS} attempts: other processes kept changing the same key",
            self.servers[server].address()
        ))
        .with_driver(NAME)
    }

    /// Replaces the metadata of a record `instance` holds (compare-and-set on the
    /// record's CAS), leaving holder, epoch and times as they are.
    pub async fn set_metadata(
        self: &Arc<Self>,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        let work = vec![(
            self.server_of(key),
            (key.clone(), instance, metadata.clone()),
        )];
        self.on_all(Lane::Main, work, Backend::set_metadata_on)
            .await
            .map(|mut v| v.remove(0))
    }

    fn set_metadata_on(
        &self,
        server: usize,
        (key, instance, metadata): (MemberKey, InstanceId, Metadata),
    ) -> Result<HolderUpdate> {
        let k = self.member_keys(&key);
        let slot = slot_of(&key);
        for _ in 0..MAX_ATTEMPTS {
            let mut pipe = self.pipeline();
            let at = pipe.push([Get::new(&k.record).meta(Meta::NONE.cas()).into()]);
            let ran = self.run_pipeline(server, pipe, false)?;
            let got = ran.get(at, 0)?;
            let Some(record) = self.record_in(server, &k.record, got)? else {
                return Ok(HolderUpdate::Missing);
            };
            if record.holder.instance != instance {
                return Ok(HolderUpdate::NotHeld(record.holder));
            }
            let Some(cas) = got.item.cas else {
                return Err(missing_cas(&k.record));
            };
            let value = StoredRecord {
                metadata: metadata.clone(),
                ..record
            }
            .encode();
            let results = self.run(
                server,
                vec![Set::new(&k.record, value)
                    .compare_cas(cas)
                    .return_cas()
                    .into()],
            )?;
            let written = mutation_at(&results, 0)?;
            match written.status {
                MutationStatus::Applied => {
                    // Keep the heartbeat's record check in step with the new CAS.
                    let new_cas = written.cas.unwrap_or_default();
                    self.cache(server).set_record_cas(
                        ran.boot(at).token(),
                        slot,
                        instance,
                        new_cas,
                    );
                    return Ok(HolderUpdate::Stored);
                }
                MutationStatus::CasMismatch | MutationStatus::NotFound => continue,
                other => return Err(unexpected("replacing member metadata", other)),
            }
        }
        Err(self.contention(server, "replacing member metadata"))
    }

    /// Sets or clears the forced-down flag of an existing member.
    pub async fn set_forced_down(
        self: &Arc<Self>,
        key: &MemberKey,
        forced_down: bool,
    ) -> Result<bool> {
        let work = vec![(self.server_of(key), (key.clone(), forced_down))];
        self.on_all(Lane::Main, work, Backend::set_forced_down_on)
            .await
            .map(|v| v[0])
    }

    fn set_forced_down_on(&self, server: usize, (key, forced): (MemberKey, bool)) -> Result<bool> {
        let k = self.member_keys(&key);
        let mut ops: Vec<Op> = vec![Get::new(&k.record).without_value().into()];
        if forced {
            // The group's marker first (same connection, so memcached stores it
            // before the flag): a listing that finds no marker skips the flags.
            let marker = self.keys.forced_marker(key.group.as_str().as_bytes());
            ops.push(Set::new(marker, b"1").into());
            ops.push(Set::new(&k.forced, b"1").into());
        } else {
            ops.push(Delete::new(&k.forced).into());
        }
        let results = self.run(server, ops)?;
        if get_at(&results, 0)?.hit() {
            return Ok(true);
        }
        // No such member: take back a flag just set (a concurrent `remove` deletes it too).
        if forced {
            self.run(server, vec![Delete::new(&k.forced).into()])?;
        }
        Ok(false)
    }

    /// One member's record.
    pub async fn get(self: &Arc<Self>, key: &MemberKey) -> Result<Option<MemberRecord>> {
        let work = vec![(self.server_of(key), (vec![key.clone()], true))];
        let mut found = self.on_all(Lane::Main, work, Backend::records_on).await?;
        Ok(found.pop().and_then(|mut v| v.pop()))
    }

    /// Records of `keys`, all placed on `server`; members without a record are
    /// left out. Their forced-down keys are read only when `forced_possible` (the
    /// group's forced marker exists on `server`); otherwise none is forced down.
    fn records_on(
        &self,
        server: usize,
        (keys, forced_possible): (Vec<MemberKey>, bool),
    ) -> Result<Vec<MemberRecord>> {
        let per = if forced_possible { 3 } else { 2 };
        let mut ops: Vec<Op> = Vec::with_capacity(keys.len() * per);
        let mut member_keys = self.group_keys();
        for key in &keys {
            let (gk, m) = member_keys.of(key);
            ops.push(Get::new(gk.record(&m)).into());
            // No value: the heartbeat time comes back in the client flags.
            ops.push(
                Get::new(gk.heartbeat(&m))
                    .without_value()
                    .meta(Meta::NONE.ttl())
                    .into(),
            );
            if forced_possible {
                ops.push(Get::new(gk.forced(&m)).without_value().into());
            }
        }
        let results = self.run(server, ops)?;
        let now_ms = now_millis();
        let mut records = Vec::with_capacity(keys.len());
        for (i, key) in keys.into_iter().enumerate() {
            let got = get_at(&results, per * i)?;
            if !got.hit() {
                continue;
            }
            let record_key = || {
                self.keys.record(
                    key.group.as_str().as_bytes(),
                    key.member.as_str().as_bytes(),
                )
            };
            let record = StoredRecord::decode(got.value.as_deref().unwrap_or_default())
                .map_err(|why| self.undecodable(server, &record_key(), &why))?;
            let beat = get_at(&results, per * i + 1)?;
            let last_beat = match (beat.client_flags, beat.hit()) {
                (Some(flags), true) => beat_time(flags, beat.item.ttl, self.beat_key_ttl, now_ms),
                // The heartbeat key is gone (after 30 days without heartbeats, or
                // lost): the record's registration is the last heartbeat known.
                _ => record.registered_ms,
            };
            let forced_down = forced_possible && get_at(&results, per * i + 2)?.hit();
            records.push(MemberRecord {
                key,
                last_heartbeat: from_millis(last_beat),
                freshness: self.freshness(beat),
                forced_down,
                holder: record.holder,
                holder_since: from_millis(record.holder_since_ms),
                metadata: record.metadata,
            });
        }
        Ok(records)
    }

    // ---- listings -------------------------------------------------------

    /// Every member of `group` on every server.
    ///
    /// First the index buckets of every server (one exchange each), then the
    /// members' keys in parts of `LIST_PART` (5 000) members, several parts of a
    /// server in flight at once (each a few pipelined exchanges of
    /// `CHUNK` (2 000) operations).
    pub async fn list(self: &Arc<Self>, group: &GroupId) -> Result<Vec<MemberRecord>> {
        let work = (0..self.servers.len())
            .map(|s| (s, group.clone()))
            .collect();
        let members = self.on_all(Lane::Bulk, work, Backend::list_ids_on).await?;
        let parts: Vec<(usize, (Vec<MemberKey>, bool))> = members
            .into_iter()
            .enumerate()
            .flat_map(|(server, (keys, forced_possible))| {
                parts(server, keys, LIST_PART)
                    .map(move |(server, part)| (server, (part, forced_possible)))
            })
            .collect();
        let records = self.on_all(Lane::Bulk, parts, Backend::records_on).await?;
        Ok(records.into_iter().flatten().collect())
    }

    /// The members of `group` in the index buckets of `server` that belong there,
    /// sorted, and whether the group's forced-down marker exists there.
    fn list_ids_on(&self, server: usize, group: GroupId) -> Result<(Vec<MemberKey>, bool)> {
        let g = group.as_str().as_bytes();
        let mut ops: Vec<Op> = (0..BUCKETS)
            .map(|b| Get::new(self.keys.bucket(g, b)).into())
            .collect();
        ops.push(Get::new(self.keys.forced_marker(g)).without_value().into());
        let results = self.run(server, ops)?;
        let forced_possible = get_at(&results, BUCKETS as usize)?.hit();
        let mut members: BTreeSet<MemberId> = BTreeSet::new();
        for b in 0..BUCKETS {
            let got = get_at(&results, b as usize)?;
            let (Some(value), true) = (&got.value, got.hit()) else {
                continue;
            };
            let (ids, malformed) = index::parse(value);
            if malformed > 0 {
                tracing::warn!(driver = NAME, group = %group, malformed, "skipped malformed lines in an index bucket of group {group}");
            }
            for id in ids {
                let Ok(member) = MemberId::from_bytes(&id) else {
                    tracing::warn!(driver = NAME, group = %group, "skipped an invalid member id in an index bucket of group {group}");
                    continue;
                };
                // Only entries in the bucket and on the server the member belongs to.
                if bucket_of(member.as_str(), BUCKETS) == b
                    && (self.servers.len() == 1
                        || self.placement.server_of(group.as_str(), member.as_str()) == server)
                {
                    members.insert(member);
                }
            }
        }
        let keys = members
            .into_iter()
            .map(|m| MemberKey::new(group.clone(), m))
            .collect();
        Ok((keys, forced_possible))
    }

    /// Every group with at least one index entry on some server.
    pub async fn groups(self: &Arc<Self>) -> Result<Vec<GroupId>> {
        let work = (0..self.servers.len()).map(|s| (s, ())).collect();
        let parts = self.on_all(Lane::Bulk, work, Backend::groups_on).await?;
        let all: BTreeSet<GroupId> = parts.into_iter().flatten().collect();
        Ok(all.into_iter().collect())
    }

    fn groups_on(&self, server: usize, (): ()) -> Result<Vec<GroupId>> {
        let results = self.run(server, vec![Get::new(self.keys.groups()).into()])?;
        let got = get_at(&results, 0)?;
        let (Some(value), true) = (&got.value, got.hit()) else {
            return Ok(Vec::new());
        };
        let groups: Vec<GroupId> = index::parse(value)
            .0
            .into_iter()
            .filter_map(|id| GroupId::from_bytes(&id).ok())
            .collect();
        let mut ops: Vec<Op> = Vec::with_capacity(groups.len() * BUCKETS as usize);
        for group in &groups {
            for b in 0..BUCKETS {
                ops.push(
                    Get::new(self.keys.bucket(group.as_str().as_bytes(), b))
                        .without_value()
                        .into(),
                );
            }
        }
        let results = self.run(server, ops)?;
        let mut out = Vec::new();
        for (n, group) in groups.into_iter().enumerate() {
            let base = n * BUCKETS as usize;
            let mut any = false;
            for b in 0..BUCKETS as usize {
                any |= get_at(&results, base + b)?.hit();
            }
            if any {
                out.push(group);
            }
        }
        Ok(out)
    }
}

/// A read that asked for the CAS came back without one.
fn missing_cas(key: &str) -> Error {
    Error::backend(format!(
        "memcached answered a read of {key} without the CAS token it was asked for"
    ))
    .with_driver(NAME)
}

/// Index keys the batch depends on, each with the batch members it must hold:
/// (position in the batch, id).
type Wanted<'a> = Vec<(usize, &'a [u8])>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_and_adds_a_second() {
        assert_eq!(heartbeat_ttl(Duration::from_secs(60)), 61);
        assert_eq!(heartbeat_ttl(Duration::from_millis(60_001)), 62);
        assert_eq!(heartbeat_ttl(Duration::from_millis(1_500)), 3);
        assert_eq!(heartbeat_ttl(Duration::from_millis(1)), 2);
        assert_eq!(heartbeat_ttl(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn liveness_window_rides_on_the_remaining_ttl() {
        let b = Backend::new(
            vec!["127.0.0.1:1".into()],
            Duration::from_millis(100),
            "sg",
            Duration::from_secs(60),
        );
        assert_eq!(
            (b.ttl, b.beat_key_ttl, b.grace),
            (61, MAX_RELATIVE_TTL, MAX_RELATIVE_TTL - 61)
        );
        let long = Backend::new(
            vec!["127.0.0.1:1".into()],
            Duration::from_millis(100),
            "sg",
            Duration::from_secs(u64::from(MAX_RELATIVE_TTL)),
        );
        assert_eq!(long.grace, 0);
    }
}
