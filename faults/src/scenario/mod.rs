//! The scenarios: [`ScenarioName`] lists them, [`applies`] says which backend each
//! one applies to (and why not), [`run`] runs one on one backend and returns its
//! [`Row`]. Each scenario lives in its own module; [`harness`] holds what they share
//! (servers, fleet, observer, the final judgement).

mod clock;
pub mod disk;
mod duplicate;
mod eviction;
mod failover;
mod hang;
pub mod harness;
mod quorum;
mod relay_loss;
mod resets;
mod restart;
pub mod slow;
mod watch;

use std::fmt;
use std::path::Path;
use std::time::Instant;

use crate::backend::BackendName;
use crate::error::Result;
use crate::report::{self, Outcome, Row, RunInfo};
use crate::Context;

/// A scenario of the matrix (numbered as in issue 18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScenarioName {
    /// 1: SIGSTOP every server process for service_down_time + 2 s, then SIGCONT.
    Hang,
    /// 2: a proxy adds latency: inside the budget, then beyond call_timeout.
    Slow,
    /// 3: a proxy resets connections mid-answer.
    Resets,
    /// 4: fast shutdown and start of the server.
    Restart,
    /// 5: memcached with a small memory limit flooded with other keys.
    Eviction,
    /// 6: PostgreSQL primary killed, standby promoted.
    Failover,
    /// 7: etcd leader stopped, then two of three members.
    Quorum,
    /// 8: SQLite on a filesystem that fills up.
    Disk,
    /// 9: member processes an hour ahead and behind (libfaketime).
    Clock,
    /// 10: a watch through a hang and a restart with real transitions in between.
    Watch,
    /// 11: two processes join the same members (takeover, exclusive).
    Duplicate,
    /// 12: one of two relays killed; the relays' backend stopped.
    RelayLoss,
}

impl ScenarioName {
    /// Every scenario, in table order.
    pub const ALL: [ScenarioName; 12] = [
        ScenarioName::Hang,
        ScenarioName::Slow,
        ScenarioName::Resets,
        ScenarioName::Restart,
        ScenarioName::Eviction,
        ScenarioName::Failover,
        ScenarioName::Quorum,
        ScenarioName::Disk,
        ScenarioName::Clock,
        ScenarioName::Watch,
        ScenarioName::Duplicate,
        ScenarioName::RelayLoss,
    ];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioName::Hang => "hang",
            ScenarioName::Slow => "slow",
            ScenarioName::Resets => "resets",
            ScenarioName::Restart => "restart",
            ScenarioName::Eviction => "eviction",
            ScenarioName::Failover => "failover",
            ScenarioName::Quorum => "quorum",
            ScenarioName::Disk => "disk",
            ScenarioName::Clock => "clock",
            ScenarioName::Watch => "watch",
            ScenarioName::Duplicate => "duplicate",
            ScenarioName::RelayLoss => "relay-loss",
        }
    }

    /// The number of the scenario.
    pub fn number(self) -> u32 {
        match self {
            ScenarioName::Hang => 1,
            ScenarioName::Slow => 2,
            ScenarioName::Resets => 3,
            ScenarioName::Restart => 4,
            ScenarioName::Eviction => 5,
            ScenarioName::Failover => 6,
            ScenarioName::Quorum => 7,
            ScenarioName::Disk => 8,
            ScenarioName::Clock => 9,
            ScenarioName::Watch => 10,
            ScenarioName::Duplicate => 11,
            ScenarioName::RelayLoss => 12,
        }
    }

    /// The scenario named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The backend `--quick` (and CI) runs this scenario on.
    pub fn quick_backend(self) -> BackendName {
        match self {
            ScenarioName::Hang
            | ScenarioName::Slow
            | ScenarioName::Resets
            | ScenarioName::Restart
            | ScenarioName::Failover
            | ScenarioName::Clock
            | ScenarioName::Watch => BackendName::Postgres,
            ScenarioName::Eviction => BackendName::Memcached,
            ScenarioName::Quorum => BackendName::Etcd,
            ScenarioName::Disk => BackendName::Sqlite,
            ScenarioName::Duplicate => BackendName::Memcached3,
            ScenarioName::RelayLoss => BackendName::Relay,
        }
    }
}

impl fmt::Display for ScenarioName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.number(), self.as_str())
    }
}

/// Whether `scenario` applies to `backend`: `Err(why not)` when it does not.
pub fn applies(
    scenario: ScenarioName,
    backend: BackendName,
) -> std::result::Result<(), &'static str> {
    use BackendName::*;
    use ScenarioName::*;
    match (scenario, backend) {
        (Hang | Slow | Resets | Restart | Watch, Sqlite) => {
            Err("no server: SQLite runs inside each process (a hung or restarted disk is scenario 8)")
        }
        (Eviction, Memcached | Memcached3) => Ok(()),
        (Eviction, _) => Err("only memcached evicts keys under memory pressure"),
        (Failover, Postgres) => Ok(()),
        (Failover, _) => Err("PostgreSQL streaming replication only"),
        (Quorum, Etcd) => Ok(()),
        (Quorum, _) => Err("only etcd has a quorum"),
        (Disk, Sqlite) => Ok(()),
        (Clock, Sqlite) => Err("every process sharing a SQLite file runs on one host and shares its clock; SQLite's clock is each writer's own (a process under faketime writes faked heartbeat times: its members read as down)"),
        (Disk, _) => Err("the disk of a server is the server's business; the SQLite file is the client's"),
        (RelayLoss, Relay) => Ok(()),
        (RelayLoss, _) => Err("relay backend only"),
        _ => Ok(()),
    }
}

/// The rows to run: every applicable scenario × backend, or with `quick` one
/// backend per scenario; restricted to the scenarios and backends given (none: all).
/// Rows that do not apply are kept (the table says why), except in quick mode.
pub fn plan(
    quick: bool,
    scenarios: &[ScenarioName],
    backends: &[BackendName],
) -> Vec<(ScenarioName, BackendName)> {
    let mut out = Vec::new();
    for s in ScenarioName::ALL {
        if !scenarios.is_empty() && !scenarios.contains(&s) {
            continue;
        }
        for b in BackendName::ALL {
            if !backends.is_empty() && !backends.contains(&b) {
                continue;
            }
            if quick && (b != s.quick_backend()) {
                continue;
            }
            out.push((s, b));
        }
    }
    out
}

/// Runs `scenario` on `backend`. Never fails: a harness failure is the row's outcome.
pub async fn run(ctx: &Context, scenario: ScenarioName, backend: BackendName) -> Row {
    let label = scenario.to_string();
    if let Err(why) = applies(scenario, backend) {
        let mut row = Row::new(&label, backend.as_str());
        row.outcome = Outcome::NotApplicable(why.to_owned());
        return row;
    }
    let started = Instant::now();
    let result: Result<Row> = match scenario {
        ScenarioName::Hang => hang::run(ctx, backend).await,
        ScenarioName::Slow => slow::run(ctx, backend).await,
        ScenarioName::Resets => resets::run(ctx, backend).await,
        ScenarioName::Restart => restart::run(ctx, backend).await,
        ScenarioName::Eviction => eviction::run(ctx, backend).await,
        ScenarioName::Failover => failover::run(ctx, backend).await,
        ScenarioName::Quorum => quorum::run(ctx, backend).await,
        ScenarioName::Disk => disk::run(ctx, backend).await,
        ScenarioName::Clock => clock::run(ctx, backend).await,
        ScenarioName::Watch => watch::run(ctx, backend).await,
        ScenarioName::Duplicate => duplicate::run(ctx, backend).await,
        ScenarioName::RelayLoss => relay_loss::run(ctx, backend).await,
    };
    let mut row = result.unwrap_or_else(|e| {
        let mut row = Row::new(&label, backend.as_str());
        row.outcome = Outcome::Error(e.to_string());
        row
    });
    row.took = started.elapsed();
    row
}

fn machine() -> String {
    let uname = std::process::Command::new("uname")
        .arg("-srm")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(String::new(), |kb| {
            format!(", {} GiB RAM", kb / 1024 / 1024)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    format!("{uname}, {cores} cores ({cpu}){mem}")
}

/// The facts of a run for the report.
pub fn run_info(command: String, started: chrono::DateTime<chrono::Utc>, ctx: &Context) -> RunInfo {
    let t = ctx.timing;
    RunInfo {
        command,
        date: started.format("%Y-%m-%d %H:%M UTC").to_string(),
        machine: machine(),
        setup: format!(
            "{} members in {} processes (one handle each), one observer (listing every {} ms and watching); report_interval {} s, service_down_time {} s, call_timeout {} s; recovery window {} s",
            ctx.processes * ctx.per_process,
            ctx.processes,
            crate::observer::POLL.as_millis(),
            t.report_interval.as_secs_f64(),
            t.service_down_time.as_secs_f64(),
            t.call_timeout.as_secs_f64(),
            t.grace().as_secs_f64(),
        ),
    }
}

const HEAD: &str = include_str!("head.md");
const TAIL: &str = include_str!("tail.md");

/// Writes `docs/reliability.md` from the rows of a run.
pub fn write_report(path: &Path, info: &RunInfo, rows: &[Row]) -> Result<()> {
    report::write(path, HEAD, info, rows, TAIL)
}
