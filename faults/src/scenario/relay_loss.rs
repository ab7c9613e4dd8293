//! Scenario 12, *relay loss*: two relays in front of PostgreSQL, every client given
//! both URLs. Phase A: the first relay is killed (SIGKILL) for service_down_time + 2 s
//! → clients fail over to the second: no false down, no member lost. Phase B: the
//! relays' PostgreSQL is stopped for as long → clients get typed errors through the
//! relays, never "down"; every live member up within the window after it is back.

use std::time::Duration;

use tokio::time::Instant;

use crate::backend::BackendName;
use crate::error::Result;
use crate::report::{kinds_text, Row};
use crate::scenario::harness::{Harness, Setup};
use crate::scenario::slow::diff;
use crate::scenario::ScenarioName;
use crate::Context;

/// Runs the scenario on `backend` (the relay backend).
pub async fn run(ctx: &Context, backend: BackendName) -> Result<Row> {
    let mut h = Harness::start(ctx, ScenarioName::RelayLoss, backend, Setup::default()).await?;
    h.run_for(Duration::from_secs(2)).await;
    let before = h.fleet.errors_by_kind();
    h.deployment.relays[0].kill().await;
    let killed = Instant::now();
    h.run_for(h.fault_length()).await;
    let tally = h.observer.tally();
    if !tally.false_down_members.is_empty() {
        h.row
            .fail("a live member was listed down while one relay was left");
    }
    h.row.note(format!(
        "phase A (relay 1 of 2 killed {:.1} s): member errors {}",
        killed.elapsed().as_secs_f64(),
        kinds_text(&diff(&h.fleet.errors_by_kind(), &before))
    ));
    h.deployment.relays[0].start_again().await?;
    let before = h.fleet.errors_by_kind();
    let store = &h.deployment.servers[0];
    store.stop().await?;
    tokio::time::sleep(h.fault_length()).await;
    h.fault_ending();
    h.deployment.servers[0].start_again().await?;
    h.fault_ended();
    h.row.note(format!(
        "phase B (PostgreSQL behind both relays stopped): member errors {}",
        kinds_text(&diff(&h.fleet.errors_by_kind(), &before))
    ));
    h.expect_recovery().await;
    h.expect_error_kinds(&["timeout", "unavailable"]);
    h.finish().await
}
