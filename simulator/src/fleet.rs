//! Per-member bookkeeping of the simulator in flat arrays (9 bytes per member):
//! who joined, who was killed when, who was judged down. Observers call
//! [`Fleet::judged_down`] for every down verdict they see.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::latency::Latency;

const ALIVE: u64 = u64::MAX;
const JOINED: u8 = 1;
const DETECTED: u8 = 2;
const FALSE_DOWN: u8 = 4;
/// False downs logged one by one; the rest are only counted (an overloaded baseline
/// has thousands).
const LOGGED_FALSE_DOWNS: u64 = 10;

/// The simulated members: ids `m<index>` zero-padded, so listings sort by index.
#[derive(Debug)]
pub struct Fleet {
    start: Instant,
    width: usize,
    /// Nanoseconds after `start` the member was killed, or `ALIVE`.
    killed_at: Vec<AtomicU64>,
    flags: Vec<AtomicU8>,
    killed: AtomicU64,
    detected: AtomicU64,
    false_downs: AtomicU64,
    detection: Mutex<Latency>,
}

impl Fleet {
    /// `n` members, none joined yet.
    pub fn new(n: u32) -> Self {
        Self {
            start: Instant::now(),
            width: n.saturating_sub(1).max(1).to_string().len(),
            killed_at: (0..n).map(|_| AtomicU64::new(ALIVE)).collect(),
            flags: (0..n).map(|_| AtomicU8::new(0)).collect(),
            killed: AtomicU64::new(0),
            detected: AtomicU64::new(0),
            false_downs: AtomicU64::new(0),
            detection: Mutex::new(Latency::new()),
        }
    }

    /// Number of members (joined or not).
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// The member id of index `i`.
    pub fn member_id(&self, i: usize) -> String {
        format!("m{:0width$}", i, width = self.width)
    }

    /// The index of a member id of this fleet, `None` for any other id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        let digits = id.strip_prefix('m')?;
        if digits.len() != self.width {
            return None;
        }
        let i: usize = digits.parse().ok()?;
        (i < self.len()).then_some(i)
    }

    fn nanos_now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(ALIVE - 1)
    }

    /// Records that member `i` joined.
    pub fn mark_joined(&self, i: usize) {
        self.flags[i].fetch_or(JOINED, Ordering::SeqCst);
    }

    /// Whether member `i` joined.
    pub fn is_joined(&self, i: usize) -> bool {
        self.flags[i].load(Ordering::SeqCst) & JOINED != 0
    }

    /// Records that member `i` is being killed now (call before its heartbeats stop).
    pub fn mark_killed(&self, i: usize) {
        let now = self.nanos_now();
        if self.killed_at[i]
            .compare_exchange(ALIVE, now, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.killed.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether member `i` was killed.
    pub fn is_killed(&self, i: usize) -> bool {
        self.killed_at[i].load(Ordering::SeqCst) != ALIVE
    }

    /// An observer saw member `i` judged down. A live member is a false down (each
    /// member counted once); a killed one is a detection, whose delay since the kill
    /// is recorded the first time.
    pub fn judged_down(&self, i: usize, member: &str) {
        let killed_at = self.killed_at[i].load(Ordering::SeqCst);
        if killed_at == ALIVE {
            if self.flags[i].fetch_or(FALSE_DOWN, Ordering::SeqCst) & FALSE_DOWN == 0 {
                let before = self.false_downs.fetch_add(1, Ordering::SeqCst);
                if before < LOGGED_FALSE_DOWNS {
                    tracing::warn!(member, "false down: a live member was judged down");
                } else if before == LOGGED_FALSE_DOWNS {
                    tracing::warn!("more false downs: counted in the report, no longer logged");
                }
            }
        } else if self.flags[i].fetch_or(DETECTED, Ordering::SeqCst) & DETECTED == 0 {
            let delay = Duration::from_nanos(self.nanos_now().saturating_sub(killed_at));
            self.detection
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(delay);
            self.detected.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Members killed so far.
    pub fn killed(&self) -> u64 {
        self.killed.load(Ordering::SeqCst)
    }

    /// Killed members judged down so far.
    pub fn detected(&self) -> u64 {
        self.detected.load(Ordering::SeqCst)
    }

    /// Live members judged down so far.
    pub fn false_downs(&self) -> u64 {
        self.false_downs.load(Ordering::SeqCst)
    }

    /// Detection delays (kill → first seen down).
    pub fn detection(&self) -> MutexGuard<'_, Latency> {
        self.detection.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_by_index() {
        let f = Fleet::new(1000);
        assert_eq!(f.member_id(7), "m007");
        assert_eq!(f.index_of("m007"), Some(7));
        assert_eq!(f.index_of("m7"), None);
        assert_eq!(f.index_of("x007"), None);
        assert_eq!(f.index_of("m1000"), None);
        assert!(f.member_id(99) < f.member_id(100));
        assert_eq!(Fleet::new(1).member_id(0), "m0");
    }

    #[test]
    fn verdicts_are_counted_once() {
        let f = Fleet::new(10);
        f.judged_down(1, "m1");
        f.judged_down(1, "m1");
        assert_eq!(f.false_downs(), 1);
        f.mark_killed(2);
        f.mark_killed(2);
        assert_eq!(f.killed(), 1);
        assert!(f.is_killed(2));
        f.judged_down(2, "m2");
        f.judged_down(2, "m2");
        assert_eq!(f.detected(), 1);
        assert_eq!(f.detection().count(), 1);
        assert_eq!(f.false_downs(), 1);
    }
}
