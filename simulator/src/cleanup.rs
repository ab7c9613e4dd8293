//! Cleaning up after a run: live members leave, killed ones are removed.

use std::sync::Arc;

use servicegroup::{ErrorKind, Membership, ServiceGroup};
use tokio::task::JoinSet;

use crate::run::{bar, lock, Sim};

/// Leaves every live member and removes every killed one, a bounded number at a time.
/// Failures are logged, not reported: the measurement is over.
pub async fn clean_up(sim: &Arc<Sim>, observer: &ServiceGroup, concurrency: u32) {
    let memberships: Vec<(usize, Membership)> = lock(&sim.memberships)
        .iter_mut()
        .enumerate()
        .filter_map(|(i, m)| m.take().map(|m| (i, m)))
        .collect();
    let killed: Vec<usize> = (0..sim.fleet.len())
        .filter(|&i| sim.fleet.is_joined(i) && sim.fleet.is_killed(i))
        .collect();
    let bar = bar(
        sim.progress,
        (memberships.len() + killed.len()) as u64,
        "{prefix:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} records",
    );
    bar.set_prefix("cleaning");
    let mut set = JoinSet::new();
    let mut failures = 0u64;
    let mut tasks = memberships.into_iter().map(|(_, m)| Op::Leave(m)).chain(
        killed
            .into_iter()
            .map(|i| Op::Remove(sim.fleet.member_id(i))),
    );
    loop {
        while set.len() < concurrency as usize {
            let Some(op) = tasks.next() else { break };
            let (sg, group) = (observer.clone(), sim.group.clone());
            set.spawn(async move {
                match op {
                    Op::Leave(m) => m.leave().await,
                    Op::Remove(id) => match sg.remove(&group, id.as_str()).await {
                        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                        other => other,
                    },
                }
            });
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        bar.inc(1);
        if !matches!(done, Ok(Ok(()))) {
            failures += 1;
        }
    }
    sim.stats.close();
    bar.finish_and_clear();
    if failures > 0 {
        tracing::warn!(
            failures,
            group = %sim.group,
            "some member records could not be cleaned up; `servicegroup remove` them or let them stay down"
        );
    }
}

/// One clean-up step.
enum Op {
    Leave(Membership),
    Remove(String),
}
