//! Leases: one per instance (its members' alive keys ride on it), granted with its
//! beat key; the day-long lease the beat keys (and the mirrors' sync keys) live on.

use std::time::Duration;

use servicegroup_core::{GroupId, InstanceId, Result};
use tokio::time::Instant;

use super::Backend;
use crate::client::CallError;
use crate::holders::Lease;
use crate::kv::Op;
use crate::stored::{lease_hex, now_ms, Beat};
use crate::{lock, NAME};

/// How long the lease of the beat keys lives, and when a new one replaces it: a
/// crashed handle's beat key (its members' last heartbeat) stays at least a day.
const BEAT_LEASE_TTL: i64 = 2 * 24 * 3600;
const BEAT_LEASE_ROTATE: Duration = Duration::from_secs(24 * 3600);

impl Backend {
    /// The lease of the day-long beat keys (granted or rotated as needed).
    async fn beat_lease(&self, renew: bool) -> Result<i64, CallError> {
        let mut slot = self.beat_lease.lock().await;
        if let Some((id, at)) = *slot {
            if !renew && at.elapsed() < BEAT_LEASE_ROTATE {
                return Ok(id);
            }
        }
        let (id, _) = self.client.lease_grant(BEAT_LEASE_TTL).await?;
        *slot = Some((id, Instant::now()));
        Ok(id)
    }

    /// Writes the beat key of `lease`: its last keep-alive was at `at_ms`.
    pub(super) async fn put_beat(&self, lease: i64, at_ms: i64) -> Result<(), CallError> {
        let value = serde_json::to_vec(&Beat { t: at_ms }).unwrap_or_default();
        self.put_on_beat_lease(vec![(self.keys.beat(lease), value)])
            .await
            .map(|_| ())
    }

    /// Writes the sync keys of `group`'s mirror; returns the revision of the write.
    pub(crate) async fn put_sync_keys(&self, group: &GroupId) -> Result<i64, CallError> {
        let pairs = self.keys.sync_keys(group).map(|k| (k, Vec::new()));
        self.put_on_beat_lease(pairs.into()).await
    }

    /// Puts `pairs` in one transaction on the day-long lease (granted again if etcd
    /// lost it); returns the revision of the write.
    async fn put_on_beat_lease(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<i64, CallError> {
        let mut renew = false;
        loop {
            let beat_lease = self.beat_lease(renew).await?;
            let ops: Vec<Op> = pairs
                .iter()
                .map(|(key, value)| Op::Put {
                    key: key.clone(),
                    value: value.clone(),
                    lease: beat_lease,
                })
                .collect();
            match self.client.txn(&[], &ops, &[]).await {
                Err(e) if e.is_lease_not_found() && !renew => renew = true,
                other => return other.map(|out| out.revision),
            }
        }
    }

    /// The lease of `instance`, granted (with its beat key) if it has none.
    pub(super) async fn ensure_lease(&self, instance: InstanceId) -> Result<Lease> {
        if let Some(lease) = lock(&self.instances)
            .map
            .get(&instance)
            .and_then(|i| i.lease)
        {
            return Ok(lease);
        }
        let _grant = self.grant_lock.lock().await;
        if let Some(lease) = lock(&self.instances)
            .map
            .get(&instance)
            .and_then(|i| i.lease)
        {
            return Ok(lease);
        }
        self.grant(instance).await
    }

    /// Grants a new lease to `instance` (replacing any it had), with its beat key.
    async fn grant(&self, instance: InstanceId) -> Result<Lease> {
        let (id, ttl) = self
            .client
            .lease_grant(self.ttl)
            .await
            .map_err(|e| e.into_error("granting a lease"))?;
        self.put_beat(id, now_ms())
            .await
            .map_err(|e| e.into_error("writing a lease's beat key"))?;
        let lease = Lease { id, ttl };
        lock(&self.instances).map.entry(instance).or_default().lease = Some(lease);
        tracing::debug!(driver = NAME, %instance, lease = %lease_hex(id), ttl, "granted a lease");
        Ok(lease)
    }

    /// Forgets the lease of `instance` if it is still `lease` (etcd lost it).
    pub(super) fn lease_lost(&self, instance: InstanceId, lease: Lease) {
        let mut instances = lock(&self.instances);
        if let Some(state) = instances.map.get_mut(&instance) {
            if state.lease == Some(lease) {
                state.lease = None;
            }
        }
    }

    pub(super) fn lost_lease_warning(&self, instance: InstanceId, lease: Lease) {
        tracing::warn!(driver = NAME, %instance, lease = %lease_hex(lease.id),
            "etcd no longer knows this handle's lease (expired, or the store lost its data): \
             granting a new one and checking every member");
    }

    /// A new lease for `instance`; the fence watch restarts (the store may be new).
    pub(super) async fn renew(&self, instance: InstanceId) -> Result<Lease> {
        let _grant = self.grant_lock.lock().await;
        let lease = self.grant(instance).await?;
        self.fence_restart.notify_one();
        self.mirrors
            .retire_all("a handle's lease was lost: the store may be new");
        Ok(lease)
    }
}
