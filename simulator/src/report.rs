//! The simulator's [`Report`]: serialized as one JSON object (`simulate --json`; keys
//! documented in docs/cli.md) or rendered as a short text block ([`Report::text`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::latency::Latency;
use crate::usage::{ServerUsage, SimulatorUsage};

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

impl From<&Latency> for Quantiles {
    fn from(h: &Latency) -> Self {
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
    /// Heartbeating handles (per-process topology: one per member; Nova baseline:
    /// connections, each running one member's report at a time).
    pub handles: u32,
    /// Which topology ran: `shared` (every handle on one driver instance, so a handle
    /// reports all its members in one call per tick) or `per-process` (every member its
    /// own handle, as one process per host; see `processes_per_driver`). The Nova
    /// baseline is `shared`: its workers share `db.pool_size` connections, one
    /// transaction per member report.
    pub topology: String,
    /// Per-process topology: simulated processes sharing one driver instance (its
    /// connections), each with its own handle sending its own call every tick; null
    /// for `shared`.
    pub processes_per_driver: Option<u32>,
    /// Driver instances built (`Registry::build`): 1 for `shared`; for `per-process`
    /// ceil(members / processes_per_driver) plus 1 for the observers. Null for the
    /// Nova baseline (no driver).
    pub driver_instances: Option<u64>,
    /// Connections the simulator held to the backend: the larger count after the join
    /// and at the end of the run of the sockets (and, for SQLite, database files) it
    /// opened since before the drivers were built (from `/proc/self/fd`; null where
    /// that cannot be read).
    pub connections: Option<u64>,
    /// Observer tasks.
    pub observers: u32,
    /// How ours watched: `down-set` (queries back to back, and single-member checks)
    /// or `watch` (a `Watch` each, whose polls are not timed: no listing figures).
    /// The Nova baseline's observers always list the group.
    pub observe: String,
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
    /// The store's CPU and memory (with `--server-pid`: summed over every pid given),
    /// else null.
    pub server: Option<ServerUsage>,
    /// Each relay's CPU and memory (with `--relay-pid`), else empty.
    pub relays: Vec<ServerUsage>,
    /// The relays' CPU per heartbeat call of a member (one HTTP request each in the
    /// per-process topology), µs; null without `--relay-pid`.
    pub relay_cpu_us_per_heartbeat: Option<f64>,
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
    /// The topology line: what ran and what it used.
    fn topology_text(&self) -> String {
        let connections = self.connections.map_or_else(
            || "connections unknown".to_owned(),
            |c| format!("{c} connections"),
        );
        match (self.processes_per_driver, self.driver_instances) {
            (Some(per), Some(instances)) => format!(
                "{}: {} processes, each its own handle; {} driver instances (up to {} processes per instance, calls never merged across processes, 1 instance for the observers), {}",
                self.topology, self.handles, instances, per, connections
            ),
            (_, Some(instances)) => format!(
                "{}: {} handles on {} driver instance{} (observers included), {}",
                self.topology,
                self.handles,
                instances,
                if instances == 1 { "" } else { "s" },
                connections
            ),
            _ => format!(
                "{}: no driver (baseline), {} worker connections, {}",
                self.topology, self.handles, connections
            ),
        }
    }

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
        let _ = writeln!(s, "  topology           {}", self.topology_text());
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
            "  listing            p50 {}   p99 {}   max {}   ({} listings, {} checks by {} observers, {})",
            q(l.p50),
            q(l.p99),
            q(l.max),
            self.listings,
            self.checks,
            self.observers,
            self.observe
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
                v.pids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                opt(v.cpu_percent),
                opt(v.pss_mb)
            );
        }
        for v in &self.relays {
            let _ = writeln!(
                s,
                "  relay (pid {})    CPU {}% of a core, PSS {} MB ({} MB per 100k members)",
                v.pid,
                opt(v.cpu_percent),
                opt(v.pss_mb),
                opt(v.pss_mb_per_100k_members)
            );
        }
        if let Some(us) = self.relay_cpu_us_per_heartbeat {
            let _ = writeln!(s, "  relay CPU          {us} µs per heartbeat request");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_histogram_in_rounded_milliseconds() {
        assert_eq!(
            Quantiles::from(&Latency::new()),
            Quantiles {
                p50: None,
                p99: None,
                max: None
            }
        );
        let mut h = Latency::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us * 100)); // 0.1 ms .. 1000 ms
        }
        let q = Quantiles::from(&h);
        let (p50, p99, max) = (q.p50.unwrap(), q.p99.unwrap(), q.max.unwrap());
        // Ranks 5000 and 9900 exactly, at most 0.1 % high, to the µs.
        assert!((500.0..=500.5).contains(&p50), "{q:?}");
        assert!((990.0..=991.0).contains(&p99), "{q:?}");
        assert!((1000.0..=1001.0).contains(&max), "{q:?}");
        assert!(p50 <= p99 && p99 <= max);
        for v in [p50, p99, max] {
            assert_eq!(
                v,
                (v * 1000.0).round() / 1000.0,
                "not rounded to the µs: {v}"
            );
        }
        let json = serde_json::to_value(q).unwrap();
        assert_eq!(
            json.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["max", "p50", "p99"]
        );
    }
}
