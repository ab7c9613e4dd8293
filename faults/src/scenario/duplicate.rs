//! Scenario 11, *duplicate member*: a second process joins the members of a running
//! one (default join: takeover) → the first is told it was superseded for every one
//! of them and the members stay up (no gap); then a third joins them exclusively →
//! `Conflict`, nothing changed.

use std::time::Duration;

use servicegroup::State;
use tokio::time::Instant;

use crate::backend::BackendName;
use crate::error::Result;
use crate::fleet::{MemberProcess, ProcessOptions};
use crate::report::Row;
use crate::scenario::harness::{Harness, Setup};
use crate::scenario::ScenarioName;
use crate::Context;

/// Runs the scenario on `backend`.
pub async fn run(ctx: &Context, backend: BackendName) -> Result<Row> {
    let mut h = Harness::start(ctx, ScenarioName::Duplicate, backend, Setup::default()).await?;
    h.run_for(Duration::from_secs(2)).await;
    let launch = h.fleet.launch().clone();
    let (first, count) = (ctx.per_process, ctx.per_process);
    let taker = MemberProcess::spawn(
        &launch,
        "takeover",
        first,
        count,
        &ProcessOptions::default(),
    )
    .await?;
    match taker.joined(Duration::from_secs(30)).await? {
        Ok(_) => {}
        Err((kind, message)) => h
            .row
            .fail(format!("takeover join failed ({kind}): {message}")),
    }
    let deadline = Instant::now() + ctx.timing.report_interval * 2 + Duration::from_secs(2);
    while h.fleet.processes[1].superseded() < count as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let superseded = h.fleet.processes[1].superseded();
    h.row.note(format!(
        "takeover: {superseded} of {count} members of the first holder fenced"
    ));
    if superseded != count as u64 {
        h.row.fail(format!(
            "the first holder was told of {superseded} takeovers, expected {count}"
        ));
    }
    let exclusive = ProcessOptions {
        exclusive: true,
        ..ProcessOptions::default()
    };
    let mut third = MemberProcess::spawn(&launch, "exclusive", first, count, &exclusive).await?;
    match third.joined(Duration::from_secs(30)).await? {
        Err((kind, message)) if kind == "conflict" => {
            h.row.note(format!("exclusive join: conflict ({message})"));
        }
        Err((kind, message)) => h.row.fail(format!(
            "exclusive join failed with {kind}, expected conflict: {message}"
        )),
        Ok(_) => h.row.fail("an exclusive join of live members succeeded"),
    }
    third.stop(Duration::from_secs(5)).await;
    let listing = h.observer.listing(Duration::from_secs(10)).await?;
    let taken: Vec<_> = listing
        .iter()
        .filter(|m| taker.ids().contains(&m.member.to_string()))
        .collect();
    if taken.len() != count
        || taken
            .iter()
            .any(|m| m.state != State::Up || m.holder.epoch < 2)
    {
        h.row
            .fail("taken-over members are not all listed up with epoch 2 or more");
    }
    h.fleet.processes.push(taker);
    // Conflicts come from the exclusive join only; members and observer see none else.
    h.expect_error_kinds(&["conflict"]);
    h.finish().await
}
