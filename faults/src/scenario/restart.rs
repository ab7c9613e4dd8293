//! Scenario 4, *restart*: fast shutdown and start of the store mid-run (memcached
//! comes back empty; with three servers one is restarted; an etcd cluster is stopped
//! whole). Every live member up within the recovery window after the server is back;
//! the forced-down flag kept where the backend is durable.

use std::time::Duration;

use tokio::time::Instant;

use crate::backend::BackendName;
use crate::error::Result;
use crate::report::Row;
use crate::scenario::harness::{Harness, Setup};
use crate::scenario::ScenarioName;
use crate::Context;

/// Runs the scenario on `backend`.
pub async fn run(ctx: &Context, backend: BackendName) -> Result<Row> {
    let mut h = Harness::start(ctx, ScenarioName::Restart, backend, Setup::default()).await?;
    h.run_for(Duration::from_secs(2)).await;
    restart_store(&mut h).await?;
    h.expect_recovery().await;
    h.expect_error_kinds(&["timeout", "unavailable"]);
    h.finish().await
}

/// Stops and starts the store (one server of several memcached), marking the end
/// of the fault when it is back. Shared with the watch scenario.
pub async fn restart_store(h: &mut Harness) -> Result<()> {
    let started = Instant::now();
    let server = &h.deployment.servers[0];
    server.stop().await?;
    h.fault_ending();
    server.start_again().await?;
    h.fault_ended();
    h.row.note(format!(
        "server down {:.1} s{}",
        started.elapsed().as_secs_f64(),
        if h.deployment.name() == BackendName::Memcached3 {
            " (one of three)"
        } else {
            ""
        }
    ));
    Ok(())
}
