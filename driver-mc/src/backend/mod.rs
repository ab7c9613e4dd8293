//! The memcached storage: what each driver call does on which server.
//!
//! Per member `(group, member)`, on the server [`Placement`] picks for it, with
//! prefix `P`:
//!
//! | key | value | TTL | meaning |
//! |---|---|---|---|
//! | `P:m3:G:M` (live record) | holder, epoch, holder since, registered at, revision, forced down, live, heartbeat time, metadata ([`crate::stored`]) | 30 days | the member, and whether it is fresh: its remaining TTL is above 30 days − the liveness window |
//! | `P:d3:G:M` (durable record) | a copy of the live record; flags: its revision | none | the member where the live record is gone (expired after 30 days without heartbeats, evicted) |
//! | `P:i:G:BB` (index bucket) | member ids, one per line | none | listing |
//! | `P:groups` | group ids, one per line | none | `groups()` |
//! | `P:boot` | random token | none | this life of the server (a new one after a restart) |
//!
//! **One read per member.** A listing (and `get`) reads the live record with its
//! remaining TTL (`mg … v t`): holder, epoch, metadata, forced-down flag and
//! heartbeat time come from its value, freshness from memcached's TTL bookkeeping.
//! The durable record is read only for members whose live record is gone.
//!
//! **Liveness.** The live record is written with a TTL of 30 days (memcached's
//! largest relative TTL) by every heartbeat and registration, and a member is fresh
//! while memcached reports more than `30 days − T` seconds left, `T` =
//! [`heartbeat_ttl`]: exactly when an item written with TTL `T` would still exist,
//! on memcached's own clock. Other changes (metadata, forced down) are appended to
//! the value (memcached's append keeps the TTL exactly), so they never make a
//! member fresh. The key outlives the liveness window so that a crashed member
//! keeps its record and last heartbeat time (listed down with it).
//!
//! **Fencing.** The live record is the one authority on who holds a member, and
//! every write of it is conditional on its CAS token. The driver remembers, per
//! member it holds, the CAS and value of its own last write (module `cache`), so a
//! heartbeat is one operation in the batch's pipelined exchange: the value written
//! again with a fresh TTL, on condition that the CAS is still the remembered one.
//! One whose record changed since (`EX`: takeover, new metadata, forced down,
//! another process of the same instance) is read and looked at again, for those
//! rare keys only: held by the heartbeating instance → written again from what was
//! read; held by another → [`servicegroup_core::HeartbeatReport::superseded`], and
//! nothing was written; gone from both records →
//! [`servicegroup_core::HeartbeatReport::missing`].
//!
//! Index buckets and the group list only say where to look; entries without a
//! record are ignored, as are entries found on a server the member is not placed
//! on (left behind when the server list changed). A heartbeat that finds a held
//! member's index entry gone writes it again.

mod heartbeat;
mod pipeline;
mod register;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use servicegroup_core::liveness::is_fresh;
use servicegroup_core::{
    Error, Freshness, GroupId, HolderUpdate, InstanceId, MemberId, MemberKey, MemberRecord,
    Metadata, Result, State, Summary,
};
use tokio::sync::Semaphore;

use crate::cache::{slot_of, Held, ServerCache};
use crate::index::{self, BUCKETS};
use crate::keys::{GroupKeys, Keys};
use crate::ops::{Batch, Code, Got, Mode, Store, Want};
use crate::placement::{bucket_of, Placement};
use crate::server::{Server, Session, CHUNK};
use crate::stored::StoredRecord;
use crate::NAME;

pub use heartbeat::heartbeat_exchanges;
use pipeline::Pipeline;

/// Members of one server whose heartbeats (or registrations) go out as one
/// sequence of pipelined exchanges; a larger share of a batch is split into parts
/// sent in parallel.
const PARALLEL_PART: usize = 5_000;

/// Heartbeats, joins and single-member calls running at once per server (each
/// one or a few pipelined exchanges in a row on one connection); more wait for a
/// slot. Two cores serve the whole box here: more than a few in flight only add
/// threads and connections, not throughput, while a bounded set lets queued work
/// be cancelled by core's `call_timeout` before it starts.
pub const EXCHANGES_PER_SERVER: usize = 4;

/// Listing parts (and other bulk reads) running at once per server, on slots of
/// their own: a listing never takes a slot from heartbeats, and heartbeats (a
/// back-to-back stream of them at a million members) never starve a listing.
pub const BULK_PER_SERVER: usize = 2;

/// memcached's largest relative TTL (30 days); larger values are absolute times.
pub const MAX_RELATIVE_TTL: u32 = 2_592_000;

/// Which queue a work item waits in (see [`Backend::on_servers`]).
#[derive(Debug, Clone, Copy)]
enum Lane {
    /// Heartbeats, joins, single-member calls: one of [`EXCHANGES_PER_SERVER`] slots.
    Main,
    /// Listing parts: one of [`BULK_PER_SERVER`] slots of their own.
    Bulk,
}

/// Members per part of a listing; the parts of one server are read in parallel
/// (up to [`BULK_PER_SERVER`] at once), one key per member.
const LIST_PART: usize = 10_000;

/// Attempts of a read-modify-write before giving up (each one only fails when
/// another process changed the key in between).
const MAX_ATTEMPTS: usize = 64;

/// A live record longer than this is written again compacted instead of getting
/// one more patch line appended.
const PATCH_LIMIT: usize = 8 * 1024;

/// How often a holder's heartbeat checks that the durable record is there and at
/// the live record's revision (one value-less read, spread over the members).
const SYNC_SECS: u32 = 60;

/// The liveness window in whole seconds for `service_down_time`: a member is
/// fresh while its last heartbeat is younger than this on memcached's clock.
///
/// memcached counts time in whole seconds on a clock that ticks once a second, so
/// an item stored with TTL `T` disappears after more than `T - 1` and at most `T`
/// seconds; the driver judges the live record's remaining TTL by the same rule.
/// With `T = ceil(service_down_time) + 1` a member is never judged down before
/// `service_down_time` has passed since its last heartbeat, and always by
/// `ceil(service_down_time) + 1` seconds (60 s → down between 60 and 61 s).
pub fn heartbeat_ttl(service_down_time: Duration) -> u32 {
    let whole = service_down_time.as_secs() + u64::from(service_down_time.subsec_nanos() > 0);
    u32::try_from(whole.saturating_add(1)).unwrap_or(u32::MAX)
}

/// The `T` flag for a TTL of `secs` seconds: relative up to 30 days, an absolute
/// unix time (this host's clock, memcached's rule) beyond.
fn wire_ttl(secs: u32) -> u32 {
    if secs <= MAX_RELATIVE_TTL {
        return secs;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(now.saturating_add(u64::from(secs))).unwrap_or(u32::MAX)
}

/// The memcached backend of the `mc` driver.
#[derive(Debug)]
pub struct Backend {
    servers: Vec<Arc<Server>>,
    placement: Placement,
    keys: Keys,
    /// The liveness window `T` ([`heartbeat_ttl`]).
    ttl: u32,
    /// TTL the live record is written with.
    beat_key_ttl: u32,
    /// Remaining TTL above which a live record is fresh (`beat_key_ttl - T`; 0
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
    /// Bulk reads (listings) per server: [`BULK_PER_SERVER`] slots each.
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

fn unexpected(what: &str, code: Code) -> Error {
    Error::backend(format!(
        "memcached answered {code:?} to {what}, which this driver never expects"
    ))
    .with_driver(NAME)
}

fn join_error(error: tokio::task::JoinError) -> Error {
    Error::backend(format!("memcached call did not complete: {error}")).with_driver(NAME)
}

/// A write that asked for the CAS came back without one.
fn missing_cas(key: &str) -> Error {
    Error::backend(format!(
        "memcached answered a command on {key} without the CAS token it was asked for"
    ))
    .with_driver(NAME)
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
    live: String,
    durable: String,
    legacy_forced: String,
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

    /// The group's key builder only (for [`GroupKeys::live_into`] and friends).
    fn group(&mut self, key: &MemberKey) -> &GroupKeys {
        if matches!(&self.current, Some((group, _)) if *group != key.group) {
            self.current = None;
        }
        let keys = self.keys;
        &self
            .current
            .get_or_insert_with(|| (key.group.clone(), keys.group(key.group.as_str().as_bytes())))
            .1
    }
}

/// A durable record to bring to revision `rev` (see [`Backend::sync_durables`]).
struct SyncItem<'a> {
    key: &'a str,
    value: &'a [u8],
    rev: u32,
    /// Its CAS as read before (`Some(None)`: it was missing), or `None` to read it
    /// first.
    known: Option<Option<u64>>,
}

/// What a listing returns (see [`Backend::records_on`]).
#[derive(Debug, Clone, Copy)]
enum Scan {
    /// Every member's record.
    All,
    /// The records of the members in one state.
    In(State),
    /// Only how many members are in each state.
    Count,
}

/// The records and counts of a listing.
#[derive(Debug, Default)]
struct Scanned {
    records: Vec<MemberRecord>,
    summary: Summary,
}

/// A change of a member's record that is not a registration (see
/// [`Backend::change_on`]).
#[derive(Debug, Clone)]
enum Change {
    /// `set_metadata` by the holding instance.
    Metadata(InstanceId, Metadata),
    /// `set_forced_down`.
    Forced(bool),
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
        let keys = Keys::new(prefix);
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
                .map(|address| Arc::new(Server::new(address, timeout, keys.boot())))
                .collect(),
            placement,
            keys,
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
            live: self.keys.live(g, m),
            durable: self.keys.durable(g, m),
            legacy_forced: self.keys.legacy_forced(g, m),
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

    /// Seconds since this backend was built (the cache's clock), at least 1 (0
    /// means "never" in cache entries).
    fn now_secs(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs())
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// The `T` flag heartbeats and registrations write the live record with.
    fn beat_ttl(&self) -> u32 {
        wire_ttl(self.beat_key_ttl)
    }

    /// Whether a live record read with `remaining` seconds of TTL is fresh.
    fn freshness(&self, remaining: Option<i64>, live: bool) -> Freshness {
        let fresh =
            live && (self.grace == 0 || remaining.is_some_and(|t| t > i64::from(self.grace)));
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
    fn record_in(&self, server: usize, key: &str, got: &Got<'_>) -> Result<Option<StoredRecord>> {
        if !got.hit() {
            return Ok(None);
        }
        StoredRecord::decode(got.value)
            .map(Some)
            .map_err(|why| self.undecodable(server, key, &why))
    }

    /// Runs `work` on tokio's blocking pool, at most [`EXCHANGES_PER_SERVER`]
    /// items of `lane` Main (or [`BULK_PER_SERVER`] of `lane` Bulk) per server at a
    /// time (the rest wait for a slot, in arrival order); results come back in the
    /// order of `work`.
    ///
    /// Items still waiting for a slot are dropped with the returned future (core's
    /// `call_timeout`), so an overloaded server makes work queue, not pile up:
    /// no more than [`EXCHANGES_PER_SERVER`] + [`BULK_PER_SERVER`] blocking threads
    /// and connections per server are ever busy for this backend.
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
        // Each lane has slots of its own: a listing's many parts never stand in
        // front of heartbeats, nor heartbeats in front of every listing part.
        let slots = match lane {
            Lane::Main => &self.slots[server],
            Lane::Bulk => &self.bulk_slots[server],
        };
        let slot = Arc::clone(slots).acquire_owned().await.map_err(closed)?;
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
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
    ///
    /// `fresh`: the ids are of members that had no record, so their bucket lines
    /// are appended without reading the buckets first (a bucket holds up to a
    /// megabyte; reading all of a group's for every registration call made joining a
    /// million members quadratic). A line left behind by a member memcached lost
    /// becomes a duplicate, which readers ignore and a removal strips with it. The
    /// group list is always read first (its entry is nearly always there).
    fn ensure_lines(
        &self,
        server: usize,
        session: &mut Session<'_>,
        mut pending: BTreeMap<String, BTreeSet<Vec<u8>>>,
        fresh: bool,
        counted: bool,
    ) -> Result<()> {
        let groups = self.keys.groups();
        for attempt in 0..MAX_ATTEMPTS {
            if pending.is_empty() {
                return Ok(());
            }
            let blind = fresh && attempt == 0;
            let names: Vec<String> = pending
                .keys()
                .filter(|k| !blind || **k == groups)
                .cloned()
                .collect();
            let mut pipe = Pipeline::default();
            let ats: Vec<_> = names.iter().map(|k| pipe.get(k, Want::VALUE)).collect();
            let ran = self.run_pipeline(session, pipe, counted)?;
            let mut appends: Vec<(String, Vec<u8>)> = Vec::new();
            if blind {
                for (name, ids) in &pending {
                    if *name != groups {
                        appends.push((
                            name.clone(),
                            ids.iter().flat_map(|id| index::line(id)).collect(),
                        ));
                    }
                }
            }
            for (name, at) in names.iter().zip(ats) {
                let got = ran.got(at, 0)?;
                let wanted: HashSet<&[u8]> = pending[name].iter().map(Vec::as_slice).collect();
                let present = if got.hit() {
                    index::find(got.value, &wanted)
                } else {
                    HashSet::new()
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
                if pending.is_empty() {
                    return Ok(());
                }
                continue;
            }
            let mut pipe = Pipeline::default();
            let ats: Vec<_> = appends
                .iter()
                .map(|(k, v)| pipe.store(k, v, Store::SET.mode(Mode::Append)))
                .collect();
            let ran = self.run_pipeline(session, pipe, counted)?;
            let mut creates: Vec<&(String, Vec<u8>)> = Vec::new();
            for (append, at) in appends.iter().zip(ats) {
                match ran.wrote(at, 0)?.code {
                    Code::Done => {
                        pending.remove(&append.0);
                    }
                    Code::NotStored => creates.push(append),
                    other => return Err(unexpected("appending to an index key", other)),
                }
            }
            if creates.is_empty() {
                continue;
            }
            let mut pipe = Pipeline::default();
            let ats: Vec<_> = creates
                .iter()
                .map(|(k, v)| pipe.store(k, v, Store::SET.mode(Mode::Add)))
                .collect();
            let ran = self.run_pipeline(session, pipe, counted)?;
            for ((name, _), at) in creates.iter().zip(ats) {
                match ran.wrote(at, 0)?.code {
                    Code::Done => {
                        pending.remove(name);
                    }
                    // Created by another process meanwhile: read again.
                    Code::NotStored => {}
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

    /// Writes the durable records of members whose live records were just
    /// written, each unless it already has that revision or a later one; all of
    /// them in one exchange per round. Returns, per item, whether its durable
    /// record is now at its revision or later; `false` leaves it to the holder's
    /// next check ([`SYNC_SECS`]).
    fn sync_durables(
        &self,
        session: &mut Session<'_>,
        mut items: Vec<SyncItem<'_>>,
        counted: bool,
    ) -> Result<Vec<bool>> {
        let mut done = vec![false; items.len()];
        for _ in 0..MAX_ATTEMPTS {
            let pending: Vec<usize> = (0..items.len()).filter(|&i| !done[i]).collect();
            if pending.is_empty() {
                break;
            }
            let mut pipe = Pipeline::default();
            let ats: Vec<_> = pending
                .iter()
                .map(|&i| {
                    let item = &items[i];
                    match item.known {
                        Some(cas) => pipe.store(
                            item.key,
                            item.value,
                            Store::SET.flags(item.rev).cas_or_add(cas),
                        ),
                        None => pipe.get(item.key, Want::NOTHING.cas().flags()),
                    }
                })
                .collect();
            let ran = self.run_pipeline(session, pipe, counted)?;
            for (&i, at) in pending.iter().zip(ats) {
                let item = &mut items[i];
                match item.known.take() {
                    Some(_) => match ran.wrote(at, 0)?.code {
                        Code::Done => done[i] = true,
                        // Changed since it was read: read it again.
                        Code::Exists | Code::NotStored | Code::NotFound => {}
                    },
                    None => {
                        let got = ran.got(at, 0)?;
                        if got.hit() && got.flags.unwrap_or(0) >= item.rev {
                            done[i] = true;
                        } else if got.hit() {
                            item.known = Some(Some(got.cas.ok_or_else(|| missing_cas(item.key))?));
                        } else {
                            item.known = Some(None);
                        }
                    }
                }
            }
        }
        Ok(done)
    }

    // ---- single members -------------------------------------------------

    /// Deletes a member's records: any when `holder` is `None`, only those held by
    /// that instance otherwise. Returns whether a record was deleted.
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
        self.servers[server].session(|session| {
            let removed = match holder {
                None => self.remove_any(server, session, &k)?,
                Some(instance) => {
                    if !self.remove_held(server, session, &k, instance)? {
                        return Ok(false);
                    }
                    true
                }
            };
            self.cache(server).remove(slot_of(&key));
            self.unindex(session, &key, &k.bucket)?;
            Ok(removed)
        })
    }

    /// An operator's removal: deletes the durable record, then the live one, then
    /// checks both stayed gone (a heartbeat in between may have written the durable
    /// record back). Whether a record existed comes from the first read, so a
    /// repeated exchange cannot turn "deleted" into "not found".
    fn remove_any(&self, server: usize, session: &mut Session<'_>, k: &MemberKeys) -> Result<bool> {
        let mut existed = None;
        for _ in 0..MAX_ATTEMPTS {
            let mut pipe = Pipeline::default();
            let (at, batch) = pipe.group(7);
            batch.get(&k.live, Want::NOTHING);
            batch.get(&k.durable, Want::NOTHING);
            batch.delete(&k.durable, None);
            batch.delete(&k.live, None);
            batch.delete(&k.legacy_forced, None);
            batch.get(&k.durable, Want::NOTHING);
            batch.get(&k.live, Want::NOTHING);
            let ran = self.run_pipeline(session, pipe, false)?;
            let was = ran.got(at, 0)?.hit() || ran.got(at, 1)?.hit();
            let existed = *existed.get_or_insert(was);
            if !ran.got(at, 5)?.hit() && !ran.got(at, 6)?.hit() {
                return Ok(existed);
            }
        }
        Err(self.contention(server, "deleting a member"))
    }

    /// Deletes the records of `k` if `instance` holds the member (the live record
    /// names it, or, without a live record, the durable one does): the durable
    /// record first, then the live one, each compare-and-delete on the CAS read.
    /// Returns whether the member was held (and is now gone).
    fn remove_held(
        &self,
        server: usize,
        session: &mut Session<'_>,
        k: &MemberKeys,
        instance: InstanceId,
    ) -> Result<bool> {
        for _ in 0..MAX_ATTEMPTS {
            let mut pipe = Pipeline::default();
            let (at, batch) = pipe.group(2);
            batch.get(&k.live, Want::VALUE.cas());
            batch.get(&k.durable, Want::VALUE.cas());
            let ran = self.run_pipeline(session, pipe, false)?;
            let (live, durable) = (ran.got(at, 0)?, ran.got(at, 1)?);
            let holder = match self.record_in(server, &k.live, &live)? {
                Some(record) => Some(record.holder),
                None => self
                    .record_in(server, &k.durable, &durable)?
                    .map(|r| r.holder),
            };
            if holder.is_none_or(|h| h.instance != instance) {
                return Ok(false);
            }
            let mut pipe = Pipeline::default();
            let (at, batch) = pipe.group(3);
            let mut n = 0;
            if durable.hit() {
                batch.delete(
                    &k.durable,
                    Some(durable.cas.ok_or_else(|| missing_cas(&k.durable))?),
                );
                n += 1;
            }
            if live.hit() {
                batch.delete(&k.live, Some(live.cas.ok_or_else(|| missing_cas(&k.live))?));
                n += 1;
            }
            batch.delete(&k.legacy_forced, None);
            let ran = self.run_pipeline(session, pipe, false)?;
            let mut all = true;
            for i in 0..n {
                match ran.wrote(at, i)?.code {
                    Code::Done | Code::NotFound => {}
                    // Changed since the read (a heartbeat of another process of the
                    // same instance): read again.
                    Code::Exists => all = false,
                    other => return Err(unexpected("deleting a member record", other)),
                }
            }
            if all {
                return Ok(true);
            }
        }
        Err(self.contention(server, "deleting a member record"))
    }

    /// Drops `key` from its index bucket `bucket` (a compare-and-swap rewrite).
    fn unindex(&self, session: &mut Session<'_>, key: &MemberKey, bucket: &str) -> Result<()> {
        let id = key.member.as_str().as_bytes();
        for _ in 0..MAX_ATTEMPTS {
            let mut pipe = Pipeline::default();
            let at = pipe.get(bucket, Want::VALUE.cas());
            let ran = self.run_pipeline(session, pipe, false)?;
            let got = ran.got(at, 0)?;
            let (true, Some(cas)) = (got.hit(), got.cas) else {
                return Ok(());
            };
            let Some(rest) = index::without(got.value, id) else {
                return Ok(());
            };
            let mut pipe = Pipeline::default();
            let at = if rest.is_empty() {
                pipe.delete(bucket, Some(cas))
            } else {
                pipe.store(bucket, &rest, Store::SET.cas(cas))
            };
            match self.run_pipeline(session, pipe, false)?.wrote(at, 0)?.code {
                Code::Done => return Ok(()),
                Code::Exists | Code::NotFound => continue,
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

    /// Replaces the metadata of a member `instance` holds, leaving holder, epoch,
    /// times and freshness as they are.
    pub async fn set_metadata(
        self: &Arc<Self>,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        let change = Change::Metadata(instance, metadata.clone());
        let work = vec![(self.server_of(key), (key.clone(), change))];
        self.on_all(Lane::Main, work, Backend::change_on)
            .await
            .map(|mut v| v.remove(0))
    }

    /// Sets or clears the forced-down flag of an existing member.
    pub async fn set_forced_down(
        self: &Arc<Self>,
        key: &MemberKey,
        forced_down: bool,
    ) -> Result<bool> {
        let work = vec![(
            self.server_of(key),
            (key.clone(), Change::Forced(forced_down)),
        )];
        self.on_all(Lane::Main, work, Backend::change_on)
            .await
            .map(|v| !matches!(v[0], HolderUpdate::Missing))
    }

    /// Applies `change` to the member's record, keeping its freshness:
    ///
    /// - a live record: a patch line appended on condition of its CAS (memcached's
    ///   append keeps the item's TTL, so the member's age is exactly as it was);
    ///   one that grew past [`PATCH_LIMIT`] is written compacted with its
    ///   remaining TTL instead;
    /// - no live record but a durable one: the live record is created from it
    ///   (add) with the change, marked not live (not fresh);
    /// - neither: `Missing`.
    ///
    /// Then the durable record gets the new revision. `set_metadata` by another
    /// instance than the holder changes nothing (`NotHeld`). Returns `Stored` for
    /// a `Forced` change that found the member.
    fn change_on(&self, server: usize, (key, change): (MemberKey, Change)) -> Result<HolderUpdate> {
        let k = self.member_keys(&key);
        let slot = slot_of(&key);
        self.servers[server].session(|session| {
            let (life, _) = self.life(server, session, false)?;
            for _ in 0..MAX_ATTEMPTS {
                let mut pipe = Pipeline::default();
                let (at, batch) = pipe.group(3);
                batch.get(&k.live, Want::VALUE.cas().ttl());
                batch.get(&k.durable, Want::VALUE.cas().flags());
                if matches!(change, Change::Forced(_)) {
                    // The flag lives in the record now (see `keys`).
                    batch.delete(&k.legacy_forced, None);
                }
                let ran = self.run_pipeline(session, pipe, false)?;
                let (live, durable) = (ran.got(at, 0)?, ran.got(at, 1)?);
                let live_record = self.record_in(server, &k.live, &live)?;
                let base = match &live_record {
                    Some(record) => record.clone(),
                    None => match self.record_in(server, &k.durable, &durable)? {
                        Some(record) => record,
                        None => return Ok(HolderUpdate::Missing),
                    },
                };
                let mut next = base.clone();
                match &change {
                    Change::Metadata(instance, metadata) => {
                        if base.holder.instance != *instance {
                            return Ok(HolderUpdate::NotHeld(base.holder));
                        }
                        next.metadata = metadata.clone();
                    }
                    Change::Forced(forced) => {
                        if base.forced == *forced {
                            return Ok(HolderUpdate::Stored);
                        }
                        next.forced = *forced;
                    }
                }
                next.rev = base.rev.wrapping_add(1).max(1);
                let known_durable = if durable.hit() {
                    Some(Some(durable.cas.ok_or_else(|| missing_cas(&k.durable))?))
                } else {
                    Some(None)
                };
                let mut pipe = Pipeline::default();
                let at = match &live_record {
                    Some(_) => {
                        let cas = live.cas.ok_or_else(|| missing_cas(&k.live))?;
                        let patch = StoredRecord::patch(next.rev, next.forced, &next.metadata);
                        if live.value.len() + patch.len() <= PATCH_LIMIT {
                            pipe.store(
                                &k.live,
                                &patch,
                                Store::SET.mode(Mode::Append).cas(cas).return_cas(),
                            )
                        } else {
                            let remaining = live.ttl.unwrap_or(0).clamp(1, i64::from(u32::MAX));
                            pipe.store(
                                &k.live,
                                &next.encode(),
                                Store::SET
                                    .ttl(wire_ttl(remaining as u32))
                                    .cas(cas)
                                    .return_cas(),
                            )
                        }
                    }
                    None => {
                        next.live = false;
                        pipe.store(
                            &k.live,
                            &next.encode(),
                            Store::SET.ttl(self.beat_ttl()).mode(Mode::Add).return_cas(),
                        )
                    }
                };
                let ran = self.run_pipeline(session, pipe, false)?;
                let written = ran.wrote(at, 0)?;
                match written.code {
                    Code::Done => {}
                    Code::Exists | Code::NotFound | Code::NotStored => continue,
                }
                let value = next.encode();
                let synced = self.sync_durables(
                    session,
                    vec![SyncItem {
                        key: &k.durable,
                        value: &value,
                        rev: next.rev,
                        known: known_durable,
                    }],
                    false,
                )?[0];
                // Keep the holder's heartbeat in step: its next write needs no
                // second look.
                let mut cache = self.cache(server);
                let remembered = cache.entry(slot).is_some_and(|held| {
                    Some(held.cas) == live.cas && held.instance() == next.holder.instance
                });
                if remembered {
                    let now = self.now_secs();
                    let held = written.cas.and_then(|cas| {
                        Held::new(
                            next.holder.instance,
                            cas,
                            value,
                            next.rev,
                            now,
                            if synced { now } else { 0 },
                        )
                    });
                    match held {
                        Some(held) => {
                            cache.insert(Some(life), slot, held);
                        }
                        None => cache.remove(slot),
                    }
                } else {
                    cache.remove(slot);
                }
                return Ok(HolderUpdate::Stored);
            }
            Err(self.contention(server, "changing a member record"))
        })
    }

    /// One member's record.
    pub async fn get(self: &Arc<Self>, key: &MemberKey) -> Result<Option<MemberRecord>> {
        let work = vec![(self.server_of(key), (vec![key.clone()], Scan::All))];
        let mut found = self.on_all(Lane::Main, work, Backend::records_on).await?;
        Ok(found.pop().and_then(|mut v| v.records.pop()))
    }

    /// The record of `key` with `freshness` (from the live record's remaining TTL,
    /// or `Absent` when read from the durable record).
    fn member_record(
        &self,
        key: MemberKey,
        record: StoredRecord,
        freshness: Freshness,
    ) -> MemberRecord {
        MemberRecord {
            key,
            last_heartbeat: from_millis(record.beat_ms),
            freshness,
            forced_down: record.forced,
            holder: record.holder,
            holder_since: from_millis(record.holder_since_ms),
            metadata: record.metadata,
        }
    }

    /// What [`Self::records_on`] returns of the members it reads.
    fn keep(
        &self,
        scan: Scan,
        record: &StoredRecord,
        freshness: Freshness,
        out: &mut Scanned,
    ) -> bool {
        let up = !record.forced && is_fresh(freshness, self.service_down_time);
        match scan {
            Scan::All => true,
            Scan::In(State::Up) => up,
            Scan::In(State::Down) => !up,
            Scan::Count => {
                if record.forced {
                    out.summary.forced_down += 1;
                } else if up {
                    out.summary.up += 1;
                } else {
                    out.summary.down += 1;
                }
                false
            }
        }
    }

    /// Records of `keys`, all placed on `server` (those read from their durable
    /// record last), as `scan` asks: all of them, those in one state, or only
    /// their count per state; members without a record are left out. One read per
    /// member (the live record, with its remaining TTL); the durable record only of
    /// members whose live record is gone. Every value is decoded (an undecodable
    /// one is an error whatever `scan` asks), but records are built only for the
    /// members returned.
    fn records_on(&self, server: usize, (keys, scan): (Vec<MemberKey>, Scan)) -> Result<Scanned> {
        self.servers[server].session(|session| {
            let mut names = self.group_keys();
            let mut out = Scanned {
                records: Vec::with_capacity(if matches!(scan, Scan::All) {
                    keys.len()
                } else {
                    0
                }),
                summary: Summary::default(),
            };
            let mut gone: Vec<usize> = Vec::new();
            // One exchange at a time, each answer used before the next is built:
            // the crate makes a few objects per command, and freeing each
            // exchange's before the next reuses the same memory.
            for (c, chunk) in keys.chunks(CHUNK).enumerate() {
                let mut batch = Batch::new();
                for key in chunk {
                    let gk = names.group(key);
                    let member = key.member.as_str().as_bytes();
                    batch.get_with(|out| gk.live_into(member, out), Want::VALUE.ttl());
                }
                let reply = self.run_batch(session, batch, false)?;
                for (j, key) in chunk.iter().enumerate() {
                    let got = reply.got(j).ok_or_else(|| {
                        Error::backend("memcached answered a read with another kind of answer")
                            .with_driver(NAME)
                    })?;
                    if !got.hit() {
                        gone.push(c * CHUNK + j);
                        continue;
                    }
                    let record = StoredRecord::decode(got.value).map_err(|why| {
                        let (g, m) = (
                            key.group.as_str().as_bytes(),
                            key.member.as_str().as_bytes(),
                        );
                        self.undecodable(server, &self.keys.live(g, m), &why)
                    })?;
                    let freshness = self.freshness(got.ttl, record.live);
                    if self.keep(scan, &record, freshness, &mut out) {
                        out.records
                            .push(self.member_record(key.clone(), record, freshness));
                    }
                }
            }
            if !gone.is_empty() {
                let mut pipe = Pipeline::default();
                let names: Vec<String> = gone
                    .iter()
                    .map(|&i| self.member_keys(&keys[i]).durable)
                    .collect();
                let ats: Vec<_> = names.iter().map(|n| pipe.get(n, Want::VALUE)).collect();
                let ran = self.run_pipeline(session, pipe, false)?;
                for ((&i, name), at) in gone.iter().zip(&names).zip(ats) {
                    let got = ran.got(at, 0)?;
                    if let Some(record) = self.record_in(server, name, &got)? {
                        if self.keep(scan, &record, Freshness::Absent, &mut out) {
                            out.records.push(self.member_record(
                                keys[i].clone(),
                                record,
                                Freshness::Absent,
                            ));
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    // ---- listings -------------------------------------------------------

    /// Every member of `group` on every server.
    ///
    /// First the index buckets of every server (one exchange each, all servers at
    /// once), then the members' live records in parts of `LIST_PART` members,
    /// the parts of every server in flight at once (each a few pipelined exchanges
    /// of `CHUNK` (2 000) reads).
    pub async fn list(self: &Arc<Self>, group: &GroupId) -> Result<Vec<MemberRecord>> {
        Ok(self.scan(group, Scan::All).await?.records)
    }

    /// The members of `group` in `state`, judged as [`servicegroup_core::Driver::list_in`]
    /// says: the same reads as [`Self::list`], records built only for the members in
    /// `state` (`service_down_time` is this driver's own: its liveness window is
    /// memcached's TTL, set from it).
    pub async fn list_in(
        self: &Arc<Self>,
        group: &GroupId,
        state: State,
    ) -> Result<Vec<MemberRecord>> {
        Ok(self.scan(group, Scan::In(state)).await?.records)
    }

    /// How many members of `group` are up, down and forced down: the same reads as
    /// [`Self::list`], no records built.
    pub async fn summary(self: &Arc<Self>, group: &GroupId) -> Result<Summary> {
        Ok(self.scan(group, Scan::Count).await?.summary)
    }

    async fn scan(self: &Arc<Self>, group: &GroupId, scan: Scan) -> Result<Scanned> {
        let work = (0..self.servers.len())
            .map(|s| (s, group.clone()))
            .collect();
        let members = self.on_all(Lane::Bulk, work, Backend::list_ids_on).await?;
        let parts: Vec<(usize, (Vec<MemberKey>, Scan))> = members
            .into_iter()
            .enumerate()
            .flat_map(|(server, keys)| parts(server, keys, LIST_PART))
            .map(|(server, keys)| (server, (keys, scan)))
            .collect();
        let parts = self.on_all(Lane::Bulk, parts, Backend::records_on).await?;
        let mut all = Scanned {
            records: Vec::with_capacity(parts.iter().map(|p| p.records.len()).sum()),
            summary: Summary::default(),
        };
        for part in parts {
            all.records.extend(part.records);
            all.summary.up += part.summary.up;
            all.summary.down += part.summary.down;
            all.summary.forced_down += part.summary.forced_down;
        }
        Ok(all)
    }

    /// The members of `group` in the index buckets of `server` that belong there,
    /// sorted.
    fn list_ids_on(&self, server: usize, group: GroupId) -> Result<Vec<MemberKey>> {
        let g = group.as_str().as_bytes();
        let names: Vec<String> = (0..BUCKETS).map(|b| self.keys.bucket(g, b)).collect();
        let many = self.servers.len() > 1;
        self.servers[server].session(|session| {
            let mut pipe = Pipeline::default();
            let ats: Vec<_> = names.iter().map(|n| pipe.get(n, Want::VALUE)).collect();
            let ran = self.run_pipeline(session, pipe, false)?;
            let mut members: Vec<MemberId> = Vec::new();
            let (mut malformed, mut invalid) = (0, 0);
            for (b, at) in (0..BUCKETS).zip(&ats) {
                let got = ran.got(*at, 0)?;
                if !got.hit() {
                    continue;
                }
                malformed += index::for_each(got.value, |id| {
                    let Ok(member) = MemberId::from_bytes(id) else {
                        invalid += 1;
                        return;
                    };
                    // Only entries in the bucket and on the server the member belongs to.
                    if bucket_of(member.as_str(), BUCKETS) == b
                        && (!many
                            || self.placement.server_of(group.as_str(), member.as_str()) == server)
                    {
                        members.push(member);
                    }
                });
            }
            if malformed > 0 {
                tracing::warn!(driver = NAME, group = %group, malformed, "skipped malformed lines in the index buckets of group {group}");
            }
            if invalid > 0 {
                tracing::warn!(driver = NAME, group = %group, invalid, "skipped invalid member ids in the index buckets of group {group}");
            }
            members.sort_unstable();
            members.dedup();
            Ok(members
                .into_iter()
                .map(|m| MemberKey::new(group.clone(), m))
                .collect())
        })
    }

    /// Every group with at least one index entry on some server.
    pub async fn groups(self: &Arc<Self>) -> Result<Vec<GroupId>> {
        let work = (0..self.servers.len()).map(|s| (s, ())).collect();
        let parts = self.on_all(Lane::Bulk, work, Backend::groups_on).await?;
        let all: BTreeSet<GroupId> = parts.into_iter().flatten().collect();
        Ok(all.into_iter().collect())
    }

    fn groups_on(&self, server: usize, (): ()) -> Result<Vec<GroupId>> {
        self.servers[server].session(|session| {
            let mut pipe = Pipeline::default();
            let at = pipe.get(&self.keys.groups(), Want::VALUE);
            let ran = self.run_pipeline(session, pipe, false)?;
            let got = ran.got(at, 0)?;
            if !got.hit() {
                return Ok(Vec::new());
            }
            let groups: Vec<GroupId> = index::parse(got.value)
                .0
                .into_iter()
                .filter_map(|id| GroupId::from_bytes(&id).ok())
                .collect();
            let mut pipe = Pipeline::default();
            let ats: Vec<Vec<_>> = groups
                .iter()
                .map(|group| {
                    (0..BUCKETS)
                        .map(|b| {
                            pipe.get(
                                &self.keys.bucket(group.as_str().as_bytes(), b),
                                Want::NOTHING,
                            )
                        })
                        .collect()
                })
                .collect();
            let ran = self.run_pipeline(session, pipe, false)?;
            let mut out = Vec::new();
            for (group, ats) in groups.into_iter().zip(ats) {
                let mut any = false;
                for at in ats {
                    any |= ran.got(at, 0)?.hit();
                }
                if any {
                    out.push(group);
                }
            }
            Ok(out)
        })
    }
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
        assert_eq!(
            b.freshness(Some(i64::from(b.grace) + 1), true),
            Freshness::Present
        );
        assert_eq!(
            b.freshness(Some(i64::from(b.grace)), true),
            Freshness::Absent
        );
        assert_eq!(
            b.freshness(Some(i64::from(MAX_RELATIVE_TTL)), false),
            Freshness::Absent
        );
        let long = Backend::new(
            vec!["127.0.0.1:1".into()],
            Duration::from_millis(100),
            "sg",
            Duration::from_secs(u64::from(MAX_RELATIVE_TTL)),
        );
        assert_eq!(long.grace, 0);
        assert!(long.beat_ttl() > MAX_RELATIVE_TTL);
        assert_eq!(wire_ttl(60), 60);
    }
}
