//! Heartbeats: one pipelined exchange per server per batch (in chunks of
//! [`CHUNK`] operations), with fencing on CAS tokens the driver remembers and a
//! second look only for the keys whose tokens did not match.
//!
//! Per member the exchange carries, after the server's boot-token read:
//!
//! - a member this driver object remembers as held by the heartbeating instance:
//!   `mg <record> c` (the record's CAS, no value) and
//!   `ms <heartbeat> T<30 days> C<cas of its last heartbeat write> c`;
//! - any other member: `mg <record> v c`, and the heartbeat key is written in a
//!   second exchange only if the record names the heartbeating instance.
//!
//! Per index key the batch depends on: a value-less read of its CAS (see
//! [`Backend::check_index`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use memcache::exp::{Get, Meta, MutationResult, MutationStatus, Op, OpResult, Set};
use servicegroup_core::{Beats, Error, HeartbeatReport, InstanceId, MemberKey, Result, Superseded};

use super::pipeline::{At, Pipeline, Ran};
use super::{missing_cas, now_millis, unexpected, Backend, Lane, Wanted, PARALLEL_PART};
use crate::cache::{slot_of, Held, Token, Verified};
use crate::index::{self, BUCKETS};
use crate::placement::bucket_of;
use crate::server::{get_at, CHUNK};
use crate::stored::{beat_flags, encode_beat};
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
/// batch costs one exchange per server and 2 000 operations (two per member,
/// one per index key, one boot-token read per exchange), plus a second (rarely a
/// third) for members whose remembered CAS tokens did not match; tests use it to
/// check that heartbeats are batched.
pub fn heartbeat_exchanges(prefix: &str) -> u64 {
    exchange_counter(prefix).load(Ordering::Relaxed)
}

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

/// `a` when both tokens are the same (data read under both belongs to one life of
/// the server), `None` otherwise.
fn same(a: Option<Token>, b: Option<Token>) -> Option<Token> {
    if a == b {
        a
    } else {
        None
    }
}

/// The CAS of a heartbeat write that must have been applied.
fn applied_cas(written: &MutationResult, key: &str) -> Result<u64> {
    match written.status {
        MutationStatus::Applied => written.cas.ok_or_else(|| missing_cas(key)),
        other => Err(unexpected("storing a heartbeat", other)),
    }
}

/// A heartbeat write that was applied: its CAS, and the boot token read before it.
type Written = (u64, Option<Token>);

/// The heartbeat key's value of each instance of a batch (one or a few).
struct Values(Vec<(InstanceId, Vec<u8>)>);

impl Values {
    fn new(beats: &[(InstanceId, MemberKey)]) -> Self {
        let mut values: Vec<(InstanceId, Vec<u8>)> = Vec::new();
        for (instance, _) in beats {
            if values.last().is_some_and(|(i, _)| i == instance) {
                continue;
            }
            if !values.iter().any(|(i, _)| i == instance) {
                values.push((*instance, encode_beat(*instance)));
            }
        }
        Self(values)
    }

    fn of(&self, instance: InstanceId) -> &[u8] {
        self.0
            .iter()
            .find(|(i, _)| *i == instance)
            .map_or(&[][..], |(_, v)| v.as_slice())
    }
}

/// What [`Backend::plan_beats`] put in a pipeline.
struct BeatPlan {
    /// The heartbeat key's value, per heartbeating instance.
    values: Values,
    /// The heartbeat key's client flags (the heartbeat time).
    flags: u32,
    /// Cache slot of each member.
    slots: Vec<u64>,
    /// What the cache remembered of each member for its heartbeating instance.
    known: Vec<Option<Held>>,
    /// The boot token `known` belongs to: comparisons are trusted only when the
    /// exchange read this same token (another part of the batch may have found
    /// the server restarted and installed a new one since).
    known_under: Option<Token>,
    /// Where each member's operations went.
    ats: Vec<At>,
}

/// What [`Backend::plan_checks`] put in a pipeline: each index key with the batch
/// members it must hold, and where its read went.
struct CheckPlan<'a> {
    checks: BTreeMap<String, Wanted<'a>>,
    ats: Vec<At>,
}

impl Backend {
    /// [`Self::run`] for heartbeats, counted in [`heartbeat_exchanges`].
    pub(super) fn run_counted(&self, server: usize, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        self.exchanges
            .fetch_add(ops.len().div_ceil(CHUNK) as u64, Ordering::Relaxed);
        self.run(server, ops)
    }

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

    /// One work item: its heartbeats and index checks go out in one pipelined
    /// exchange (chunked at [`CHUNK`]); follow-ups only for what did not match.
    fn heartbeat_on(&self, server: usize, work: HeartbeatWork) -> Result<Found> {
        let beats = &work.beats[work.range.clone()];
        let mut pipe = self.pipeline();
        let beat_plan = work
            .write
            .then(|| self.plan_beats(server, &mut pipe, beats));
        let check_plan = work.check.then(|| self.plan_checks(&mut pipe, beats));
        if pipe.is_empty() {
            return Ok(Found::default());
        }
        let ran = self.run_pipeline(server, pipe, true)?;
        if ran.boot_missing() {
            self.ensure_boot(server, true)?;
        }
        let found = match beat_plan {
            Some(plan) => self.finish_beats(server, beats, &ran, plan)?,
            None => Found::default(),
        };
        if let Some(plan) = check_plan {
            // Members found without a record are core's to register again.
            let missing: HashSet<&MemberKey> = found.missing.iter().map(|(_, k)| k).collect();
            self.finish_checks(server, beats, &missing, &ran, plan)?;
        }
        Ok(found)
    }

    /// Adds the heartbeats of `beats` (all placed on `server`) to `pipe`: for a
    /// member remembered as held by the heartbeating instance, the record's CAS and
    /// the CAS-conditional heartbeat write; for any other, the record.
    fn plan_beats(
        &self,
        server: usize,
        pipe: &mut Pipeline,
        beats: &[(InstanceId, MemberKey)],
    ) -> BeatPlan {
        let flags = beat_flags(now_millis());
        let values = Values::new(beats);
        let slots: Vec<u64> = beats.iter().map(|(_, key)| slot_of(key)).collect();
        let (known, known_under): (Vec<Option<Held>>, Option<Token>) = {
            let cache = self.cache(server);
            let known = beats
                .iter()
                .zip(&slots)
                .map(|((instance, _), slot)| cache.held_by(*slot, *instance))
                .collect();
            (known, cache.boot())
        };
        let mut ats: Vec<At> = Vec::with_capacity(beats.len());
        let mut names = self.group_keys();
        for ((instance, key), held) in beats.iter().zip(&known) {
            let (gk, m) = names.of(key);
            ats.push(match held {
                Some(held) => pipe.push([
                    Get::new(gk.record(&m))
                        .without_value()
                        .meta(Meta::NONE.cas())
                        .into(),
                    Set::new(gk.heartbeat(&m), values.of(*instance))
                        .ttl(self.beat_ttl())
                        .client_flags(flags)
                        .compare_cas(held.beat_cas)
                        .return_cas()
                        .into(),
                ]),
                None => pipe.push([Get::new(gk.record(&m)).meta(Meta::NONE.cas()).into()]),
            });
        }
        BeatPlan {
            values,
            flags,
            slots,
            known,
            known_under,
            ats,
        }
    }

    /// Reads the answers to [`Self::plan_beats`]; a second exchange (and rarely a
    /// third) for the members whose remembered tokens did not match.
    fn finish_beats(
        &self,
        server: usize,
        beats: &[(InstanceId, MemberKey)],
        ran: &Ran,
        plan: BeatPlan,
    ) -> Result<Found> {
        let now = self.now_secs();
        let BeatPlan {
            values,
            flags,
            slots,
            known,
            known_under,
            ats,
        } = plan;
        let mut found = Found::default();
        // Members to remember: (position, entry, boot token its CAS tokens belong to).
        let mut stored: Vec<(usize, Held, Option<Token>)> = Vec::new();
        // Record changed, or not trusted: read it; with the CAS of the heartbeat
        // written in the first exchange, if it was.
        let mut reread: Vec<(usize, Option<Written>)> = Vec::new();
        // Held by the heartbeating instance (record CAS, token): write the heartbeat.
        let mut rewrite: Vec<(usize, u64, Option<Token>)> = Vec::new();
        let mut forget: Vec<usize> = Vec::new();
        let mut unreadable: Vec<Error> = Vec::new();
        for (i, (instance, key)) in beats.iter().enumerate() {
            let at = ats[i];
            let boot = ran.boot(at);
            let record = ran.get(at, 0)?;
            if !record.hit() {
                found.missing.push((*instance, key.clone()));
                forget.push(i);
                continue;
            }
            if let Some(held) = known[i] {
                let beat = ran.mutation(at, 1)?;
                let written = match beat.status {
                    MutationStatus::Applied => Some(
                        beat.cas
                            .ok_or_else(|| missing_cas(&self.member_keys(key).heartbeat))?,
                    ),
                    // Written by someone else since, or gone: looked at below.
                    MutationStatus::CasMismatch | MutationStatus::NotFound => None,
                    other => return Err(unexpected("storing a heartbeat", other)),
                };
                let trusted = boot.trusted() && boot.token() == known_under;
                if trusted && record.item.cas == Some(held.record_cas) {
                    // The record is as this instance last saw it held.
                    match written {
                        Some(cas) => stored.push((
                            i,
                            Held::new(*instance, held.record_cas, cas, now),
                            boot.token(),
                        )),
                        None => rewrite.push((i, held.record_cas, boot.token())),
                    }
                } else {
                    reread.push((i, written.map(|cas| (cas, boot.token()))));
                }
                continue;
            }
            let name = self.member_keys(key).record;
            match self.record_in(server, &name, record) {
                Ok(Some(r)) if r.holder.instance == *instance => {
                    let cas = record.item.cas.ok_or_else(|| missing_cas(&name))?;
                    rewrite.push((i, cas, boot.token()));
                }
                Ok(Some(r)) => {
                    found.superseded.push(Superseded {
                        key: key.clone(),
                        instance: *instance,
                        holder: r.holder,
                    });
                    forget.push(i);
                }
                Ok(None) => {}
                Err(error) => {
                    unreadable.push(error);
                    forget.push(i);
                }
            }
        }

        // Second look, for the few keys whose tokens did not match.
        let mut rewrite_again: Vec<(usize, u64, Option<Token>)> = Vec::new();
        if !reread.is_empty() || !rewrite.is_empty() {
            let mut pipe = self.pipeline();
            let reread_at: Vec<At> = reread
                .iter()
                .map(|(i, _)| {
                    let name = self.member_keys(&beats[*i].1).record;
                    pipe.push([Get::new(name).meta(Meta::NONE.cas()).into()])
                })
                .collect();
            let rewrite_at: Vec<At> = rewrite
                .iter()
                .map(|(i, _, _)| pipe.push([self.beat_op(&beats[*i], &values, flags)]))
                .collect();
            let ran = self.run_pipeline(server, pipe, true)?;
            if ran.boot_missing() {
                self.ensure_boot(server, true)?;
            }
            for ((i, record_cas, token), at) in rewrite.iter().zip(&rewrite_at) {
                let (instance, key) = &beats[*i];
                let cas = applied_cas(ran.mutation(*at, 0)?, &self.member_keys(key).heartbeat)?;
                let token = same(*token, ran.boot(*at).token());
                stored.push((*i, Held::new(*instance, *record_cas, cas, now), token));
            }
            for ((i, written), at) in reread.iter().zip(&reread_at) {
                let (instance, key) = &beats[*i];
                let got = ran.get(*at, 0)?;
                let name = self.member_keys(key).record;
                match self.record_in(server, &name, got) {
                    Ok(None) => {
                        found.missing.push((*instance, key.clone()));
                        forget.push(*i);
                    }
                    Ok(Some(r)) if r.holder.instance == *instance => {
                        let record_cas = got.item.cas.ok_or_else(|| missing_cas(&name))?;
                        let token = ran.boot(*at).token();
                        match written {
                            Some((cas, written_under)) if *written_under == token => {
                                stored.push((
                                    *i,
                                    Held::new(*instance, record_cas, *cas, now),
                                    token,
                                ));
                            }
                            _ => rewrite_again.push((*i, record_cas, token)),
                        }
                    }
                    Ok(Some(r)) => {
                        found.superseded.push(Superseded {
                            key: key.clone(),
                            instance: *instance,
                            holder: r.holder,
                        });
                        forget.push(*i);
                    }
                    Err(error) => {
                        unreadable.push(error);
                        forget.push(*i);
                    }
                }
            }
        }
        if !rewrite_again.is_empty() {
            let mut pipe = self.pipeline();
            let ats: Vec<At> = rewrite_again
                .iter()
                .map(|(i, _, _)| pipe.push([self.beat_op(&beats[*i], &values, flags)]))
                .collect();
            let ran = self.run_pipeline(server, pipe, true)?;
            for ((i, record_cas, token), at) in rewrite_again.iter().zip(&ats) {
                let (instance, key) = &beats[*i];
                let cas = applied_cas(ran.mutation(*at, 0)?, &self.member_keys(key).heartbeat)?;
                let token = same(*token, ran.boot(*at).token());
                stored.push((*i, Held::new(*instance, *record_cas, cas, now), token));
            }
        }

        {
            let mut cache = self.cache(server);
            for i in forget {
                cache.remove(slots[i]);
            }
            for (i, held, token) in stored {
                if !cache.insert(token, slots[i], held) {
                    cache.remove(slots[i]);
                }
            }
            cache.sweep(now);
        }
        if let Some(first) = unreadable.first() {
            let address = self.servers[server].address();
            tracing::error!(
                driver = NAME,
                server = address,
                count = unreadable.len(),
                error = %first,
                "{} member record(s) on memcached server {address} cannot be read; their heartbeats were not stored (first: {first})",
                unreadable.len()
            );
        }
        Ok(found)
    }

    /// The unconditional heartbeat write of `beat` (for a member whose record was
    /// just seen held by the heartbeating instance).
    fn beat_op(
        &self,
        (instance, key): &(InstanceId, MemberKey),
        values: &Values,
        flags: u32,
    ) -> Op {
        Set::new(self.member_keys(key).heartbeat, values.of(*instance))
            .ttl(self.beat_ttl())
            .client_flags(flags)
            .return_cas()
            .into()
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
            .map(|name| pipe.push([Get::new(name).without_value().meta(Meta::NONE.cas()).into()]))
            .collect();
        CheckPlan { checks, ats }
    }

    /// Reads the answers to [`Self::plan_checks`].
    fn finish_checks(
        &self,
        server: usize,
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
            let got = ran.get(*at, 0)?;
            if !got.hit() {
                self.cache(server).verified.remove(name);
                gone.extend(wanted.iter().map(|(i, _)| *i));
                continue;
            }
            let boot = ran.boot(*at);
            let fresh = boot.trusted()
                && got.item.cas.is_some_and(|cas| {
                    let cache = self.cache(server);
                    // What is remembered must be from the life of the server this
                    // read came from.
                    cache.boot() == boot.token()
                        && cache.verified.get(name).is_some_and(|v| {
                            v.cas == cas && wanted.iter().all(|(_, id)| v.confirmed.contains(*id))
                        })
                });
            if !fresh {
                reread.push((name, wanted));
            }
        }
        if !reread.is_empty() {
            let mut pipe = self.pipeline();
            let ats: Vec<At> = reread
                .iter()
                .map(|(name, _)| pipe.push([Get::new(name.as_str()).meta(Meta::NONE.cas()).into()]))
                .collect();
            let ran = self.run_pipeline(server, pipe, true)?;
            for ((name, wanted), at) in reread.into_iter().zip(ats) {
                let got = ran.get(at, 0)?;
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
                        gone.insert(*i);
                    }
                }
                let token = ran.boot(at).token();
                let mut cache = self.cache(server);
                match got.item.cas {
                    Some(cas) if got.hit() && token.is_some() && cache.boot() == token => {
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
            self.restore_index(server, beats, gone)?;
        }
        Ok(())
    }

    /// Writes back the index entries of the batch members at `gone` (positions in
    /// `beats`) whose records exist. A record read before and after the lines are
    /// appended keeps a member that is leaving meanwhile out of the index: `remove`
    /// deletes the record first and the index line after it, so either it removes
    /// the appended line too, or the second read finds the record gone and the
    /// line is taken back here. Members without a record are left to core, which
    /// registers them again (index included).
    fn restore_index(
        &self,
        server: usize,
        beats: &[(InstanceId, MemberKey)],
        gone: BTreeSet<usize>,
    ) -> Result<()> {
        let exists = |positions: &[usize]| -> Result<Vec<usize>> {
            let ops = positions
                .iter()
                .map(|i| {
                    Get::new(self.member_keys(&beats[*i].1).record)
                        .without_value()
                        .into()
                })
                .collect();
            let results = self.run_counted(server, ops)?;
            let mut out = Vec::new();
            for (n, i) in positions.iter().enumerate() {
                if get_at(&results, n)?.hit() {
                    out.push(*i);
                }
            }
            Ok(out)
        };
        let gone: Vec<usize> = gone.into_iter().collect();
        let held = exists(&gone)?;
        if held.is_empty() {
            return Ok(());
        }
        self.ensure_lines(server, self.index_lines(held.iter().map(|i| &beats[*i].1)))?;
        let still: HashSet<usize> = exists(&held)?.into_iter().collect();
        let mut taken_back = 0;
        for i in held.iter().filter(|i| !still.contains(i)) {
            let key = &beats[*i].1;
            self.unindex(server, key, &self.bucket_key(key))?;
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
