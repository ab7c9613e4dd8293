//! Heartbeat cadence: about one heartbeat per `report_interval` reaches the driver,
//! and is stored.
//!
//! A loop that skips every second tick, or a driver that drops every second write,
//! keeps a member up at the suite's timings (a heartbeat every 400 ms against a down
//! time of 1 s), so only counting shows it. The bounds come from core's documented
//! schedule (see the engine docs): ticks come every `report_interval` minus up to
//! [`JITTER`] of it, never later, and the first tick of a handle at a random point of
//! its first interval. Over a window of [`INTERVALS`] intervals that starts after the
//! first tick there are therefore at least `INTERVALS` ticks and at most
//! `floor(INTERVALS / (1 - JITTER)) + 1`; the lower bound allows [`LATE_TICKS`] ticks
//! delayed past the window's end by scheduling.

use tokio::time::Instant;

use super::support::wait_heartbeat_calls;
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, Context};

/// Intervals observed.
const INTERVALS: u32 = 10;
/// How early core may fire a tick, as a fraction of `report_interval`.
const JITTER: f64 = 0.1;
/// Ticks the lower bound allows to be late (scheduling, a slow call).
const LATE_TICKS: u32 = 2;

pub(crate) async fn heartbeats_arrive_at_report_interval(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    let _m = sg.join(&g, "host-1").await.ctx("join")?;
    // Past the first tick, which comes at a random point of the first interval.
    wait_heartbeat_calls(&ctx, &counters, 1).await?;

    let interval = ctx.t.report_interval;
    let window = interval * INTERVALS;
    let min = INTERVALS - LATE_TICKS;
    let max = (f64::from(INTERVALS) / (1.0 - JITTER)).floor() as u32 + 1;

    let start = Instant::now();
    let end = start + window;
    let mut last = observer
        .get_updated_time(&g, "host-1")
        .await
        .ctx("get_updated_time")?;
    let mut stored = 0u32;
    let mut longest_gap = std::time::Duration::ZERO;
    let mut polled = Instant::now();
    while Instant::now() < end {
        ctx.pause().await;
        let now = observer
            .get_updated_time(&g, "host-1")
            .await
            .ctx("get_updated_time of a heartbeating member")?;
        longest_gap = longest_gap.max(polled.elapsed());
        polled = Instant::now();
        ensure!(
            now >= last,
            "get_updated_time went backwards: {last:?} then {now:?}"
        );
        if now != last {
            stored += 1;
            last = now;
        }
    }
    let calls = counters
        .heartbeats()
        .iter()
        .filter(|c| c.started >= start && c.started < end)
        .count() as u32;
    ensure!(
        (min..=max).contains(&calls),
        "{calls} heartbeat calls reached the driver in {INTERVALS} report intervals \
         ({window:?}, report_interval {interval:?}); between {min} and {max} are required: the \
         heartbeat loop must beat once per report_interval (at most {:.0} % early), no tick \
         skipped, none doubled",
        JITTER * 100.0
    );
    // Every heartbeat lasts at least (1 - JITTER) intervals before the next, so polls
    // closer than that see each one.
    let conclusive = longest_gap.as_secs_f64() < interval.as_secs_f64() * (1.0 - JITTER);
    ensure!(
        stored >= min || !conclusive,
        "the stored heartbeat time of {g}/host-1 changed {stored} times in {INTERVALS} report \
         intervals ({window:?}) while {calls} heartbeat calls reached the driver; at least {min} \
         stored heartbeats are required: the driver answered heartbeat calls without storing them"
    );
    ensure!(
        stored >= min,
        "inconclusive: the stored heartbeat time changed only {stored} times in {INTERVALS} \
         report intervals, but polls were up to {longest_gap:?} apart (the backend answered too \
         slowly to see every heartbeat of report_interval {interval:?})"
    );
    ensure!(
        stored <= calls + 1,
        "the stored heartbeat time changed {stored} times with only {calls} heartbeat calls: \
         something else writes heartbeats"
    );
    Ok(())
}
