//! The heartbeat loop: one task per [`crate::ServiceGroup`] handle that reports
//! every joined member in one batched driver call per tick.
//!
//! - The first tick comes at a random point of the first `report_interval` (never
//!   later: members joined just before it already stored a heartbeat at join), then
//!   every `report_interval` minus up to 10 % jitter (never later, so jitter cannot
//!   push a member towards `service_down_time`). So handles and processes started
//!   together spread their writes over the interval instead of writing at once.
//! - A tick that finds the previous one still running is skipped, not piled up.
//! - Every driver call has core's `call_timeout`.
//! - A failure is logged once at WARN ("lost connection to <driver> backend"),
//!   the recovery once at INFO; the loop never ends while the handle lives.
//! - Members the driver reports missing are registered again (logged once each time).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::group::Inner;

/// Fraction of `report_interval` by which a tick may come early.
const JITTER: f64 = 0.1;

/// Connection health as seen by the loop, for logging transitions once.
#[derive(Debug)]
pub(crate) struct Health {
    healthy: AtomicBool,
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            healthy: AtomicBool::new(true),
        }
    }

    /// Records a failed heartbeat; logs WARN only on the healthy → lost transition.
    pub(crate) fn failed(&self, driver: &str, error: &Error) {
        if self.healthy.swap(false, Ordering::SeqCst) {
            tracing::warn!(
                driver,
                error = %error,
                kind = %error.kind(),
                "lost connection to {driver} backend: {error}"
            );
        }
    }

    /// Records a successful heartbeat; logs INFO only on the lost → healthy transition.
    pub(crate) fn succeeded(&self, driver: &str) {
        if !self.healthy.swap(true, Ordering::SeqCst) {
            tracing::info!(driver, "recovered connection to {driver} backend");
        }
    }

    /// Whether the last heartbeat succeeded.
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
}

/// A random fraction in `[0, 1)`, good enough for jitter (no crate needed).
fn random_fraction() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait before the next tick: `interval * (1 - JITTER * r)`.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(1.0 - JITTER * random_fraction())
}

/// The wait before the first tick: uniform in `(0, interval]`.
fn first_phase(interval: Duration) -> Duration {
    interval.mul_f64(1.0 - random_fraction())
}

/// Spawns the loop for `inner`; it ends when the handle (every clone and membership) is gone.
pub(crate) fn spawn(inner: &Arc<Inner>) -> tokio::task::JoinHandle<()> {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let interval = inner.config.report_interval;
    tokio::spawn(async move {
        let mut next = Instant::now() + first_phase(interval);
        loop {
            tokio::time::sleep_until(next).await;
            let Some(inner) = weak.upgrade() else { break };
            inner.tick().await;
            drop(inner);
            next += jittered(interval);
            let now = Instant::now();
            if next <= now {
                // The tick overran: skip the missed ticks instead of bursting.
                next = now + jittered(interval);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_tick_is_spread_over_the_interval_and_never_late() {
        let i = Duration::from_secs(10);
        let phases: Vec<Duration> = (0..1000).map(|_| first_phase(i)).collect();
        assert!(phases.iter().all(|p| *p > Duration::ZERO && *p <= i));
        // Spread, not clustered: both halves of the interval are used.
        let early = phases.iter().filter(|p| **p < i / 2).count();
        assert!(
            (300..=700).contains(&early),
            "{early} of 1000 in the first half"
        );
    }

    #[test]
    fn jitter_is_never_late() {
        let i = Duration::from_secs(10);
        for _ in 0..1000 {
            let j = jittered(i);
            assert!(j <= i && j >= i.mul_f64(1.0 - JITTER), "{j:?}");
        }
    }
}
