//! What the library records through the [`metrics`] facade, and the one place of
//! every metric name and label.
//!
//! Nothing is recorded until the application installs a recorder (for example
//! `metrics-exporter-prometheus`, as `servicegroup exporter` and the relay do);
//! without one every call below is a no-op of a few nanoseconds, once per driver
//! call or tick, never per member.
//!
//! Names follow Prometheus conventions (`_seconds` for durations, `_total` for
//! counters). Labels are bounded whatever the fleet size: `driver` (the driver's
//! registered name), `operation` (the driver call: `heartbeat`, `register`,
//! `register_many`, `get`, `list`, `list_in`, `summary`, `groups`, `remove`,
//! `set_metadata`, `set_forced_down`), `kind` (`ok` or an [`ErrorKind::code`]).
//! Member ids never appear in a label.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `servicegroup_driver_calls_total` | counter | driver, operation, kind | every driver call a handle makes, by outcome |
//! | `servicegroup_driver_call_seconds` | histogram | driver, operation | its latency, core's `call_timeout` included (listings are `list`, `list_in`, `summary`) |
//! | `servicegroup_heartbeat_batch_seconds` | histogram | driver | one tick's heartbeat call, as the handle waited for it |
//! | `servicegroup_heartbeat_batch_members` | histogram | driver | members in that batch |
//! | `servicegroup_backend_lost_total` | counter | driver | a handle's heartbeats went from reaching the backend to failing |
//! | `servicegroup_backend_recovered_total` | counter | driver | and back |
//! | `servicegroup_reregistrations_total` | counter | driver | members registered again because their record was gone |
//! | `servicegroup_takeovers_total` | counter | driver | joins that took a record over from another instance (stored epoch above 1) |
//! | `servicegroup_superseded_total` | counter | driver | members of this process fenced because another instance took them over |

use std::time::Duration;

use crate::error::ErrorKind;

/// `servicegroup_driver_calls_total`: driver calls by driver, operation and outcome.
pub const DRIVER_CALLS_TOTAL: &str = "servicegroup_driver_calls_total";
/// `servicegroup_driver_call_seconds`: driver call latency by driver and operation.
pub const DRIVER_CALL_SECONDS: &str = "servicegroup_driver_call_seconds";
/// `servicegroup_heartbeat_batch_seconds`: one tick's heartbeat call latency.
pub const HEARTBEAT_BATCH_SECONDS: &str = "servicegroup_heartbeat_batch_seconds";
/// `servicegroup_heartbeat_batch_members`: members in one tick's heartbeat call.
pub const HEARTBEAT_BATCH_MEMBERS: &str = "servicegroup_heartbeat_batch_members";
/// `servicegroup_backend_lost_total`: healthy → failing transitions of a handle's heartbeats.
pub const BACKEND_LOST_TOTAL: &str = "servicegroup_backend_lost_total";
/// `servicegroup_backend_recovered_total`: failing → healthy transitions.
pub const BACKEND_RECOVERED_TOTAL: &str = "servicegroup_backend_recovered_total";
/// `servicegroup_reregistrations_total`: members registered again after their record was gone.
pub const REREGISTRATIONS_TOTAL: &str = "servicegroup_reregistrations_total";
/// `servicegroup_takeovers_total`: joins that took a record over from another instance.
pub const TAKEOVERS_TOTAL: &str = "servicegroup_takeovers_total";
/// `servicegroup_superseded_total`: members fenced because another instance took them over.
pub const SUPERSEDED_TOTAL: &str = "servicegroup_superseded_total";

/// Latency buckets (seconds) suited to the library's histograms: 1 ms to 30 s.
/// Exporters that render histograms as buckets should use these for the
/// `_seconds` metrics above.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Size buckets for `servicegroup_heartbeat_batch_members`: 1 to 1,000,000.
pub const BATCH_MEMBERS_BUCKETS: &[f64] =
    &[1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0];

/// The `kind` label of an outcome: `ok` or the error kind's code.
pub fn kind_label(outcome: Result<(), ErrorKind>) -> &'static str {
    match outcome {
        Ok(()) => "ok",
        Err(kind) => kind.code(),
    }
}

/// Describes every metric (help text and unit) to the installed recorder. Call it
/// once after installing a recorder; recording works without it.
pub fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        DRIVER_CALLS_TOTAL,
        "Driver calls made by servicegroup handles, by driver, operation and outcome kind."
    );
    describe_histogram!(
        DRIVER_CALL_SECONDS,
        Unit::Seconds,
        "Latency of driver calls made by servicegroup handles (call_timeout included)."
    );
    describe_histogram!(
        HEARTBEAT_BATCH_SECONDS,
        Unit::Seconds,
        "Latency of one tick's heartbeat batch, as the handle waited for it."
    );
    describe_histogram!(
        HEARTBEAT_BATCH_MEMBERS,
        Unit::Count,
        "Members in one tick's heartbeat batch."
    );
    describe_counter!(
        BACKEND_LOST_TOTAL,
        "Transitions of a handle's heartbeats from reaching the backend to failing."
    );
    describe_counter!(
        BACKEND_RECOVERED_TOTAL,
        "Transitions of a handle's heartbeats from failing to reaching the backend."
    );
    describe_counter!(
        REREGISTRATIONS_TOTAL,
        "Members registered again because the backend had lost their record."
    );
    describe_counter!(
        TAKEOVERS_TOTAL,
        "Joins that took a member's record over from another instance."
    );
    describe_counter!(
        SUPERSEDED_TOTAL,
        "Members of this process fenced because another instance took them over."
    );
}

/// Records one driver call: its outcome and its latency.
pub fn driver_call(
    driver: &str,
    operation: &'static str,
    elapsed: Duration,
    outcome: Result<(), ErrorKind>,
) {
    metrics::counter!(
        DRIVER_CALLS_TOTAL,
        "driver" => driver.to_owned(),
        "operation" => operation,
        "kind" => kind_label(outcome),
    )
    .increment(1);
    metrics::histogram!(
        DRIVER_CALL_SECONDS,
        "driver" => driver.to_owned(),
        "operation" => operation,
    )
    .record(elapsed.as_secs_f64());
}

/// Records one tick's heartbeat batch of `members` that took `elapsed`.
pub(crate) fn heartbeat_batch(driver: &str, members: usize, elapsed: Duration) {
    metrics::histogram!(HEARTBEAT_BATCH_SECONDS, "driver" => driver.to_owned())
        .record(elapsed.as_secs_f64());
    metrics::histogram!(HEARTBEAT_BATCH_MEMBERS, "driver" => driver.to_owned())
        .record(members as f64);
}

/// Counts `n` of the counter `name` for `driver`.
pub(crate) fn count(name: &'static str, driver: &str, n: u64) {
    metrics::counter!(name, "driver" => driver.to_owned()).increment(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_snake_case_label() {
        for kind in [
            ErrorKind::InvalidId,
            ErrorKind::Config,
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::NotFound,
            ErrorKind::AlreadyJoined,
            ErrorKind::Backend,
            ErrorKind::Conflict,
            ErrorKind::InvalidMetadata,
        ] {
            let label = kind_label(Err(kind));
            assert!(
                label.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{label}"
            );
            assert_ne!(label, "ok");
        }
        assert_eq!(kind_label(Ok(())), "ok");
    }
}
