//! Scenario 3, *connection resets*: for 10 s a proxy in front of every upstream cuts
//! 5 % of the server's answers in the middle with a TCP RST. Members and observer get
//! typed errors (retries where safe), no process panics, no false down.

use std::time::Duration;

use crate::backend::BackendName;
use crate::error::Result;
use crate::report::Row;
use crate::scenario::harness::{Harness, Setup};
use crate::scenario::ScenarioName;
use crate::Context;

/// The fraction of server chunks cut.
pub const FRACTION: f64 = 0.05;

/// Runs the scenario on `backend`.
pub async fn run(ctx: &Context, backend: BackendName) -> Result<Row> {
    let setup = Setup {
        proxied: true,
        ..Setup::default()
    };
    let mut h = Harness::start(ctx, ScenarioName::Resets, backend, setup).await?;
    h.run_for(Duration::from_secs(2)).await;
    for p in &h.proxies {
        p.set_reset_fraction(FRACTION);
    }
    h.run_for(Duration::from_secs(10)).await;
    h.fault_ending();
    for p in &h.proxies {
        p.set_reset_fraction(0.0);
    }
    h.fault_ended();
    let resets: u64 = h.proxies.iter().map(|p| p.resets()).sum();
    let connections: u64 = h.proxies.iter().map(|p| p.connections()).sum();
    h.row.note(format!(
        "{resets} connections reset ({} % of answers cut), {connections} connections made",
        FRACTION * 100.0
    ));
    if resets == 0 {
        h.row
            .fail("the proxy reset no connection (nothing was tested)");
    }
    h.expect_processes_alive().await;
    h.expect_recovery().await;
    h.expect_error_kinds(&["timeout", "unavailable", "backend"]);
    h.finish().await
}
