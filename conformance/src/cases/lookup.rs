//! Unknown members and operator removal.

use servicegroup_core::{ErrorKind, GroupId, MemberId, MemberKey};

use super::support::{
    age, expect_kind, find, last_write, listed, require_up, wait_heartbeat_calls, ROUNDING,
};
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, CaseFailure, Context};
use crate::observe::observe;

pub(crate) async fn unknown_member_is_not_found(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let unknown_group = ctx.group("never-joined");
    let observer = ctx.connect().await?;
    let sg = ctx.connect().await?;
    let _m = sg.join(&g, "present").await.ctx("join")?;
    for (group, member) in [(g.as_str(), "absent"), (unknown_group.as_str(), "present")] {
        let err = expect_kind(
            format!("is_up({group}, {member})"),
            observer.is_up(group, member).await,
            ErrorKind::NotFound,
        )?;
        ensure!(
            err.to_string().contains(member),
            "the NotFound error of is_up does not name the member {member:?}: {err}"
        );
        ensure!(
            err.driver() == Some(ctx.driver()),
            "the NotFound error does not name the driver {:?}: {err:?}",
            ctx.driver()
        );
        expect_kind(
            format!("get_updated_time({group}, {member})"),
            observer.get_updated_time(group, member).await,
            ErrorKind::NotFound,
        )?;
        expect_kind(
            format!("member({group}, {member})"),
            observer.member(group, member).await,
            ErrorKind::NotFound,
        )?;
    }
    ensure!(
        observer.is_up(&g, "present").await.ctx("is_up(present)")?,
        "{g}/present is not up"
    );
    Ok(())
}

pub(crate) async fn remove_of_unknown_member_is_not_found(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let unknown_group = ctx.group("never-joined");
    let observer = ctx.connect().await?;
    let sg = ctx.connect().await?;
    let _m = sg.join(&g, "present").await.ctx("join")?;
    let gone = sg.join(&g, "gone").await.ctx("join")?;
    gone.leave().await.ctx("leave")?;
    expect_kind(
        "remove of an unknown member",
        observer.remove(&g, "absent").await,
        ErrorKind::NotFound,
    )?;
    expect_kind(
        "remove in an unknown group",
        observer.remove(&unknown_group, "present").await,
        ErrorKind::NotFound,
    )?;
    expect_kind(
        "remove of a member that left",
        observer.remove(&g, "gone").await,
        ErrorKind::NotFound,
    )?;
    let listing = observer.members(&g).await.ctx("members()")?;
    let ids: Vec<&str> = listing.iter().map(|m| m.member.as_str()).collect();
    ensure!(
        ids == ["present"],
        "removing unknown members changed the listing: {ids:?}"
    );
    Ok(())
}

pub(crate) async fn removed_crashed_member_is_gone(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let sg = ctx.connect().await?;
    sg.join(&g, "crasher").await.ctx("join")?.crash();
    observer
        .remove(&g, "crasher")
        .await
        .ctx("remove of a crashed member")?;
    for when in ["right after remove", "two report intervals after remove"] {
        expect_kind(
            format!("is_up of a removed member {when}"),
            observer.is_up(&g, "crasher").await,
            ErrorKind::NotFound,
        )?;
        let listing = observer.members(&g).await.ctx("members()")?;
        ensure!(
            listing.is_empty(),
            "members({g}) {when} lists {:?}",
            listing
                .iter()
                .map(|m| m.member.as_str())
                .collect::<Vec<_>>()
        );
        let groups = observer.groups().await.ctx("groups()")?;
        ensure!(
            !groups.iter().any(|x| x.as_str() == g),
            "groups() {when} still lists {g}, whose only member was removed"
        );
        if when.starts_with("right") {
            tokio::time::sleep(ctx.t.report_interval * 2).await;
        }
    }
    expect_kind(
        "a second remove of the same member",
        observer.remove(&g, "crasher").await,
        ErrorKind::NotFound,
    )?;
    Ok(())
}

pub(crate) async fn removed_live_member_registers_again(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    let _m = sg.join(&g, "host-1").await.ctx("join")?;
    wait_heartbeat_calls(&ctx, &counters, 1).await?;
    let registers = counters.registrations();
    observer
        .remove(&g, "host-1")
        .await
        .ctx("remove of a live member")?;

    let key = MemberKey::new(
        GroupId::new(g.as_str()).ctx("group id")?,
        MemberId::new("host-1").ctx("member id")?,
    );
    let deadline = ctx.deadline(ctx.next_heartbeat_within() + ctx.t.report_interval);
    let mut seen_up = false;
    loop {
        let registered_again = counters.registrations() > registers;
        match observer.is_up(&g, "host-1").await {
            Ok(true) if registered_again => break,
            Ok(up) => seen_up |= up,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(CaseFailure::unexpected("is_up after remove", &e)),
        }
        deadline.check(|| {
            if seen_up && counters.missing_reported().is_empty() {
                format!(
                    "{g}/host-1 came back after its removal without any heartbeat reporting it \
                     missing: the driver must not recreate a removed record on heartbeat, it must \
                     report it in HeartbeatReport::missing so core registers it again"
                )
            } else {
                format!(
                    "{g}/host-1 was removed while heartbeating and was not registered again and up \
                     (registered again: {registered_again}; heartbeats reported missing: {:?})",
                    counters.missing_reported()
                )
            }
        })?;
        ctx.pause().await;
    }
    ensure!(
        counters.missing_reported().contains(&key),
        "{g}/host-1 came back without any heartbeat reporting it missing: the driver must not \
         recreate a removed record on heartbeat (HeartbeatReport::missing)"
    );
    let write = last_write(&counters)?;
    let obs = observe(observer.members(&g)).await;
    let listing = obs.result.ctx("members() after re-registration")?;
    ensure!(
        listing.len() == 1,
        "members({g}) lists {:?} after the re-registration",
        listing
            .iter()
            .map(|m| m.member.as_str())
            .collect::<Vec<_>>()
    );
    let status = listed(&listing, &g, "host-1")?;
    require_up(status, "members() after re-registration")?;
    let reported = age(status, "members() after re-registration")?;
    ensure!(
        reported <= obs.end - write.started + ctx.res() + ROUNDING,
        "after re-registration the age is {reported:?}"
    );
    ensure!(find(&listing, "host-1").is_some(), "not listed");
    Ok(())
}
