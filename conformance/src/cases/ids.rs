//! Id validation at the API edge, and awkward ids that must round-trip.

use std::fmt::Debug;

use servicegroup_core::{Error, ErrorKind, GroupId, IntoId, MemberId, ServiceGroup};

use super::support::{listed, require_up};
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, CaseFailure, Context};

/// Ids every entry point must reject, with a label for messages.
fn bad_ids() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", b"".to_vec()),
        ("a space", b"a b".to_vec()),
        ("a leading space", b" a".to_vec()),
        ("a memcached command injection", b"\r\nflush_all".to_vec()),
        ("CR LF inside", b"host\r\nflush_all\r\n".to_vec()),
        ("a tab", b"a\tb".to_vec()),
        ("a NUL byte", b"a\0b".to_vec()),
        ("an escape sequence", b"\x1b[31mred".to_vec()),
        ("DEL", b"a\x7f".to_vec()),
        ("a no-break space", "a\u{a0}b".as_bytes().to_vec()),
        ("a line separator", "a\u{2028}b".as_bytes().to_vec()),
        ("256 bytes", vec![b'x'; 256]),
        (
            "256 bytes of 2-byte characters",
            "é".repeat(128).into_bytes(),
        ),
        ("1000 bytes", vec![b'y'; 1000]),
        ("non-UTF-8 bytes", b"ab\xffcd".to_vec()),
        ("an encoded surrogate", b"a\xed\xa0\x80".to_vec()),
    ]
}

fn show<T: Debug>(r: Result<T, Error>) -> Result<String, Error> {
    r.map(|v| format!("{v:?}"))
}

/// Every entry point taking a member id, called with `member`.
async fn member_entry_points<M>(
    sg: &ServiceGroup,
    group: &str,
    member: M,
) -> Vec<(&'static str, Result<String, Error>)>
where
    M: IntoId<MemberId> + Copy,
{
    vec![
        ("join", show(sg.join(group, member).await)),
        ("is_up", show(sg.is_up(group, member).await)),
        (
            "get_updated_time",
            show(sg.get_updated_time(group, member).await),
        ),
        ("member", show(sg.member(group, member).await)),
        (
            "set_forced_down(true)",
            show(sg.set_forced_down(group, member, true).await),
        ),
        (
            "set_forced_down(false)",
            show(sg.set_forced_down(group, member, false).await),
        ),
        ("remove", show(sg.remove(group, member).await)),
    ]
}

/// Every entry point taking a group id, called with `group`.
async fn group_entry_points<G>(
    sg: &ServiceGroup,
    group: G,
    member: &str,
) -> Vec<(&'static str, Result<String, Error>)>
where
    G: IntoId<GroupId> + Copy,
{
    vec![
        ("join", show(sg.join(group, member).await)),
        ("is_up", show(sg.is_up(group, member).await)),
        (
            "get_updated_time",
            show(sg.get_updated_time(group, member).await),
        ),
        ("member", show(sg.member(group, member).await)),
        (
            "set_forced_down(true)",
            show(sg.set_forced_down(group, member, true).await),
        ),
        ("remove", show(sg.remove(group, member).await)),
        ("members", show(sg.members(group).await)),
        ("watch", show(sg.watch(group).await)),
        (
            "watch_with_interval",
            show(
                sg.watch_with_interval(group, std::time::Duration::from_millis(10))
                    .await,
            ),
        ),
    ]
}

/// Requires every result to be `InvalidId` with a message naming the id kind and the id.
fn check_rejected(
    which: &str,
    label: &str,
    raw: &[u8],
    as_what: &str,
    results: Vec<(&'static str, Result<String, Error>)>,
) -> Result<usize, CaseFailure> {
    let mut checked = 0;
    for (entry, result) in results {
        match result {
            Err(e) if e.kind() == ErrorKind::InvalidId => {
                let msg = e.to_string();
                ensure!(
                    msg.contains(which),
                    "{entry} with a {which} containing {label} (as {as_what}): the InvalidId \
                     message does not say it is the {which}: {msg}"
                );
                match std::str::from_utf8(raw) {
                    Ok(s) if s.chars().count() <= 64 => ensure!(
                        msg.contains(&format!("{s:?}")),
                        "{entry} with a {which} containing {label} (as {as_what}): the InvalidId \
                         message does not show the id escaped ({s:?}): {msg}"
                    ),
                    Ok(_) => {}
                    Err(_) => ensure!(
                        msg.contains("UTF-8"),
                        "{entry} with a non-UTF-8 {which} (as {as_what}): the message does not \
                         say so: {msg}"
                    ),
                }
                checked += 1;
            }
            Err(e) => {
                return Err(CaseFailure::violation(format!(
                    "{entry} with a {which} containing {label} (as {as_what}): expected an \
                     InvalidId error, got a {:?} error: {e}",
                    e.kind()
                )))
            }
            Ok(v) => {
                return Err(CaseFailure::violation(format!(
                    "{entry} with a {which} containing {label} (as {as_what}) was accepted: {v}"
                )))
            }
        }
    }
    Ok(checked)
}

pub(crate) async fn invalid_member_ids_are_rejected(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    let mut checked = 0;
    for (label, raw) in bad_ids() {
        let results = member_entry_points(&sg, &g, raw.as_slice()).await;
        checked += check_rejected("member id", label, &raw, "bytes", results)?;
        if let Ok(s) = std::str::from_utf8(&raw) {
            let results = member_entry_points(&sg, &g, s).await;
            checked += check_rejected("member id", label, &raw, "text", results)?;
        }
    }
    ensure!(
        counters.total_calls() == 0,
        "{} driver calls were made with invalid member ids: ids must be rejected before the driver",
        counters.total_calls()
    );
    ensure!(
        observer.members(&g).await.ctx("members()")?.is_empty(),
        "invalid member ids left records in {g}"
    );
    ensure!(checked > 100, "only {checked} calls checked");
    Ok(())
}

pub(crate) async fn invalid_group_ids_are_rejected(ctx: Ctx) -> CaseResult {
    let (sg, counters) = ctx.connect_instrumented().await?;
    let calls_before = counters.total_calls();
    let mut checked = 0;
    for (label, raw) in bad_ids() {
        let results = group_entry_points(&sg, raw.as_slice(), "host-1").await;
        checked += check_rejected("group id", label, &raw, "bytes", results)?;
        if let Ok(s) = std::str::from_utf8(&raw) {
            let results = group_entry_points(&sg, s, "host-1").await;
            checked += check_rejected("group id", label, &raw, "text", results)?;
        }
    }
    ensure!(
        counters.total_calls() == calls_before,
        "{} driver calls were made with invalid group ids: ids must be rejected before the driver",
        counters.total_calls() - calls_before
    );
    ensure!(checked > 100, "only {checked} calls checked");
    Ok(())
}

pub(crate) async fn long_and_unusual_ids_round_trip_without_collisions(ctx: Ctx) -> CaseResult {
    let s = ctx.suffix().to_owned();
    let pad = |prefix: &str, last: char| {
        let mut id = format!("{prefix}-{s}-");
        while id.len() < 254 {
            id.push('g');
        }
        id.push(last);
        id
    };
    let g_ab = format!("{s}-a:b");
    let g_a = format!("{s}-a");
    let g_slash = format!("{s}-a/b");
    let g_x = format!("{s}-x");
    let g_long1 = pad("long", '1');
    let g_long2 = pad("long", '2');
    let long_m1 = format!("{}1", "m".repeat(254));
    let long_m2 = format!("{}2", "m".repeat(254));
    let long_multibyte = format!("{}x", "é".repeat(127));
    let members_x: Vec<String> = vec![
        "Host".into(),
        "host".into(),
        "a%3Ab".into(),
        "a:b".into(),
        "a_b".into(),
        "a-b".into(),
        "a.b".into(),
        "ünïcødé-☃".into(),
        "q\"'\\<&>;--".into(),
        "x';DROP_TABLE_services;--".into(),
        long_m1.clone(),
        long_m2.clone(),
        long_multibyte.clone(),
    ];
    let mut layout: Vec<(String, Vec<String>)> = vec![
        (g_ab.clone(), vec!["c".into()]),
        (g_a.clone(), vec!["b:c".into(), "b/c".into()]),
        (g_slash.clone(), vec!["c".into()]),
        (g_x.clone(), members_x),
        (g_long1.clone(), vec!["m".into()]),
        (g_long2.clone(), vec!["m".into()]),
    ];
    for (g, _) in &layout {
        ensure!(g.len() <= 255, "test bug: group id {} bytes", g.len());
    }
    ensure!(
        g_long1.len() == 255 && long_m1.len() == 255 && long_multibyte.len() == 255,
        "test bug: long ids are not 255 bytes"
    );

    let observer = ctx.connect().await?;
    let sg = ctx.connect().await?;
    let mut memberships = Vec::new();
    for (g, members) in &layout {
        for m in members {
            memberships.push(
                sg.join(g.as_str(), m.as_str())
                    .await
                    .ctx(format_args!("join({g:?}, {m:?})"))?,
            );
        }
    }
    for (g, members) in &mut layout {
        members.sort();
        let listing = observer
            .members(g.as_str())
            .await
            .ctx(format_args!("members({g:?})"))?;
        let ids: Vec<&str> = listing.iter().map(|m| m.member.as_str()).collect();
        ensure!(
            ids == members.iter().map(String::as_str).collect::<Vec<_>>(),
            "members({g:?}) lists {ids:?}, expected exactly {members:?}"
        );
        for m in members.iter() {
            ensure!(
                observer
                    .is_up(g.as_str(), m.as_str())
                    .await
                    .ctx(format_args!("is_up({g:?}, {m:?})"))?,
                "{g:?}/{m:?} is not up after join"
            );
        }
    }
    let groups = observer.groups().await.ctx("groups()")?;
    for (g, _) in &layout {
        ensure!(
            groups.iter().any(|x| x.as_str() == g),
            "groups() does not list {g:?} exactly"
        );
    }

    // Look-alikes stay independent.
    let pairs: [(&str, &str, &str, &str); 5] = [
        (&g_x, &long_m1, &g_x, &long_m2),
        (&g_x, "host", &g_x, "Host"),
        (&g_x, "a:b", &g_x, "a%3Ab"),
        (&g_ab, "c", &g_a, "b:c"),
        (&g_long1, "m", &g_long2, "m"),
    ];
    for (g, m, twin_g, twin_m) in pairs {
        observer
            .set_forced_down(g, m, true)
            .await
            .ctx(format_args!("set_forced_down({g:?}, {m:?})"))?;
        ensure!(
            !observer.is_up(g, m).await.ctx("is_up")?,
            "{g:?}/{m:?} is up although forced down"
        );
        ensure!(
            observer.is_up(twin_g, twin_m).await.ctx("is_up")?,
            "forcing down {g:?}/{m:?} also forced down its look-alike {twin_g:?}/{twin_m:?}"
        );
        let listing = observer.members(twin_g).await.ctx("members()")?;
        require_up(
            listed(&listing, twin_g, twin_m)?,
            "members() of the look-alike",
        )?;
        observer
            .set_forced_down(g, m, false)
            .await
            .ctx("set_forced_down(false)")?;
    }
    observer.remove(g_slash.as_str(), "c").await.ctx("remove")?;
    ensure!(
        observer.is_up(&g_a, "b/c").await.ctx("is_up")?,
        "removing {g_slash:?}/c removed its look-alike {g_a:?}/b/c"
    );
    let who = MemberId::new("c").ctx("id")?;
    ensure!(
        observer
            .members(&g_ab)
            .await
            .ctx("members()")?
            .iter()
            .any(|m| m.member == who),
        "removing {g_slash:?}/c removed {g_ab:?}/c"
    );
    drop(memberships);
    Ok(())
}
