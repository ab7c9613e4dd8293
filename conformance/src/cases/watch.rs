//! Watch: each membership transition reported exactly once, including metadata
//! updates (`Updated`) and takeovers (`Replaced`).

use std::time::Duration;

use servicegroup_core::{Event, EventKind, JoinOptions, Metadata, Watch};

use super::support::{metadata, require_metadata, with_metadata};
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, CaseFailure, Context};

/// Requires the next event to be `kind` of `member`, within `within`; returns it.
pub(crate) async fn expect_event(
    watch: &mut Watch,
    kind: EventKind,
    member: &str,
    within: Duration,
) -> Result<Event, CaseFailure> {
    match tokio::time::timeout(within, watch.next()).await {
        Ok(Ok(event)) if event.kind == kind && event.member.as_str() == member => Ok(event),
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
pub(crate) async fn expect_quiet(watch: &mut Watch, quiet: Duration) -> Result<(), CaseFailure> {
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

/// Requires the next events to be `kinds` of `member`, in any order (changes one poll
/// notices together), each within `within`.
pub(crate) async fn expect_events(
    watch: &mut Watch,
    kinds: &[EventKind],
    member: &str,
    within: Duration,
) -> Result<Vec<Event>, CaseFailure> {
    let mut left: Vec<EventKind> = kinds.to_vec();
    let mut events = Vec::new();
    while !left.is_empty() {
        match tokio::time::timeout(within, watch.next()).await {
            Ok(Ok(event)) if event.member.as_str() == member && left.contains(&event.kind) => {
                left.retain(|k| *k != event.kind);
                events.push(event);
            }
            Ok(Ok(event)) => {
                return Err(CaseFailure::violation(format!(
                    "watch of {}: expected {} of {member}, got `{}` of {}",
                    watch.group(),
                    left.iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(" and "),
                    event.kind,
                    event.member
                )))
            }
            Ok(Err(e)) => return Err(CaseFailure::unexpected("Watch::next", &e)),
            Err(_) => {
                return Err(CaseFailure::violation(format!(
                    "watch of {}: no {} event of {member} within {within:?}",
                    watch.group(),
                    left.iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                )))
            }
        }
    }
    Ok(events)
}

/// How long a watch may take to notice a change it can see in the listing.
pub(crate) fn notice(ctx: &Ctx) -> Duration {
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
    // The process restarts: a new handle is a new instance, so the rejoin is both a
    // takeover (`Replaced`) and the member coming back (`Up`), seen in one listing.
    let restarted = ctx.connect().await?;
    let m = restarted.join(&g, "host-1").await.ctx("join again")?;
    expect_events(
        &mut watch,
        &[EventKind::Replaced, EventKind::Up],
        "host-1",
        notice(&ctx),
    )
    .await?;
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

/// How long a watch must stay quiet to show that heartbeats (and the old holder's
/// fenced ticks) cause no events: a few polls and two heartbeat ticks.
fn quiet(ctx: &Ctx) -> Duration {
    ctx.t.watch_interval * 4 + ctx.t.report_interval * 2
}

pub(crate) async fn watch_reports_updated_once(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let mut watch = observer.watch(&g).await.ctx("watch")?;
    let sg = ctx.connect().await?;
    let md1 = metadata([("zone", "eu-1")])?;
    let m = sg
        .join_with(&g, "host-1", with_metadata(JoinOptions::new(), &md1))
        .await
        .ctx("join_with")?;
    let joined = expect_event(&mut watch, EventKind::Joined, "host-1", notice(&ctx)).await?;
    require_metadata(&joined.metadata, &md1, "the `joined` event")?;
    ensure!(
        joined.holder == m.holder(),
        "the `joined` event names holder {}, expected {}",
        joined.holder,
        m.holder()
    );
    // Heartbeats alone are no event.
    expect_quiet(&mut watch, quiet(&ctx)).await?;

    let md2 = metadata([("zone", "eu-2"), ("version", "2")])?;
    m.set_metadata(md2.clone()).await.ctx("set_metadata")?;
    let updated = expect_event(&mut watch, EventKind::Updated, "host-1", notice(&ctx)).await?;
    require_metadata(&updated.metadata, &md2, "the `updated` event")?;
    ensure!(
        updated.holder == m.holder(),
        "the `updated` event names holder {}, expected the unchanged {}",
        updated.holder,
        m.holder()
    );
    expect_quiet(&mut watch, quiet(&ctx)).await?;
    // Storing the same metadata again changes nothing, so it is no event.
    m.set_metadata(md2).await.ctx("set_metadata (same again)")?;
    expect_quiet(&mut watch, quiet(&ctx)).await?;
    m.set_metadata(Metadata::new())
        .await
        .ctx("set_metadata(empty)")?;
    let cleared = expect_event(&mut watch, EventKind::Updated, "host-1", notice(&ctx)).await?;
    require_metadata(
        &cleared.metadata,
        &Metadata::new(),
        "the `updated` event of clearing",
    )?;
    m.leave().await.ctx("leave")?;
    expect_event(&mut watch, EventKind::Left, "host-1", notice(&ctx)).await?;
    expect_quiet(&mut watch, ctx.t.watch_interval * 4).await
}

pub(crate) async fn watch_reports_replaced_once(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let mut watch = observer.watch(&g).await.ctx("watch")?;
    let a = ctx.connect().await?;
    let b = ctx.connect().await?;
    let md_a = metadata([("owner", "a")])?;
    let md_b = metadata([("owner", "b"), ("zone", "eu-1")])?;
    let old = a
        .join_with(&g, "host-1", with_metadata(JoinOptions::new(), &md_a))
        .await
        .ctx("join on A")?;
    let joined = expect_event(&mut watch, EventKind::Joined, "host-1", notice(&ctx)).await?;
    ensure!(
        joined.holder == old.holder(),
        "the `joined` event names holder {}, expected A ({})",
        joined.holder,
        old.holder()
    );
    let new = b
        .join_with(&g, "host-1", with_metadata(JoinOptions::new(), &md_b))
        .await
        .ctx("takeover by B")?;
    let replaced = expect_event(&mut watch, EventKind::Replaced, "host-1", notice(&ctx)).await?;
    ensure!(
        replaced.holder == new.holder(),
        "the `replaced` event names holder {}, expected the new holder {}",
        replaced.holder,
        new.holder()
    );
    require_metadata(&replaced.metadata, &md_b, "the `replaced` event")?;
    // Exactly once: not also `updated` (the metadata changed with the holder), no
    // down/up while the old holder is fenced, no second `replaced`.
    expect_quiet(&mut watch, quiet(&ctx)).await?;
    // A takeover with the same metadata is still a takeover.
    let c = ctx.connect().await?;
    let third = c
        .join_with(&g, "host-1", with_metadata(JoinOptions::new(), &md_b))
        .await
        .ctx("takeover by C with B's metadata")?;
    let replaced = expect_event(&mut watch, EventKind::Replaced, "host-1", notice(&ctx)).await?;
    ensure!(
        replaced.holder == third.holder(),
        "the second `replaced` event names holder {}, expected {}",
        replaced.holder,
        third.holder()
    );
    expect_quiet(&mut watch, quiet(&ctx)).await?;
    let last_holder = third.holder();
    third.leave().await.ctx("leave by C")?;
    let left = expect_event(&mut watch, EventKind::Left, "host-1", notice(&ctx)).await?;
    ensure!(
        left.holder == last_holder,
        "the `left` event names holder {}, expected the last holder {last_holder}",
        left.holder
    );
    drop((old, new));
    expect_quiet(&mut watch, ctx.t.watch_interval * 4).await
}

/// Requires the next event to be `kind` of `member`, asked for the way a caller that
/// checks something else between events does (`timeout(cut, watch.next())` in a
/// loop), by `deadline`.
async fn expect_event_cut_short(
    watch: &mut Watch,
    kind: EventKind,
    member: &str,
    cut: Duration,
    deadline: tokio::time::Instant,
) -> Result<(), CaseFailure> {
    loop {
        match tokio::time::timeout(cut, watch.next()).await {
            Ok(Ok(event)) if event.kind == kind && event.member.as_str() == member => return Ok(()),
            Ok(Ok(event)) => {
                return Err(CaseFailure::violation(format!(
                    "watch of {}: expected `{kind}` of {member}, got `{}` of {}",
                    watch.group(),
                    event.kind,
                    event.member
                )))
            }
            Ok(Err(e)) => return Err(CaseFailure::unexpected("Watch::next", &e)),
            Err(_) if tokio::time::Instant::now() >= deadline => {
                return Err(CaseFailure::violation(format!(
                    "watch of {}: no `{kind}` of {member} by the deadline while each `next` was \
                     cut short after {cut:?} and every poll takes longer: a poll a cancelled \
                     `next` started must resume at the next call, not start over",
                    watch.group()
                )))
            }
            Err(_) => {}
        }
    }
}

pub(crate) async fn watch_completes_polls_slower_than_the_callers_timeout(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let (observer, counters) = ctx.connect_instrumented().await?;
    let mut watch = observer.watch(&g).await.ctx("watch")?;
    // From now on every group read of the watch takes four times as long as the
    // caller waits for one `next`: no poll fits in one call.
    let cut = ctx.t.watch_interval;
    let delay = (cut * 4).min(ctx.t.call_timeout / 3);
    ensure!(
        delay > cut,
        "the fixture's call_timeout ({:?}) leaves no room for reads slower than the watch interval ({cut:?})",
        ctx.t.call_timeout
    );
    counters.set_read_delay(delay);
    let sg = ctx.connect().await?;
    sg.join(&g, "host-1").await.ctx("join")?.crash();
    // A poll is at most five reads (revision, down set, revision, then revision and
    // the whole group).
    let polls = delay * 10;
    let now = tokio::time::Instant::now;
    let within = notice(&ctx) + polls;
    expect_event_cut_short(&mut watch, EventKind::Joined, "host-1", cut, now() + within).await?;
    let ages = ctx.t.service_down_time + ctx.res() + ctx.t.report_interval;
    expect_event_cut_short(
        &mut watch,
        EventKind::Down,
        "host-1",
        cut,
        now() + ages + within,
    )
    .await?;
    counters.set_read_delay(Duration::ZERO);
    expect_quiet(&mut watch, ctx.t.watch_interval * 4).await
}
