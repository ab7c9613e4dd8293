//! Scenario 2, *slow but alive*: a proxy in front of every upstream holds each answer.
//! Phase A: latency well inside the budget (10 % of service_down_time −
//! report_interval per round trip) for 8 s → no error, no false down. Phase B:
//! latency beyond call_timeout for service_down_time + 2 s → typed `Timeout`, never
//! "down"; then no latency again, and every live member up within the window.

use std::time::Duration;

use crate::backend::BackendName;
use crate::error::Result;
use crate::report::{kinds_text, Row};
use crate::scenario::harness::{Harness, Setup};
use crate::scenario::ScenarioName;
use crate::Context;

/// Runs the scenario on `backend`.
pub async fn run(ctx: &Context, backend: BackendName) -> Result<Row> {
    let setup = Setup {
        proxied: true,
        ..Setup::default()
    };
    let mut h = Harness::start(ctx, ScenarioName::Slow, backend, setup).await?;
    let t = ctx.timing;
    h.run_for(Duration::from_secs(2)).await;
    let budget = t.service_down_time.saturating_sub(t.report_interval);
    let inside = budget / 10;
    let errors_before = h.fleet.errors_by_kind();
    let observer_before = h.observer.tally().errors;
    for p in &h.proxies {
        p.set_latency(inside);
    }
    h.run_for(Duration::from_secs(8)).await;
    let slowest_a = h.fleet.slowest_heartbeat_ms();
    let errors_a = diff(&h.fleet.errors_by_kind(), &errors_before);
    let observer_a = diff(&h.observer.tally().errors, &observer_before);
    h.row.note(format!(
        "phase A: {} ms per round trip, slowest heartbeat {slowest_a} ms, member errors {}, observer errors {}",
        inside.as_millis(),
        kinds_text(&errors_a),
        kinds_text(&observer_a)
    ));
    if !errors_a.is_empty() || !observer_a.is_empty() {
        h.row.fail(format!(
            "errors with latency inside the budget: members {}, observer {}",
            kinds_text(&errors_a),
            kinds_text(&observer_a)
        ));
    }
    let beyond = t.call_timeout + Duration::from_millis(500);
    for p in &h.proxies {
        p.set_latency(beyond);
    }
    h.run_for(h.fault_length()).await;
    let errors_b = diff(&h.fleet.errors_by_kind(), &errors_a);
    h.row.note(format!(
        "phase B: {} ms per round trip, member errors {}",
        beyond.as_millis(),
        kinds_text(&diff(&errors_b, &errors_before))
    ));
    if !errors_b.contains_key("timeout") {
        h.row.fail("no Timeout with latency beyond call_timeout");
    }
    h.fault_ending();
    for p in &h.proxies {
        p.set_latency(Duration::ZERO);
    }
    // Answers already held keep their delay: the fault ends when the last arrives.
    tokio::time::sleep(beyond).await;
    h.fault_ended();
    h.expect_recovery().await;
    h.expect_error_kinds(&["timeout", "unavailable"]);
    h.finish().await
}

/// `now − before`, per kind, zero differences dropped.
pub fn diff(
    now: &std::collections::BTreeMap<String, u64>,
    before: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    now.iter()
        .filter_map(|(k, n)| {
            let d = n.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}
