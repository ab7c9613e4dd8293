//! Small helpers the case bodies share.

use std::fmt::{self, Debug};
use std::sync::Arc;
use std::time::Duration;

use servicegroup_core::{Error, ErrorKind, MemberStatus, ServiceGroup, State};
use tokio::time::Instant;

use crate::ctx::Ctx;
use crate::failure::{ensure, CaseFailure, Context};
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
