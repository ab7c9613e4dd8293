//! Scenario 1, *hang*: every process of the store is stopped (SIGSTOP) for
//! service_down_time + 2 s, then continued. Members and observer must get
//! `Timeout` / `Unavailable`, never "down"; every live member up within the recovery
//! window after SIGCONT; no false down.

use std::time::Duration;

use crate::backend::BackendName;
use crate::error::Result;
use crate::report::Row;
use crate::scenario::harness::{Harness, Setup};
use crate::scenario::ScenarioName;
use crate::server::signal_pids;
use crate::Context;

/// Runs the scenario on `backend`.
pub async fn run(ctx: &Context, backend: BackendName) -> Result<Row> {
    let mut h = Harness::start(ctx, ScenarioName::Hang, backend, Setup::default()).await?;
    h.run_for(Duration::from_secs(2)).await;
    hang_store(&mut h).await?;
    h.expect_recovery().await;
    h.expect_error_kinds(&["timeout", "unavailable"]);
    h.finish().await
}

/// SIGSTOP every store process for the fault's length, then SIGCONT; marks the
/// fault's end. Shared with the watch scenario.
pub async fn hang_store(h: &mut Harness) -> Result<()> {
    let pids = h.deployment.store_pids();
    h.row
        .note(format!("{} server processes stopped", pids.len()));
    signal_pids(&pids, "STOP").await?;
    tokio::time::sleep(h.fault_length()).await;
    // Continue whatever was stopped, even processes forked meanwhile (none should be).
    h.fault_ending();
    let result = signal_pids(&crate::server::with_descendants(&pids), "CONT").await;
    h.fault_ended();
    result
}
