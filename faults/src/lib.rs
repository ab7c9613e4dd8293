//! # servicegroup-faults
//!
//! The fault matrix of issue 18: every backend under the failures users hit (a
//! server that hangs, one that is slow, connections reset mid-answer, restarts,
//! evictions, quorum loss, a full disk, a client whose clock jumps, duplicate members,
//! lost relays), run against real servers with a fleet of member processes and an
//! observer, one [`report::Row`] per scenario × backend. `scripts/faults` runs the
//! whole matrix and writes `docs/reliability.md`; `faults/tests/quick.rs` runs each
//! scenario once on one backend.
//!
//! - [`proxy`]: a TCP proxy adding latency per round trip and resetting connections,
//! - [`fleet`] / [`member`]: member processes and what they report,
//! - [`observer`]: lists and watches, counts false downs and errors by kind,
//! - [`server`]: backend servers (start, stop, SIGSTOP / SIGCONT) and relays,
//! - [`backend`]: the backends of the matrix and the settings clients use,
//! - [`scenario`]: one function per scenario,
//! - [`report`]: rows and `docs/reliability.md`.
#![deny(missing_docs)]

pub mod backend;
mod counters;
pub mod error;
pub mod fleet;
pub mod member;
pub mod observer;
pub mod proxy;
pub mod report;
pub mod scenario;
pub mod server;

pub use counters::CallCounters;
pub use error::{FaultsError, Result};

use std::path::PathBuf;
use std::time::Duration;

/// The timing every scenario runs with.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `report_interval`.
    pub report_interval: Duration,
    /// `service_down_time`.
    pub service_down_time: Duration,
    /// `call_timeout` (core's limit on every driver call).
    pub call_timeout: Duration,
}

impl Default for Timing {
    /// report_interval 1 s, service_down_time 5 s, call_timeout 3 s.
    fn default() -> Self {
        Self {
            report_interval: Duration::from_secs(1),
            service_down_time: Duration::from_secs(5),
            call_timeout: Duration::from_secs(3),
        }
    }
}

impl Timing {
    /// The configuration keys for this timing.
    pub fn settings(&self) -> Vec<(String, String)> {
        let secs = |d: Duration| format!("{}", d.as_secs_f64());
        vec![
            ("report_interval".into(), secs(self.report_interval)),
            ("service_down_time".into(), secs(self.service_down_time)),
            ("call_timeout".into(), secs(self.call_timeout)),
        ]
    }

    /// How long after a fault a live member may still be read as down, and the
    /// limit on the time to recover: one report_interval plus 1 s (the observer's
    /// poll, a reconnect).
    pub fn grace(&self) -> Duration {
        self.report_interval + Duration::from_secs(1)
    }
}

/// Where and how scenarios run.
#[derive(Debug, Clone)]
pub struct Context {
    /// The `servicegroup-faults` binary (member and relay processes run it).
    pub exe: PathBuf,
    /// The repository's `scripts/lib` (the backend start/stop scripts).
    pub scripts: PathBuf,
    /// A directory for servers, logs and files (one subdirectory per row).
    pub work: PathBuf,
    /// Member processes in the fleet.
    pub processes: usize,
    /// Members per process.
    pub per_process: usize,
    /// Intervals and timeouts.
    pub timing: Timing,
}

impl Context {
    /// A context with the fleet: 200 members in 4 processes.
    pub fn new(exe: PathBuf, scripts: PathBuf, work: PathBuf) -> Self {
        Self {
            exe,
            scripts,
            work,
            processes: 4,
            per_process: 50,
            timing: Timing::default(),
        }
    }
}
