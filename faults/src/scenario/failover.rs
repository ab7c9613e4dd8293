//! Scenario 6, *failover*: a PostgreSQL primary with a streaming standby
//! (`pg_basebackup -R`), members and observer given both in one libpq multi-host URL
//! with `target_session_attrs=read-write`. The primary is killed (SIGKILL of every
//! process) and the standby promoted: every live member up within the window after
//! the promotion, no committed record lost (the forced-down flag set before, every
//! member), typed errors only while there is no primary.

use std::time::Duration;

use tokio::time::Instant;

use crate::backend::BackendName;
use crate::error::Result;
use crate::report::Row;
use crate::scenario::harness::{Harness, Setup};
use crate::scenario::ScenarioName;
use crate::Context;

/// Runs the scenario on `backend` (PostgreSQL).
pub async fn run(ctx: &Context, backend: BackendName) -> Result<Row> {
    let setup = Setup {
        standby: true,
        ..Setup::default()
    };
    let mut h = Harness::start(ctx, ScenarioName::Failover, backend, setup).await?;
    // Let the forced-down flag and every registration reach the standby.
    h.run_for(Duration::from_secs(3)).await;
    let killed = Instant::now();
    h.deployment.servers[0].signal("KILL").await?;
    h.fault_ending();
    h.deployment.servers[1].promote().await?;
    h.fault_ended();
    h.row.note(format!(
        "primary killed, standby promoted {:.2} s later",
        killed.elapsed().as_secs_f64()
    ));
    h.expect_recovery().await;
    h.expect_error_kinds(&["timeout", "unavailable", "backend"]);
    h.finish().await
}
