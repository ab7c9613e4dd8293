//! Joining the fleet: every member through the heartbeating handles, in batches.

use std::sync::Arc;

use servicegroup::ServiceGroup;
use tokio::task::JoinSet;

use crate::run::{bar, lock, Sim};
use crate::Error;

/// Joins every member in batches of `batch` (one `join_many` each: one driver round
/// trip per chunk where the driver supports it), batches spread over the handles, at
/// most `concurrency` batches in flight. Returns (joined, failed); an error when none
/// could join.
pub async fn join_all(
    sim: &Arc<Sim>,
    handles: &[ServiceGroup],
    batch: u32,
    concurrency: u32,
) -> Result<(u64, u64), Error> {
    let n = sim.fleet.len();
    // Every handle gets its share even when the fleet is smaller than handles * batch.
    let batch = (batch as usize).min(n.div_ceil(handles.len())).max(1);
    let bar = bar(
        sim.progress,
        n as u64,
        "{prefix:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} members",
    );
    bar.set_prefix("joining");
    let mut set = JoinSet::new();
    let (mut next, mut batch_no, mut joined, mut failed) = (0usize, 0usize, 0u64, 0u64);
    let mut first_error = None;
    while next < n || !set.is_empty() {
        while next < n && set.len() < concurrency as usize {
            let sg = handles[batch_no % handles.len()].clone();
            let range = next..(next + batch).min(n);
            let ids: Vec<String> = range.clone().map(|i| sim.fleet.member_id(i)).collect();
            let group = sim.group.clone();
            set.spawn(async move { (range, sg.join_many(group, ids).await) });
            next += batch;
            batch_no += 1;
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        match done {
            Ok((range, Ok(memberships))) => {
                let mut slots = lock(&sim.memberships);
                for (i, membership) in range.zip(memberships) {
                    sim.fleet.mark_joined(i);
                    slots[i] = Some(membership);
                    joined += 1;
                }
                drop(slots);
                bar.set_position(joined);
            }
            Ok((range, Err(error))) => {
                sim.stats.errors.add(error.kind());
                failed += range.len() as u64;
                if first_error.is_none() {
                    tracing::warn!(
                        first = %sim.fleet.member_id(range.start),
                        members = range.len(),
                        error = %error,
                        "joining a batch failed"
                    );
                    first_error = Some(error);
                }
            }
            Err(join_error) => {
                tracing::warn!("join task failed: {join_error}");
            }
        }
    }
    bar.finish_and_clear();
    if joined == 0 {
        return Err(match first_error {
            Some(error) => Error::from(error),
            None => Error::NoMemberJoined,
        });
    }
    Ok((joined, failed))
}
