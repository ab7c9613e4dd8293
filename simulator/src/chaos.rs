//! Killing members: a random schedule, then crashes on time (heartbeats stop, the
//! record stays).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::fleet::Fleet;
use crate::run::{lock, Sim};

/// Picks `round(joined * fraction)` joined members and a random kill time for each in
/// `[10 %, duration - budget]` of the run (so detection fits in the run when it can).
pub fn kill_schedule(
    fleet: &Fleet,
    fraction: f64,
    run: Duration,
    budget: Duration,
) -> Vec<(Duration, usize)> {
    let mut rng = fastrand::Rng::new();
    let mut candidates: Vec<u32> = (0..fleet.len())
        .filter(|&i| fleet.is_joined(i))
        .map(|i| i as u32)
        .collect();
    let k = ((candidates.len() as f64) * fraction).round() as usize;
    // Partial Fisher-Yates: the first k are a uniform sample.
    for i in 0..k.min(candidates.len()) {
        let j = rng.usize(i..candidates.len());
        candidates.swap(i, j);
    }
    let earliest = run.mul_f64(0.1);
    let latest = run.saturating_sub(budget).max(earliest);
    let span = (latest - earliest).as_secs_f64();
    let mut schedule: Vec<(Duration, usize)> = candidates[..k]
        .iter()
        .map(|&i| {
            (
                earliest + Duration::from_secs_f64(span * rng.f64()),
                i as usize,
            )
        })
        .collect();
    schedule.sort_unstable();
    schedule
}

/// Kills members on schedule: marks them killed, then drops their membership
/// (heartbeats stop, the record stays: a crash).
pub async fn kill(sim: Arc<Sim>, schedule: Vec<(Duration, usize)>, started: Instant) {
    for (at, i) in schedule {
        tokio::time::sleep_until(started + at).await;
        sim.fleet.mark_killed(i);
        let membership = lock(&sim.memberships).get_mut(i).and_then(Option::take);
        if let Some(m) = membership {
            m.crash();
        }
    }
}
