//! Asking the backend only for what is needed: the members in one state, and the
//! counts per state (`ServiceGroup::members_in`, `ServiceGroup::summary`).

use servicegroup_core::{GroupSummary, MemberStatus, State};

use super::support::wait_until_down;
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, Context};

fn names(list: &[MemberStatus]) -> Vec<&str> {
    list.iter().map(|m| m.member.as_str()).collect()
}

fn counts(s: &GroupSummary) -> (u64, u64, u64, u64) {
    (s.up, s.down, s.forced_down, s.total())
}

pub(crate) async fn members_in_a_state_and_summary_agree_with_the_listing(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let live = ctx.connect().await?;
    let _a = live.join(&g, "a-live").await.ctx("join a-live")?;
    let _b = live.join(&g, "b-live").await.ctx("join b-live")?;
    let _f = live.join(&g, "c-forced").await.ctx("join c-forced")?;
    let crasher = ctx.connect().await?;
    crasher
        .join(&g, "d-crashed")
        .await
        .ctx("join d-crashed")?
        .crash();
    observer
        .set_forced_down(&g, "c-forced", true)
        .await
        .ctx("set_forced_down(c-forced)")?;
    wait_until_down(&ctx, &observer, &g, "d-crashed").await?;

    // The same verdicts as the listing, in member order, with every fact.
    let listing = observer.members(&g).await.ctx("members()")?;
    for state in [State::Up, State::Down] {
        let got = observer
            .members_in(&g, state)
            .await
            .ctx(format_args!("members_in({state})"))?;
        let want: Vec<&MemberStatus> = listing.iter().filter(|m| m.state == state).collect();
        ensure!(
            names(&got) == want.iter().map(|m| m.member.as_str()).collect::<Vec<_>>(),
            "members_in({g}, {state}) returned {:?}, the listing has {:?} in that state",
            names(&got),
            want.iter().map(|m| m.member.as_str()).collect::<Vec<_>>()
        );
        for (m, l) in got.iter().zip(&want) {
            ensure!(
                m.holder == l.holder
                    && m.metadata == l.metadata
                    && m.forced_down == l.forced_down
                    && m.last_heartbeat.is_some() == l.last_heartbeat.is_some(),
                "members_in({g}, {state}) reports {m:?}, the listing {l:?}"
            );
        }
    }
    let down = observer
        .members_in(&g, State::Down)
        .await
        .ctx("members_in(down)")?;
    ensure!(
        names(&down) == ["c-forced", "d-crashed"],
        "members_in({g}, down) should be the forced-down and the crashed member, is {:?}",
        names(&down)
    );

    let summary = observer.summary(&g).await.ctx("summary()")?;
    ensure!(
        summary.group.as_str() == g && counts(&summary) == (2, 1, 1, 4),
        "summary({g}) is up {} down {} forced_down {} total {}, expected 2, 1, 1, 4 (forced down counts once, as forced_down)",
        summary.up,
        summary.down,
        summary.forced_down,
        summary.total()
    );

    // Clearing the flag moves the member back at once; an unknown group counts zero.
    observer
        .set_forced_down(&g, "c-forced", false)
        .await
        .ctx("set_forced_down(false)")?;
    let summary = observer.summary(&g).await.ctx("summary() after clearing")?;
    ensure!(
        counts(&summary) == (3, 1, 0, 4),
        "summary({g}) after clearing forced down is {:?}, expected up 3 down 1 forced_down 0",
        counts(&summary)
    );
    let empty = ctx.group("nobody");
    let summary = observer.summary(&empty).await.ctx("summary(unknown)")?;
    ensure!(
        counts(&summary) == (0, 0, 0, 0),
        "summary of an unknown group is {:?}, expected zeros",
        counts(&summary)
    );
    let none = observer
        .members_in(&empty, State::Down)
        .await
        .ctx("members_in(unknown)")?;
    ensure!(
        none.is_empty(),
        "members_in of an unknown group returned {:?}",
        names(&none)
    );
    Ok(())
}
