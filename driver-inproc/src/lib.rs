//! # servicegroup-driver-inproc
//!
//! The `inproc` driver: membership kept in this process's memory, shared by every
//! handle built with the same `[inproc] name`. Ages are measured on tokio's
//! monotonic clock, so the driver follows a paused test clock. It is also what
//! Nova's `mc` driver with no `memcached_servers` meant by "in-process caching".
//!
//! Register it by naming the crate once in your binary (`use servicegroup_driver_inproc as _;`)
//! or through the `servicegroup` facade's `inproc` feature.
//!
//! [`set_reachable`] switches a named store off and on, to exercise outage handling
//! in tests (calls then fail with `Unavailable`, as a lost backend would).
#![deny(missing_docs)]

mod config;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use servicegroup_core::driver::{condition_holds, registered_holder};
use servicegroup_core::{
    async_trait, Beats, Capabilities, Config, Driver, Error, Freshness, GroupId, HeartbeatReport,
    Holder, HolderUpdate, InstanceId, MemberKey, MemberRecord, Metadata, Registered, Registration,
    Result, Superseded,
};
use tokio::time::Instant;

pub use config::{InprocConfig, CONFIG};

/// The name this driver registers under, and the name of its table (`[inproc]`).
pub const NAME: &str = "inproc";

servicegroup_core::register_driver! {
    name: NAME,
    description: "in-process membership shared by handles of one process (no server; tests, single-binary deployments)",
    config: CONFIG,
    build: |config: Config| Box::pin(async move {
        let options: InprocConfig = config.driver_config(NAME)?;
        Ok(Arc::new(InprocDriver::new(&options.name)) as Arc<dyn Driver>)
    }),
}

/// One member's entry.
#[derive(Debug, Clone)]
struct Entry {
    beat: Instant,
    wall: DateTime<Utc>,
    forced_down: bool,
    holder: Holder,
    holder_since: DateTime<Utc>,
    metadata: Metadata,
}

/// A named in-process store.
#[derive(Debug, Default)]
struct Store {
    members: Mutex<BTreeMap<MemberKey, Entry>>,
    /// Each group's membership revision ([`Driver::revision`]), moved under the
    /// `members` lock by every change but heartbeats.
    revisions: Mutex<HashMap<GroupId, u64>>,
    unreachable: AtomicBool,
}

/// Every named store in this process.
static STORES: LazyLock<Mutex<HashMap<String, Arc<Store>>>> = LazyLock::new(Default::default);

fn store(name: &str) -> Arc<Store> {
    let mut stores = STORES.lock().unwrap_or_else(|e| e.into_inner());
    stores.entry(name.to_owned()).or_default().clone()
}

/// Makes the store `name` unreachable (`false`) or reachable again (`true`).
/// While unreachable every call of every handle on it fails with `Unavailable`;
/// the stored membership is kept. For tests of outage handling.
pub fn set_reachable(name: &str, reachable: bool) {
    store(name).unreachable.store(!reachable, Ordering::SeqCst);
}

/// The in-process driver. Handles built with the same store name share membership.
#[derive(Debug, Clone)]
pub struct InprocDriver {
    name: String,
    store: Arc<Store>,
}

impl InprocDriver {
    /// The driver on the store called `name` (created on first use).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            store: store(name),
        }
    }

    fn members(&self) -> Result<MutexGuard<'_, BTreeMap<MemberKey, Entry>>> {
        if self.store.unreachable.load(Ordering::SeqCst) {
            return Err(Error::unavailable(format!(
                "in-process store {:?} is switched off (set_reachable)",
                self.name
            ))
            .with_driver(NAME));
        }
        Ok(self.store.members.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Moves `group`'s revision; called with the `members` lock held, after the change.
    fn bump(&self, group: &GroupId) {
        let mut revisions = self
            .store
            .revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *revisions.entry(group.clone()).or_default() += 1;
    }
}

fn record(key: &MemberKey, entry: &Entry, now: Instant) -> MemberRecord {
    MemberRecord {
        key: key.clone(),
        last_heartbeat: Some(entry.wall),
        freshness: Freshness::Age(now.saturating_duration_since(entry.beat)),
        forced_down: entry.forced_down,
        holder: entry.holder,
        holder_since: Some(entry.holder_since),
        metadata: entry.metadata.clone(),
    }
}

/// Applies one registration to the map (the identity contract of `Driver`).
fn apply(
    members: &mut BTreeMap<MemberKey, Entry>,
    registration: &Registration,
    beat: Instant,
    wall: DateTime<Utc>,
) -> Registered {
    let found = members.get(&registration.key).map(|e| e.holder);
    if !condition_holds(registration.condition, found) {
        return Registered::Refused { found };
    }
    let holder = registered_holder(found, registration.instance);
    match members.get_mut(&registration.key) {
        Some(e) => {
            if e.holder.instance != holder.instance {
                e.holder_since = wall;
            }
            e.holder = holder;
            e.beat = beat;
            e.wall = wall;
            e.metadata = registration.metadata.clone();
        }
        None => {
            members.insert(
                registration.key.clone(),
                Entry {
                    beat,
                    wall,
                    forced_down: false,
                    holder,
                    holder_since: wall,
                    metadata: registration.metadata.clone(),
                },
            );
        }
    }
    Registered::Stored {
        epoch: holder.epoch,
    }
}

#[async_trait]
impl Driver for InprocDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::new(Duration::from_millis(1));
        caps.shared_between_processes = false;
        caps.follows_tokio_clock = true;
        caps
    }

    async fn register(&self, registration: &Registration) -> Result<Registered> {
        self.register_many(std::slice::from_ref(registration))
            .await
            .map(|mut out| out.remove(0))
    }

    async fn register_many(&self, registrations: &[Registration]) -> Result<Vec<Registered>> {
        let mut members = self.members()?;
        let (beat, wall) = (Instant::now(), Utc::now());
        let out: Vec<Registered> = registrations
            .iter()
            .map(|r| apply(&mut members, r, beat, wall))
            .collect();
        for (r, registered) in registrations.iter().zip(&out) {
            if matches!(registered, Registered::Stored { .. }) {
                self.bump(&r.key.group);
            }
        }
        Ok(out)
    }

    async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        let mut members = self.members()?;
        let (beat, wall) = (Instant::now(), Utc::now());
        let mut report = HeartbeatReport::default();
        for part in batch {
            for key in part.keys {
                match members.get_mut(key) {
                    Some(e) if e.holder.instance == part.instance => {
                        e.beat = beat;
                        e.wall = wall;
                    }
                    Some(e) => report.superseded.push(Superseded {
                        key: key.clone(),
                        instance: part.instance,
                        holder: e.holder,
                    }),
                    None => report.missing.push((part.instance, key.clone())),
                }
            }
        }
        Ok(report)
    }

    async fn remove(&self, key: &MemberKey, holder: Option<InstanceId>) -> Result<bool> {
        let mut members = self.members()?;
        let held = match (members.get(key), holder) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(e), Some(instance)) => e.holder.instance == instance,
        };
        let removed = held && members.remove(key).is_some();
        if removed {
            self.bump(&key.group);
        }
        Ok(removed)
    }

    async fn set_metadata(
        &self,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        Ok(match self.members()?.get_mut(key) {
            None => HolderUpdate::Missing,
            Some(e) if e.holder.instance != instance => HolderUpdate::NotHeld(e.holder),
            Some(e) => {
                e.metadata = metadata.clone();
                self.bump(&key.group);
                HolderUpdate::Stored
            }
        })
    }

    async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool> {
        Ok(match self.members()?.get_mut(key) {
            Some(e) => {
                e.forced_down = forced_down;
                self.bump(&key.group);
                true
            }
            None => false,
        })
    }

    async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>> {
        let now = Instant::now();
        Ok(self.members()?.get(key).map(|e| record(key, e, now)))
    }

    async fn list(&self, group: &GroupId) -> Result<Vec<MemberRecord>> {
        let now = Instant::now();
        Ok(self
            .members()?
            .iter()
            .filter(|(k, _)| &k.group == group)
            .map(|(k, e)| record(k, e, now))
            .collect())
    }

    async fn revision(&self, group: &GroupId) -> Result<Option<u64>> {
        // Through `members()`: an unreachable store answers nothing.
        let _members = self.members()?;
        let revisions = self
            .store
            .revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Ok(Some(revisions.get(group).copied().unwrap_or(0)))
    }

    async fn groups(&self) -> Result<Vec<GroupId>> {
        let mut groups: Vec<GroupId> = self.members()?.keys().map(|k| k.group.clone()).collect();
        groups.dedup();
        Ok(groups)
    }
}
