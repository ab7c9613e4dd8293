//! Heartbeats: one pipelined exchange per server per batch (in chunks of
//! [`crate::server::CHUNK`] operations), fenced on the live record's CAS token, with more
//! exchanges only for the members whose tokens did not match.
//!
//! Per member the first exchange carries:
//!
//! - a member this driver object remembers as held by the heartbeating instance:
//!   `ms <live> T<30 days> C<cas of its last write> c` with the value it wrote
//!   then (heartbeat time and `live` rewritten in place), and, once a minute
//!   ([`SYNC_SECS`]), a value-less read of the durable record's revision;
//! - any other member: `mg <live> v c`, and the live record is written in a second
//!   exchange only if it names the heartbeating instance.
//!
//! Per index key the batch depends on: a value-less read of its CAS (see
//! [`Backend::plan_checks`]).
//!
//! Then, per member that did not match, a small state machine ([`Step`]), one
//! pipelined exchange per round for all of them: a record that changed is read
//! again (held by the instance: written again from what was read; by another:
//! superseded); a live record that is gone is looked up in the durable record
//! (held by the instance: created again from it; by another: superseded; gone too:
//! missing); a durable record behind the live one is written again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use servicegroup_core::{Beats, Error, HeartbeatReport, InstanceId, MemberKey, Result, Superseded};

use super::pipeline::{At, Pipeline, Ran};
use super::{missing_cas, now_millis, unexpected, Backend, Lane, Wanted, PARALLEL_PART, SYNC_SECS};
use crate::cache::{slot_of, Held, Token, Verified};
use crate::index::{self, BUCKETS};
use crate::ops::{Code, Mode, Store, Want};
use crate::placement::bucket_of;
use crate::server::Session;
use crate::stored::{beat_digits, set_beat, StoredRecord};
use crate::NAME;

/// Heartbeat exchanges per key prefix in this process (see [`heartbeat_exchanges`]).
static HEARTBEAT_EXCHANGES: LazyLock<Mutex<HashMap<String, Arc<AtomicU64>>>> =
    LazyLock::new(Default::default);

pub(super) fn exchange_counter(prefix: &str) -> Arc<AtomicU64> {
    let mut all = HEARTBEAT_EXCHANGES
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.entry(prefix.to_owned()).or_default().clone()
}

/// How many pipelined exchanges (round trips to one server) the drivers of this
/// process with key prefix `prefix` have spent on heartbeat batches so far. A
/// batch costs one exchange per server and 2 000 operations (one per member and
/// per index key), plus a second (rarely a third) for members whose remembered
/// CAS tokens did not match, and one more per part for the read of the server's
/// boot token; tests use it to check that heartbeats are batched.
pub fn heartbeat_exchanges(prefix: &str) -> u64 {
    exchange_counter(prefix).load(Ordering::Relaxed)
}

/// Rounds of the follow-up state machine before a member is given up for this
/// tick (each round only repeats when another process changed the member's keys
/// in between).
const MAX_ROUNDS: usize = 8;

/// One heartbeat work item: beats `range` of one server's share of a batch,
/// whose members it heartbeats (`write`) and/or whose index entries it checks
/// (`check`).
struct HeartbeatWork {
    beats: Arc<Vec<(InstanceId, MemberKey)>>,
    range: Range<usize>,
    write: bool,
    check: bool,
}

impl HeartbeatWork {
    fn new(
        beats: &Arc<Vec<(InstanceId, MemberKey)>>,
        range: Range<usize>,
        write: bool,
        check: bool,
    ) -> Self {
        Self {
            beats: Arc::clone(beats),
            range,
            write,
            check,
        }
    }
}

/// What a work item found besides the members it refreshed.
#[derive(Debug, Default)]
struct Found {
    missing: Vec<(InstanceId, MemberKey)>,
    superseded: Vec<Superseded>,
}

/// Where one member's heartbeat stands.
#[derive(Debug)]
enum Step {
    /// Written from the cache in the first exchange, against CAS `cas`; `check`:
    /// with a read of the durable record's revision.
    Known { cas: u64, check: bool },
    /// Read the live record (`mg v c`).
    Read,
    /// Write the live record with `value` on condition of `cas`.
    Write { cas: u64, value: Vec<u8>, rev: u32 },
    /// The live record is gone: read the durable record.
    ReadDurable,
    /// Create the live record (add) from the durable record read with `dcas`, and
    /// read the durable record's CAS again after it.
    Create { dcas: u64, value: Vec<u8>, rev: u32 },
    /// The durable record changed while the live record was created from it: read
    /// both and write the newer.
    Reconcile,
    /// Write the durable record (CAS `dcas`, or add) with a copy at `rev`.
    SyncDurable {
        dcas: Option<u64>,
        value: Vec<u8>,
        rev: u32,
    },
    /// Nothing more to do.
    Done,
}

/// `value` of a record as a heartbeat writes it: `live`, with this heartbeat's time.
fn beat_value(record: StoredRecord, now_ms: u64) -> (Vec<u8>, u32) {
    let rev = record.rev;
    let value = StoredRecord {
        live: true,
        beat_ms: now_ms,
        ..record
    }
    .encode();
    (value, rev)
}

/// What [`Backend::plan_checks`] put in a pipeline: each index key with the batch
/// members it must hold, and where its read went.
struct CheckPlan<'a> {
    checks: BTreeMap<String, Wanted<'a>>,
    ats: Vec<At>,
}

impl Backend {
    /// Heartbeats every key of every part of `batch`; see the module docs. Servers
    /// that fail are logged (once per outage); the call fails only when every
    /// server involved failed.
    pub async fn heartbeat(self: &Arc<Self>, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        // Each key is cloned once, into its server's share.
        let mut shares: BTreeMap<usize, Vec<(InstanceId, MemberKey)>> = BTreeMap::new();
        for part in batch {
            for key in part.keys {
                shares
                    .entry(self.server_of(key))
                    .or_default()
                    .push((part.instance, key.clone()));
            }
        }
        // A server's share of up to PARALLEL_PART members is one work item
        // (heartbeats and index checks in one pipelined stream). A larger share is
        // written in parts of PARALLEL_PART in parallel, and its index keys are
        // checked once, by one more item, instead of once per part: each part
        // touches nearly every bucket, and a bucket whose CAS changed (joins going
        // on) is read in full.
        let mut work: Vec<(usize, HeartbeatWork)> = Vec::new();
        for (server, beats) in shares {
            let beats = Arc::new(beats);
            let n = beats.len();
            if n <= PARALLEL_PART {
                work.push((server, HeartbeatWork::new(&beats, 0..n, true, true)));
                continue;
            }
            work.push((server, HeartbeatWork::new(&beats, 0..n, false, true)));
            for start in (0..n).step_by(PARALLEL_PART) {
                let range = start..(start + PARALLEL_PART).min(n);
                work.push((server, HeartbeatWork::new(&beats, range, true, false)));
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
                Ok(found) => {
                    any_ok = true;
                    report.missing.extend(found.missing);
                    report.superseded.extend(found.superseded);
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
                report.missing.sort();
                report.missing.dedup();
                report
                    .superseded
                    .sort_by(|a, b| (&a.key, a.instance).cmp(&(&b.key, b.instance)));
                report
                    .superseded
                    .dedup_by(|a, b| a.key == b.key && a.instance == b.instance);
                Ok(report)
            }
        }
    }

    /// One work item, as one session (see [`crate::server::Server::session`]).
    fn heartbeat_on(&self, server: usize, work: HeartbeatWork) -> Result<Found> {
        let beats = &work.beats[work.range.clone()];
        if beats.is_empty() {
            return Ok(Found::default());
        }
        self.servers[server]
            .session(|session| self.heartbeat_session(server, session, beats, &work))
    }

    /// Its heartbeats and index checks go out in one pipelined exchange (chunked
    /// at [`crate::server::CHUNK`]); follow-ups only for what did not match.
    fn heartbeat_session(
        &self,
        server: usize,
        session: &mut Session<'_>,
        beats: &[(InstanceId, MemberKey)],
        work: &HeartbeatWork,
    ) -> Result<Found> {
        let (life, _) = self.life(server, session, true)?;
        let now = self.now_secs();
        let now_ms = now_millis();
        let digits = beat_digits(now_ms);
        let n = beats.len();
        let slots: Vec<u64> = beats.iter().map(|(_, key)| slot_of(key)).collect();
        let mut steps: Vec<Step> = (0..n).map(|_| Step::Done).collect();
        let mut ats: Vec<Option<At>> = vec![None; n];

        // The first exchange.
        let mut pipe = Pipeline::default();
        if work.write {
            let cache = self.cache(server);
            let mut names = self.group_keys();
            let trusted = cache.boot() == Some(life);
            let mut value = Vec::new();
            for (i, (instance, key)) in beats.iter().enumerate() {
                let gk = names.group(key);
                let member = key.member.as_str().as_bytes();
                let held = cache.held_by(slots[i], *instance).filter(|_| trusted);
                match (held, &digits) {
                    (Some(held), Some(digits)) => {
                        let check =
                            held.synced == 0 || now.saturating_sub(held.synced) >= SYNC_SECS;
                        let (at, batch) = pipe.group(1 + usize::from(check));
                        value.clear();
                        value.extend_from_slice(&held.value);
                        set_beat(&mut value, held.header_end as usize, digits);
                        batch.store_with(
                            |out| gk.live_into(member, out),
                            &value,
                            Store::SET.ttl(self.beat_ttl()).cas(held.cas).return_cas(),
                        );
                        if check {
                            batch.get_with(
                                |out| gk.durable_into(member, out),
                                Want::NOTHING.cas().flags(),
                            );
                        }
                        ats[i] = Some(at);
                        steps[i] = Step::Known {
                            cas: held.cas,
                            check,
                        };
                    }
                    _ => {
                        let (at, batch) = pipe.group(1);
                        batch.get_with(|out| gk.live_into(member, out), Want::VALUE.cas());
                        ats[i] = Some(at);
                        steps[i] = Step::Read;
                    }
                }
            }
        }
        let check_plan = work.check.then(|| self.plan_checks(&mut pipe, beats));
        if pipe.is_empty() {
            return Ok(Found::default());
        }
        let first = self.run_pipeline(session, pipe, true)?;

        let mut found = Found::default();
        let mut unreadable: Vec<Error> = Vec::new();
        // Members to remember (position, entry) and to forget.
        let mut stored: Vec<(usize, Held)> = Vec::new();
        let mut forget: Vec<usize> = Vec::new();
        // Members refreshed from the cache: (position, CAS written against, new
        // CAS, the durable record if it was checked: its revision and CAS, `None`
        // when it is gone).
        type Durable = Option<(u32, u64)>;
        let mut refreshed: Vec<(usize, u64, u64, Option<Durable>)> = Vec::new();
        // Durable records written back (position): mark the entry synced.
        let mut synced: Vec<usize> = Vec::new();

        for i in 0..n {
            let Some(at) = ats[i] else { continue };
            let (instance, key) = &beats[i];
            match std::mem::replace(&mut steps[i], Step::Done) {
                Step::Known { cas, check } => {
                    let wrote = first.wrote(at, 0)?;
                    match wrote.code {
                        Code::Done => {
                            let new_cas = wrote
                                .cas
                                .ok_or_else(|| missing_cas(&self.member_keys(key).live))?;
                            let durable = if check {
                                let got = first.got(at, 1)?;
                                Some(match (got.hit(), got.cas) {
                                    (true, Some(dcas)) => Some((got.flags.unwrap_or(0), dcas)),
                                    _ => None,
                                })
                            } else {
                                None
                            };
                            refreshed.push((i, cas, new_cas, durable));
                        }
                        // Changed since this driver wrote it: look again.
                        Code::Exists => steps[i] = Step::Read,
                        Code::NotFound => steps[i] = Step::ReadDurable,
                        other => return Err(unexpected("storing a heartbeat", other)),
                    }
                }
                Step::Read => {
                    let got = first.got(at, 0)?;
                    steps[i] = self.after_read(
                        server,
                        *instance,
                        key,
                        &got,
                        now_ms,
                        &mut found,
                        &mut unreadable,
                        &mut forget,
                        i,
                    )?;
                }
                _ => {}
            }
        }
        // The refreshed entries: new CAS, the heartbeat written in place.
        if !refreshed.is_empty() {
            let mut cache = self.cache(server);
            let same_life = cache.boot() == Some(life);
            for (i, old_cas, new_cas, durable) in refreshed {
                let (instance, _) = &beats[i];
                let Some(held) = cache
                    .entry(slots[i])
                    .filter(|h| same_life && h.cas == old_cas && h.instance() == *instance)
                else {
                    // Changed by another call of this process meanwhile: it knows better.
                    continue;
                };
                held.cas = new_cas;
                if let Some(digits) = &digits {
                    set_beat(&mut held.value, held.header_end as usize, digits);
                }
                held.touch(now);
                match durable {
                    // At this revision or a later one (whoever wrote a later one
                    // also changed the live record, and this write would have
                    // failed: later is only ever a durable record left from before
                    // the live one was lost and created again).
                    Some(Some((rev, _))) if rev >= held.rev => held.synced = now,
                    Some(behind) => {
                        steps[i] = Step::SyncDurable {
                            dcas: behind.map(|(_, dcas)| dcas),
                            value: held.value.to_vec(),
                            rev: held.rev,
                        }
                    }
                    None => {}
                }
            }
        }

        // Follow-ups, one exchange per round for every member still on the way.
        for _ in 0..MAX_ROUNDS {
            let pending: Vec<usize> = (0..n)
                .filter(|&i| !matches!(steps[i], Step::Done))
                .collect();
            if pending.is_empty() {
                break;
            }
            let mut pipe = Pipeline::default();
            for &i in &pending {
                let k = self.member_keys(&beats[i].1);
                ats[i] = Some(match &steps[i] {
                    Step::Read => pipe.get(&k.live, Want::VALUE.cas()),
                    Step::ReadDurable => pipe.get(&k.durable, Want::VALUE.cas()),
                    Step::Write { cas, value, .. } => pipe.store(
                        &k.live,
                        value,
                        Store::SET.ttl(self.beat_ttl()).cas(*cas).return_cas(),
                    ),
                    Step::Create { value, .. } => {
                        let (at, batch) = pipe.group(2);
                        batch.store(
                            &k.live,
                            value,
                            Store::SET.ttl(self.beat_ttl()).mode(Mode::Add).return_cas(),
                        );
                        batch.get(&k.durable, Want::NOTHING.cas());
                        at
                    }
                    Step::Reconcile => {
                        let (at, batch) = pipe.group(2);
                        batch.get(&k.live, Want::VALUE.cas());
                        batch.get(&k.durable, Want::VALUE.cas());
                        at
                    }
                    Step::SyncDurable { dcas, value, rev } => {
                        pipe.store(&k.durable, value, Store::SET.flags(*rev).cas_or_add(*dcas))
                    }
                    Step::Known { .. } | Step::Done => continue,
                });
            }
            let ran = self.run_pipeline(session, pipe, true)?;
            for &i in &pending {
                let Some(at) = ats[i] else { continue };
                let (instance, key) = &beats[i];
                let step = std::mem::replace(&mut steps[i], Step::Done);
                steps[i] = match step {
                    Step::Read => {
                        let got = ran.got(at, 0)?;
                        self.after_read(
                            server,
                            *instance,
                            key,
                            &got,
                            now_ms,
                            &mut found,
                            &mut unreadable,
                            &mut forget,
                            i,
                        )?
                    }
                    Step::ReadDurable => {
                        let got = ran.got(at, 0)?;
                        let name = self.member_keys(key).durable;
                        match self.record_in(server, &name, &got) {
                            Ok(None) => {
                                found.missing.push((*instance, key.clone()));
                                forget.push(i);
                                Step::Done
                            }
                            Ok(Some(record)) if record.holder.instance == *instance => {
                                let dcas = got.cas.ok_or_else(|| missing_cas(&name))?;
                                let (value, rev) = beat_value(record, now_ms);
                                Step::Create { dcas, value, rev }
                            }
                            Ok(Some(record)) => {
                                found.superseded.push(Superseded {
                                    key: key.clone(),
                                    instance: *instance,
                                    holder: record.holder,
                                });
                                forget.push(i);
                                Step::Done
                            }
                            Err(error) => {
                                unreadable.push(error);
                                forget.push(i);
                                Step::Done
                            }
                        }
                    }
                    Step::Write { value, rev, .. } => {
                        let wrote = ran.wrote(at, 0)?;
                        match wrote.code {
                            Code::Done => {
                                let cas = wrote
                                    .cas
                                    .ok_or_else(|| missing_cas(&self.member_keys(key).live))?;
                                if let Some(held) = Held::new(*instance, cas, value, rev, now, 0) {
                                    stored.push((i, held));
                                }
                                Step::Done
                            }
                            Code::Exists => Step::Read,
                            Code::NotFound => Step::ReadDurable,
                            other => return Err(unexpected("storing a heartbeat", other)),
                        }
                    }
                    Step::Create { dcas, value, rev } => {
                        let wrote = ran.wrote(at, 0)?;
                        match wrote.code {
                            Code::Done => {
                                let cas = wrote
                                    .cas
                                    .ok_or_else(|| missing_cas(&self.member_keys(key).live))?;
                                let durable = ran.got(at, 1)?;
                                if durable.hit() && durable.cas == Some(dcas) {
                                    if let Some(held) =
                                        Held::new(*instance, cas, value, rev, now, now)
                                    {
                                        stored.push((i, held));
                                    }
                                    Step::Done
                                } else {
                                    // The durable record changed since it was read:
                                    // the live record just made from it may be behind.
                                    Step::Reconcile
                                }
                            }
                            // Created by someone else meanwhile: read it.
                            Code::NotStored => Step::Read,
                            other => return Err(unexpected("storing a heartbeat", other)),
                        }
                    }
                    Step::Reconcile => {
                        let (live, durable) = (ran.got(at, 0)?, ran.got(at, 1)?);
                        let names = self.member_keys(key);
                        let live_record = match self.record_in(server, &names.live, &live) {
                            Ok(r) => r,
                            Err(error) => {
                                unreadable.push(error);
                                forget.push(i);
                                continue;
                            }
                        };
                        match live_record {
                            None => Step::ReadDurable,
                            Some(record) if record.holder.instance != *instance => {
                                found.superseded.push(Superseded {
                                    key: key.clone(),
                                    instance: *instance,
                                    holder: record.holder,
                                });
                                forget.push(i);
                                Step::Done
                            }
                            Some(record) => {
                                let cas = live.cas.ok_or_else(|| missing_cas(&names.live))?;
                                let newer = self
                                    .record_in(server, &names.durable, &durable)
                                    .ok()
                                    .flatten()
                                    .filter(|d| d.rev > record.rev);
                                match newer {
                                    Some(d) if d.holder.instance != *instance => {
                                        found.superseded.push(Superseded {
                                            key: key.clone(),
                                            instance: *instance,
                                            holder: d.holder,
                                        });
                                        forget.push(i);
                                        Step::Done
                                    }
                                    Some(d) => {
                                        let (value, rev) = beat_value(d, now_ms);
                                        Step::Write { cas, value, rev }
                                    }
                                    None => {
                                        let (value, rev) = beat_value(record, now_ms);
                                        Step::Write { cas, value, rev }
                                    }
                                }
                            }
                        }
                    }
                    Step::SyncDurable { .. } => {
                        match ran.wrote(at, 0)?.code {
                            Code::Done => synced.push(i),
                            // Changed meanwhile (a newer revision, or removed): the
                            // next check looks again.
                            Code::Exists | Code::NotStored | Code::NotFound => {}
                        }
                        Step::Done
                    }
                    Step::Known { .. } | Step::Done => Step::Done,
                };
            }
        }
        let stuck = steps.iter().filter(|s| !matches!(s, Step::Done)).count();
        if stuck > 0 {
            tracing::warn!(
                driver = NAME,
                server = self.servers[server].address(),
                stuck,
                "{stuck} heartbeat(s) on memcached server {} gave up after {MAX_ROUNDS} rounds: other processes kept changing the same members; they are tried again next tick",
                self.servers[server].address()
            );
        }

        {
            let mut cache = self.cache(server);
            for i in forget {
                cache.remove(slots[i]);
            }
            for (i, held) in stored {
                cache.insert(Some(life), slots[i], held);
            }
            for i in synced {
                if let Some(held) = cache.entry(slots[i]) {
                    held.synced = now;
                }
            }
            cache.sweep(now);
        }
        if let Some(first_error) = unreadable.first() {
            let address = self.servers[server].address();
            tracing::error!(
                driver = NAME,
                server = address,
                count = unreadable.len(),
                error = %first_error,
                "{} member record(s) on memcached server {address} cannot be read; their heartbeats were not stored (first: {first_error})",
                unreadable.len()
            );
        }
        if let Some(plan) = check_plan {
            // Members found without a record are core's to register again.
            let missing: HashSet<&MemberKey> = found.missing.iter().map(|(_, k)| k).collect();
            self.finish_checks(server, session, life, beats, &missing, &first, plan)?;
        }
        Ok(found)
    }

    /// The next step after reading the live record of `key` (`got`, a `mg v c`).
    #[allow(clippy::too_many_arguments)]
    fn after_read(
        &self,
        server: usize,
        instance: InstanceId,
        key: &MemberKey,
        got: &crate::ops::Got<'_>,
        now_ms: u64,
        found: &mut Found,
        unreadable: &mut Vec<Error>,
        forget: &mut Vec<usize>,
        i: usize,
    ) -> Result<Step> {
        if !got.hit() {
            return Ok(Step::ReadDurable);
        }
        let name = self.member_keys(key).live;
        match self.record_in(server, &name, got) {
            Ok(Some(record)) if record.holder.instance == instance => {
                let cas = got.cas.ok_or_else(|| missing_cas(&name))?;
                let (value, rev) = beat_value(record, now_ms);
                Ok(Step::Write { cas, value, rev })
            }
            Ok(Some(record)) => {
                found.superseded.push(Superseded {
                    key: key.clone(),
                    instance,
                    holder: record.holder,
                });
                forget.push(i);
                Ok(Step::Done)
            }
            Ok(None) => Ok(Step::ReadDurable),
            Err(error) => {
                unreadable.push(error);
                forget.push(i);
                Ok(Step::Done)
            }
        }
    }

    /// Adds to `pipe` the checks that every member of `beats` is in its index
    /// bucket and its group in the group list: a value-less CAS read of each key.
    /// [`Self::finish_checks`] reads in full only keys whose CAS changed since this
    /// driver last found the batch's ids in them, and writes back the entries that
    /// are gone (memcached evicted or lost them). Index entries are never reported
    /// missing: the record is what makes a member exist, and core registers again
    /// only what has no record.
    fn plan_checks<'a>(
        &self,
        pipe: &mut Pipeline,
        beats: &'a [(InstanceId, MemberKey)],
    ) -> CheckPlan<'a> {
        let mut buckets: HashMap<(&str, u32), Wanted<'a>> = HashMap::new();
        let mut groups: Wanted<'a> = Vec::new();
        for (i, (_, key)) in beats.iter().enumerate() {
            let member = key.member.as_str();
            buckets
                .entry((key.group.as_str(), bucket_of(member, BUCKETS)))
                .or_default()
                .push((i, member.as_bytes()));
            groups.push((i, key.group.as_str().as_bytes()));
        }
        let mut checks: BTreeMap<String, Wanted<'a>> = buckets
            .into_iter()
            .map(|((group, b), wanted)| (self.keys.bucket(group.as_bytes(), b), wanted))
            .collect();
        if !groups.is_empty() {
            checks.insert(self.keys.groups(), groups);
        }
        let ats: Vec<At> = checks
            .keys()
            .map(|name| pipe.get(name, Want::NOTHING.cas()))
            .collect();
        CheckPlan { checks, ats }
    }

    /// Reads the answers to [`Self::plan_checks`].
    #[allow(clippy::too_many_arguments)]
    fn finish_checks(
        &self,
        server: usize,
        session: &mut Session<'_>,
        life: Token,
        beats: &[(InstanceId, MemberKey)],
        missing: &HashSet<&MemberKey>,
        ran: &Ran,
        plan: CheckPlan<'_>,
    ) -> Result<()> {
        let CheckPlan { checks, ats } = plan;
        // Batch members whose bucket line or group-list entry is gone.
        let mut gone: BTreeSet<usize> = BTreeSet::new();
        let mut reread: Vec<(&String, &Wanted<'_>)> = Vec::new();
        for ((name, wanted), at) in checks.iter().zip(&ats) {
            let got = ran.got(*at, 0)?;
            if !got.hit() {
                self.cache(server).verified.remove(name);
                gone.extend(wanted.iter().map(|(i, _)| *i));
                continue;
            }
            let fresh = got.cas.is_some_and(|cas| {
                let cache = self.cache(server);
                // What is remembered must be from the life of the server this
                // read came from.
                cache.boot() == Some(life)
                    && cache.verified.get(name).is_some_and(|v| {
                        v.cas == cas && wanted.iter().all(|(_, id)| v.confirmed.contains(*id))
                    })
            });
            if !fresh {
                reread.push((name, wanted));
            }
        }
        if !reread.is_empty() {
            let mut pipe = Pipeline::default();
            let ats: Vec<At> = reread
                .iter()
                .map(|(name, _)| pipe.get(name, Want::VALUE.cas()))
                .collect();
            let ran = self.run_pipeline(session, pipe, true)?;
            for ((name, wanted), at) in reread.into_iter().zip(ats) {
                let got = ran.got(at, 0)?;
                let ids: HashSet<&[u8]> = wanted.iter().map(|(_, id)| *id).collect();
                let present = if got.hit() {
                    index::find(got.value, &ids)
                } else {
                    HashSet::new()
                };
                let mut confirmed: HashSet<Vec<u8>> = HashSet::with_capacity(present.len());
                for (i, id) in wanted {
                    if present.contains(id) {
                        if !confirmed.contains(*id) {
                            confirmed.insert(id.to_vec());
                        }
                    } else {
                        gone.insert(*i);
                    }
                }
                let mut cache = self.cache(server);
                match got.cas {
                    Some(cas) if got.hit() && cache.boot() == Some(life) => {
                        // Parts of one batch check the same keys in parallel: pool
                        // what they confirmed at the same CAS.
                        match cache.verified.get_mut(name) {
                            Some(v) if v.cas == cas => v.confirmed.extend(confirmed),
                            _ => {
                                cache
                                    .verified
                                    .insert(name.clone(), Verified { cas, confirmed });
                            }
                        }
                    }
                    _ => {
                        cache.verified.remove(name);
                    }
                }
            }
        }
        gone.retain(|i| !missing.contains(&beats[*i].1));
        if !gone.is_empty() {
            self.restore_index(server, session, beats, gone)?;
        }
        Ok(())
    }

    /// Writes back the index entries of the batch members at `gone` (positions in
    /// `beats`) that have a record. A record read before and after the lines are
    /// appended keeps a member that is leaving meanwhile out of the index: `remove`
    /// deletes the records first and the index line after them, so either it
    /// removes the appended line too, or the second read finds the records gone and
    /// the line is taken back here. Members without a record are left to core,
    /// which registers them again (index included).
    fn restore_index(
        &self,
        server: usize,
        session: &mut Session<'_>,
        beats: &[(InstanceId, MemberKey)],
        gone: BTreeSet<usize>,
    ) -> Result<()> {
        let exists = |session: &mut Session<'_>, positions: &[usize]| -> Result<Vec<usize>> {
            let mut pipe = Pipeline::default();
            let ats: Vec<At> = positions
                .iter()
                .map(|i| {
                    let k = self.member_keys(&beats[*i].1);
                    let (at, batch) = pipe.group(2);
                    batch.get(&k.live, Want::NOTHING);
                    batch.get(&k.durable, Want::NOTHING);
                    at
                })
                .collect();
            let ran = self.run_pipeline(session, pipe, true)?;
            let mut out = Vec::new();
            for (i, at) in positions.iter().zip(ats) {
                if ran.got(at, 0)?.hit() || ran.got(at, 1)?.hit() {
                    out.push(*i);
                }
            }
            Ok(out)
        };
        let gone: Vec<usize> = gone.into_iter().collect();
        let held = exists(session, &gone)?;
        if held.is_empty() {
            return Ok(());
        }
        self.ensure_lines(
            server,
            session,
            self.index_lines(held.iter().map(|i| &beats[*i].1)),
            false,
            true,
        )?;
        let still: HashSet<usize> = exists(session, &held)?.into_iter().collect();
        let mut taken_back = 0;
        for i in held.iter().filter(|i| !still.contains(i)) {
            let key = &beats[*i].1;
            self.unindex(session, key, &self.bucket_key(key))?;
            taken_back += 1;
        }
        let count = held.len() - taken_back;
        if count > 0 {
            let address = self.servers[server].address();
            let first = &beats[held[0]].1;
            tracing::warn!(
                driver = NAME,
                server = address,
                count,
                first = %first,
                "index entries of {count} heartbeating member(s) were gone from memcached server {address} (first: {first}); wrote them again"
            );
        }
        Ok(())
    }
}
