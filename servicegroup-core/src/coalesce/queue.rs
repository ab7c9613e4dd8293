//! [`Queue`]: the batching mechanics shared by heartbeats and registrations.
//!
//! A caller's request is an entry. The first entry opens a batch and spawns its
//! flusher; later entries join the open batch until it is full (its size reaches
//! the bound, or an entry would conflict with one already in it), which closes it.
//! The flusher waits until the window has passed since the batch opened (or the
//! batch closed early), then for a free call slot (at most `in_flight` calls of one
//! queue run at once, so heartbeats never hold every connection of a pool), then
//! takes the batch: from then on no entry joins it, and entries whose caller went
//! away meanwhile are dropped unsent. What the call answers, the send function hands
//! back to each entry.
//!
//! The flusher is a task of its own, so a caller that is cancelled (dropped, timed
//! out) never takes the batch of the others down with it.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use crate::engine::lock;
use crate::id::MemberKey;

/// One caller's request waiting in a [`Queue`].
pub(crate) trait Entry: Send + 'static {
    /// How much of the batch's size bound it uses (keys, registrations).
    fn size(&self) -> usize;
    /// Whether its caller stopped waiting (its answer channel is closed).
    fn abandoned(&self) -> bool;
    /// Keys that may appear only once in a batch (registrations); none for heartbeats.
    fn unique_keys(&self) -> &[MemberKey] {
        &[]
    }
}

/// Sends one taken batch and answers its entries.
pub(crate) type SendFn<E> =
    Box<dyn Fn(Vec<E>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How a [`Queue`] batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// How long a batch stays open after its first entry (zero: until a slot is free).
    pub(crate) window: Duration,
    /// The size at which a batch closes and goes out without waiting for the window.
    pub(crate) max_size: usize,
    /// How many calls of this queue may run at once.
    pub(crate) in_flight: usize,
}

struct Batch<E> {
    entries: Vec<E>,
    size: usize,
    keys: HashSet<MemberKey>,
    closed: Arc<Notify>,
}

struct State<E> {
    /// The batch new entries join, if one is open.
    open: Option<u64>,
    /// Every batch not yet taken by its flusher, by id.
    waiting: HashMap<u64, Batch<E>>,
    next_id: u64,
}

/// A batching queue in front of one kind of driver call.
pub(crate) struct Queue<E: Entry> {
    limits: Limits,
    state: Mutex<State<E>>,
    slots: Arc<Semaphore>,
    send: SendFn<E>,
}

impl<E: Entry> std::fmt::Debug for Queue<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Queue")
            .field("limits", &self.limits)
            .field("waiting_batches", &state.waiting.len())
            .field("free_slots", &self.slots.available_permits())
            .finish()
    }
}

impl<E: Entry> Queue<E> {
    /// A queue that hands every taken batch to `send`.
    pub(crate) fn new(limits: Limits, send: SendFn<E>) -> Self {
        let limits = Limits {
            max_size: limits.max_size.max(1),
            in_flight: limits.in_flight.max(1),
            ..limits
        };
        Self {
            limits,
            state: Mutex::new(State {
                open: None,
                waiting: HashMap::new(),
                next_id: 0,
            }),
            slots: Arc::new(Semaphore::new(limits.in_flight)),
            send,
        }
    }

    /// The batch bound: a caller at least this large is sent alone, directly.
    pub(crate) fn max_size(&self) -> usize {
        self.limits.max_size
    }

    /// Waits for a call slot of this queue, for a caller sent alone (`None`: the
    /// queue is closed, which it never is).
    pub(crate) async fn slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.slots.acquire().await.ok()
    }

    /// Adds `entry` to the open batch, or opens a new one (spawning its flusher).
    pub(crate) fn push(self: &Arc<Self>, entry: E) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let size = entry.size();
        if let Some(batch) = state.open.and_then(|id| state.waiting.get_mut(&id)) {
            let fits = batch.size + size <= self.limits.max_size;
            let clash = entry.unique_keys().iter().any(|k| batch.keys.contains(k));
            if fits && !clash {
                batch.keys.extend(entry.unique_keys().iter().cloned());
                batch.size += size;
                batch.entries.push(entry);
                if batch.size >= self.limits.max_size {
                    batch.closed.notify_one();
                    state.open = None;
                }
                return;
            }
            // Full for this entry: the batch goes out as it is, the entry opens the next.
            batch.closed.notify_one();
        }
        state.open = None;
        let id = state.next_id;
        state.next_id += 1;
        let closed = Arc::new(Notify::new());
        let batch = Batch {
            keys: entry.unique_keys().iter().cloned().collect(),
            entries: vec![entry],
            size,
            closed: closed.clone(),
        };
        state.waiting.insert(id, batch);
        if size >= self.limits.max_size {
            closed.notify_one();
        } else {
            state.open = Some(id);
        }
        drop(guard);
        tokio::spawn(self.clone().flush(id, closed));
    }

    /// The flusher of batch `id`.
    async fn flush(self: Arc<Self>, id: u64, closed: Arc<Notify>) {
        if !self.limits.window.is_zero() {
            // Early when the batch closed (full); `notify_one` keeps the wake-up if
            // it came before this wait began.
            let _ = tokio::time::timeout(self.limits.window, closed.notified()).await;
        }
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let entries = {
            let mut state = lock(&self.state);
            if state.open == Some(id) {
                state.open = None;
            }
            match state.waiting.remove(&id) {
                Some(batch) => batch.entries,
                None => return,
            }
        };
        let entries: Vec<E> = entries.into_iter().filter(|e| !e.abandoned()).collect();
        if !entries.is_empty() {
            (self.send)(entries).await;
        }
        drop(slot);
    }
}
