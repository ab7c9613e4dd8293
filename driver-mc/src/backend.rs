//! The memcached storage: what each driver call does on which server.
//!
//! Per member `(group, member)`, on the server [`Placement`] picks for it:
//!
//! | key | value | TTL | meaning |
//! |---|---|---|---|
//! | `P:r:G:M` (record) | last heartbeat wall time, unix ms | none | the member exists |
//! | `P:h:G:M` (heartbeat) | heartbeat wall time, unix ms | liveness TTL | present = fresh |
//! | `P:f:G:M` (forced down) | `1` | none | present = forced down |
//! | `P:fi:G` (forced marker) | `1` | none | present = some member of G on this server may be forced down |
//! | `P:i:G:BB` (index bucket) | member ids, one per line | none | listing |
//! | `P:groups` | group ids, one per line | none | `groups()` |
//!
//! The record key is the member's existence and keeps the time of its last
//! heartbeat after the heartbeat key expired (a crashed member is listed down with
//! its last heartbeat). The forced-down flag has its own key, which heartbeats and
//! re-registrations never write, so it survives both. The index buckets and the
//! group list only say where to look; entries without a record are ignored, as
//! are entries found on a server the member is not placed on (left behind when
//! the server list changed).
//!
//! Heartbeats of a batch go out in one pipelined exchange per server (chunked
//! at [`crate::server::CHUNK`] operations): a `replace` of each record key (it
//! fails when memcached lost the record) and a `set` of each heartbeat key, plus a value-less CAS read of each index bucket and group list the batch
//! depends on. A bucket is re-read only when its CAS changed since this driver
//! last found its members in it. Whatever is gone is reported in
//! [`HeartbeatReport::missing`], and core registers those members again; see
//! the crate docs for why the driver does not restore them itself.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use memcache::exp::{Delete, Get, GetResult, Meta, MutationStatus, Op, OpResult, Set, Ttl};
use servicegroup_core::{
    Error, Freshness, GroupId, HeartbeatReport, MemberId, MemberKey, MemberRecord, Result,
};
use tokio::sync::Semaphore;

use crate::index::{self, BUCKETS};
use crate::keys::{GroupKeys, Keys};
use crate::placement::{bucket_of, Placement};
use crate::server::{get_at, mutation_at, Server, CHUNK};
use crate::NAME;

/// Members of one server whose heartbeats go out as one sequence of pipelined
/// exchanges; a larger share of a batch is split into parts sent in parallel.
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

/// Which queue a work item waits in (see [`Backend::on_servers`]).
#[derive(Debug, Clone, Copy)]
enum Lane {
    /// Heartbeats, joins, single-member calls: straight to the server's slots.
    Main,
    /// Listing parts: first one of [`BULK_PER_SERVER`] bulk permits, then a slot.
    Bulk,
}

/// Members per part of a listing; the parts of one server are read in parallel
/// (up to [`EXCHANGES_PER_SERVER`] at once), three keys per member.
const LIST_PART: usize = 5_000;

/// Batch members an index key must hold: (position in the batch, id).
type Wanted<'a> = Vec<(usize, &'a [u8])>;

/// Attempts of a read-modify-write on an index key before giving up (each one
/// only fails when another process changed the key in between).
const MAX_ATTEMPTS: usize = 64;

/// The heartbeat key's TTL in whole seconds for `service_down_time`.
///
/// memcached counts time in whole seconds on a clock that ticks once a second,
/// so an item stored with TTL `T` disappears after more than `T - 1` and at most
/// `T` seconds. With `T = ceil(service_down_time) + 1` a member is never judged
/// down before `service_down_time` has passed since its last heartbeat, and
/// always by `ceil(service_down_time) + 1` seconds (60 s → down between 60 and
/// 61 s). TTLs over 30 days are sent as absolute times by the client.
pub fn heartbeat_ttl(service_down_time: Duration) -> u32 {
    let whole = service_down_time.as_secs() + u64::from(service_down_time.subsec_nanos() > 0);
    u32::try_from(whole.saturating_add(1)).unwrap_or(u32::MAX)
}

/// Heartbeat exchanges per key prefix in this process (see [`heartbeat_exchanges`]).
static HEARTBEAT_EXCHANGES: LazyLock<Mutex<HashMap<String, Arc<AtomicU64>>>> =
    LazyLock::new(Default::default);

fn exchange_counter(prefix: &str) -> Arc<AtomicU64> {
    let mut all = HEARTBEAT_EXCHANGES
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.entry(prefix.to_owned()).or_default().clone()
}

/// How many pipelined exchanges (round trips to one server) the drivers of this
/// process with key prefix `prefix` have spent on heartbeat batches so far. A
/// batch costs one or two exchanges per server and [`CHUNK`] operations (two per
/// member); tests use it to check that heartbeats are batched.
pub fn heartbeat_exchanges(prefix: &str) -> u64 {
    exchange_counter(prefix).load(Ordering::Relaxed)
}

/// What this driver last confirmed about one index key on one server.
#[derive(Debug)]
struct Verified {
    cas: u64,
    /// Ids found in the key at that CAS.
    confirmed: HashSet<Vec<u8>>,
}

/// The memcached backend of the `mc` driver.
#[derive(Debug)]
pub struct Backend {
    servers: Vec<Arc<Server>>,
    placement: Placement,
    keys: Keys,
    ttl: u32,
    service_down_time: Duration,
    verified: Mutex<HashMap<(usize, String), Verified>>,
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

fn parse_time(value: Option<&Vec<u8>>) -> Option<DateTime<Utc>> {
    let text = std::str::from_utf8(value?).ok()?;
    DateTime::from_timestamp_millis(text.trim().parse().ok()?)
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

/// `keys` of `server` split (moved, not cloned) into parts of at most `size`.
fn parts(
    server: usize,
    keys: Vec<MemberKey>,
    size: usize,
) -> impl Iterator<Item = (usize, Vec<MemberKey>)> {
    let mut keys = keys.into_iter();
    std::iter::from_fn(move || {
        let part: Vec<MemberKey> = keys.by_ref().take(size).collect();
        (!part.is_empty()).then_some((server, part))
    })
}

/// One heartbeat work item: members `range` of one server's share of a batch,
/// whose records and heartbeat keys it writes (`write`) and/or whose index
/// entries it checks (`check`).
struct HeartbeatWork {
    keys: Arc<Vec<MemberKey>>,
    range: std::ops::Range<usize>,
    write: bool,
    check: bool,
}

impl HeartbeatWork {
    fn new(
        keys: &Arc<Vec<MemberKey>>,
        range: std::ops::Range<usize>,
        write: bool,
        check: bool,
    ) -> Self {
        Self {
            keys: Arc::clone(keys),
            range,
            write,
            check,
        }
    }
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
        let server_up = servers.iter().map(|_| AtomicBool::new(true)).collect();
        let n = servers.len();
        let slots = servers
            .iter()
            .map(|_| Arc::new(Semaphore::new(EXCHANGES_PER_SERVER)))
            .collect();
        Self {
            servers: servers
                .into_iter()
                .map(|address| Arc::new(Server::new(address, timeout)))
                .collect(),
            placement,
            keys: Keys::new(prefix),
            ttl: heartbeat_ttl(service_down_time),
            service_down_time,
            verified: Mutex::new(HashMap::new()),
            server_up,
            exchanges: exchange_counter(prefix),
            slots,
            bulk_slots: (0..n)
                .map(|_| Arc::new(Semaphore::new(BULK_PER_SERVER)))
                .collect(),
        }
    }

    /// The heartbeat TTL in seconds.
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

    fn run(&self, server: usize, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        self.servers[server].run_blocking(ops)
    }

    /// [`Self::run`] for heartbeats, counted in [`heartbeat_exchanges`].
    fn run_counted(&self, server: usize, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        self.exchanges
            .fetch_add(ops.len().div_ceil(CHUNK) as u64, Ordering::Relaxed);
        self.run(server, ops)
    }

    fn verified(&self) -> MutexGuard<'_, HashMap<(usize, String), Verified>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn by_server(&self, keys: &[MemberKey]) -> BTreeMap<usize, Vec<MemberKey>> {
        let mut out: BTreeMap<usize, Vec<MemberKey>> = BTreeMap::new();
        for key in keys {
            out.entry(self.server_of(key))
                .or_default()
                .push(key.clone());
        }
        out
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

    // ---- register -------------------------------------------------------

    /// Registers `keys` (any servers): index entries, group lists, records
    /// and fresh heartbeats. The forced-down flag is not touched, so it survives.
    pub async fn register_many(self: &Arc<Self>, keys: &[MemberKey]) -> Result<()> {
        // Index entries first (one work item per server), then records and
        // heartbeats in parts, several parts of a server in flight at once.
        let work = self.by_server(keys).into_iter().collect();
        let indexed = self.on_all(Lane::Main, work, Backend::index_on).await?;
        let parts: Vec<(usize, Vec<MemberKey>)> = indexed
            .into_iter()
            .flat_map(|(server, keys)| parts(server, keys, PARALLEL_PART))
            .collect();
        self.on_all(Lane::Main, parts, Backend::store_on)
            .await
            .map(|_| ())
    }

    /// Makes `keys` (all on `server`) appear in their index buckets and the
    /// group list; gives them back for [`Self::store_on`].
    fn index_on(&self, server: usize, keys: Vec<MemberKey>) -> Result<(usize, Vec<MemberKey>)> {
        let mut buckets: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
        let mut groups: BTreeSet<Vec<u8>> = BTreeSet::new();
        for key in &keys {
            buckets
                .entry(self.bucket_key(key))
                .or_default()
                .insert(key.member.as_str().as_bytes().to_vec());
            groups.insert(key.group.as_str().as_bytes().to_vec());
        }
        self.ensure_lines(server, buckets)?;
        self.ensure_lines(server, BTreeMap::from([(self.keys.groups(), groups)]))?;
        Ok((server, keys))
    }

    /// Stores the records and fresh heartbeats of `keys` (all on `server`).
    fn store_on(&self, server: usize, keys: Vec<MemberKey>) -> Result<()> {
        let now = now_millis().to_string();
        let mut ops: Vec<Op> = Vec::with_capacity(keys.len() * 2);
        let mut member_keys = self.group_keys();
        for key in &keys {
            let (gk, m) = member_keys.of(key);
            ops.push(Set::new(gk.record(&m), now.as_bytes()).into());
            ops.push(
                Set::new(gk.heartbeat(&m), now.as_bytes())
                    .ttl(Ttl::secs(self.ttl))
                    .into(),
            );
        }
        let results = self.run(server, ops)?;
        for i in 0..keys.len() {
            match mutation_at(&results, 2 * i)?.status {
                MutationStatus::Applied => {}
                other => return Err(unexpected("storing a member record", other)),
            }
            match mutation_at(&results, 2 * i + 1)?.status {
                MutationStatus::Applied => {}
                other => return Err(unexpected("storing a heartbeat", other)),
            }
        }
        Ok(())
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
                let wanted: HashSet<&[u8]> = pending[name].iter().map(Vec::as_slice).collect();
                let present = match (&got.value, got.hit()) {
                    (Some(value), true) => index::find(value, &wanted),
                    _ => HashSet::new(),
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

    // ---- heartbeat ------------------------------------------------------

    /// Heartbeats `keys`; see the module docs. Servers that fail are logged
    /// (once per outage); the call fails only when every server involved failed.
    pub async fn heartbeat(self: &Arc<Self>, keys: &[MemberKey]) -> Result<HeartbeatReport> {
        // A server's share of up to PARALLEL_PART members is one work item (writes
        // and index checks in one pipelined stream). A larger share is written in
        // parts of PARALLEL_PART in parallel, and its index keys are checked once,
        // by one more item, instead of once per part: each part touches nearly every
        // bucket, and a bucket whose CAS changed (joins going on) is read in full.
        let mut work: Vec<(usize, HeartbeatWork)> = Vec::new();
        for (server, keys) in self.by_server(keys) {
            let keys = Arc::new(keys);
            let n = keys.len();
            if n <= PARALLEL_PART {
                work.push((server, HeartbeatWork::new(&keys, 0..n, true, true)));
                continue;
            }
            work.push((server, HeartbeatWork::new(&keys, 0..n, false, true)));
            for start in (0..n).step_by(PARALLEL_PART) {
                let range = start..(start + PARALLEL_PART).min(n);
                work.push((server, HeartbeatWork::new(&keys, range, true, false)));
            }
        }
        let results = self
            .on_servers(Lane::Main, work, Backend::heartbeat_on)
            .await;
        let mut report = HeartbeatReport::default();
        let mut first_error = None;
        let mut any_ok = false;
        for (server, result) in results {
            let address = self.servers[server].address();
            match result {
                Ok(missing) => {
                    any_ok = true;
                    report.missing.extend(missing);
                    if !self.server_up[server].swap(true, Ordering::SeqCst) {
                        tracing::info!(
                            driver = NAME,
                            server = address,
                            "memcached server {address} is reachable again"
                        );
                    }
                }
                Err(error) => {
                    if self.server_up[server].swap(false, Ordering::SeqCst) {
                        tracing::warn!(
                            driver = NAME,
                            server = address,
                            error = %error,
                            "memcached server {address} failed a heartbeat batch; members placed on it are not heartbeated until it answers again: {error}"
                        );
                    }
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if !any_ok => Err(error),
            _ => {
                // A member can be missing both its record and an index entry.
                report.missing.sort();
                report.missing.dedup();
                Ok(report)
            }
        }
    }

    fn heartbeat_on(&self, server: usize, work: HeartbeatWork) -> Result<Vec<MemberKey>> {
        let keys = &work.keys[work.range.clone()];
        let now = now_millis().to_string();
        let writes = if work.write { 2 * keys.len() } else { 0 };
        let mut ops: Vec<Op> = Vec::with_capacity(writes + BUCKETS as usize + 1);
        // Index keys the batch depends on, with the batch members each must hold.
        let mut buckets: HashMap<(&str, u32), Wanted<'_>> = HashMap::new();
        let mut groups: Wanted<'_> = Vec::new();
        let mut member_keys = self.group_keys();
        for (i, key) in keys.iter().enumerate() {
            if work.write {
                let (gk, m) = member_keys.of(key);
                ops.push(Set::new(gk.record(&m), now.as_bytes()).replace().into());
                ops.push(
                    Set::new(gk.heartbeat(&m), now.as_bytes())
                        .ttl(Ttl::secs(self.ttl))
                        .into(),
                );
            }
            if work.check {
                let member = key.member.as_str();
                buckets
                    .entry((key.group.as_str(), bucket_of(member, BUCKETS)))
                    .or_default()
                    .push((i, member.as_bytes()));
                groups.push((i, key.group.as_str().as_bytes()));
            }
        }
        let mut checks: BTreeMap<String, Wanted<'_>> = buckets
            .into_iter()
            .map(|((group, b), wanted)| (self.keys.bucket(group.as_bytes(), b), wanted))
            .collect();
        if !groups.is_empty() {
            checks.insert(self.keys.groups(), groups);
        }
        for name in checks.keys() {
            ops.push(Get::new(name).without_value().meta(Meta::NONE.cas()).into());
        }
        let results = self.run_counted(server, ops)?;
        let mut missing = vec![false; keys.len()];
        for (i, gone) in missing.iter_mut().enumerate().take(writes / 2) {
            match mutation_at(&results, 2 * i)?.status {
                MutationStatus::Applied => {}
                MutationStatus::NotFound => *gone = true,
                other => return Err(unexpected("replacing a member record", other)),
            }
            match mutation_at(&results, 2 * i + 1)?.status {
                MutationStatus::Applied => {}
                other => return Err(unexpected("storing a heartbeat", other)),
            }
        }
        let base = writes;
        let mut reread: Vec<(&String, &Wanted<'_>)> = Vec::new();
        for (j, (name, wanted)) in checks.iter().enumerate() {
            let got = get_at(&results, base + j)?;
            if !got.hit() {
                self.verified().remove(&(server, name.clone()));
                for (i, _) in wanted {
                    missing[*i] = true;
                }
                continue;
            }
            let fresh = got.item.cas.is_some_and(|cas| {
                self.verified()
                    .get(&(server, name.clone()))
                    .is_some_and(|v| {
                        v.cas == cas && wanted.iter().all(|(_, id)| v.confirmed.contains(*id))
                    })
            });
            if !fresh {
                reread.push((name, wanted));
            }
        }
        if !reread.is_empty() {
            let ops = reread
                .iter()
                .map(|(name, _)| Get::new(name.as_str()).meta(Meta::NONE.cas()).into())
                .collect();
            let results = self.run_counted(server, ops)?;
            for (j, (name, wanted)) in reread.into_iter().enumerate() {
                let got: &GetResult = get_at(&results, j)?;
                let ids: HashSet<&[u8]> = wanted.iter().map(|(_, id)| *id).collect();
                let present = match (&got.value, got.hit()) {
                    (Some(value), true) => index::find(value, &ids),
                    _ => HashSet::new(),
                };
                let mut confirmed: HashSet<Vec<u8>> = HashSet::with_capacity(present.len());
                for (i, id) in wanted {
                    if present.contains(id) {
                        if !confirmed.contains(*id) {
                            confirmed.insert(id.to_vec());
                        }
                    } else {
                        missing[*i] = true;
                    }
                }
                let key = (server, name.clone());
                match got.item.cas {
                    Some(cas) if got.hit() => {
                        // Parts of one batch check the same keys in parallel: pool
                        // what they confirmed at the same CAS.
                        let mut verified = self.verified();
                        match verified.get_mut(&key) {
                            Some(v) if v.cas == cas => v.confirmed.extend(confirmed),
                            _ => {
                                verified.insert(key, Verified { cas, confirmed });
                            }
                        }
                    }
                    _ => {
                        self.verified().remove(&key);
                    }
                }
            }
        }
        Ok(keys
            .iter()
            .zip(missing)
            .filter(|(_, gone)| *gone)
            .map(|(key, _)| key.clone())
            .collect())
    }

    // ---- single members -------------------------------------------------

    /// Deletes a member: record, heartbeat, forced-down flag, then its index entry. Returns whether
    /// the record existed.
    pub async fn remove(self: &Arc<Self>, key: &MemberKey) -> Result<bool> {
        let work = vec![(self.server_of(key), key.clone())];
        self.on_all(Lane::Main, work, Backend::remove_on)
            .await
            .map(|v| v[0])
    }

    fn remove_on(&self, server: usize, key: MemberKey) -> Result<bool> {
        let k = self.member_keys(&key);
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
        let existed = get_at(&results, 0)?.hit();
        let id = key.member.as_str().as_bytes();
        for _ in 0..MAX_ATTEMPTS {
            let results = self.run(
                server,
                vec![Get::new(&k.bucket).meta(Meta::NONE.cas()).into()],
            )?;
            let got = get_at(&results, 0)?;
            let (Some(value), Some(cas), true) = (&got.value, got.item.cas, got.hit()) else {
                return Ok(existed);
            };
            let Some(rest) = index::without(value, id) else {
                return Ok(existed);
            };
            let op: Op = if rest.is_empty() {
                Delete::new(&k.bucket).compare_cas(cas).into()
            } else {
                Set::new(&k.bucket, rest).compare_cas(cas).into()
            };
            match mutation_at(&self.run(server, vec![op])?, 0)?.status {
                MutationStatus::Applied => return Ok(existed),
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
        Ok(existed)
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
            ops.push(Get::new(gk.heartbeat(&m)).without_value().into());
            if forced_possible {
                ops.push(Get::new(gk.forced(&m)).without_value().into());
            }
        }
        let results = self.run(server, ops)?;
        let mut records = Vec::with_capacity(keys.len());
        for (i, key) in keys.into_iter().enumerate() {
            let record = get_at(&results, per * i)?;
            if !record.hit() {
                continue;
            }
            let fresh = get_at(&results, per * i + 1)?.hit();
            let forced_down = forced_possible && get_at(&results, per * i + 2)?.hit();
            records.push(MemberRecord {
                key,
                last_heartbeat: parse_time(record.value.as_ref()),
                freshness: if fresh {
                    Freshness::Present
                } else {
                    Freshness::Absent
                },
                forced_down,
            });
        }
        Ok(records)
    }

    // ---- listings -------------------------------------------------------

    /// Every member of `group` on every server.
    ///
    /// First the index buckets of every server (one exchange each), then the
    /// members' keys in parts of [`LIST_PART`] members, several parts of a
    /// server in flight at once (each a few pipelined exchanges of [`CHUNK`]).
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
}
