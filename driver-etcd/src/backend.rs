//! [`Backend`]: the driver's operations on etcd.
//!
//! - **Registration** reads the records, decides per core's identity contract, and
//!   writes record, alive key (on the instance's lease) and group index in one
//!   transaction that compares each record's `mod_revision` with the one read, so
//!   two concurrent joins or takeovers of one member never both win.
//! - **Heartbeat** of an instance is one keep-alive of its lease and one put of the
//!   lease's beat key, whatever the number of members. Which records changed
//!   (takeover, removal) the driver learns from its fence watch
//!   ([`crate::fence`]); only those are read at the next tick. A lease etcd lost is
//!   granted again and every member is checked: those still held get their alive
//!   key back, the others are reported missing or superseded.
//! - A member the instance stopped heartbeating (crashed membership, handle still
//!   alive) gets its alive key moved to a lease of its own that expires
//!   `service_down_time` after its last heartbeat.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use servicegroup_core::driver::{condition_holds, registered_holder};
use servicegroup_core::{
    Beats, Error, GroupId, HeartbeatReport, Holder, HolderUpdate, InstanceId, MemberKey,
    MemberRecord, Metadata, Registered, Registration, Result, Superseded,
};
use tokio::time::Instant;

use crate::client::{CallError, Client};
use crate::holders::{Dropped, Held, Instances, Lease};
use crate::keys::Keys;
use crate::kv::{Kv, ModIs, Op, Range, MAX_TXN_OPS};
use crate::stored::{lease_hex, member_record, now_ms, Alive, Beat, Record};
use crate::{lock, NAME};

/// Registrations per write transaction (record, alive key and index: at most
/// [`MAX_TXN_OPS`] operations).
const REGISTER_CHUNK: usize = 40;

/// How long the lease of the beat keys lives, and when a new one replaces it: a
/// crashed handle's beat key (its members' last heartbeat) stays at least a day.
const BEAT_LEASE_TTL: i64 = 2 * 24 * 3600;
const BEAT_LEASE_ROTATE: Duration = Duration::from_secs(24 * 3600);

/// Attempts of a read-decide-write cycle whose compare failed before giving up.
const ATTEMPTS: usize = 8;

/// The driver's state and connection.
pub struct Backend {
    pub(crate) client: Client,
    pub(crate) keys: Keys,
    service_down_time: Duration,
    ttl: i64,
    pub(crate) instances: Mutex<Instances>,
    grant_lock: tokio::sync::Mutex<()>,
    beat_lease: tokio::sync::Mutex<Option<(i64, Instant)>>,
    pub(crate) fence_restart: Arc<tokio::sync::Notify>,
    fence_task: Mutex<Option<tokio::task::AbortHandle>>,
    heartbeat_requests: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("client", &self.client)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.fence_task).take() {
            task.abort();
        }
    }
}

fn decode_record(kv: &Kv) -> Result<Record> {
    Record::decode(&kv.value).map_err(|why| {
        Error::backend(format!(
            "the etcd key {:?} holds no valid member record: {why}",
            String::from_utf8_lossy(&kv.key)
        ))
        .with_driver(NAME)
    })
}

/// A record read with its `mod_revision` (0: absent).
#[derive(Debug, Clone)]
struct Found {
    record: Option<Record>,
    revision: i64,
}

impl Found {
    fn holder(&self) -> Option<Holder> {
        self.record.as_ref().map(Record::holder)
    }
}

impl Backend {
    /// A backend on `client` with keys under `keys`, leases of `ceil(service_down_time)` s.
    pub(crate) fn new(
        client: Client,
        keys: Keys,
        service_down_time: Duration,
        heartbeat_requests: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        let secs = service_down_time.as_secs() + u64::from(service_down_time.subsec_nanos() > 0);
        Self {
            client,
            keys,
            service_down_time,
            ttl: i64::try_from(secs.max(1)).unwrap_or(i64::MAX),
            instances: Mutex::new(Instances::default()),
            grant_lock: tokio::sync::Mutex::new(()),
            beat_lease: tokio::sync::Mutex::new(None),
            fence_restart: Arc::new(tokio::sync::Notify::new()),
            fence_task: Mutex::new(None),
            heartbeat_requests,
        }
    }

    pub(crate) fn set_fence_task(&self, task: tokio::task::AbortHandle) {
        *lock(&self.fence_task) = Some(task);
    }

    /// The TTL of the instances' leases, in seconds.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// How far from `service_down_time` a verdict may flip: the TTL's rounding up to
    /// whole seconds, etcd's lease expiry check (every 500 ms) and the revocation's
    /// trip through raft.
    pub fn resolution(&self) -> Duration {
        let slack = Duration::from_secs(u64::try_from(self.ttl).unwrap_or(0))
            .saturating_sub(self.service_down_time);
        slack + Duration::from_millis(1500)
    }

    fn count_heartbeat_request(&self, n: u64) {
        self.heartbeat_requests
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    // ----- leases ---------------------------------------------------------------

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
    async fn put_beat(&self, lease: i64, at_ms: i64) -> Result<(), CallError> {
        let value = serde_json::to_vec(&Beat { t: at_ms }).unwrap_or_default();
        for renew in [false, true] {
            let beat_lease = self.beat_lease(renew).await?;
            let op = Op::Put {
                key: self.keys.beat(lease),
                value: value.clone(),
                lease: beat_lease,
            };
            match self.client.txn(&[], &[op], &[]).await {
                Err(e) if e.is_lease_not_found() && !renew => continue,
                other => return other.map(|_| ()),
            }
        }
        Ok(())
    }

    /// The lease of `instance`, granted (with its beat key) if it has none.
    async fn ensure_lease(&self, instance: InstanceId) -> Result<Lease> {
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
    fn lease_lost(&self, instance: InstanceId, lease: Lease) {
        let mut instances = lock(&self.instances);
        if let Some(state) = instances.map.get_mut(&instance) {
            if state.lease == Some(lease) {
                state.lease = None;
            }
        }
    }

    // ----- reads ----------------------------------------------------------------

    /// The records of `keys` at one revision.
    async fn read_records(&self, keys: &[MemberKey]) -> Result<(i64, Vec<Found>)> {
        let ranges = keys
            .iter()
            .map(|k| Range::key(self.keys.record(k)))
            .collect();
        let (revision, answers) = self
            .client
            .ranges(ranges, 0)
            .await
            .map_err(|e| e.into_error("reading member records"))?;
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(match answer.kvs.first() {
                Some(kv) => Found {
                    record: Some(decode_record(kv)?),
                    revision: kv.mod_revision,
                },
                None => Found {
                    record: None,
                    revision: 0,
                },
            });
        }
        Ok((revision, out))
    }

    async fn read_record(&self, key: &MemberKey) -> Result<Found> {
        let (_, mut found) = self.read_records(std::slice::from_ref(key)).await?;
        found
            .pop()
            .ok_or_else(|| Error::backend("etcd answered no range").with_driver(NAME))
    }

    // ----- registration -----------------------------------------------------------

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
            compares.push(ModIs {
                key: self.keys.record(&registration.key),
                revision: found.revision,
            });
            ops.push(Op::Put {
                key: self.keys.record(&registration.key),
                value: record.encode(),
                lease: 0,
            });
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

    // ----- heartbeat ------------------------------------------------------------

    /// [`servicegroup_core::Driver::heartbeat`].
    pub(crate) async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        let mut report = HeartbeatReport::default();
        for part in batch {
            self.beat_part(part, &mut report).await?;
        }
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

    fn lost_lease_warning(&self, instance: InstanceId, lease: Lease) {
        tracing::warn!(driver = NAME, %instance, lease = %lease_hex(lease.id),
            "etcd no longer knows this handle's lease (expired, or the store lost its data): \
             granting a new one and checking every member");
    }

    /// A new lease for `instance`; the fence watch restarts (the store may be new).
    async fn renew(&self, instance: InstanceId) -> Result<Lease> {
        let _grant = self.grant_lock.lock().await;
        let lease = self.grant(instance).await?;
        self.fence_restart.notify_one();
        Ok(lease)
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
            let mut instances = lock(&self.instances);
            let missed = instances.fence_seen > read_at;
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
                            if missed {
                                state.dirty.insert(key.clone());
                            }
                            Held {
                                epoch: record.e,
                                beat: Instant::now(),
                                beat_ms: now_ms(),
                            }
                        });
                        held.epoch = record.e;
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
                compares.push(ModIs {
                    key: self.keys.record(key),
                    revision: found.revision,
                });
                ops.push(Op::Put {
                    key: self.keys.record(key),
                    value: record.encode(),
                    lease: 0,
                });
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
                compares.push(ModIs {
                    key: self.keys.record(&dropped.key),
                    revision: found.revision,
                });
                ops.push(Op::Put {
                    key: self.keys.record(&dropped.key),
                    value: record.encode(),
                    lease: 0,
                });
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

    // ----- holder and operator updates ------------------------------------------

    /// A read-decide-write cycle on one record: `change` returns the new record (or
    /// `None`: nothing to write) and the outcome; the write compares the revision read.
    async fn update<T>(
        &self,
        key: &MemberKey,
        mut change: impl FnMut(Option<&Record>) -> (Option<Record>, T),
        also: impl Fn(&Record) -> Vec<Op>,
    ) -> Result<T> {
        for _ in 0..ATTEMPTS {
            let found = self.read_record(key).await?;
            let (new, outcome) = change(found.record.as_ref());
            let Some(new) = new else {
                return Ok(outcome);
            };
            let mut ops = vec![Op::Put {
                key: self.keys.record(key),
                value: new.encode(),
                lease: 0,
            }];
            ops.extend(also(&new));
            let compare = ModIs {
                key: self.keys.record(key),
                revision: found.revision,
            };
            let answer = self
                .client
                .txn(&[compare], &ops, &[])
                .await
                .map_err(|e| e.into_error("updating a member record"))?;
            if answer.succeeded {
                return Ok(outcome);
            }
        }
        Err(Error::conflict(format!(
            "the record of {key} kept changing during {ATTEMPTS} update attempts"
        ))
        .with_driver(NAME))
    }

    pub(crate) async fn set_metadata(
        &self,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        self.update(
            key,
            |found| match found {
                None => (None, HolderUpdate::Missing),
                Some(r) if r.i != instance => (None, HolderUpdate::NotHeld(r.holder())),
                Some(r) => {
                    let mut r = r.clone();
                    r.m = metadata.clone();
                    (Some(r), HolderUpdate::Stored)
                }
            },
            |_| Vec::new(),
        )
        .await
    }

    pub(crate) async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool> {
        self.update(
            key,
            |found| match found {
                None => (None, false),
                Some(r) if r.f == forced_down => (None, true),
                Some(r) => {
                    let mut r = r.clone();
                    r.f = forced_down;
                    (Some(r), true)
                }
            },
            |_| Vec::new(),
        )
        .await
    }

    pub(crate) async fn remove(&self, key: &MemberKey, holder: Option<InstanceId>) -> Result<bool> {
        for _ in 0..ATTEMPTS {
            let found = self.read_record(key).await?;
            let Some(record) = &found.record else {
                return Ok(false);
            };
            if holder.is_some_and(|i| i != record.i) {
                return Ok(false);
            }
            let compare = ModIs {
                key: self.keys.record(key),
                revision: found.revision,
            };
            let ops = [
                Op::Delete {
                    key: self.keys.record(key),
                },
                Op::Delete {
                    key: self.keys.alive(key),
                },
            ];
            let answer = self
                .client
                .txn(&[compare], &ops, &[])
                .await
                .map_err(|e| e.into_error("removing a member"))?;
            if answer.succeeded {
                if let Some(instance) = holder {
                    let mut instances = lock(&self.instances);
                    if let Some(state) = instances.map.get_mut(&instance) {
                        state.held.remove(key);
                    }
                }
                return Ok(true);
            }
        }
        Err(Error::conflict(format!(
            "the record of {key} kept changing during {ATTEMPTS} removal attempts"
        ))
        .with_driver(NAME))
    }

    // ----- lookups and listings -------------------------------------------------

    pub(crate) async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>> {
        let ranges = vec![
            Range::key(self.keys.record(key)),
            Range::key(self.keys.alive(key)),
        ];
        let (revision, answers) = self
            .client
            .ranges(ranges, 0)
            .await
            .map_err(|e| e.into_error("reading a member"))?;
        let Some(kv) = answers.first().and_then(|a| a.kvs.first()) else {
            return Ok(None);
        };
        let record = decode_record(kv)?;
        let alive = answers
            .get(1)
            .and_then(|a| a.kvs.first())
            .and_then(|kv| Alive::decode(&kv.value).ok());
        let lease = match &alive {
            Some(a) if a.i == record.i && a.e == record.e => a.l.clone(),
            Some(_) => String::new(),
            None => record.l.clone(),
        };
        let mut beat = None;
        if let Ok(id) = i64::from_str_radix(&lease, 16) {
            let range = Range {
                revision,
                ..Range::key(self.keys.beat(id))
            };
            let answer = self
                .client
                .range(&range)
                .await
                .map_err(|e| e.into_error("reading a lease's beat key"))?;
            beat = answer
                .kvs
                .first()
                .and_then(|kv| serde_json::from_slice::<Beat>(&kv.value).ok())
                .map(|b| b.t);
        }
        Ok(Some(member_record(
            key.clone(),
            record,
            alive.as_ref(),
            |_| beat,
        )))
    }

    pub(crate) async fn list(&self, group: &GroupId) -> Result<Vec<MemberRecord>> {
        let mut attempt = 0;
        loop {
            match self.list_once(group).await {
                Err(e) if e.is_compacted() && attempt < 3 => attempt += 1,
                other => return other.map_err(|e| e.into_error("listing a group")),
            }
        }
    }

    /// One listing at one revision: the first page of records fixes it; the rest of
    /// the records, the alive keys and the beat keys are then read side by side.
    async fn list_once(&self, group: &GroupId) -> Result<Vec<MemberRecord>, CallError> {
        let (first, next) = self
            .client
            .first_page(&Range::prefix(&self.keys.group_records(group)))
            .await?;
        let revision = next.revision;
        let alive_range = Range {
            revision,
            ..Range::prefix(&self.keys.group_alive(group))
        };
        let beats_range = Range {
            revision,
            ..Range::prefix(&self.keys.beats())
        };
        let (records, (_, alive), (_, beats)) = tokio::try_join!(
            self.client.rest_of(first, next),
            self.client.range_all(&alive_range),
            self.client.range_all(&beats_range),
        )?;
        let beats: HashMap<String, i64> = beats
            .iter()
            .filter_map(|kv| {
                let lease = self.keys.lease_of_beat(&kv.key)?;
                let beat: Beat = serde_json::from_slice(&kv.value).ok()?;
                Some((lease_hex(lease), beat.t))
            })
            .collect();
        let alive: HashMap<MemberKey, Alive> = alive
            .iter()
            .filter_map(|kv| {
                Some((
                    self.keys.member_of(&kv.key)?,
                    Alive::decode(&kv.value).ok()?,
                ))
            })
            .collect();
        let mut out = Vec::with_capacity(records.len());
        for kv in &records {
            let Some(key) = self.keys.member_of(&kv.key) else {
                continue;
            };
            let record =
                decode_record(kv).map_err(|e| CallError::Broken(e.message().to_owned()))?;
            out.push(member_record(key.clone(), record, alive.get(&key), |l| {
                beats.get(l).copied()
            }));
        }
        Ok(out)
    }

    pub(crate) async fn groups(&self) -> Result<Vec<GroupId>> {
        let (revision, indexes) = self
            .client
            .range_all(&Range::prefix(&self.keys.indexes()))
            .await
            .map_err(|e| e.into_error("listing groups"))?;
        let groups: Vec<GroupId> = indexes
            .iter()
            .filter_map(|kv| self.keys.group_of_index(&kv.key))
            .collect();
        let ranges = groups
            .iter()
            .map(|g| Range {
                count_only: true,
                ..Range::prefix(&self.keys.group_records(g))
            })
            .collect();
        let (_, counts) = self
            .client
            .ranges(ranges, revision)
            .await
            .map_err(|e| e.into_error("counting group members"))?;
        Ok(groups
            .into_iter()
            .zip(counts)
            .filter(|(_, c)| c.count > 0)
            .map(|(g, _)| g)
            .collect())
    }
}
