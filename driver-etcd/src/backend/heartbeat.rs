//! Heartbeats: one keep-alive and one beat-key put per instance and tick; the
//! records the fence watch marked are read, a lost lease is replaced and every
//! member checked; members no longer heartbeated move to leases of their own.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use futures_util::stream::{self, StreamExt};

use servicegroup_core::{
    Beats, Error, HeartbeatReport, Holder, InstanceId, MemberKey, Result, Superseded,
};
use tokio::time::Instant;

use super::{Backend, Found};
use crate::holders::{Dropped, Held, Lease};
use crate::kv::{Op, MAX_TXN_OPS};
use crate::stored::{lease_hex, now_ms, Alive};
use crate::{lock, NAME};

/// Instances whose heartbeat requests are in flight at once.
const PARTS_IN_FLIGHT: usize = 64;

/// One instance's heartbeat, in flight.
type PartFuture<'a> = Pin<Box<dyn Future<Output = Result<HeartbeatReport>> + Send + 'a>>;

impl Backend {
    /// [`servicegroup_core::Driver::heartbeat`]. The parts (one per instance: core
    /// coalesces every handle of the process into one call) go side by side, up to
    /// [`PARTS_IN_FLIGHT`]: one after the other, 100 handles' two requests each would
    /// take 200 round trips, 20 s at the 100 ms a busy cluster answers in.
    pub(crate) async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        // Boxed: a closure's future here is not general enough for async-trait's Send.
        let parts: Vec<PartFuture<'_>> = batch
            .iter()
            .map(|part| Box::pin(self.beat_one(part)) as PartFuture<'_>)
            .collect();
        let mut parts = stream::iter(parts).buffer_unordered(PARTS_IN_FLIGHT);
        let mut report = HeartbeatReport::default();
        while let Some(part) = parts.next().await {
            let part = part?;
            report.missing.extend(part.missing);
            report.superseded.extend(part.superseded);
        }
        Ok(report)
    }

    async fn beat_one(&self, part: &Beats<'_>) -> Result<HeartbeatReport> {
        let mut report = HeartbeatReport::default();
        self.beat_part(part, &mut report).await?;
        Ok(report)
    }

    async fn beat_part(&self, part: &Beats<'_>, report: &mut HeartbeatReport) -> Result<()> {
        let instance = part.instance;
        let plan = lock(&self.instances)
            .map
            .entry(instance)
            .or_default()
            .plan(part.keys);
        if !plan.dropped.is_empty() {
            if let Err(error) = self.let_go(instance, &plan.dropped).await {
                tracing::warn!(driver = NAME, %instance, count = plan.dropped.len(), %error,
                    "could not move the alive keys of members no longer heartbeated; retrying next tick");
                let mut instances = lock(&self.instances);
                instances
                    .map
                    .entry(instance)
                    .or_default()
                    .dropped
                    .extend(plan.dropped);
            }
        }
        if part.keys.is_empty() {
            return Ok(());
        }
        let mut check = plan.check;
        let mut repair = false;
        let sent_ms = now_ms();
        let lease = match plan.lease {
            Some(lease) => {
                self.count_heartbeat_request(1);
                match self.client.lease_keepalive(lease.id).await {
                    Ok(Some(_)) => lease,
                    Ok(None) => {
                        self.lost_lease_warning(instance, lease);
                        self.lease_lost(instance, lease);
                        repair = true;
                        self.renew(instance).await?
                    }
                    Err(e) if e.is_lease_not_found() => {
                        self.lost_lease_warning(instance, lease);
                        self.lease_lost(instance, lease);
                        repair = true;
                        self.renew(instance).await?
                    }
                    Err(e) => return Err(e.into_error("keeping the lease alive")),
                }
            }
            None => {
                repair = true;
                self.renew(instance).await?
            }
        };
        let confirmed = Instant::now();
        if repair {
            check = part.keys.to_vec();
        } else {
            self.count_heartbeat_request(1);
            self.put_beat(lease.id, sent_ms)
                .await
                .map_err(|e| e.into_error("writing the beat key"))?;
        }
        lock(&self.instances)
            .map
            .entry(instance)
            .or_default()
            .beat(part.keys, confirmed, sent_ms);
        if !check.is_empty() {
            self.check(instance, lease, &check, repair, report).await?;
        }
        Ok(())
    }

    /// Reads the records of `keys` of `instance`: missing and superseded ones are
    /// reported; with `repair`, those still held get their alive key on `lease`.
    async fn check(
        &self,
        instance: InstanceId,
        lease: Lease,
        keys: &[MemberKey],
        repair: bool,
        report: &mut HeartbeatReport,
    ) -> Result<()> {
        let (read_at, found) = self.read_records(keys).await?;
        let mut keep: Vec<(&MemberKey, &Found)> = Vec::new();
        {
            let mut guard = lock(&self.instances);
            let instances = &mut *guard;
            let changes = &instances.changes;
            let state = instances.map.entry(instance).or_default();
            for (key, found) in keys.iter().zip(&found) {
                match &found.record {
                    None => {
                        state.held.remove(key);
                        report.missing.push((instance, key.clone()));
                    }
                    Some(record) if record.i != instance => {
                        state.held.remove(key);
                        report.superseded.push(Superseded {
                            key: key.clone(),
                            instance,
                            holder: record.holder(),
                        });
                    }
                    Some(record) => {
                        let held = state.held.entry(key.clone()).or_insert_with(|| {
                            // Newly held as of this read: a change the fence watch
                            // passed since is looked at next tick (see `hold`).
                            if changes.since(key, read_at) {
                                state.dirty.insert(key.clone());
                            }
                            Held {
                                epoch: record.e,
                                beat: Instant::now(),
                                beat_ms: now_ms(),
                                revision: read_at,
                            }
                        });
                        held.epoch = record.e;
                        // The read saw every change up to `read_at`.
                        held.revision = held.revision.max(read_at);
                        if repair || record.l != lease_hex(lease.id) {
                            keep.push((key, found));
                        }
                    }
                }
            }
        }
        // Held records whose alive key is not on the current lease: put it there.
        let now = now_ms();
        for chunk in keep.chunks(MAX_TXN_OPS / 2) {
            let mut compares = Vec::new();
            let mut ops = Vec::new();
            for (key, found) in chunk {
                let Some(record) = &found.record else {
                    continue;
                };
                let mut record = record.clone();
                record.l = lease_hex(lease.id);
                let (compare, put) = self.guarded_put(key, found.revision, &record);
                compares.push(compare);
                ops.push(put);
                ops.push(Op::Put {
                    key: self.keys.alive(key),
                    value: Alive {
                        i: instance,
                        e: record.e,
                        l: lease_hex(lease.id),
                        t: now,
                    }
                    .encode(),
                    lease: lease.id,
                });
            }
            let ok = self
                .client
                .txn(&compares, &ops, &[])
                .await
                .map_err(|e| e.into_error("restoring alive keys"))?
                .succeeded;
            if !ok {
                // Changed meanwhile: look again next tick.
                let mut instances = lock(&self.instances);
                let state = instances.map.entry(instance).or_default();
                state.dirty.extend(chunk.iter().map(|(k, _)| (*k).clone()));
                state.resync = true;
            }
        }
        Ok(())
    }

    /// Moves the alive keys of members `instance` stopped heartbeating onto leases
    /// that expire `service_down_time` after their last heartbeat.
    async fn let_go(&self, instance: InstanceId, dropped: &[Dropped]) -> Result<()> {
        for chunk in dropped.chunks(MAX_TXN_OPS / 2) {
            let keys: Vec<MemberKey> = chunk.iter().map(|d| d.key.clone()).collect();
            let (_, found) = self.read_records(&keys).await?;
            let now = Instant::now();
            let mut leases: BTreeMap<i64, i64> = BTreeMap::new();
            let mut compares = Vec::new();
            let mut ops = Vec::new();
            for (dropped, found) in chunk.iter().zip(&found) {
                let Some(record) = &found.record else {
                    continue;
                };
                if record.holder() != Holder::new(instance, dropped.held.epoch) {
                    continue;
                }
                let mut record = record.clone();
                record.l = String::new();
                record.b = dropped.held.beat_ms;
                let (compare, put) = self.guarded_put(&dropped.key, found.revision, &record);
                compares.push(compare);
                ops.push(put);
                let left =
                    (dropped.held.beat + self.service_down_time).saturating_duration_since(now);
                if left.is_zero() {
                    ops.push(Op::Delete {
                        key: self.keys.alive(&dropped.key),
                    });
                    continue;
                }
                let secs = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
                let lease = match leases.get(&secs) {
                    Some(id) => *id,
                    None => {
                        let (id, _) =
                            self.client.lease_grant(secs).await.map_err(|e| {
                                e.into_error("granting a lease for a stopped member")
                            })?;
                        leases.insert(secs, id);
                        id
                    }
                };
                ops.push(Op::Put {
                    key: self.keys.alive(&dropped.key),
                    value: Alive {
                        i: instance,
                        e: dropped.held.epoch,
                        l: String::new(),
                        t: dropped.held.beat_ms,
                    }
                    .encode(),
                    lease,
                });
            }
            if ops.is_empty() {
                continue;
            }
            let answer = self
                .client
                .txn(&compares, &ops, &[])
                .await
                .map_err(|e| e.into_error("moving the alive keys of stopped members"))?;
            if !answer.succeeded {
                return Err(Error::unavailable(
                    "a stopped member's record changed while its alive key was moved",
                )
                .with_driver(NAME));
            }
            tracing::debug!(driver = NAME, %instance, count = chunk.len(), "members no longer heartbeated: alive keys moved to expiring leases");
        }
        Ok(())
    }
}
