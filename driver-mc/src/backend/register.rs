//! Registrations: the identity contract of `Driver` checked and applied with
//! compare-and-set on the record, pipelined for a whole share of a batch.
//!
//! Per server and part of up to [`PARALLEL_PART`] registrations, in a few
//! exchanges for the whole part:
//!
//! 1. `mg <record> v c` of every member: who holds it, and the CAS to write
//!    against; the condition is checked on that (refused → nothing is written);
//! 2. the index lines of the members to store (appends, see
//!    [`Backend::ensure_lines`]);
//! 3. one exchange with `ms <heartbeat> T<30 days> c` of every member to store,
//!    then `ms <record> C<cas read> c` (or `ME`, add, where there was no record).
//!    The heartbeat key is written first: a holder superseded by this record
//!    finds its next heartbeat refused even if this process dies right after.
//!
//! A record whose CAS moved between 1 and 3 (another process registered it, or
//! memcached lost it) is not written: it is read again and the condition checked
//! again, so of two processes racing for a member at most one condition holds on
//! the record the other stored. In that race the loser's heartbeat write may land
//! after the winner's; the winner's next heartbeat finds its CAS gone, sees that it
//! holds the record and writes the heartbeat key again.

use std::collections::BTreeMap;

use memcache::exp::{Get, Meta, MutationStatus, Set};
use servicegroup_core::driver::{condition_holds, registered_holder};
use servicegroup_core::{Error, Registered, Registration, Result};

use super::pipeline::At;
use super::{
    missing_cas, now_millis, parts, unexpected, Backend, Lane, MAX_ATTEMPTS, PARALLEL_PART,
};
use crate::cache::{slot_of, Held};
use crate::stored::{beat_flags, encode_beat, StoredRecord};
use crate::NAME;

/// The keys a registration writes.
struct Names {
    record: String,
    heartbeat: String,
}

/// A registration whose condition held on what was read: what to write.
struct Plan {
    /// Position in the work item.
    j: usize,
    /// The record's CAS when read (`None`: there was no record; write with add).
    record_cas: Option<u64>,
    value: Vec<u8>,
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
        let now_ms = now_millis();
        let now = self.now_secs();
        let names: Vec<Names> = {
            let mut keys = self.group_keys();
            regs.iter()
                .map(|(_, r)| {
                    let (gk, m) = keys.of(&r.key);
                    Names {
                        record: gk.record(&m),
                        heartbeat: gk.heartbeat(&m),
                    }
                })
                .collect()
        };
        let mut outcomes: Vec<Option<Registered>> = vec![None; regs.len()];
        let mut indexed = vec![false; regs.len()];
        let mut pending: Vec<usize> = (0..regs.len()).collect();
        for _ in 0..MAX_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            // 1. Who holds each record now.
            let mut pipe = self.pipeline();
            let ats: Vec<At> = pending
                .iter()
                .map(|&j| pipe.push([Get::new(&names[j].record).meta(Meta::NONE.cas()).into()]))
                .collect();
            let ran = self.run_pipeline(server, pipe, false)?;
            if ran.boot_missing() {
                self.ensure_boot(server, false)?;
            }
            let mut plans: Vec<Plan> = Vec::new();
            for (&j, at) in pending.iter().zip(&ats) {
                let got = ran.get(*at, 0)?;
                let found = self.record_in(server, &names[j].record, got)?;
                let registration = &regs[j].1;
                let found_holder = found.as_ref().map(|r| r.holder);
                if !condition_holds(registration.condition, found_holder) {
                    outcomes[j] = Some(Registered::Refused {
                        found: found_holder,
                    });
                    continue;
                }
                let holder = registered_holder(found_holder, registration.instance);
                let holder_since_ms = match &found {
                    Some(r) if r.holder.instance == registration.instance => r.holder_since_ms,
                    _ => now_ms,
                };
                let record_cas = match found {
                    Some(_) => Some(got.item.cas.ok_or_else(|| missing_cas(&names[j].record))?),
                    None => None,
                };
                let value = StoredRecord {
                    holder,
                    holder_since_ms,
                    registered_ms: now_ms,
                    metadata: registration.metadata.clone(),
                }
                .encode();
                plans.push(Plan {
                    j,
                    record_cas,
                    value,
                    epoch: holder.epoch,
                });
            }
            if plans.is_empty() {
                pending.clear();
                break;
            }

            // 2. Index lines, so a listing finds every member that has a record.
            let lines = self.index_lines(
                plans
                    .iter()
                    .filter(|p| !indexed[p.j])
                    .map(|p| &regs[p.j].1.key),
            );
            if !lines.is_empty() {
                self.ensure_lines(server, lines)?;
            }
            for plan in &plans {
                indexed[plan.j] = true;
            }

            // 3. Heartbeat keys, then records (compare-and-set on what was read).
            let mut pipe = self.pipeline();
            let beat_at: Vec<At> = plans
                .iter()
                .map(|p| {
                    let value = encode_beat(regs[p.j].1.instance);
                    pipe.push([Set::new(&names[p.j].heartbeat, value)
                        .ttl(self.beat_ttl())
                        .client_flags(beat_flags(now_ms))
                        .return_cas()
                        .into()])
                })
                .collect();
            let record_at: Vec<At> = plans
                .iter()
                .map(|p| {
                    let set = Set::new(&names[p.j].record, &p.value).return_cas();
                    let set = match p.record_cas {
                        Some(cas) => set.compare_cas(cas),
                        None => set.add(),
                    };
                    pipe.push([set.into()])
                })
                .collect();
            let ran = self.run_pipeline(server, pipe, false)?;
            let mut retry = Vec::new();
            let mut cache = self.cache(server);
            for ((plan, b), r) in plans.iter().zip(&beat_at).zip(&record_at) {
                let registration = &regs[plan.j].1;
                let beat = ran.mutation(*b, 0)?;
                if beat.status != MutationStatus::Applied {
                    return Err(unexpected("storing a heartbeat", beat.status));
                }
                let written = ran.mutation(*r, 0)?;
                match written.status {
                    MutationStatus::Applied => {
                        outcomes[plan.j] = Some(Registered::Stored { epoch: plan.epoch });
                        let slot = slot_of(&registration.key);
                        let token = ran.boot(*b).token();
                        let remembered = match (beat.cas, written.cas) {
                            (Some(beat_cas), Some(record_cas)) if token == ran.boot(*r).token() => {
                                let held =
                                    Held::new(registration.instance, record_cas, beat_cas, now);
                                cache.insert(token, slot, held)
                            }
                            _ => false,
                        };
                        if !remembered {
                            cache.remove(slot);
                        }
                    }
                    // Changed (or created, or lost) since it was read: read again.
                    MutationStatus::CasMismatch
                    | MutationStatus::NotFound
                    | MutationStatus::AlreadyExists => retry.push(plan.j),
                    other => return Err(unexpected("storing a member record", other)),
                }
            }
            drop(cache);
            pending = retry;
        }
        if !pending.is_empty() {
            return Err(self.contention(server, "registering members"));
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
