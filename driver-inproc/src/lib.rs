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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use servicegroup_core::{
    async_trait, Capabilities, Config, Driver, Error, Freshness, GroupId, HeartbeatReport,
    MemberKey, MemberRecord, Result,
};
use tokio::time::Instant;

/// The name this driver registers under.
pub const NAME: &str = "inproc";

servicegroup_core::register_driver! {
    name: NAME,
    description: "in-process membership shared by handles of one process (no server; tests, single-binary deployments)",
    build: |config: Config| Box::pin(async move {
        Ok(Arc::new(InprocDriver::new(&config.inproc.name)) as Arc<dyn Driver>)
    }),
}

/// One member's entry.
#[derive(Debug, Clone)]
struct Entry {
    beat: Instant,
    wall: DateTime<Utc>,
    forced_down: bool,
}

/// A named in-process store.
#[derive(Debug, Default)]
struct Store {
    members: Mutex<BTreeMap<MemberKey, Entry>>,
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
}

fn record(key: &MemberKey, entry: &Entry, now: Instant) -> MemberRecord {
    MemberRecord {
        key: key.clone(),
        last_heartbeat: Some(entry.wall),
        freshness: Freshness::Age(now.saturating_duration_since(entry.beat)),
        forced_down: entry.forced_down,
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

    async fn register(&self, key: &MemberKey) -> Result<()> {
        let mut members = self.members()?;
        let (beat, wall) = (Instant::now(), Utc::now());
        members
            .entry(key.clone())
            .and_modify(|e| {
                e.beat = beat;
                e.wall = wall;
            })
            .or_insert(Entry {
                beat,
                wall,
                forced_down: false,
            });
        Ok(())
    }

    async fn heartbeat(&self, keys: &[MemberKey]) -> Result<HeartbeatReport> {
        let mut members = self.members()?;
        let (beat, wall) = (Instant::now(), Utc::now());
        let mut report = HeartbeatReport::default();
        for key in keys {
            match members.get_mut(key) {
                Some(e) => {
                    e.beat = beat;
                    e.wall = wall;
                }
                None => report.missing.push(key.clone()),
            }
        }
        Ok(report)
    }

    async fn remove(&self, key: &MemberKey) -> Result<bool> {
        Ok(self.members()?.remove(key).is_some())
    }

    async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool> {
        Ok(match self.members()?.get_mut(key) {
            Some(e) => {
                e.forced_down = forced_down;
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

    async fn groups(&self) -> Result<Vec<GroupId>> {
        let mut groups: Vec<GroupId> = self.members()?.keys().map(|k| k.group.clone()).collect();
        groups.dedup();
        Ok(groups)
    }
}
