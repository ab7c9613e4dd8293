//! The simulator's report: one JSON object (`--json`) or a short text block.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::histogram::Histogram;
use super::usage::{ServerUsage, SimulatorUsage};

/// p50 / p99 / max of a latency, in milliseconds (null when nothing was measured).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

impl From<&Histogram> for Quantiles {
    fn from(h: &Histogram) -> Self {
        Self {
            p50: h.quantile(0.50).map(ms),
            p99: h.quantile(0.99).map(ms),
            max: h.max().map(ms),
        }
    }
}

/// Everything `servicegroup simulate` measured. Keys are documented in docs/cli.md.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Driver name (`nova-db` for the Nova baseline).
    pub driver: String,
    /// `nova` when the Nova baseline ran instead of a driver, else null.
    pub baseline: Option<String>,
    /// Group the members joined.
    pub group: String,
    /// Members that joined (and so took part).
    pub members: u64,
    /// Members whose join failed.
    pub join_failures: u64,
    /// Heartbeating handles (Nova baseline: connections, each running one member's
    /// report at a time).
    pub handles: u32,
    /// Observer tasks.
    pub observers: u32,
    /// Seconds it took every member to join (before the measured run).
    pub join_seconds: f64,
    /// Length of the measured run, seconds.
    pub duration_seconds: f64,
    /// report_interval in effect, seconds.
    pub report_interval_seconds: f64,
    /// service_down_time in effect, seconds.
    pub service_down_time_seconds: f64,
    /// Heartbeats stored during the measured run.
    pub heartbeats: u64,
    /// Heartbeats stored per second during the measured run.
    pub heartbeats_per_second: f64,
    /// Heartbeat batches (driver calls) during the measured run.
    pub heartbeat_batches: u64,
    /// Latency of one heartbeat batch (one driver call for all members of a handle), ms.
    pub heartbeat_batch_latency_ms: Quantiles,
    /// Nova baseline only: how late reports started after they were due (the drift
    /// an overloaded database forces on every member), ms.
    pub heartbeat_lateness_ms: Option<Quantiles>,
    /// Group queries by observers: the down set (`members_in(group, State::Down)`) on
    /// a driver, the whole group (Nova's `service_get_all_by_topic`) on the baseline.
    pub listings: u64,
    /// Latency of one observer group query (see `listings`), ms.
    pub listing_latency_ms: Quantiles,
    /// Single-member checks by observers.
    pub checks: u64,
    /// Members killed (heartbeats stopped, no leave).
    pub killed: u64,
    /// Killed members judged down.
    pub detected: u64,
    /// Killed members never judged down before the simulator gave up waiting.
    pub undetected: u64,
    /// Time from kill to first seen down, ms.
    pub detection_delay_ms: Quantiles,
    /// The bound detection must stay within: service_down_time + report_interval + 1 s, ms.
    pub detection_budget_ms: f64,
    /// Live (never killed) members judged down. Must be 0.
    pub false_downs: u64,
    /// Errors by kind (`timeout`, `unavailable`, `backend`, ...), from every call.
    pub errors: BTreeMap<String, u64>,
    /// The simulator's own CPU and memory.
    pub simulator: SimulatorUsage,
    /// The database server's CPU and memory (with `--server-pid`), else null.
    pub server: Option<ServerUsage>,
    /// True when there were no false downs and every killed member was detected.
    pub ok: bool,
}

fn q(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(ms) if ms >= 1000.0 => format!("{:.2} s", ms / 1000.0),
        Some(ms) => format!("{ms:.1} ms"),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

impl Report {
    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "servicegroup simulate: driver {}, group {}, report_interval {}s, service_down_time {}s",
            self.driver, self.group, self.report_interval_seconds, self.service_down_time_seconds
        );
        let _ = writeln!(
            s,
            "  members            {} in {} handles ({} join failures), joined in {:.2} s",
            self.members, self.handles, self.join_failures, self.join_seconds
        );
        let _ = writeln!(
            s,
            "  heartbeats         {:.0}/s ({} in {:.1} s, {} batches)",
            self.heartbeats_per_second,
            self.heartbeats,
            self.duration_seconds,
            self.heartbeat_batches
        );
        let h = &self.heartbeat_batch_latency_ms;
        let _ = writeln!(
            s,
            "  heartbeat batch    p50 {}   p99 {}   max {}",
            q(h.p50),
            q(h.p99),
            q(h.max)
        );
        if let Some(l) = &self.heartbeat_lateness_ms {
            let _ = writeln!(
                s,
                "  report lateness    p50 {}   p99 {}   max {}",
                q(l.p50),
                q(l.p99),
                q(l.max)
            );
        }
        let l = &self.listing_latency_ms;
        let _ = writeln!(
            s,
            "  listing            p50 {}   p99 {}   max {}   ({} listings, {} checks by {} observers)",
            q(l.p50),
            q(l.p99),
            q(l.max),
            self.listings,
            self.checks,
            self.observers
        );
        let _ = writeln!(
            s,
            "  killed             {} (detected {}, undetected {})",
            self.killed, self.detected, self.undetected
        );
        let d = &self.detection_delay_ms;
        let _ = writeln!(
            s,
            "  detection delay    p50 {}   p99 {}   max {}   (budget {})",
            q(d.p50),
            q(d.p99),
            q(d.max),
            q(Some(self.detection_budget_ms))
        );
        let _ = writeln!(s, "  false downs        {}", self.false_downs);
        let u = &self.simulator;
        let _ = writeln!(
            s,
            "  simulator          CPU {}% of a core, peak RSS {} MB ({} MB per 100k members)",
            opt(u.cpu_percent),
            opt(u.peak_rss_mb),
            opt(u.peak_rss_mb_per_100k_members)
        );
        if let Some(v) = &self.server {
            let _ = writeln!(
                s,
                "  server (pid {})   CPU {}% of a core, PSS {} MB",
                v.pid,
                opt(v.cpu_percent),
                opt(v.pss_mb)
            );
        }
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "  errors             {errors}");
        let verdict = if self.ok {
            "OK: no false downs, every killed member judged down".to_owned()
        } else {
            format!(
                "FAILED: {} false downs, {} killed members never judged down",
                self.false_downs, self.undetected
            )
        };
        let _ = writeln!(s, "result: {verdict}");
        s
    }
}
