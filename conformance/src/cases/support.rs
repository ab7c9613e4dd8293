//! Small helpers the case bodies share.

use std::fmt::{self, Debug};
use std::sync::Arc;
use std::time::Duration;

use servicegroup_core::{
    Error, ErrorKind, GroupId, Holder, JoinOptions, MemberId, MemberKey, MemberStatus, Membership,
    Metadata, ServiceGroup, State,
};
use tokio::time::Instant;

use crate::ctx::Ctx;
use crate::failure::{ensure, CaseFailure, Context, FailureKind};
use crate::instrument::{Counters, WriteWindow};

/// Rounding allowance on ages computed by backends (float seconds).
pub(crate) const ROUNDING: Duration = Duration::from_millis(2);

/// Requires `result` to be an error of `kind`; returns the error.
pub(crate) fn expect_kind<T: Debug>(
    what: impl fmt::Display,
    result: Result<T, Error>,
    kind: ErrorKind,
) -> Result<Error, CaseFailure> {
    match result {
        Err(e) if e.kind() == kind => Ok(e),
        Err(e) => Err(CaseFailure::violation(format!(
            "{what}: expected a {kind:?} error, got a {:?} error: {e}",
            e.kind()
        ))),
        Ok(v) => Err(CaseFailure::violation(format!(
            "{what}: expected a {kind:?} error, got Ok({v:?})"
        ))),
    }
}

/// Requires `result` to be `Unavailable` or `Timeout`: "cannot tell" is never an answer.
pub(crate) fn expect_unreachable<T: Debug>(
    what: impl fmt::Display,
    result: Result<T, Error>,
) -> Result<(), CaseFailure> {
    match result {
        Err(e) if e.kind().is_unreachable() => Ok(()),
        Err(e) => Err(CaseFailure::violation(format!(
            "{what} while the backend was unreachable: expected an Unavailable or Timeout error, \
             got a {:?} error: {e}",
            e.kind()
        ))),
        Ok(v) => Err(CaseFailure::violation(format!(
            "{what} while the backend was unreachable returned Ok({v:?}): \"cannot tell\" must be \
             an Unavailable or Timeout error, never an answer"
        ))),
    }
}

/// The entry for `member` in a listing.
pub(crate) fn find<'a>(list: &'a [MemberStatus], member: &str) -> Option<&'a MemberStatus> {
    list.iter().find(|m| m.member.as_str() == member)
}

/// The entry for `member` in a listing, required present.
pub(crate) fn listed<'a>(
    list: &'a [MemberStatus],
    group: &str,
    member: &str,
) -> Result<&'a MemberStatus, CaseFailure> {
    find(list, member).ok_or_else(|| {
        CaseFailure::violation(format!(
            "members({group}) does not list {member}; it lists {:?}",
            list.iter().map(|m| m.member.as_str()).collect::<Vec<_>>()
        ))
    })
}

/// The reported age, required present.
pub(crate) fn age(status: &MemberStatus, what: &str) -> Result<Duration, CaseFailure> {
    status.age.ok_or_else(|| {
        CaseFailure::violation(format!(
            "{what}: no age reported for {}/{} (last heartbeat {:?})",
            status.group, status.member, status.last_heartbeat
        ))
    })
}

/// Requires a listing entry to be up and not forced down.
pub(crate) fn require_up(status: &MemberStatus, what: &str) -> Result<(), CaseFailure> {
    ensure!(
        status.state == State::Up && !status.forced_down,
        "{what}: {}/{} should be up and not forced down, is {} (forced_down: {})",
        status.group,
        status.member,
        status.state,
        status.forced_down
    );
    Ok(())
}

/// The window of the instrumented handle's latest successful write.
pub(crate) fn last_write(counters: &Counters) -> Result<WriteWindow, CaseFailure> {
    counters
        .last_ok_write()
        .ok_or_else(|| CaseFailure::violation("no register or heartbeat call succeeded yet"))
}

/// Waits until the instrumented handle has made at least `count` heartbeat calls.
pub(crate) async fn wait_heartbeat_calls(
    ctx: &Ctx,
    counters: &Arc<Counters>,
    count: u64,
) -> Result<(), CaseFailure> {
    let deadline = ctx.deadline(ctx.next_heartbeat_within() * count.max(1) as u32);
    while counters.heartbeat_calls() < count {
        deadline.check(|| {
            format!(
                "the heartbeat loop made {} heartbeat calls, expected {count} by now",
                counters.heartbeat_calls()
            )
        })?;
        ctx.pause().await;
    }
    Ok(())
}

/// Waits until `member` is judged down (it crashed `since`).
pub(crate) async fn wait_until_down(
    ctx: &Ctx,
    observer: &ServiceGroup,
    group: &str,
    member: &str,
) -> Result<(), CaseFailure> {
    let deadline = ctx.deadline(
        ctx.t.service_down_time
            + ctx.res()
            + ctx.t.report_interval
            + ctx.t.call_timeout
            + ctx.t.slack,
    );
    loop {
        let up = observer
            .is_up(group, member)
            .await
            .ctx(format_args!("is_up({group}, {member}) after its crash"))?;
        if !up {
            return Ok(());
        }
        deadline.check(|| format!("crashed member {group}/{member} never went down"))?;
        ctx.pause().await;
    }
}

/// Sleeps until `at` (no-op if it has passed).
pub(crate) async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at).await;
}

/// The key of `group`/`member` (ids the case made, so valid).
pub(crate) fn key_of(group: &str, member: &str) -> Result<MemberKey, CaseFailure> {
    Ok(MemberKey::new(
        GroupId::new(group).ctx("group id")?,
        MemberId::new(member).ctx("member id")?,
    ))
}

/// Metadata the case builds itself (a test bug if it is invalid).
pub(crate) fn metadata<I, K, V>(pairs: I) -> Result<Metadata, CaseFailure>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    Metadata::from_pairs(pairs).map_err(|e| {
        CaseFailure::new(
            FailureKind::Setup,
            format!("conformance bug: the case's own metadata is invalid: {e}"),
        )
    })
}

/// Join options carrying `metadata`.
pub(crate) fn with_metadata(options: JoinOptions, metadata: &Metadata) -> JoinOptions {
    options.with_metadata(metadata.iter())
}

/// A value for messages: short values as they are, long ones by length and head.
fn shown_value(value: &str) -> String {
    if value.chars().count() <= 24 {
        format!("{value:?} ({} bytes)", value.len())
    } else {
        let head: String = value.chars().take(12).collect();
        format!("{head:?}… ({} bytes)", value.len())
    }
}

/// How `got` differs from `want`, for messages (empty when they are equal).
pub(crate) fn metadata_diff(got: &Metadata, want: &Metadata) -> String {
    let mut out = Vec::new();
    for (k, v) in want.iter() {
        match got.get(k) {
            None => out.push(format!("key {k:?} missing (stored {})", shown_value(v))),
            Some(g) if g != v => out.push(format!(
                "key {k:?}: stored {}, got {}",
                shown_value(v),
                shown_value(g)
            )),
            Some(_) => {}
        }
    }
    for (k, v) in got.iter() {
        if want.get(k).is_none() {
            out.push(format!("unexpected key {k:?} = {}", shown_value(v)));
        }
    }
    if out.len() > 6 {
        let more = out.len() - 6;
        out.truncate(6);
        out.push(format!("and {more} more differences"));
    }
    out.join("; ")
}

/// Requires `got` to be exactly `want`.
pub(crate) fn require_metadata(
    got: &Metadata,
    want: &Metadata,
    what: &str,
) -> Result<(), CaseFailure> {
    ensure!(
        got == want,
        "{what}: the metadata is not exactly what was stored ({} entries stored, {} returned): {}",
        want.len(),
        got.len(),
        metadata_diff(got, want)
    );
    Ok(())
}

/// `member()` and the `members()` entry of `member`, both required present (the
/// member listed exactly once), holding `holder`. Returns `member()`'s answer.
pub(crate) async fn require_holder(
    observer: &ServiceGroup,
    group: &str,
    member: &str,
    holder: Holder,
    when: &str,
) -> Result<MemberStatus, CaseFailure> {
    let status = observer
        .member(group, member)
        .await
        .ctx(format_args!("member({group}, {member}) {when}"))?;
    ensure!(
        status.holder == holder,
        "member() {when}: {group}/{member} is held by {}, expected {holder}",
        status.holder
    );
    let listing = observer
        .members(group)
        .await
        .ctx(format_args!("members({group}) {when}"))?;
    let entries = listing
        .iter()
        .filter(|m| m.member.as_str() == member)
        .count();
    ensure!(
        entries == 1,
        "members({group}) {when} lists {member} {entries} times, expected once"
    );
    let entry = listed(&listing, group, member)?;
    ensure!(
        entry.holder == holder,
        "members() {when}: {group}/{member} is listed held by {}, expected {holder}",
        entry.holder
    );
    Ok(status)
}

/// Waits until `membership` is told it was taken over; returns the new holder.
pub(crate) async fn wait_superseded(
    ctx: &Ctx,
    membership: &Membership,
    counters: Option<&Counters>,
) -> Result<Holder, CaseFailure> {
    let within = ctx.next_heartbeat_within() + ctx.t.report_interval;
    match tokio::time::timeout(within, membership.superseded()).await {
        Ok(holder) => Ok(holder),
        Err(_) => Err(CaseFailure::violation(format!(
            "{} was taken over by another instance, but its old membership was not told within \
             {within:?} (Membership::superseded() did not resolve, is_superseded() is {}){}: the \
             driver's heartbeat must report a record held by another instance as superseded",
            membership.key(),
            membership.is_superseded(),
            match counters {
                Some(c) => format!(
                    "; the old handle made {} heartbeat calls, the driver reported {} superseded keys",
                    c.heartbeat_calls(),
                    c.superseded_reported().len()
                ),
                None => String::new(),
            }
        ))),
    }
}
