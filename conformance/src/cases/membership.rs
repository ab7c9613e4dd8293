//! Join, heartbeat, leave: the life of a healthy member.

use servicegroup_core::{ErrorKind, State};
use tokio::time::Instant;

use super::support::{
    age, expect_kind, find, last_write, listed, require_up, wait_heartbeat_calls, ROUNDING,
};
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, Context};
use crate::observe::observe;

pub(crate) async fn join_is_visible_at_once(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let sg = ctx.connect().await?;
    let before_join = Instant::now();
    let _m = sg.join(&g, "host-1").await.ctx("join")?;

    ensure!(
        observer
            .is_up(&g, "host-1")
            .await
            .ctx("is_up on another handle right after join")?,
        "{g}/host-1 is not up on another handle right after join returned"
    );
    ensure!(
        sg.is_up(&g, "host-1")
            .await
            .ctx("is_up on the joining handle")?,
        "{g}/host-1 is not up on the joining handle right after join returned"
    );
    let obs = observe(observer.member(&g, "host-1")).await;
    let status = obs.result.ctx("member() right after join")?;
    require_up(&status, "member() right after join")?;
    ensure!(
        status.last_heartbeat.is_some(),
        "member() right after join reports no last heartbeat"
    );
    let bound = obs.end - before_join + ctx.res() + ROUNDING;
    let reported = age(&status, "member() right after join")?;
    ensure!(
        reported <= bound,
        "right after join the age of {g}/host-1 is {reported:?}, but join started only {:?} \
         before the observation ended (liveness resolution {:?}): the first heartbeat must be \
         stored, with the backend's current time, before join returns",
        obs.end - before_join,
        ctx.res()
    );
    let listing = observer
        .members(&g)
        .await
        .ctx("members() right after join")?;
    require_up(
        listed(&listing, &g, "host-1")?,
        "members() right after join",
    )?;
    ensure!(
        observer
            .get_updated_time(&g, "host-1")
            .await
            .ctx("get_updated_time right after join")?
            .is_some(),
        "get_updated_time right after join is None"
    );
    Ok(())
}

pub(crate) async fn live_member_age_is_small(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    let _m = sg.join(&g, "host-1").await.ctx("join")?;
    let until = Instant::now() + ctx.t.report_interval * 4;
    let mut samples = 0;
    while Instant::now() < until {
        let write = last_write(&counters)?;
        let obs = observe(observer.member(&g, "host-1")).await;
        let status = obs.result.ctx("member() of a heartbeating member")?;
        require_up(&status, "member() of a heartbeating member")?;
        let reported = age(&status, "member()")?;
        let bound = obs.end - write.started + ctx.res() + ROUNDING;
        ensure!(
            reported <= bound,
            "member() reports age {reported:?} for heartbeating {g}/host-1, but its latest \
             successful heartbeat write started only {:?} before the observation ended: the \
             backend did not store that heartbeat (or stored it with a stale time)",
            obs.end - write.started
        );
        let write = last_write(&counters)?;
        let obs = observe(observer.members(&g)).await;
        let listing = obs.result.ctx("members() of a heartbeating member")?;
        let status = listed(&listing, &g, "host-1")?;
        require_up(status, "members()")?;
        let reported = age(status, "members()")?;
        let bound = obs.end - write.started + ctx.res() + ROUNDING;
        ensure!(
            reported <= bound,
            "members() reports age {reported:?} for heartbeating {g}/host-1, but its latest \
             successful heartbeat write started only {:?} before the listing ended",
            obs.end - write.started
        );
        samples += 1;
        ctx.pause().await;
    }
    ensure!(
        samples >= 4,
        "only {samples} samples taken in 4 report intervals"
    );
    ensure!(
        counters.heartbeat_calls() >= 2,
        "the heartbeat loop made {} heartbeat calls in 4 report intervals",
        counters.heartbeat_calls()
    );
    Ok(())
}

pub(crate) async fn heartbeats_keep_member_up_past_down_time(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let sg = ctx.connect().await?;
    let joined_at = Instant::now();
    let _m = sg.join(&g, "host-1").await.ctx("join")?;
    let first = observer
        .get_updated_time(&g, "host-1")
        .await
        .ctx("get_updated_time after join")?;
    let until = joined_at + ctx.t.service_down_time * 2 + ctx.t.report_interval;
    let mut checks = 0;
    while Instant::now() < until {
        let up = observer
            .is_up(&g, "host-1")
            .await
            .ctx("is_up of a heartbeating member")?;
        ensure!(
            up,
            "heartbeating member {g}/host-1 was reported down {:?} after join \
             (service_down_time {:?}, report_interval {:?}): its heartbeats are not stored",
            joined_at.elapsed(),
            ctx.t.service_down_time,
            ctx.t.report_interval
        );
        checks += 1;
        ctx.pause().await;
    }
    let listing = observer.members(&g).await.ctx("members()")?;
    require_up(
        listed(&listing, &g, "host-1")?,
        "members() after 2 down times",
    )?;
    let last = observer
        .get_updated_time(&g, "host-1")
        .await
        .ctx("get_updated_time")?;
    ensure!(
        last > first,
        "get_updated_time did not move in {:?} of heartbeats: {first:?} then {last:?}",
        joined_at.elapsed()
    );
    ensure!(checks > 10, "only {checks} observations made");
    Ok(())
}

pub(crate) async fn get_updated_time_advances(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let sg = ctx.connect().await?;
    let _m = sg.join(&g, "host-1").await.ctx("join")?;
    let first = observer
        .get_updated_time(&g, "host-1")
        .await
        .ctx("get_updated_time after join")?;
    ensure!(first.is_some(), "get_updated_time after join is None");
    let deadline = ctx.deadline(ctx.next_heartbeat_within() + ctx.t.report_interval);
    loop {
        let now = observer
            .get_updated_time(&g, "host-1")
            .await
            .ctx("get_updated_time")?;
        if now > first {
            return Ok(());
        }
        ensure!(
            now == first,
            "get_updated_time went backwards: {first:?} then {now:?}"
        );
        deadline
            .check(|| format!("get_updated_time of heartbeating {g}/host-1 stayed at {first:?}"))?;
        ctx.pause().await;
    }
}

pub(crate) async fn leave_removes_at_once(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    let leaving = sg.join(&g, "leaving").await.ctx("join leaving")?;
    let _staying = sg.join(&g, "staying").await.ctx("join staying")?;
    wait_heartbeat_calls(&ctx, &counters, 1).await?;
    leaving.leave().await.ctx("leave")?;

    expect_kind(
        "is_up of a member that left",
        observer.is_up(&g, "leaving").await,
        ErrorKind::NotFound,
    )?;
    expect_kind(
        "get_updated_time of a member that left",
        observer.get_updated_time(&g, "leaving").await,
        ErrorKind::NotFound,
    )?;
    let listing = observer.members(&g).await.ctx("members() after leave")?;
    ensure!(
        find(&listing, "leaving").is_none(),
        "members({g}) still lists `leaving` right after it left"
    );
    require_up(
        listed(&listing, &g, "staying")?,
        "members() after another member left",
    )?;

    // The handle goes on heartbeating `staying`; nothing may bring `leaving` back.
    let calls = counters.heartbeat_calls();
    wait_heartbeat_calls(&ctx, &counters, calls + 2).await?;
    expect_kind(
        "is_up of a member that left, two heartbeats later",
        observer.is_up(&g, "leaving").await,
        ErrorKind::NotFound,
    )?;
    let listing = observer.members(&g).await.ctx("members()")?;
    ensure!(
        listing.len() == 1,
        "members({g}) should hold only `staying` two heartbeats after `leaving` left, holds {:?}",
        listing
            .iter()
            .map(|m| m.member.as_str())
            .collect::<Vec<_>>()
    );
    Ok(())
}

pub(crate) async fn join_twice_on_one_handle_is_already_joined(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    let first = sg.join(&g, "host-1").await.ctx("first join")?;
    let err = expect_kind(
        "second join of the same member on one handle",
        sg.join(&g, "host-1").await,
        ErrorKind::AlreadyJoined,
    )?;
    ensure!(
        err.to_string().contains("host-1"),
        "the AlreadyJoined error does not name the member: {err}"
    );
    let calls = counters.heartbeat_calls();
    wait_heartbeat_calls(&ctx, &counters, calls + 1).await?;
    ensure!(
        counters.heartbeats().iter().all(|c| c.keys == 1),
        "the rejected second join added a key to the heartbeat batch: {:?}",
        counters.heartbeats()
    );
    ensure!(
        observer.is_up(&g, "host-1").await.ctx("is_up")?,
        "the first membership stopped working after the rejected second join"
    );
    first.leave().await.ctx("leave")?;
    let again = sg
        .join(&g, "host-1")
        .await
        .ctx("join again after leave on the same handle")?;
    ensure!(
        observer
            .is_up(&g, "host-1")
            .await
            .ctx("is_up after rejoin")?,
        "member not up after joining again"
    );
    // Another handle (a restarted process) may take the member over.
    let other = ctx.connect().await?;
    let _taken = other
        .join(&g, "host-1")
        .await
        .ctx("join of the same member on another handle")?;
    again.crash();
    let listing = observer.members(&g).await.ctx("members()")?;
    ensure!(
        listing.len() == 1,
        "members({g}) should list host-1 once, lists {:?}",
        listing
            .iter()
            .map(|m| m.member.as_str())
            .collect::<Vec<_>>()
    );
    Ok(())
}

pub(crate) async fn two_handles_see_each_others_members(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let a = ctx.connect().await?;
    let b = ctx.connect().await?;
    let _ma = a.join(&g, "a-host").await.ctx("join on handle A")?;
    let mb = b.join(&g, "b-host").await.ctx("join on handle B")?;
    for (name, sg) in [("A", &a), ("B", &b)] {
        let listing = sg
            .members(&g)
            .await
            .ctx(format_args!("members() on {name}"))?;
        let ids: Vec<&str> = listing.iter().map(|m| m.member.as_str()).collect();
        ensure!(
            ids == ["a-host", "b-host"],
            "handle {name} lists {ids:?}, expected both handles' members"
        );
        for m in &listing {
            require_up(m, &format!("members() on handle {name}"))?;
        }
    }
    ensure!(
        a.is_up(&g, "b-host").await.ctx("A.is_up(b-host)")?,
        "handle A does not see B's member up"
    );
    ensure!(
        b.is_up(&g, "a-host").await.ctx("B.is_up(a-host)")?,
        "handle B does not see A's member up"
    );
    b.set_forced_down(&g, "a-host", true)
        .await
        .ctx("B forces down A's member")?;
    ensure!(
        !a.is_up(&g, "a-host").await.ctx("A.is_up(a-host)")?,
        "handle A still sees its member up after B forced it down"
    );
    b.set_forced_down(&g, "a-host", false)
        .await
        .ctx("B clears forced down")?;
    ensure!(
        a.is_up(&g, "a-host").await.ctx("A.is_up(a-host)")?,
        "handle A does not see its member up after B cleared forced down"
    );
    mb.leave().await.ctx("leave on B")?;
    let listing = a.members(&g).await.ctx("members() on A")?;
    let ids: Vec<&str> = listing.iter().map(|m| m.member.as_str()).collect();
    ensure!(
        ids == ["a-host"],
        "handle A lists {ids:?} after B's member left"
    );
    Ok(())
}

pub(crate) async fn member_in_two_groups_is_independent(ctx: Ctx) -> CaseResult {
    let g1 = ctx.group("compute");
    let g2 = ctx.group("conductor");
    let observer = ctx.connect().await?;
    let sg = ctx.connect().await?;
    let m1 = sg.join(&g1, "host-1").await.ctx("join group 1")?;
    let _m2 = sg.join(&g2, "host-1").await.ctx("join group 2")?;
    observer
        .set_forced_down(&g1, "host-1", true)
        .await
        .ctx("force down in group 1")?;
    ensure!(
        !observer.is_up(&g1, "host-1").await.ctx("is_up group 1")?,
        "{g1}/host-1 is up although forced down"
    );
    ensure!(
        observer.is_up(&g2, "host-1").await.ctx("is_up group 2")?,
        "forcing down {g1}/host-1 also took down {g2}/host-1"
    );
    let listing = observer.members(&g2).await.ctx("members(group 2)")?;
    require_up(listed(&listing, &g2, "host-1")?, "members(group 2)")?;
    m1.leave().await.ctx("leave group 1")?;
    expect_kind(
        "is_up in the group it left",
        observer.is_up(&g1, "host-1").await,
        ErrorKind::NotFound,
    )?;
    let status = observer
        .member(&g2, "host-1")
        .await
        .ctx("member() in the other group")?;
    ensure!(
        status.state == State::Up,
        "leaving {g1} took {g2}/host-1 down or away: {status:?}"
    );
    Ok(())
}
