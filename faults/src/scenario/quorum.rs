//! Scenario 7, *quorum*: on a three-member etcd cluster, the leader is stopped for
//! service_down_time + 2 s and started again (the others elect a new leader: no false
//! down); then two of three are stopped as long (no quorum: typed errors, never
//! "down", leases not all revoked by the stall, as etcd #15247 feared) and started.

use std::time::Duration;

use crate::backend::BackendName;
use crate::error::Result;
use crate::report::{kinds_text, Row};
use crate::scenario::harness::{Harness, Setup};
use crate::scenario::slow::diff;
use crate::scenario::ScenarioName;
use crate::Context;

/// Runs the scenario on `backend` (etcd).
pub async fn run(ctx: &Context, backend: BackendName) -> Result<Row> {
    let mut h = Harness::start(ctx, ScenarioName::Quorum, backend, Setup::default()).await?;
    h.run_for(Duration::from_secs(2)).await;
    let before = h.fleet.errors_by_kind();
    let leader = h.deployment.servers[0].action("leader", &[]).await?;
    h.deployment.servers[0]
        .action("stop-member", &[&leader])
        .await?;
    h.run_for(h.fault_length()).await;
    h.fault_ending();
    h.deployment.servers[0]
        .action("start-member", &[&leader])
        .await?;
    h.fault_ended();
    let a = h.expect_recovery().await;
    h.row.note(format!(
        "phase A (leader {leader} stopped): member errors {}, recovery {:.2} s",
        kinds_text(&diff(&h.fleet.errors_by_kind(), &before)),
        a.map_or(f64::NAN, |d| d.as_secs_f64())
    ));
    let before = h.fleet.errors_by_kind();
    let stopped: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|m| *m != leader.as_str())
        .collect();
    for m in &stopped {
        h.deployment.servers[0].action("stop-member", &[m]).await?;
    }
    h.run_for(h.fault_length()).await;
    h.fault_ending();
    for m in &stopped {
        h.deployment.servers[0].action("start-member", &[m]).await?;
    }
    h.fault_ended();
    let b = h.expect_recovery().await;
    h.row.recovery = a.max(b);
    h.row.note(format!(
        "phase B ({} stopped, no quorum): member errors {}",
        stopped.join(", "),
        kinds_text(&diff(&h.fleet.errors_by_kind(), &before))
    ));
    h.expect_error_kinds(&["timeout", "unavailable"]);
    h.finish().await
}
