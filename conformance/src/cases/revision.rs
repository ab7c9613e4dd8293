//! The membership revision ([`servicegroup_core::Driver::revision`]): it moves with
//! every change of a record but heartbeats, and a watch on a driver that keeps one
//! lists the whole group only when it moved.

use std::sync::Arc;

use servicegroup_core::watch::RESYNC_POLLS;
use servicegroup_core::{Driver, EventKind, GroupId};

use super::support::metadata;
use super::watch::{expect_event, expect_quiet, notice};
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, CaseFailure, Context};

/// The driver's revision of `group`.
async fn revision(
    driver: &Arc<dyn Driver>,
    group: &GroupId,
    after: &str,
) -> Result<Option<u64>, CaseFailure> {
    driver
        .revision(group)
        .await
        .ctx(format_args!("revision({group}) after {after}"))
}

/// Requires the revision to have moved from `before` with `what`; returns it.
async fn moved(
    driver: &Arc<dyn Driver>,
    group: &GroupId,
    before: Option<u64>,
    what: &str,
) -> Result<Option<u64>, CaseFailure> {
    let now = revision(driver, group, what).await?;
    ensure!(
        now.is_some() && now != before,
        "revision({group}) is {now:?} after {what}, still {before:?}: a watch would not list the change"
    );
    Ok(now)
}

pub(crate) async fn revision_moves_with_every_change_but_heartbeats(ctx: Ctx) -> CaseResult {
    let driver = ctx.build_driver().await?;
    let g = ctx.group("revision");
    let group = GroupId::new(g.clone()).ctx("GroupId::new")?;
    let Some(start) = revision(&driver, &group, "nothing").await? else {
        // The driver keeps no revision (its watch lists every poll): nothing to check.
        return Ok(());
    };
    let (sg, counters) = ctx.connect_instrumented().await?;
    let m = sg.join(&g, "host-1").await.ctx("join")?;
    let r = moved(&driver, &group, Some(start), "a join").await?;

    // Two heartbeat ticks reach the driver: the revision stays.
    let beats = counters.heartbeat_calls();
    let deadline = ctx.deadline(ctx.next_heartbeat_within() * 2);
    while counters.heartbeat_calls() < beats + 2 {
        deadline.check(|| "two heartbeat ticks did not reach the driver".to_owned())?;
        ctx.pause().await;
    }
    let after_beats = revision(&driver, &group, "two heartbeats").await?;
    ensure!(
        after_beats == r,
        "revision({g}) moved from {r:?} to {after_beats:?} with heartbeats alone: a watch would list the group every poll"
    );

    m.set_metadata(metadata([("zone", "eu-1")])?)
        .await
        .ctx("set_metadata")?;
    let r = moved(&driver, &group, r, "set_metadata").await?;
    sg.set_forced_down(&g, "host-1", true)
        .await
        .ctx("set_forced_down(true)")?;
    let r = moved(&driver, &group, r, "set_forced_down(true)").await?;
    sg.set_forced_down(&g, "host-1", false)
        .await
        .ctx("set_forced_down(false)")?;
    let r = moved(&driver, &group, r, "set_forced_down(false)").await?;
    let other = ctx.connect().await?;
    let taken = other.join(&g, "host-1").await.ctx("takeover")?;
    let r = moved(&driver, &group, r, "a takeover").await?;
    taken.leave().await.ctx("leave")?;
    let r = moved(&driver, &group, r, "a leave").await?;
    other.join(&g, "host-2").await.ctx("join host-2")?;
    let r = moved(&driver, &group, r, "a second join").await?;
    other.remove(&g, "host-2").await.ctx("remove")?;
    moved(&driver, &group, r, "an operator's remove").await?;
    Ok(())
}

pub(crate) async fn watch_of_a_revision_driver_lists_only_after_changes(ctx: Ctx) -> CaseResult {
    let driver = ctx.build_driver().await?;
    let g = ctx.group("compute");
    let group = GroupId::new(g.clone()).ctx("GroupId::new")?;
    let feed = driver
        .change_feed(&group)
        .await
        .ctx("change_feed")?
        .is_some();
    if feed || revision(&driver, &group, "nothing").await?.is_none() {
        // No revision (every poll lists), or a change feed (the watch lists when told).
        return Ok(());
    }
    let (observer, counters) = ctx.connect_instrumented().await?;
    let sg = ctx.connect().await?;
    let m = sg.join(&g, "host-1").await.ctx("join host-1")?;
    sg.join(&g, "host-2").await.ctx("join host-2")?.crash();
    let mut watch = observer.watch(&g).await.ctx("watch")?;
    let lists = counters.list_calls();

    // host-2 ages into the down set: seen by down-set polls, with at most the
    // periodic resynchronisations in between.
    let started = tokio::time::Instant::now();
    expect_event(
        &mut watch,
        EventKind::Down,
        "host-2",
        ctx.t.service_down_time + ctx.res() + ctx.t.report_interval + notice(&ctx),
    )
    .await?;
    let quiet = ctx.t.watch_interval * 6;
    expect_quiet(&mut watch, quiet).await?;
    let polls = (started.elapsed().as_nanos() / ctx.t.watch_interval.as_nanos().max(1)) as u64;
    let allowed = polls / u64::from(RESYNC_POLLS) + 1;
    let listed = counters.list_calls() - lists;
    ensure!(
        listed <= allowed,
        "the watch listed the whole group {listed} times in {polls} polls while only ages changed \
         (at most {allowed}: one per {RESYNC_POLLS} polls); it must ask for the down set"
    );
    ensure!(
        counters.list_in_calls() >= 3,
        "the watch asked for the down set {} times in {polls} polls",
        counters.list_in_calls()
    );

    // A change that is not a heartbeat is listed at once.
    m.set_metadata(metadata([("zone", "eu-1")])?)
        .await
        .ctx("set_metadata")?;
    expect_event(&mut watch, EventKind::Updated, "host-1", notice(&ctx)).await?;
    // A member leaving the down set is listed: gone, not back up.
    sg.remove(&g, "host-2").await.ctx("remove host-2")?;
    expect_event(&mut watch, EventKind::Left, "host-2", notice(&ctx)).await?;
    m.leave().await.ctx("leave host-1")?;
    expect_event(&mut watch, EventKind::Left, "host-1", notice(&ctx)).await?;
    expect_quiet(&mut watch, ctx.t.watch_interval * 4).await
}
