//! Watch: each membership transition reported exactly once.

use std::time::Duration;

use servicegroup_core::{EventKind, Watch};

use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{CaseFailure, Context};

/// Requires the next event to be `kind` of `member`, within `within`.
async fn expect_event(
    watch: &mut Watch,
    kind: EventKind,
    member: &str,
    within: Duration,
) -> Result<(), CaseFailure> {
    match tokio::time::timeout(within, watch.next()).await {
        Ok(Ok(event)) if event.kind == kind && event.member.as_str() == member => Ok(()),
        Ok(Ok(event)) => Err(CaseFailure::violation(format!(
            "watch of {}: expected `{kind}` of {member}, got `{}` of {}",
            watch.group(),
            event.kind,
            event.member
        ))),
        Ok(Err(e)) => Err(CaseFailure::unexpected("Watch::next", &e)),
        Err(_) => Err(CaseFailure::violation(format!(
            "watch of {}: no `{kind}` event of {member} within {within:?}",
            watch.group()
        ))),
    }
}

/// Requires no event for `quiet`.
async fn expect_quiet(watch: &mut Watch, quiet: Duration) -> Result<(), CaseFailure> {
    match tokio::time::timeout(quiet, watch.next()).await {
        Err(_) => Ok(()),
        Ok(Ok(event)) => Err(CaseFailure::violation(format!(
            "watch of {}: unexpected extra event `{}` of {} (each transition must be reported \
             exactly once)",
            watch.group(),
            event.kind,
            event.member
        ))),
        Ok(Err(e)) => Err(CaseFailure::unexpected("Watch::next", &e)),
    }
}

/// How long a watch may take to notice a change it can see in the listing.
fn notice(ctx: &Ctx) -> Duration {
    ctx.t.watch_interval * 2 + ctx.t.call_timeout + ctx.t.slack
}

pub(crate) async fn watch_reports_each_transition_once(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let mut watch = observer.watch(&g).await.ctx("watch")?;
    let first = ctx.connect().await?;
    let m = first.join(&g, "host-1").await.ctx("join")?;
    expect_event(&mut watch, EventKind::Joined, "host-1", notice(&ctx)).await?;
    m.crash();
    expect_event(
        &mut watch,
        EventKind::Down,
        "host-1",
        ctx.t.service_down_time + ctx.res() + ctx.t.report_interval + notice(&ctx),
    )
    .await?;
    let restarted = ctx.connect().await?;
    let m = restarted.join(&g, "host-1").await.ctx("join again")?;
    expect_event(&mut watch, EventKind::Up, "host-1", notice(&ctx)).await?;
    m.leave().await.ctx("leave")?;
    expect_event(&mut watch, EventKind::Left, "host-1", notice(&ctx)).await?;
    expect_quiet(
        &mut watch,
        ctx.t.watch_interval * 4 + ctx.t.report_interval * 2,
    )
    .await
}

pub(crate) async fn watch_reports_forced_down_and_clear(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let mut watch = observer.watch(&g).await.ctx("watch")?;
    let sg = ctx.connect().await?;
    let m = sg.join(&g, "host-1").await.ctx("join")?;
    expect_event(&mut watch, EventKind::Joined, "host-1", notice(&ctx)).await?;
    observer
        .set_forced_down(&g, "host-1", true)
        .await
        .ctx("set_forced_down(true)")?;
    expect_event(&mut watch, EventKind::Down, "host-1", notice(&ctx)).await?;
    expect_quiet(&mut watch, ctx.t.watch_interval * 3 + ctx.t.report_interval).await?;
    observer
        .set_forced_down(&g, "host-1", false)
        .await
        .ctx("set_forced_down(false)")?;
    expect_event(&mut watch, EventKind::Up, "host-1", notice(&ctx)).await?;
    m.leave().await.ctx("leave")?;
    expect_event(&mut watch, EventKind::Left, "host-1", notice(&ctx)).await?;
    expect_quiet(&mut watch, ctx.t.watch_interval * 4).await
}
