//! Building the system under test for a [`Topology`]: the heartbeating handles, the
//! observers' handle and the driver instances behind them, all through
//! [`Registry::build`] by the configured driver's name (so any registered driver,
//! the relay client included, runs in either topology with nothing specific here).
//!
//! Every handle is built on a [`TimingDriver`], which times the heartbeat calls. In
//! the shared topology one `TimingDriver` (one driver instance) serves every handle,
//! so core may merge their calls. In the per-process topology each simulated process
//! gets its **own** `TimingDriver` (its own `Arc<dyn Driver>`, the driver object its
//! handle is built on) in front of a built driver instance that up to
//! `processes_per_driver` processes share: they share that instance's connections
//! (pool, sockets, HTTP/2 streams), while core sees a distinct driver per process and
//! so never coalesces one process's heartbeat with another's. Each process's call
//! is counted as one heartbeat batch, so the report shows one request per process
//! per tick.

use std::sync::Arc;

use servicegroup::{Config, Driver, Registry, ServiceGroup};
use tokio::task::JoinSet;

use crate::timing::{Stats, TimingDriver};
use crate::Topology;

/// The handles of a simulation and what they are built on.
pub struct Built {
    /// Heartbeating handles: `handles` of them (shared) or one per member (per-process).
    pub handles: Vec<ServiceGroup>,
    /// The observers' handle.
    pub observer: ServiceGroup,
    /// Driver instances built, the observers' included.
    pub driver_instances: u64,
}

/// What to build.
pub struct Plan<'a> {
    /// The configuration every instance is built from.
    pub config: &'a Config,
    /// The topology.
    pub topology: Topology,
    /// Shared topology: handle count.
    pub handles: u32,
    /// Per-process topology: process count (one per member).
    pub processes: u32,
    /// Per-process topology: processes per driver instance.
    pub processes_per_driver: u32,
    /// Driver instances built at once.
    pub concurrency: u32,
}

/// Builds the handles for `plan`, every driver call of them timed into `stats`.
pub async fn build(plan: Plan<'_>, stats: &Arc<Stats>) -> servicegroup::Result<Built> {
    let timed = |inner: Arc<dyn Driver>| -> Arc<dyn Driver> {
        Arc::new(TimingDriver::new(inner, stats.clone()))
    };
    match plan.topology {
        Topology::Shared => {
            let driver = timed(Registry::build(plan.config).await?);
            let handles = (0..plan.handles)
                .map(|_| ServiceGroup::with_driver(driver.clone(), plan.config.clone()))
                .collect::<servicegroup::Result<Vec<_>>>()?;
            let observer = ServiceGroup::with_driver(driver, plan.config.clone())?;
            Ok(Built {
                handles,
                observer,
                driver_instances: 1,
            })
        }
        Topology::PerProcess => {
            let per = plan.processes_per_driver.max(1);
            let count = plan.processes.div_ceil(per) as usize;
            let instances = build_instances(plan.config, count, plan.concurrency).await?;
            let handles = (0..plan.processes as usize)
                .map(|p| {
                    let own = timed(instances[p / per as usize].clone());
                    ServiceGroup::with_driver(own, plan.config.clone())
                })
                .collect::<servicegroup::Result<Vec<_>>>()?;
            let observer = ServiceGroup::with_driver(
                timed(Registry::build(plan.config).await?),
                plan.config.clone(),
            )?;
            tracing::info!(
                processes = plan.processes,
                driver_instances = count,
                processes_per_driver = per,
                "per-process topology built"
            );
            Ok(Built {
                handles,
                observer,
                driver_instances: count as u64 + 1,
            })
        }
    }
}

/// Builds `count` driver instances, `concurrency` at a time, in order.
async fn build_instances(
    config: &Config,
    count: usize,
    concurrency: u32,
) -> servicegroup::Result<Vec<Arc<dyn Driver>>> {
    let mut slots: Vec<Option<Arc<dyn Driver>>> = (0..count).map(|_| None).collect();
    let mut set = JoinSet::new();
    let mut next = 0;
    while next < count || !set.is_empty() {
        while next < count && set.len() < concurrency.max(1) as usize {
            let config = config.clone();
            let i = next;
            set.spawn(async move { (i, Registry::build(&config).await) });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok((i, built))) => slots[i] = Some(built?),
            Some(Err(join_error)) => {
                return Err(servicegroup::Error::backend(format!(
                    "building a driver instance failed: {join_error}"
                )))
            }
            None => break,
        }
    }
    Ok(slots.into_iter().flatten().collect())
}
