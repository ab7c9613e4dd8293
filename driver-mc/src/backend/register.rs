//! Registrations: the identity contract of `Driver` checked and applied with
//! compare-and-set on the live record, pipelined for a whole share of a batch.
//!
//! Per server and part of up to [`PARALLEL_PART`] registrations, in a few
//! exchanges for the whole part:
//!
//! 1. `mg <live> v c` and `mg <durable> v c` of every member: who holds it, and
//!    the CAS tokens to write against; the condition is checked on the live record,
//!    or, where it is gone, on the durable one (refused → nothing is written). A
//!    member with neither also gets `mg <legacy forced-down key>` (formats 1 and
//!    2), so an operator's flag set before the upgrade carries over;
//! 2. the index lines of the members to store (appends, see
//!    [`Backend::ensure_lines`]);
//! 3. `ms <live> T<30 days> C<cas read> c` (or `ME`, add, where there was no live
//!    record): the record and the first heartbeat in one write;
//! 4. `ms <durable> F<rev> C<cas read>` (or add): the durable copy, only after the
//!    live record was written (a registration that lost a race never leaves its
//!    value in the durable record).
//!
//! A live record whose CAS moved between 1 and 3 (another process registered it,
//! or memcached lost it) is not written: it is read again and the condition
//! checked again, so of two processes racing for a member at most one condition
//! holds on the record the other stored. The forced-down flag is carried over from
//! the record found: registrations never clear an operator's decision.

use std::collections::BTreeMap;

use servicegroup_core::driver::{condition_holds, registered_holder};
use servicegroup_core::{Error, Registered, Registration, Result};

use super::pipeline::{At, Pipeline};
use super::{
    missing_cas, now_millis, parts, Backend, Lane, SyncItem, MAX_ATTEMPTS, PARALLEL_PART, SYNC_SECS,
};
use crate::cache::{slot_of, Held};
use crate::ops::{Code, Store, Want};
use crate::server::Session;
use crate::stored::StoredRecord;
use crate::NAME;

/// The keys a registration reads and writes.
struct Names {
    live: String,
    durable: String,
    legacy_forced: String,
}

/// What the first read found of one member.
struct Read {
    /// The record the condition is checked on: the live one, or the durable one
    /// where the live one is gone.
    found: Option<StoredRecord>,
    /// The live record's CAS (`None`: there was none; write with add).
    live_cas: Option<u64>,
    /// The durable record's CAS (`None`: there was none).
    durable_cas: Option<u64>,
}

/// A registration whose condition held on what was read: what to write.
struct Plan {
    /// Position in the work item.
    j: usize,
    read: Read,
    value: Vec<u8>,
    rev: u32,
    epoch: u64,
}

impl Backend {
    /// Applies `registrations` (any servers), one outcome each, in order.
    pub async fn register_many(
        self: &std::sync::Arc<Self>,
        registrations: &[Registration],
    ) -> Result<Vec<Registered>> {
        // Each registration is cloned once, into its server's share.
        let mut shares: BTreeMap<usize, Vec<(usize, Registration)>> = BTreeMap::new();
        for (position, registration) in registrations.iter().enumerate() {
            shares
                .entry(self.server_of(&registration.key))
                .or_default()
                .push((position, registration.clone()));
        }
        let work: Vec<(usize, Vec<(usize, Registration)>)> = shares
            .into_iter()
            .flat_map(|(server, regs)| parts(server, regs, PARALLEL_PART))
            .collect();
        let done = self.on_all(Lane::Main, work, Backend::register_on).await?;
        let mut out: Vec<Option<Registered>> = vec![None; registrations.len()];
        for (position, outcome) in done.into_iter().flatten() {
            out[position] = Some(outcome);
        }
        out.into_iter()
            .map(|o| {
                o.ok_or_else(|| {
                    Error::backend("a registration got no outcome from memcached").with_driver(NAME)
                })
            })
            .collect()
    }

    /// Registers `regs` (all placed on `server`); see the module docs.
    fn register_on(
        &self,
        server: usize,
        regs: Vec<(usize, Registration)>,
    ) -> Result<Vec<(usize, Registered)>> {
        let names: Vec<Names> = {
            let mut keys = self.group_keys();
            regs.iter()
                .map(|(_, r)| {
                    let (gk, m) = keys.of(&r.key);
                    Names {
                        live: gk.live(&m),
                        durable: gk.durable(&m),
                        legacy_forced: gk.legacy_forced(&m),
                    }
                })
                .collect()
        };
        self.servers[server]
            .session(|session| self.register_session(server, session, &regs, &names))
    }

    fn register_session(
        &self,
        server: usize,
        session: &mut Session<'_>,
        regs: &[(usize, Registration)],
        names: &[Names],
    ) -> Result<Vec<(usize, Registered)>> {
        let (life, _) = self.life(server, session, false)?;
        let now_ms = now_millis();
        let now = self.now_secs();
        let mut outcomes: Vec<Option<Registered>> = vec![None; regs.len()];
        let mut indexed = vec![false; regs.len()];
        let mut pending: Vec<usize> = (0..regs.len()).collect();
        // Written: the plan and the live record's new CAS.
        let mut written: Vec<(Plan, u64)> = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            // 1. Who holds each member now.
            let mut pipe = Pipeline::default();
            let ats: Vec<At> = pending
                .iter()
                .map(|&j| {
                    let (at, batch) = pipe.group(2);
                    batch.get(&names[j].live, Want::VALUE.cas());
                    batch.get(&names[j].durable, Want::VALUE.cas());
                    at
                })
                .collect();
            let ran = self.run_pipeline(session, pipe, false)?;
            let mut reads: Vec<(usize, Read)> = Vec::with_capacity(pending.len());
            for (&j, at) in pending.iter().zip(&ats) {
                let (live, durable) = (ran.got(*at, 0)?, ran.got(*at, 1)?);
                let durable_cas = match (durable.hit(), durable.cas) {
                    (true, Some(cas)) => Some(cas),
                    (true, None) => return Err(missing_cas(&names[j].durable)),
                    _ => None,
                };
                let read = match self.record_in(server, &names[j].live, &live)? {
                    Some(record) => Read {
                        found: Some(record),
                        live_cas: Some(live.cas.ok_or_else(|| missing_cas(&names[j].live))?),
                        durable_cas,
                    },
                    None => Read {
                        found: self.record_in(server, &names[j].durable, &durable)?,
                        live_cas: None,
                        durable_cas,
                    },
                };
                reads.push((j, read));
            }
            drop(ran);
            // Members with no record at all: an operator's flag from before format 3.
            let fresh: Vec<usize> = reads
                .iter()
                .enumerate()
                .filter(|(_, (_, r))| r.found.is_none())
                .map(|(n, _)| n)
                .collect();
            let mut legacy_forced = vec![false; reads.len()];
            if !fresh.is_empty() {
                let mut pipe = Pipeline::default();
                let ats: Vec<At> = fresh
                    .iter()
                    .map(|&n| pipe.get(&names[reads[n].0].legacy_forced, Want::NOTHING))
                    .collect();
                let ran = self.run_pipeline(session, pipe, false)?;
                for (&n, at) in fresh.iter().zip(ats) {
                    legacy_forced[n] = ran.got(at, 0)?.hit();
                }
            }

            let mut plans: Vec<Plan> = Vec::new();
            for ((j, read), legacy) in reads.into_iter().zip(legacy_forced) {
                let registration = &regs[j].1;
                let found_holder = read.found.as_ref().map(|r| r.holder);
                if !condition_holds(registration.condition, found_holder) {
                    outcomes[j] = Some(Registered::Refused {
                        found: found_holder,
                    });
                    continue;
                }
                let holder = registered_holder(found_holder, registration.instance);
                let (holder_since_ms, rev, forced) = match &read.found {
                    Some(r) => (
                        if r.holder.instance == registration.instance {
                            r.holder_since_ms
                        } else {
                            now_ms
                        },
                        r.rev.wrapping_add(1).max(1),
                        r.forced,
                    ),
                    None => (now_ms, 1, legacy),
                };
                let value = StoredRecord {
                    holder,
                    holder_since_ms,
                    registered_ms: now_ms,
                    rev,
                    forced,
                    live: true,
                    beat_ms: now_ms,
                    metadata: registration.metadata.clone(),
                }
                .encode();
                plans.push(Plan {
                    j,
                    read,
                    value,
                    rev,
                    epoch: holder.epoch,
                });
            }
            if plans.is_empty() {
                pending.clear();
                break;
            }

            // 2. Index lines, so a listing finds every member that has a record
            //    (appended without reading the buckets for members that had none).
            for fresh in [true, false] {
                let lines = self.index_lines(
                    plans
                        .iter()
                        .filter(|p| !indexed[p.j] && p.read.found.is_none() == fresh)
                        .map(|p| &regs[p.j].1.key),
                );
                if !lines.is_empty() {
                    self.ensure_lines(server, session, lines, fresh, false)?;
                }
            }
            for plan in &plans {
                indexed[plan.j] = true;
            }

            // 3. Live records (compare-and-set on what was read, or add).
            let mut pipe = Pipeline::default();
            let ats: Vec<At> = plans
                .iter()
                .map(|p| {
                    pipe.store(
                        &names[p.j].live,
                        &p.value,
                        Store::SET
                            .ttl(self.beat_ttl())
                            .cas_or_add(p.read.live_cas)
                            .return_cas(),
                    )
                })
                .collect();
            let ran = self.run_pipeline(session, pipe, false)?;
            let mut retry = Vec::new();
            for (plan, at) in plans.into_iter().zip(ats) {
                let wrote = ran.wrote(at, 0)?;
                match wrote.code {
                    Code::Done => {
                        let cas = wrote.cas.ok_or_else(|| missing_cas(&names[plan.j].live))?;
                        outcomes[plan.j] = Some(Registered::Stored { epoch: plan.epoch });
                        written.push((plan, cas));
                    }
                    // Changed (or created, or lost) since it was read: read again.
                    Code::Exists | Code::NotFound | Code::NotStored => retry.push(plan.j),
                }
            }
            pending = retry;
        }
        if !pending.is_empty() {
            return Err(self.contention(server, "registering members"));
        }

        // 4. The durable copies of what was written.
        let synced = self.sync_durables(
            session,
            written
                .iter()
                .map(|(plan, _)| SyncItem {
                    key: &names[plan.j].durable,
                    value: &plan.value,
                    rev: plan.rev,
                    known: Some(plan.read.durable_cas),
                })
                .collect(),
            false,
        )?;
        {
            let mut cache = self.cache(server);
            for ((plan, cas), synced) in written.into_iter().zip(synced) {
                let registration = &regs[plan.j].1;
                let slot = slot_of(&registration.key);
                // Checked again a minute from now, spread over that minute (a join
                // of many members would otherwise make them all due in one tick).
                let spread = (slot % u64::from(SYNC_SECS)) as u32;
                let held = Held::new(
                    registration.instance,
                    cas,
                    plan.value,
                    plan.rev,
                    now,
                    if synced {
                        now.saturating_sub(spread).max(1)
                    } else {
                        0
                    },
                );
                match held {
                    Some(held) => {
                        cache.insert(Some(life), slot, held);
                    }
                    None => cache.remove(slot),
                }
            }
        }
        regs.iter()
            .zip(outcomes)
            .map(|((position, registration), outcome)| {
                let outcome = outcome.ok_or_else(|| {
                    Error::backend(format!("registering {} got no outcome", registration.key))
                        .with_driver(NAME)
                })?;
                Ok((*position, outcome))
            })
            .collect()
    }
}
