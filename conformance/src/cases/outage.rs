//! Backend outages: "cannot tell" is an error, and the heartbeat loop heals.

use servicegroup_core::{ErrorKind, ServiceGroup, State};
use tokio::time::Instant;
use tracing::Level;

use super::support::{expect_unreachable, sleep_until};
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, CaseFailure, Context};

/// Polls until every one of `members` is listed up by `observer`, tolerating
/// unreachable errors while the driver reconnects.
async fn wait_all_listed_up(
    ctx: &Ctx,
    observer: &ServiceGroup,
    group: &str,
    members: &[String],
    since: &str,
) -> Result<(), CaseFailure> {
    let deadline = ctx.deadline(ctx.next_heartbeat_within());
    loop {
        let last = match observer.members(group).await {
            Ok(listing) => {
                let missing: Vec<&str> = members
                    .iter()
                    .map(String::as_str)
                    .filter(|m| {
                        !listing
                            .iter()
                            .any(|s| s.member.as_str() == *m && s.state == State::Up)
                    })
                    .collect();
                if missing.is_empty() {
                    return Ok(());
                }
                format!("not listed up: {missing:?}")
            }
            Err(e) if e.kind().is_unreachable() => format!("members() still fails: {e}"),
            Err(e) => return Err(CaseFailure::unexpected("members() after the outage", &e)),
        };
        deadline.check(|| {
            format!(
                "members were not all up again within one report interval plus margin {since} \
                 ({last})"
            )
        })?;
        ctx.pause().await;
    }
}

/// Polls until the handle's heartbeat loop reports `healthy`.
async fn wait_health(ctx: &Ctx, sg: &ServiceGroup, healthy: bool) -> Result<(), CaseFailure> {
    let deadline = ctx.deadline(ctx.next_heartbeat_within());
    while sg.is_healthy() != healthy {
        deadline.check(|| {
            if healthy {
                "the heartbeat loop did not recover after the backend came back (is_healthy() stayed false)".to_owned()
            } else {
                "the heartbeat loop did not notice the outage (is_healthy() stayed true): the \
                 driver's heartbeat call succeeded while the backend was unreachable"
                    .to_owned()
            }
        })?;
        ctx.pause().await;
    }
    Ok(())
}

pub(crate) async fn outage_is_an_error_never_down(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let sg = ctx.connect().await?;
    let _m = sg.join(&g, "host-1").await.ctx("join")?;
    let mut watch = observer.watch(&g).await.ctx("watch")?;

    ctx.stop_backend().await?;
    let checks = async {
        expect_unreachable("is_up", observer.is_up(&g, "host-1").await)?;
        expect_unreachable(
            "is_up of an unknown member",
            observer.is_up(&g, "nobody").await,
        )?;
        expect_unreachable("member", observer.member(&g, "host-1").await)?;
        expect_unreachable(
            "get_updated_time",
            observer.get_updated_time(&g, "host-1").await,
        )?;
        expect_unreachable("members", observer.members(&g).await)?;
        expect_unreachable("groups", observer.groups().await)?;
        expect_unreachable(
            "set_forced_down",
            observer.set_forced_down(&g, "host-1", true).await,
        )?;
        expect_unreachable("remove", observer.remove(&g, "host-1").await)?;
        expect_unreachable("join", observer.join(&g, "newcomer").await)?;
        let within = ctx.t.watch_interval * 2 + ctx.t.call_timeout + ctx.t.slack;
        match tokio::time::timeout(within, watch.next()).await {
            Ok(result) => expect_unreachable("Watch::next", result),
            Err(_) => Err(CaseFailure::violation(format!(
                "Watch::next neither failed nor returned within {within:?} while the backend was \
                 unreachable: a watch must report the failure"
            ))),
        }
    }
    .await;
    // Bring the backend back whatever the checks found, then report.
    ctx.start_backend().await?;
    checks?;

    let deadline = ctx.deadline(ctx.next_heartbeat_within());
    loop {
        match observer.is_up(&g, "host-1").await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) if e.kind().is_unreachable() || e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(CaseFailure::unexpected("is_up after the outage", &e)),
        }
        deadline.check(|| {
            "host-1 was not up again within one report interval plus margin after the backend came back".to_owned()
        })?;
        ctx.pause().await;
    }
    let _newcomer = observer
        .join(&g, "newcomer")
        .await
        .ctx("join after the outage (the failed join must leave nothing behind)")?;
    ensure!(
        observer
            .is_up(&g, "newcomer")
            .await
            .ctx("is_up(newcomer)")?,
        "the member joined after the outage is not up"
    );
    Ok(())
}

pub(crate) async fn heartbeats_recover_after_outage(ctx: Ctx) -> CaseResult {
    const COUNT: usize = 10;
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let sg = ctx.connect().await?;
    let names: Vec<String> = (0..COUNT).map(|i| format!("host-{i}")).collect();
    let mut memberships = Vec::new();
    for name in &names {
        memberships.push(sg.join(&g, name.as_str()).await.ctx("join")?);
    }
    ensure!(sg.is_healthy(), "the handle is unhealthy before the outage");

    ctx.stop_backend().await?;
    let stopped = Instant::now();
    let noticed = wait_health(&ctx, &sg, false).await;
    if noticed.is_ok() {
        // Long enough that every stored heartbeat is stale.
        sleep_until(stopped + ctx.t.service_down_time + ctx.res() + ctx.t.report_interval).await;
    }
    ctx.start_backend().await?;
    noticed?;

    wait_all_listed_up(&ctx, &observer, &g, &names, "after the backend came back").await?;
    wait_health(&ctx, &sg, true).await?;
    // And they stay up: the loop lives on.
    let until = Instant::now() + ctx.t.service_down_time + ctx.res() + ctx.t.report_interval;
    while Instant::now() < until {
        for name in [&names[0], &names[COUNT - 1]] {
            ensure!(
                observer
                    .is_up(&g, name.as_str())
                    .await
                    .ctx("is_up after recovery")?,
                "{g}/{name} went down again after the recovery: the heartbeat loop stopped"
            );
        }
        ctx.pause().await;
    }
    let listing = observer.members(&g).await.ctx("members()")?;
    ensure!(
        listing.len() == COUNT && listing.iter().all(|m| m.state == State::Up),
        "after the recovery members({g}) lists {} members, {} up; expected {COUNT} up",
        listing.len(),
        listing.iter().filter(|m| m.state == State::Up).count()
    );
    drop(memberships);
    Ok(())
}

pub(crate) async fn outage_logs_lost_and_recovered_once(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let sg = ctx.connect().await?;
    let _m = sg.join(&g, "host-1").await.ctx("join")?;
    ctx.stop_backend().await?;
    let noticed = wait_health(&ctx, &sg, false).await;
    if noticed.is_ok() {
        // Several failing ticks.
        tokio::time::sleep(ctx.t.report_interval * 4).await;
    }
    ctx.start_backend().await?;
    noticed?;
    wait_health(&ctx, &sg, true).await?;
    // Several good ticks.
    tokio::time::sleep(ctx.t.report_interval * 4).await;

    let driver = ctx.driver().to_owned();
    let logs = ctx.logs();
    let lost = format!("lost connection to {driver} backend");
    let recovered = format!("recovered connection to {driver} backend");
    let count = |level: Level, needle: &str| {
        logs.iter()
            .filter(|e| e.level == level && e.message.contains(needle))
            .count()
    };
    let summary = || {
        logs.iter()
            .map(|e| format!("{} {}", e.level, e.message))
            .collect::<Vec<_>>()
    };
    ensure!(
        count(Level::WARN, &lost) == 1,
        "expected exactly one WARN \"{lost} …\", got {}; this case logged: {:?}",
        count(Level::WARN, &lost),
        summary()
    );
    ensure!(
        count(Level::INFO, &recovered) == 1,
        "expected exactly one INFO \"{recovered}\", got {}; this case logged: {:?}",
        count(Level::INFO, &recovered),
        summary()
    );
    let warn = logs
        .iter()
        .find(|e| e.level == Level::WARN && e.message.contains(&lost));
    ensure!(
        warn.is_some_and(|e| e.fields.iter().any(|(k, v)| k == "driver" && *v == driver)),
        "the WARN has no structured field driver={driver}: {warn:?}"
    );
    Ok(())
}
