//! The operator's forced-down flag.

use servicegroup_core::{ErrorKind, State};
use tokio::time::Instant;

use super::support::{age, expect_kind, last_write, listed, wait_heartbeat_calls, ROUNDING};
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, Context};
use crate::observe::observe;

pub(crate) async fn forced_down_wins_while_heartbeats_continue(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    let _m = sg.join(&g, "host-1").await.ctx("join")?;
    observer
        .set_forced_down(&g, "host-1", true)
        .await
        .ctx("set_forced_down(true)")?;

    ensure!(
        !observer
            .is_up(&g, "host-1")
            .await
            .ctx("is_up after forcing down")?,
        "{g}/host-1 is up right after it was forced down: forced down must win over heartbeats"
    );
    ensure!(
        !sg.is_up(&g, "host-1")
            .await
            .ctx("is_up on the member's own handle")?,
        "{g}/host-1 is up on its own handle right after it was forced down"
    );
    let status = observer.member(&g, "host-1").await.ctx("member()")?;
    ensure!(
        status.forced_down && status.state == State::Down,
        "member() after forcing down reports forced_down {} and state {}",
        status.forced_down,
        status.state
    );
    let listing = observer.members(&g).await.ctx("members()")?;
    let entry = listed(&listing, &g, "host-1")?;
    ensure!(
        entry.forced_down && entry.state == State::Down,
        "members() after forcing down lists forced_down {} and state {}",
        entry.forced_down,
        entry.state
    );

    // Heartbeats go on while forced down.
    let first = observer
        .get_updated_time(&g, "host-1")
        .await
        .ctx("get_updated_time")?;
    let deadline = ctx.deadline(ctx.next_heartbeat_within() + ctx.t.report_interval);
    loop {
        ensure!(
            !observer
                .is_up(&g, "host-1")
                .await
                .ctx("is_up while forced down")?,
            "{g}/host-1 came up while still forced down"
        );
        let now = observer
            .get_updated_time(&g, "host-1")
            .await
            .ctx("get_updated_time while forced down")?;
        if now > first {
            break;
        }
        deadline.check(|| {
            format!("get_updated_time of forced-down {g}/host-1 stayed at {first:?}: heartbeats stopped")
        })?;
        ctx.pause().await;
    }
    let write = last_write(&counters)?;
    let obs = observe(observer.member(&g, "host-1")).await;
    let status = obs.result.ctx("member() while forced down")?;
    let reported = age(&status, "member() while forced down")?;
    ensure!(
        reported <= obs.end - write.started + ctx.res() + ROUNDING,
        "while forced down the age is {reported:?}, but the latest heartbeat write started \
         {:?} before: heartbeats of a forced-down member are not stored",
        obs.end - write.started
    );
    Ok(())
}

pub(crate) async fn clearing_forced_down_makes_live_member_up_at_once(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let sg = ctx.connect().await?;
    let _m = sg.join(&g, "host-1").await.ctx("join")?;
    observer
        .set_forced_down(&g, "host-1", true)
        .await
        .ctx("set_forced_down(true)")?;
    let forced_at = Instant::now();
    // Longer than service_down_time: the heartbeat stored before forcing is stale by then.
    let until = forced_at + ctx.t.service_down_time + ctx.res() + ctx.t.report_interval;
    while Instant::now() < until {
        ensure!(
            !observer
                .is_up(&g, "host-1")
                .await
                .ctx("is_up while forced down")?,
            "{g}/host-1 came up {:?} after being forced down, with the flag still set",
            forced_at.elapsed()
        );
        ctx.pause().await;
    }
    observer
        .set_forced_down(&g, "host-1", false)
        .await
        .ctx("set_forced_down(false)")?;
    ensure!(
        observer.is_up(&g, "host-1").await.ctx("is_up after clearing")?,
        "{g}/host-1 is not up at once after clearing forced down, although it kept heartbeating \
         (forced down for {:?} > service_down_time {:?}): heartbeats were not stored while forced down",
        forced_at.elapsed(),
        ctx.t.service_down_time
    );
    let status = observer.member(&g, "host-1").await.ctx("member()")?;
    ensure!(
        !status.forced_down && status.state == State::Up,
        "member() after clearing reports forced_down {} and state {}",
        status.forced_down,
        status.state
    );
    Ok(())
}

pub(crate) async fn forced_down_survives_rejoin(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let first = ctx.connect().await?;
    let m = first.join(&g, "host-1").await.ctx("join")?;
    observer
        .set_forced_down(&g, "host-1", true)
        .await
        .ctx("set_forced_down(true)")?;
    ensure!(
        !observer.is_up(&g, "host-1").await.ctx("is_up")?,
        "{g}/host-1 is up right after it was forced down"
    );
    m.crash();
    let restarted = ctx.connect().await?;
    let before = Instant::now();
    let _m = restarted
        .join(&g, "host-1")
        .await
        .ctx("join again after the crash")?;
    let status = observer.member(&g, "host-1").await.ctx("member()")?;
    ensure!(
        status.forced_down && status.state == State::Down,
        "after a crash and rejoin the member reports forced_down {} and state {}: the operator's \
         flag must survive a restart",
        status.forced_down,
        status.state
    );
    let reported = age(&status, "member() after rejoin")?;
    ensure!(
        reported <= before.elapsed() + ctx.res() + ROUNDING,
        "the rejoin did not store a fresh heartbeat: age {reported:?}"
    );
    observer
        .set_forced_down(&g, "host-1", false)
        .await
        .ctx("set_forced_down(false)")?;
    ensure!(
        observer
            .is_up(&g, "host-1")
            .await
            .ctx("is_up after clearing")?,
        "{g}/host-1 is not up after clearing forced down"
    );
    Ok(())
}

pub(crate) async fn forced_down_of_unknown_member_is_not_found(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let unknown_group = ctx.group("never-joined");
    let observer = ctx.connect().await?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    let _m = sg.join(&g, "somebody").await.ctx("join")?;
    for forced in [true, false] {
        expect_kind(
            format!("set_forced_down({g}, nobody, {forced})"),
            observer.set_forced_down(&g, "nobody", forced).await,
            ErrorKind::NotFound,
        )?;
        expect_kind(
            format!("set_forced_down(<unknown group>, somebody, {forced})"),
            observer
                .set_forced_down(&unknown_group, "somebody", forced)
                .await,
            ErrorKind::NotFound,
        )?;
    }
    expect_kind(
        "is_up of the unknown member after set_forced_down",
        observer.is_up(&g, "nobody").await,
        ErrorKind::NotFound,
    )?;
    let listing = observer.members(&g).await.ctx("members()")?;
    let ids: Vec<&str> = listing.iter().map(|m| m.member.as_str()).collect();
    ensure!(
        ids == ["somebody"],
        "set_forced_down of unknown members changed the listing: {ids:?}"
    );
    ensure!(
        observer
            .members(&unknown_group)
            .await
            .ctx("members(unknown group)")?
            .is_empty(),
        "set_forced_down on an unknown group created members in it"
    );
    // The rejected calls did not disturb the real member.
    let calls = counters.heartbeat_calls();
    wait_heartbeat_calls(&ctx, &counters, calls + 1).await?;
    ensure!(
        observer.is_up(&g, "somebody").await.ctx("is_up")?,
        "{g}/somebody is not up"
    );
    Ok(())
}
