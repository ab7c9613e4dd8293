//! Group listings and the list of groups.

use super::support::{require_up, wait_until_down};
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, Context};

pub(crate) async fn unknown_or_empty_group_lists_empty(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let unknown = ctx.group("never-joined");
    let observer = ctx.connect().await?;
    let listing = observer
        .members(&unknown)
        .await
        .ctx("members() of an unknown group")?;
    ensure!(
        listing.is_empty(),
        "members() of a group nobody joined lists {listing:?}"
    );
    let sg = ctx.connect().await?;
    let a = sg.join(&g, "a").await.ctx("join a")?;
    let b = sg.join(&g, "b").await.ctx("join b")?;
    a.leave().await.ctx("leave a")?;
    b.leave().await.ctx("leave b")?;
    let listing = observer
        .members(&g)
        .await
        .ctx("members() of a group whose members left")?;
    ensure!(
        listing.is_empty(),
        "members() of a group whose members all left lists {listing:?}"
    );
    let groups = observer.groups().await.ctx("groups()")?;
    for name in [&g, &unknown] {
        ensure!(
            !groups.iter().any(|x| x.as_str() == name),
            "groups() lists {name}, which has no members"
        );
    }
    Ok(())
}

pub(crate) async fn members_are_sorted_and_scoped_to_group(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let other = ctx.group("scheduler");
    let observer = ctx.connect().await?;
    let sg = ctx.connect().await?;
    let ids = [
        "m-b", "m-a", "M-z", "m-10", "m-9", "m-c", "m_", "m-a.b", "Zeta", "alpha", "é",
    ];
    let mut memberships = Vec::new();
    for id in ids {
        memberships.push(sg.join(&g, id).await.ctx(format_args!("join {id}"))?);
    }
    for id in ["m-0", "zzz", "m-a"] {
        memberships.push(
            sg.join(&other, id)
                .await
                .ctx(format_args!("join {id} in the other group"))?,
        );
    }
    let listing = observer.members(&g).await.ctx("members()")?;
    let listed: Vec<&str> = listing.iter().map(|m| m.member.as_str()).collect();
    let mut expected: Vec<&str> = ids.to_vec();
    expected.sort();
    ensure!(
        listed == expected,
        "members({g}) lists {listed:?}, expected exactly the group's members sorted by id: {expected:?}"
    );
    for m in &listing {
        require_up(m, "members()")?;
        ensure!(
            m.group.as_str() == g,
            "members({g}) holds an entry of group {}",
            m.group
        );
    }
    Ok(())
}

pub(crate) async fn groups_lists_groups_with_members(ctx: Ctx) -> CaseResult {
    let g1 = ctx.group("compute");
    let g2 = ctx.group("conductor");
    let g3 = ctx.group("scheduler");
    let observer = ctx.connect().await?;
    let sg = ctx.connect().await?;
    let a = sg.join(&g1, "a").await.ctx("join")?;
    let _b = sg.join(&g1, "b").await.ctx("join")?;
    let c = sg.join(&g2, "c").await.ctx("join")?;
    sg.join(&g3, "d").await.ctx("join")?.crash();

    let groups = observer.groups().await.ctx("groups()")?;
    let names: Vec<&str> = groups.iter().map(|x| x.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    ensure!(
        names == sorted,
        "groups() is not sorted or has duplicates: {names:?}"
    );
    for g in [&g1, &g2, &g3] {
        ensure!(
            names.contains(&g.as_str()),
            "groups() does not list {g}: {names:?}"
        );
    }
    c.leave().await.ctx("leave c")?;
    a.leave().await.ctx("leave a")?;
    wait_until_down(&ctx, &observer, &g3, "d").await?;
    let groups = observer.groups().await.ctx("groups()")?;
    let names: Vec<&str> = groups.iter().map(|x| x.as_str()).collect();
    ensure!(
        !names.contains(&g2.as_str()),
        "groups() still lists {g2} after its only member left: {names:?}"
    );
    ensure!(
        names.contains(&g1.as_str()),
        "groups() dropped {g1}, which still has member b: {names:?}"
    );
    ensure!(
        names.contains(&g3.as_str()),
        "groups() dropped {g3}, whose member crashed but did not leave: {names:?}"
    );
    Ok(())
}
