//! Registration: read the records, decide per core's identity contract, write
//! record, alive key and group index in one transaction comparing each record's
//! `mod_revision` with the one read.

use std::collections::HashMap;

use servicegroup_core::driver::{condition_holds, registered_holder};
use servicegroup_core::{Error, GroupId, InstanceId, MemberKey, Registered, Registration, Result};
use tokio::time::Instant;

use super::{Backend, Found, ATTEMPTS};
use crate::holders::{Held, Lease};
use crate::kv::{Op, MAX_TXN_OPS};
use crate::stored::{lease_hex, now_ms, Alive, Record};
use crate::{lock, NAME};

/// Registrations per write transaction (record, alive key and index: at most
/// [`MAX_TXN_OPS`] operations).
const REGISTER_CHUNK: usize = 40;

impl Backend {
    /// [`servicegroup_core::Driver::register_many`].
    pub(crate) async fn register_many(
        &self,
        registrations: &[Registration],
    ) -> Result<Vec<Registered>> {
        let mut out = Vec::with_capacity(registrations.len());
        for chunk in registrations.chunks(REGISTER_CHUNK) {
            out.extend(self.register_chunk(chunk).await?);
        }
        Ok(out)
    }

    async fn register_chunk(&self, chunk: &[Registration]) -> Result<Vec<Registered>> {
        let keys: Vec<MemberKey> = chunk.iter().map(|r| r.key.clone()).collect();
        let (_, found) = self.read_records(&keys).await?;
        // One transaction for the whole chunk; if any record moved meanwhile, each
        // registration goes alone.
        if let Some(outcomes) = self.try_register(chunk, &found).await? {
            return Ok(outcomes);
        }
        let mut out = Vec::with_capacity(chunk.len());
        for (registration, found) in chunk.iter().zip(found) {
            out.push(self.register_one(registration, found).await?);
        }
        Ok(out)
    }

    async fn register_one(
        &self,
        registration: &Registration,
        mut found: Found,
    ) -> Result<Registered> {
        for _ in 0..ATTEMPTS {
            let one = std::slice::from_ref(registration);
            if let Some(mut outcome) = self.try_register(one, std::slice::from_ref(&found)).await? {
                return outcome.pop().ok_or_else(|| {
                    Error::backend("etcd registration returned no outcome").with_driver(NAME)
                });
            }
            found = self.read_record(&registration.key).await?;
        }
        Err(Error::conflict(format!(
            "the record of {} kept changing during {ATTEMPTS} registration attempts",
            registration.key
        ))
        .with_driver(NAME))
    }

    /// Writes the registrations whose condition holds against `found`, in one
    /// transaction comparing every record's revision. `None`: a record moved.
    async fn try_register(
        &self,
        chunk: &[Registration],
        found: &[Found],
    ) -> Result<Option<Vec<Registered>>> {
        let mut outcomes = Vec::with_capacity(chunk.len());
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        let mut leases: HashMap<InstanceId, Lease> = HashMap::new();
        let mut groups: Vec<&GroupId> = Vec::new();
        let now = now_ms();
        for (registration, found) in chunk.iter().zip(found) {
            if !condition_holds(registration.condition, found.holder()) {
                outcomes.push(Registered::Refused {
                    found: found.holder(),
                });
                continue;
            }
            let instance = registration.instance;
            let lease = match leases.get(&instance) {
                Some(lease) => *lease,
                None => {
                    let lease = self.ensure_lease(instance).await?;
                    leases.insert(instance, lease);
                    lease
                }
            };
            let holder = registered_holder(found.holder(), instance);
            let previous = found.record.as_ref();
            let since = match previous {
                Some(r) if r.holder().instance == instance => r.s,
                _ => now,
            };
            let record = Record {
                v: 1,
                i: instance,
                e: holder.epoch,
                s: since,
                b: now,
                l: lease_hex(lease.id),
                f: previous.is_some_and(|r| r.f),
                m: registration.metadata.clone(),
            };
            let alive = Alive {
                i: instance,
                e: holder.epoch,
                l: lease_hex(lease.id),
                t: now,
            };
            let (compare, put) = self.guarded_put(&registration.key, found.revision, &record);
            compares.push(compare);
            ops.push(put);
            ops.push(Op::Put {
                key: self.keys.alive(&registration.key),
                value: alive.encode(),
                lease: lease.id,
            });
            if !groups.contains(&&registration.key.group) {
                groups.push(&registration.key.group);
            }
            outcomes.push(Registered::Stored {
                epoch: holder.epoch,
            });
        }
        if ops.is_empty() {
            return Ok(Some(outcomes));
        }
        for group in groups {
            ops.push(Op::Put {
                key: self.keys.index(group),
                value: Vec::new(),
                lease: 0,
            });
        }
        debug_assert!(ops.len() <= MAX_TXN_OPS);
        let answer = match self.client.txn(&compares, &ops, &[]).await {
            Ok(answer) => answer,
            Err(e) if e.is_lease_not_found() => {
                // etcd lost the lease (expired while idle, or the store was wiped):
                // a new one, and the caller tries again.
                for (instance, lease) in leases {
                    self.lease_lost(instance, lease);
                }
                return Ok(None);
            }
            Err(e) => return Err(e.into_error("registering members")),
        };
        if !answer.succeeded {
            return Ok(None);
        }
        let beat = Instant::now();
        let mut instances = lock(&self.instances);
        for (registration, outcome) in chunk.iter().zip(&outcomes) {
            if let Registered::Stored { epoch } = outcome {
                instances.forget(&registration.key);
                let held = Held {
                    epoch: *epoch,
                    beat,
                    beat_ms: now,
                    revision: answer.revision,
                };
                // A takeover right after this transaction may already have passed
                // the fence watch, which marked nobody: `hold` catches that.
                instances.hold(
                    registration.instance,
                    &registration.key,
                    held,
                    answer.revision,
                );
                let state = instances.map.entry(registration.instance).or_default();
                state.dropped.retain(|d| d.key != registration.key);
            }
        }
        Ok(Some(outcomes))
    }
}
