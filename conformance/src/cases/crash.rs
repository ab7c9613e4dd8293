//! Crashed members: heartbeats stop without a leave.

use servicegroup_core::State;
use tokio::time::Instant;

use super::support::{age, listed, require_up, wait_heartbeat_calls, wait_until_down, ROUNDING};
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, Context};
use crate::observe::{crash_boundary, settled_write};

pub(crate) async fn crashed_member_is_up_until_down_time_then_down(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    let m = sg.join(&g, "crasher").await.ctx("join")?;
    // Crash in steady state, after a few heartbeats.
    wait_heartbeat_calls(&ctx, &counters, 2).await?;
    m.crash();
    crash_boundary(
        &ctx,
        &counters,
        &observer,
        &g,
        "crasher",
        ctx.t.service_down_time,
    )
    .await?;
    let listing = observer
        .members(&g)
        .await
        .ctx("members() after the crash")?;
    let status = listed(&listing, &g, "crasher")?;
    ensure!(
        status.state == State::Down,
        "members() lists the crashed member as {} after its down time",
        status.state
    );
    Ok(())
}

pub(crate) async fn crashed_member_is_listed_down_not_dropped(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let live = ctx.connect().await?;
    let _live = live.join(&g, "live").await.ctx("join live")?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    sg.join(&g, "crasher").await.ctx("join crasher")?.crash();
    settled_write(&ctx, &counters).await?;
    wait_until_down(&ctx, &observer, &g, "crasher").await?;

    let sdt = ctx.t.service_down_time;
    for round in 0..2 {
        let listing = observer.members(&g).await.ctx("members()")?;
        ensure!(
            listing.len() == 2,
            "members({g}) should list the live and the crashed member, lists {:?}",
            listing
                .iter()
                .map(|m| m.member.as_str())
                .collect::<Vec<_>>()
        );
        require_up(listed(&listing, &g, "live")?, "members()")?;
        let crashed = listed(&listing, &g, "crasher")?;
        ensure!(
            crashed.state == State::Down && !crashed.forced_down,
            "the crashed member is listed as {} (forced_down: {}), expected down, not forced",
            crashed.state,
            crashed.forced_down
        );
        ensure!(
            crashed.last_heartbeat.is_some(),
            "the crashed member is listed without its last heartbeat"
        );
        let reported = age(crashed, "members() of a crashed member")?;
        ensure!(
            reported + ctx.res() + ROUNDING >= sdt,
            "the crashed member is listed down with age {reported:?}, below service_down_time {sdt:?}"
        );
        ensure!(
            !observer
                .is_up(&g, "crasher")
                .await
                .ctx("is_up of the crashed member")?,
            "is_up of the crashed member is true"
        );
        ensure!(
            observer
                .get_updated_time(&g, "crasher")
                .await
                .ctx("get_updated_time of the crashed member")?
                .is_some(),
            "get_updated_time of the crashed member is None"
        );
        let groups = observer.groups().await.ctx("groups()")?;
        ensure!(
            groups.iter().any(|x| x.as_str() == g),
            "groups() no longer lists {g}"
        );
        if round == 0 {
            // Still listed later: nothing expires the record itself.
            tokio::time::sleep(ctx.t.report_interval * 3 + ctx.res()).await;
        }
    }
    Ok(())
}

pub(crate) async fn rejoin_after_crash_is_up_at_once(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let first = ctx.connect().await?;
    first.join(&g, "host-1").await.ctx("first join")?.crash();
    wait_until_down(&ctx, &observer, &g, "host-1").await?;

    // The process restarts: a new handle joins the same member.
    let restarted = ctx.connect().await?;
    let before = Instant::now();
    let _m = restarted
        .join(&g, "host-1")
        .await
        .ctx("join after the crash")?;
    ensure!(
        observer
            .is_up(&g, "host-1")
            .await
            .ctx("is_up after rejoin")?,
        "{g}/host-1 is not up right after joining again after its crash"
    );
    let status = observer.member(&g, "host-1").await.ctx("member()")?;
    require_up(&status, "member() after rejoin")?;
    let reported = age(&status, "member() after rejoin")?;
    ensure!(
        reported <= before.elapsed() + ctx.res() + ROUNDING,
        "right after rejoining, the age is {reported:?}: the old heartbeat was kept"
    );
    let listing = observer.members(&g).await.ctx("members()")?;
    ensure!(
        listing.len() == 1,
        "members({g}) should list host-1 once after the rejoin, lists {:?}",
        listing
            .iter()
            .map(|m| m.member.as_str())
            .collect::<Vec<_>>()
    );
    Ok(())
}

pub(crate) async fn down_time_not_above_report_interval_is_two_and_a_half_intervals(
    ctx: Ctx,
) -> CaseResult {
    let g = ctx.group("compute");
    // The interval must be at least twice the resolution, so that "up past the
    // configured down time" and "down after 2.5 intervals" can both be observed.
    let interval = ctx.t.report_interval.max(ctx.res() * 2);
    let expected = interval.mul_f64(2.5);
    let mut config = ctx.config();
    config.report_interval = interval;
    config.service_down_time = interval;
    let (sg, counters) = ctx.connect_instrumented_with(config.clone()).await?;
    ensure!(
        sg.config().service_down_time == expected,
        "with report_interval = service_down_time = {interval:?} the handle uses \
         service_down_time {:?}, expected report_interval * 2.5 = {expected:?}",
        sg.config().service_down_time
    );
    let mut smaller = config.clone();
    smaller.service_down_time = interval / 2;
    let other = ctx.connect_with(smaller).await?;
    ensure!(
        other.config().service_down_time == expected,
        "with service_down_time {:?} < report_interval {interval:?} the handle uses {:?}, \
         expected {expected:?}",
        interval / 2,
        other.config().service_down_time
    );

    let observer = ctx.connect_with(config).await?;
    let m = sg.join(&g, "crasher").await.ctx("join")?;
    wait_heartbeat_calls(&ctx, &counters, 1).await?;
    m.crash();
    let report = crash_boundary(&ctx, &counters, &observer, &g, "crasher", expected).await?;
    ensure!(
        report.latest_up_after_write > interval + ctx.res(),
        "inconclusive: the crashed member was last seen up {:?} after its last heartbeat, not \
         past the configured service_down_time {interval:?}",
        report.latest_up_after_write
    );
    Ok(())
}
