//! Many members, many handles: batching and concurrency.

use std::sync::Arc;
use std::time::Duration;

use servicegroup_core::{Error, Membership, ServiceGroup, State};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::support::{sleep_until, wait_heartbeat_calls};
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, CaseFailure, Context};
use crate::instrument::Counters;

/// Members on one handle in the batching cases.
const MANY: usize = 1000;
/// Concurrent joiners used to join them.
const JOINERS: usize = 8;
/// The most backend operations a batch of [`MANY`] heartbeats may cost.
const MAX_OPS_PER_BATCH: u64 = (MANY / 100) as u64;

/// Joins `count` members `host-0000`.. of `group` on `sg`, with [`JOINERS`] concurrent tasks.
async fn join_many(
    sg: &ServiceGroup,
    group: &str,
    count: usize,
) -> Result<Vec<Membership>, CaseFailure> {
    let mut tasks = JoinSet::new();
    for t in 0..JOINERS {
        let sg = sg.clone();
        let group = group.to_owned();
        tasks.spawn(async move {
            let mut joined = Vec::new();
            for i in (t..count).step_by(JOINERS) {
                joined.push(sg.join(group.as_str(), format!("host-{i:04}")).await?);
            }
            Ok::<_, Error>(joined)
        });
    }
    collect(tasks, "join").await
}

/// Awaits every task, flattening their outputs.
async fn collect<T: 'static>(
    mut tasks: JoinSet<Result<Vec<T>, Error>>,
    what: &str,
) -> Result<Vec<T>, CaseFailure> {
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(items)) => all.extend(items),
            Ok(Err(e)) => return Err(CaseFailure::unexpected(what, &e)),
            Err(e) => {
                return Err(CaseFailure::violation(format!(
                    "a concurrent {what} task panicked: {e}"
                )))
            }
        }
    }
    Ok(all)
}

/// Lists `group` and requires exactly `count` members, all up.
async fn require_all_up(
    observer: &ServiceGroup,
    group: &str,
    count: usize,
    when: &str,
) -> Result<(), CaseFailure> {
    let listing = observer.members(group).await.ctx("members()")?;
    ensure!(
        listing.len() == count,
        "{when}: members({group}) lists {} members, expected {count}",
        listing.len()
    );
    let down: Vec<&str> = listing
        .iter()
        .filter(|m| m.state != State::Up)
        .map(|m| m.member.as_str())
        .collect();
    ensure!(
        down.is_empty(),
        "{when}: {} of {count} members are down: {:?}",
        down.len(),
        &down[..down.len().min(10)]
    );
    Ok(())
}

/// Waits until no heartbeat call of the handle is running.
async fn settle(ctx: &Ctx, counters: &Arc<Counters>) -> Result<(), CaseFailure> {
    let deadline = ctx.deadline(ctx.t.call_timeout + ctx.t.slack);
    while counters.writes_in_flight() > 0 {
        deadline.check(|| "a heartbeat call never returned".to_owned())?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

pub(crate) async fn thousand_members_heartbeated_in_batches(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    let members = join_many(&sg, &g, MANY).await?;
    let joined = Instant::now();
    ensure!(
        counters.registrations() == MANY as u64,
        "{MANY} joins made {} register calls",
        counters.registrations()
    );
    // Past the boundary for every member (each was registered before `joined`), so
    // only heartbeats can keep them up; that is about five ticks.
    sleep_until(joined + ctx.t.service_down_time + ctx.res() + ctx.poll_every()).await;
    settle(&ctx, &counters).await?;
    let window = joined.elapsed();
    let calls: Vec<_> = counters
        .heartbeats()
        .into_iter()
        .filter(|c| c.started >= joined)
        .collect();
    ensure!(
        calls.len() >= 3,
        "only {} heartbeat calls in {window:?} after all members joined",
        calls.len()
    );
    // The first call after `joined` may carry a tick taken before the last joins
    // were done: the handle's keys are read when the tick starts, and the call
    // goes out up to a coalesce window (or a busy call slot) later. A handle's
    // next tick starts only after its previous call returned, so every later
    // call was read after `joined` and must carry every member.
    let partial: Vec<usize> = calls[1..]
        .iter()
        .map(|c| c.keys)
        .filter(|&k| k != MANY)
        .collect();
    ensure!(
        partial.is_empty(),
        "after {MANY} members joined one handle, heartbeat calls carried {partial:?} keys instead \
         of all {MANY}: every member of a handle must go in one call per tick"
    );
    // One call per tick: ticks come at most every 0.9 report intervals (jitter).
    let max_calls =
        (window.as_secs_f64() / (ctx.t.report_interval.as_secs_f64() * 0.9)).ceil() as usize + 1;
    ensure!(
        calls.len() <= max_calls,
        "{} heartbeat calls in {window:?} with report_interval {:?}: more than one call per tick",
        calls.len(),
        ctx.t.report_interval
    );
    require_all_up(&observer, &g, MANY, "one service_down_time after the joins").await?;
    ensure!(
        counters.registrations() == MANY as u64 && counters.missing_reported().is_empty(),
        "heartbeats reported {} members missing and {} registers were made: the batch lost members",
        counters.missing_reported().len(),
        counters.registrations()
    );
    drop(members);
    Ok(())
}

pub(crate) async fn heartbeat_batch_costs_few_backend_operations(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let (sg, counters) = ctx.connect_instrumented().await?;
    let members = join_many(&sg, &g, MANY).await?;
    // The first call after the joins may carry a tick read before the last of them
    // (see `thousand_members_heartbeated_in_batches`): let it pass, then count.
    wait_heartbeat_calls(&ctx, &counters, counters.heartbeat_calls() + 1).await?;
    settle(&ctx, &counters).await?;
    let ops_before = ctx.heartbeat_ops()?;
    let calls_before = counters.heartbeat_calls();
    wait_heartbeat_calls(&ctx, &counters, calls_before + 3).await?;
    settle(&ctx, &counters).await?;
    let ops = ctx.heartbeat_ops()? - ops_before;
    let calls = counters.heartbeat_calls() - calls_before;
    let keys: Vec<usize> = counters
        .heartbeats()
        .iter()
        .rev()
        .take(calls as usize)
        .map(|c| c.keys)
        .collect();
    ensure!(
        keys.iter().all(|&k| k == MANY),
        "heartbeat calls carried {keys:?} keys, expected {MANY} each"
    );
    ensure!(
        ops <= calls * MAX_OPS_PER_BATCH,
        "{calls} heartbeat batches of {MANY} members cost {ops} backend operations ({} per batch); \
         at most {MAX_OPS_PER_BATCH} per batch are allowed: heartbeats must be written in batches, \
         not one operation per member",
        ops / calls.max(1)
    );
    ensure!(
        ops > 0,
        "the heartbeat operation counter did not move during {calls} heartbeat batches: it counts \
         nothing"
    );
    drop(members);
    Ok(())
}

pub(crate) async fn eight_handles_hundred_members_all_up(ctx: Ctx) -> CaseResult {
    const HANDLES: usize = 8;
    const EACH: usize = 100;
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let mut tasks = JoinSet::new();
    for h in 0..HANDLES {
        let config = ctx.config();
        let group = g.clone();
        tasks.spawn(async move {
            let sg = ServiceGroup::connect(config).await?;
            let mut joined = Vec::new();
            for i in 0..EACH {
                joined.push(sg.join(group.as_str(), format!("h{h}-{i:03}")).await?);
            }
            Ok::<_, Error>(vec![(sg, joined)])
        });
    }
    let handles = collect(tasks, "connect and join").await?;
    let joined = Instant::now();
    let total = HANDLES * EACH;
    require_all_up(&observer, &g, total, "right after the joins").await?;
    sleep_until(joined + ctx.t.service_down_time + ctx.res() + ctx.poll_every()).await;
    require_all_up(
        &observer,
        &g,
        total,
        "one service_down_time after the joins",
    )
    .await?;

    let mut tasks = JoinSet::new();
    for (sg, memberships) in handles {
        tasks.spawn(async move {
            for m in memberships {
                m.leave().await?;
            }
            drop(sg);
            Ok::<_, Error>(Vec::<()>::new())
        });
    }
    collect(tasks, "leave").await?;
    let listing = observer.members(&g).await.ctx("members() after all left")?;
    ensure!(
        listing.is_empty(),
        "after all {total} members left concurrently, members({g}) still lists {}",
        listing.len()
    );
    Ok(())
}
