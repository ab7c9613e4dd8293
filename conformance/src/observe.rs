//! Timed observations and the boundary check shared by the crash cases.
//!
//! A verdict is only asserted where it is certain: the last heartbeat of a crashed
//! member was stored somewhere in a known window `[written_from, written_by]` (seen by
//! the [`Instrumented`](crate::instrument::Instrumented) wrapper), and an observation
//! is judged by the backend somewhere in `[start, end]` of the call. So
//!
//! - an observation that *ended* before `written_from + down_time - resolution` must be up;
//! - an observation that *started* after `written_by + down_time + resolution` must be down;
//! - anything in between is not asserted (it must merely not fail).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use servicegroup_core::{Error, ServiceGroup};
use tokio::time::Instant;

use crate::ctx::Ctx;
use crate::failure::{ensure, CaseFailure, Context};
use crate::instrument::{Counters, WriteWindow};

/// The result of one API call and the time window it ran in.
pub(crate) struct Observation<T> {
    pub start: Instant,
    pub end: Instant,
    pub result: Result<T, Error>,
}

/// Runs `call` and records when it started and ended.
pub(crate) async fn observe<T>(call: impl Future<Output = Result<T, Error>>) -> Observation<T> {
    let start = Instant::now();
    let result = call.await;
    Observation {
        start,
        end: Instant::now(),
        result,
    }
}

/// Waits until no register / heartbeat call of the instrumented handle is running and
/// returns the window in which the member's last heartbeat was stored.
pub(crate) async fn settled_write(
    ctx: &Ctx,
    counters: &Arc<Counters>,
) -> Result<WriteWindow, CaseFailure> {
    let deadline = ctx.deadline(ctx.t.call_timeout + ctx.t.slack);
    while counters.writes_in_flight() > 0 {
        deadline.check(|| "a heartbeat call of the crashed handle never returned".to_owned())?;
        ctx.pause().await;
    }
    let ok = counters.last_ok_write().ok_or_else(|| {
        CaseFailure::violation("no register or heartbeat call of the member ever succeeded")
    })?;
    let ended = counters.last_write_end().unwrap_or(ok.ended).max(ok.ended);
    Ok(WriteWindow {
        started: ok.started,
        ended,
    })
}

/// What [`crash_boundary`] saw.
#[derive(Debug)]
pub(crate) struct BoundaryReport {
    /// The latest time an asserted-up observation ended, relative to the write window's end.
    pub latest_up_after_write: Duration,
}

/// Observes a crashed member of the instrumented handle (whose `counters` are
/// given) through `observer`, and asserts the verdict on both sides of the boundary
/// "last stored heartbeat + `down_time`" (see the module docs). Returns once three
/// observations past the boundary were down.
///
/// A heartbeat call that was already under way when the member crashed may still
/// store a heartbeat: the lower bound uses the last write known when observing
/// starts, and the upper bound is recomputed after every observation from the
/// latest write end, skipping observations while a write is in flight.
pub(crate) async fn crash_boundary(
    ctx: &Ctx,
    counters: &Arc<Counters>,
    observer: &ServiceGroup,
    group: &str,
    member: &str,
    down_time: Duration,
) -> Result<BoundaryReport, CaseFailure> {
    let written = settled_write(ctx, counters).await?;
    let res = ctx.res();
    let up_until = (written.started + down_time).checked_sub(res);
    let give_up = ctx
        .deadline(down_time + res + ctx.t.call_timeout + ctx.t.slack * 2 + ctx.t.report_interval);
    let mut up_checks = 0usize;
    let mut latest_up_after_write = Duration::ZERO;
    let mut down_checks = 0usize;
    loop {
        let in_flight_before = counters.writes_in_flight();
        let obs = observe(observer.is_up(group, member)).await;
        let in_flight_after = counters.writes_in_flight();
        let last_end = counters
            .last_write_end()
            .unwrap_or(written.ended)
            .max(written.ended);
        let down_after = last_end + down_time + res;
        let up = obs
            .result
            .ctx(format_args!("is_up({group}, {member}) of a crashed member"))?;
        if up_until.is_some_and(|u| obs.end < u) {
            ensure!(
                up,
                "crashed member {group}/{member} was reported down although its last heartbeat \
                 write started only {:?} before the observation ended (and ended {:?} before), \
                 with service_down_time {down_time:?} and liveness resolution {res:?}: it must \
                 stay up until service_down_time has passed",
                obs.end.saturating_duration_since(written.started),
                obs.end.saturating_duration_since(written.ended),
            );
            up_checks += 1;
            latest_up_after_write = obs.end.saturating_duration_since(written.ended);
        } else if obs.start > down_after && in_flight_before == 0 && in_flight_after == 0 {
            ensure!(
                !up,
                "crashed member {group}/{member} was still reported up {:?} after its last \
                 heartbeat write ended, past service_down_time {down_time:?} + resolution {res:?}",
                obs.start.saturating_duration_since(last_end)
            );
            down_checks += 1;
            if down_checks >= 3 {
                break;
            }
        }
        give_up.check(|| {
            format!("the observation of crashed member {group}/{member} did not reach the boundary")
        })?;
        ctx.pause().await;
    }
    ensure!(
        up_checks > 0,
        "inconclusive: no observation of {group}/{member} finished before its down time minus the \
         resolution; the backend answered too slowly for service_down_time {down_time:?} \
         (raise Timings::service_down_time)"
    );
    Ok(BoundaryReport {
        latest_up_after_write,
    })
}
