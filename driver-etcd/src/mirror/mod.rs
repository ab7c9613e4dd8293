//! Group mirrors: listings answered from a copy of the group that the driver's own
//! watch keeps, instead of reading every key of the group each time.
//!
//! A listing of a group of N members reads 2N keys from etcd (records and alive
//! keys), ~20–30 µs of etcd's CPU per key under load: 250,000 members cost a
//! down-set poll 15–20 s and the heartbeats' keep-alives wait behind it. The first
//! listing of a group (`list`, `list_in`, `summary`) reads it the ordinary way, at
//! one revision, and then watches its three ranges (records, alive keys, beat keys)
//! from the revision after, keeping a decoded copy ([`state::Mirrored`]). Heartbeats
//! write no member key, so in a steady fleet the watch carries only the handles'
//! beat keys, joins, takeovers and expiries.
//!
//! **Consistent per call.** Each later listing first writes the group's three sync
//! keys in one transaction ([`crate::keys::Keys::sync_keys`]) and waits until every
//! watcher has delivered that revision: etcd orders each watcher's events, so the
//! copy then holds everything committed before the call began, and is answered at
//! one revision. So a listing sees every write that finished before it (as a
//! linearizable read does) for the price of one small write and the watch's
//! latency.
//!
//! **Bounded.** A mirror not read for `etcd.mirror_idle` ends (its memory is
//! freed; the next listing reads the group again); `etcd.mirror = false` keeps none. A mirror whose watch fell behind compaction, broke beyond resumption, or
//! did not catch up within four request timeouts ends too, and the listing reads
//! the group afresh; so does one whose store was replaced (the group's index key,
//! never deleted, is not the one it started with, or etcd's revision went back),
//! and every mirror ends when a handle finds its lease gone. A user whose role may not write the sync keys gets listings
//! read the ordinary way (logged once). An unreachable cluster fails the sync
//! write: the listing's error is `Unavailable` / `Timeout`, never an old copy.

mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;
use servicegroup_core::{GroupId, Result};
use tokio::sync::watch;
use tokio::time::Instant;

use state::{Change, Mirrored, WATCHERS};
pub(crate) use state::{Decoder, GroupState};

use crate::backend::{Backend, Snapshot};
use crate::client::{CallError, Lines};
use crate::kv::{int, Kv};
use crate::watches::{self, Watcher};
use crate::{lock, NAME};

/// Changes a mirror may hold unapplied (one of its watchers silent while the others
/// deliver) before it ends rather than grow.
const MAX_PENDING: usize = 1_000_000;

/// The mirrors of one driver, one per group listed lately.
#[derive(Debug)]
pub(crate) struct Mirrors {
    slots: Mutex<HashMap<GroupId, Arc<Slot>>>,
    /// How long a mirror lives unread (`None`: no mirrors).
    idle: Option<Duration>,
    /// Off for good: the user may not write the sync keys.
    denied: AtomicBool,
    /// Mirrors started so far.
    started: AtomicU64,
}

/// A group's mirror, if one runs; locked while one is built.
type Slot = tokio::sync::Mutex<Option<Arc<Mirror>>>;

impl Mirrors {
    /// Mirrors that end after `idle` without a listing (`None`: none are kept).
    pub(crate) fn new(idle: Option<Duration>) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            idle,
            denied: AtomicBool::new(false),
            started: AtomicU64::new(0),
        }
    }

    fn on(&self) -> bool {
        self.idle.is_some() && !self.denied.load(Ordering::Relaxed)
    }

    fn slot(&self, group: &GroupId) -> Arc<Slot> {
        lock(&self.slots).entry(group.clone()).or_default().clone()
    }

    /// Ends every mirror (the store may have been replaced: a lease was lost).
    pub(crate) fn retire_all(&self, why: &str) {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        for slot in slots {
            if let Ok(mirror) = slot.try_lock() {
                if let Some(m) = mirror.as_ref() {
                    m.retire(why);
                }
            }
        }
    }

    /// How many mirrors were started so far (for tests and benchmarks).
    pub(crate) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// How many mirrors run (for tests).
    pub(crate) fn running(&self) -> usize {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        slots
            .iter()
            .filter(|s| {
                s.try_lock()
                    .map(|m| m.as_ref().is_some_and(|m| !m.retired()))
                    .unwrap_or(true)
            })
            .count()
    }
}

/// One group's copy and the task that keeps it.
#[derive(Debug)]
struct Mirror {
    group: GroupId,
    /// The store it was started on ([`Snapshot::anchor`]).
    anchor: i64,
    copy: Mutex<Mirrored>,
    /// The revision the copy is at; bumped (to wake waiters) when it retires.
    applied: watch::Sender<i64>,
    retired: AtomicBool,
    used: Mutex<Instant>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// Why a mirror could not answer a call.
enum Unsynced {
    /// The sync write failed: the call fails with it.
    Call(CallError),
    /// The user may not write the sync keys.
    Denied,
    /// The mirror ended or its watch lags: read the group afresh.
    Stale(String),
}

impl Mirror {
    fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Ends the mirror: nothing answers from it any more, and its copy is freed.
    fn retire(&self, why: &str) {
        if !self.retired.swap(true, Ordering::Relaxed) {
            tracing::debug!(driver = NAME, group = %self.group, why, "group mirror ended");
            lock(&self.copy).clear();
            self.applied.send_modify(|_| {});
        }
    }

    /// `read` of the copy, unless the mirror ended (its copy freed): then `read` is
    /// given back. The flag is checked under the copy's lock, which `retire` takes
    /// after setting it, so a copy being freed is never read.
    fn answer<T, F: FnOnce(&GroupState) -> T>(&self, read: F) -> std::result::Result<T, F> {
        let copy = lock(&self.copy);
        if self.retired() {
            return Err(read);
        }
        Ok(read(&copy.state))
    }

    fn idle_for(&self) -> Duration {
        lock(&self.used).elapsed()
    }

    /// Makes the copy hold every write committed before this call: writes the sync
    /// keys and waits for the watch to deliver that revision.
    async fn sync(&self, backend: &Backend) -> std::result::Result<(), Unsynced> {
        *lock(&self.used) = Instant::now();
        let before = *self.applied.borrow();
        let revision = backend.put_sync_keys(&self.group).await.map_err(|e| {
            match e.is_permission_denied() {
                true => Unsynced::Denied,
                false => Unsynced::Call(e),
            }
        })?;
        if !same_store(before, revision) {
            return Err(Unsynced::Stale(format!(
                "etcd's revision went back from {before} to {revision}: a new store"
            )));
        }
        let wait = backend.client.timeout() * 4;
        let mut applied = self.applied.subscribe();
        let caught_up =
            tokio::time::timeout(wait, applied.wait_for(|&a| a >= revision || self.retired()))
                .await;
        match caught_up {
            Ok(Ok(_)) if !self.retired() => Ok(()),
            Ok(_) => Err(Unsynced::Stale("the mirror ended".into())),
            Err(_) => Err(Unsynced::Stale(format!(
                "its watch did not reach revision {revision} within {wait:?}"
            ))),
        }
    }

    /// Applies one watch answer's events. `Err`: a record that does not decode.
    fn apply(&self, decoder: &Decoder, events: &[Value]) -> Result<()> {
        let mut by_watcher: [Vec<(i64, Change)>; WATCHERS] = Default::default();
        for event in events {
            let Some(kv) = event.get("kv").and_then(|kv| Kv::parse(kv).ok()) else {
                continue;
            };
            let deleted = event.get("type").and_then(Value::as_str) == Some("DELETE");
            if let Some((watcher, change)) = decoder.change(&kv, deleted)? {
                by_watcher[watcher].push((kv.mod_revision, change));
            }
        }
        let (applied, pending) = {
            let mut copy = lock(&self.copy);
            let mut applied = copy.applied();
            for (watcher, changes) in by_watcher.into_iter().enumerate() {
                if !changes.is_empty() {
                    applied = copy.push(watcher, changes);
                }
            }
            (applied, copy.pending())
        };
        if pending > MAX_PENDING {
            self.retire("too many changes wait for a silent watcher");
        }
        self.applied.send_if_modified(|a| {
            let moved = *a != applied;
            *a = applied;
            moved
        });
        Ok(())
    }
}

/// Whether a write answered `revision` can be of the store whose revision `before`
/// the copy had reached before the write was sent: a write gets a revision above every
/// one committed before it. (The copy may be past `revision` by the time the answer
/// is read: writes after ours were delivered meanwhile.)
fn same_store(before: i64, revision: i64) -> bool {
    revision > before
}

/// Answers `read` from `group`'s mirror (built by this call if none runs), or from a
/// listing of the group when mirrors are off.
pub(crate) async fn read<T>(
    backend: &Arc<Backend>,
    group: &GroupId,
    read: impl FnOnce(&GroupState) -> T,
) -> Result<T> {
    let mut read = read;
    let mirrors = &backend.mirrors;
    if !mirrors.on() {
        return Ok(read(&backend.snapshot(group).await?.state));
    }
    let slot = mirrors.slot(group);
    let mut guard = slot.lock().await;
    if let Some(mirror) = guard.as_ref().filter(|m| !m.retired()).cloned() {
        drop(guard);
        match mirror.sync(backend).await {
            Ok(()) => match mirror.answer(read) {
                Ok(answer) => return Ok(answer),
                // Ended after the sync (idle, or its watch failed): read afresh.
                Err(given_back) => read = given_back,
            },
            Err(Unsynced::Call(e)) => return Err(e.into_error("listing a group")),
            Err(Unsynced::Denied) => {
                if !mirrors.denied.swap(true, Ordering::Relaxed) {
                    tracing::warn!(driver = NAME, "this etcd user may not write the mirrors' sync keys; \
                        every listing reads its whole group (grant write on the prefix to keep mirrors)");
                }
                return Ok(read(&backend.snapshot(group).await?.state));
            }
            Err(Unsynced::Stale(why)) => {
                mirror.retire(&why);
                tracing::info!(driver = NAME, %group, why, "group mirror out of step; reading the group afresh");
            }
        }
        guard = slot.lock().await;
        // Another call may have built the next one meanwhile.
        if let Some(mirror) = guard.as_ref().filter(|m| !m.retired()).cloned() {
            drop(guard);
            let read = match mirror.sync(backend).await {
                Ok(()) => match mirror.answer(read) {
                    Ok(answer) => return Ok(answer),
                    Err(given_back) => given_back,
                },
                Err(Unsynced::Call(e)) => return Err(e.into_error("listing a group")),
                Err(Unsynced::Denied | Unsynced::Stale(_)) => read,
            };
            return Ok(read(&backend.snapshot(group).await?.state));
        }
    }
    let snapshot = backend.snapshot(group).await?;
    let answer = read(&snapshot.state);
    match start(backend, group, snapshot).await {
        Ok(mirror) => *guard = Some(mirror),
        Err(error) => {
            tracing::debug!(driver = NAME, %group, ?error, "cannot watch the group; no mirror for now");
            *guard = None;
        }
    }
    Ok(answer)
}

/// The watchers of `group`'s ranges, each from its own revision.
fn watchers(backend: &Backend, group: &GroupId, from: [i64; WATCHERS]) -> Vec<Watcher> {
    let (records, records_end) = backend.keys.group_records_synced(group);
    let (alive, alive_end) = backend.keys.group_alive_synced(group);
    let beats = Watcher::prefix(&backend.keys.beats(), Some(from[2]));
    vec![
        Watcher {
            key: records,
            end: records_end,
            start: Some(from[0]),
        },
        Watcher {
            key: alive,
            end: alive_end,
            start: Some(from[1]),
        },
        beats,
    ]
}

/// Starts the mirror of `group` from `snapshot`: opens its watch from the revision
/// after.
async fn start(
    backend: &Arc<Backend>,
    group: &GroupId,
    snapshot: Snapshot,
) -> std::result::Result<Arc<Mirror>, CallError> {
    let revision = snapshot.revision;
    let copy = Mirrored::new(snapshot.state, revision);
    let (lines, _) = watches::open(
        &backend.client,
        &watchers(backend, group, copy.resume_from()),
    )
    .await?;
    let (applied, _) = watch::channel(revision);
    let mirror = Arc::new(Mirror {
        group: group.clone(),
        anchor: snapshot.anchor,
        copy: Mutex::new(copy),
        applied,
        retired: AtomicBool::new(false),
        used: Mutex::new(Instant::now()),
        task: Mutex::new(None),
    });
    let task = tokio::spawn(follow(
        Arc::downgrade(backend),
        Arc::downgrade(&mirror),
        Decoder::new(&backend.keys, group),
        lines,
        backend.mirrors.idle.unwrap_or(Duration::MAX),
    ));
    *lock(&mirror.task) = Some(task.abort_handle());
    backend.mirrors.started.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(driver = NAME, %group, revision, "group mirror started");
    Ok(mirror)
}

/// Keeps a mirror: applies its watch's events, resumes a broken stream from each
/// watcher's next revision, and ends the mirror when it is idle, behind compaction,
/// or fed a record it cannot read. Holds neither the backend nor the mirror across
/// a wait.
async fn follow(
    backend: Weak<Backend>,
    mirror: Weak<Mirror>,
    decoder: Decoder,
    mut lines: Lines,
    idle: Duration,
) {
    let tick = idle.min(Duration::from_secs(10));
    loop {
        let broken = loop {
            let line = tokio::select! {
                line = lines.next() => Some(line),
                () = tokio::time::sleep(tick) => None,
            };
            let Some(m) = mirror.upgrade() else { return };
            if m.idle_for() >= idle {
                return m.retire("not read for etcd.mirror_idle");
            }
            let result = match line {
                None => continue,
                Some(Ok(result)) => result,
                Some(Err(e)) => break e,
            };
            if int(&result, "compact_revision") > 0
                || result.get("canceled").and_then(Value::as_bool) == Some(true)
            {
                return m.retire("its watch fell behind etcd's compaction (or was cancelled)");
            }
            if let Some(events) = result.get("events").and_then(Value::as_array) {
                if let Err(error) = m.apply(&decoder, events) {
                    return m.retire(error.message());
                }
            }
        };
        tracing::debug!(driver = NAME, error = ?broken, "group mirror watch broke; resuming");
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::time::sleep(backoff).await;
            let (Some(b), Some(m)) = (backend.upgrade(), mirror.upgrade()) else {
                return;
            };
            if m.retired() {
                return;
            }
            // A store replaced meanwhile (restored, or started empty) has revisions
            // of its own: resuming there would mix two stores.
            match b.anchor(&m.group).await {
                Ok(anchor) if anchor != m.anchor => {
                    return m.retire(
                        "the group's index key is not the one the mirror started with: a new store",
                    );
                }
                Ok(_) => {}
                Err(_) => {
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
            let from = lock(&m.copy).resume_from();
            match watches::open(&b.client, &watchers(&b, &m.group, from)).await {
                Ok((_, now)) if now < from.iter().copied().min().unwrap_or(0) - 1 => {
                    return m.retire("etcd's revision is behind the mirror's: a new store");
                }
                Ok((l, _)) => {
                    lines = l;
                    break;
                }
                Err(e) if e.is_compacted() => {
                    return m.retire("its watch fell behind etcd's compaction");
                }
                Err(_) => backoff = (backoff * 2).min(Duration::from_secs(2)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_store;

    #[test]
    fn a_sync_write_below_the_copys_revision_before_it_is_another_store() {
        assert!(same_store(10, 11));
        assert!(!same_store(10, 10));
        assert!(!same_store(2653, 12), "a store started empty");
    }
}
