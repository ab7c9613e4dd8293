//! The fleet: member processes ([`MemberProcess`]), each a child running the hidden
//! `member` subcommand ([`crate::member`]), so that a scenario can kill one, run one
//! under `faketime`, or start a second one on the same members. Each reports JSON
//! lines ([`Line`]) that a reader task keeps.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::backend::Target;
use crate::error::{FaultsError, Result};

/// One JSON line of a member process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// Every member of the process joined.
    Joined {
        /// Members joined.
        count: usize,
        /// The handle's instance id.
        instance: String,
        /// How long joining took.
        ms: u64,
    },
    /// Counters so far (every 250 ms).
    Status {
        /// Driver calls by `operation:kind`.
        calls: BTreeMap<String, u64>,
        /// Members fenced because another instance took them over.
        superseded: u64,
        /// Whether the handle's last heartbeat tick reached the backend.
        healthy: bool,
        /// The slowest heartbeat batch since the previous line (ms).
        slowest_heartbeat_ms: u64,
    },
    /// Configuration, connection or join failed.
    Failed {
        /// Which stage (`config`, `connect`, `join`).
        stage: String,
        /// The error kind's code.
        kind: String,
        /// The error's message.
        message: String,
    },
}

/// The id of member `i` of a fleet: `m00017` (zero-padded, so listings sort by index).
pub fn member_id(i: usize) -> String {
    format!("m{i:05}")
}

/// How to start member processes.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `servicegroup-faults` binary.
    pub exe: PathBuf,
    /// Driver and settings the members use.
    pub target: Target,
    /// The group joined.
    pub group: String,
    /// Where each process's standard error goes (`<dir>/<name>.log`).
    pub log_dir: PathBuf,
}

/// Options of one process beyond its [`Launch`].
#[derive(Debug, Clone, Default)]
pub struct ProcessOptions {
    /// Join exclusively.
    pub exclusive: bool,
    /// Leave on exit instead of leaving the records behind.
    pub leave_on_exit: bool,
    /// A program (and its arguments) to run the member under, such as
    /// `["faketime", "-f", "+1h"]`.
    pub wrapper: Vec<String>,
    /// Extra environment of the process (`FAKETIME_DONT_FAKE_MONOTONIC`).
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Seen {
    joined: Option<std::result::Result<usize, (String, String)>>,
    calls: BTreeMap<String, u64>,
    superseded: u64,
    healthy: bool,
    slowest_heartbeat_ms: u64,
    lines: u64,
    ended: bool,
}

/// One member process and what it reported.
#[derive(Debug)]
pub struct MemberProcess {
    name: String,
    first: usize,
    count: usize,
    child: Child,
    seen: Arc<Mutex<Seen>>,
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemberProcess {
    /// Starts process `name` with members `first .. first + count`.
    pub async fn spawn(
        launch: &Launch,
        name: &str,
        first: usize,
        count: usize,
        options: &ProcessOptions,
    ) -> Result<Self> {
        let log_path = launch.log_dir.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| FaultsError::io(format!("open {}", log_path.display()), e))?;
        let mut command = match options.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&launch.exe);
                c
            }
            None => Command::new(&launch.exe),
        };
        command
            .arg("member")
            .arg("--driver")
            .arg(&launch.target.driver)
            .arg("--group")
            .arg(&launch.group)
            .arg("--first")
            .arg(first.to_string())
            .arg("--count")
            .arg(count.to_string());
        for (key, value) in &launch.target.settings {
            command.arg("--set").arg(format!("{key}={value}"));
        }
        if options.exclusive {
            command.arg("--exclusive");
        }
        if options.leave_on_exit {
            command.arg("--leave-on-exit");
        }
        command.envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| FaultsError::io(format!("start member process {name}"), e))?;
        let stdout = child.stdout.take().ok_or_else(|| FaultsError::Member {
            name: name.to_owned(),
            message: "no stdout".into(),
        })?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        tokio::spawn(read_lines(stdout, seen.clone()));
        Ok(Self {
            name: name.to_owned(),
            first,
            count,
            child,
            seen,
        })
    }

    /// The process's name in the fleet.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The member ids of this process.
    pub fn ids(&self) -> Vec<String> {
        (self.first..self.first + self.count)
            .map(member_id)
            .collect()
    }

    /// The process id (`None` once it exited).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the process's join outcome: `Ok(count)` or `Err((kind, message))`.
    pub async fn joined(
        &self,
        within: Duration,
    ) -> Result<std::result::Result<usize, (String, String)>> {
        let deadline = Instant::now() + within;
        loop {
            {
                let seen = lock(&self.seen);
                if let Some(outcome) = &seen.joined {
                    return Ok(outcome.clone());
                }
                if seen.ended {
                    return Err(FaultsError::Member {
                        name: self.name.clone(),
                        message: "exited before joining (see its log)".into(),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(FaultsError::Member {
                    name: self.name.clone(),
                    message: format!("did not join within {within:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Driver calls so far by `operation:kind`.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        lock(&self.seen).calls.clone()
    }

    /// Members fenced so far.
    pub fn superseded(&self) -> u64 {
        lock(&self.seen).superseded
    }

    /// Whether the last status line said the handle is healthy.
    pub fn healthy(&self) -> bool {
        lock(&self.seen).healthy
    }

    /// The slowest heartbeat batch reported since the process started (ms).
    pub fn slowest_heartbeat_ms(&self) -> u64 {
        lock(&self.seen).slowest_heartbeat_ms
    }

    /// Status lines received so far.
    pub fn lines(&self) -> u64 {
        lock(&self.seen).lines
    }

    /// Kills the process (SIGKILL) and waits for it: its records stay, as after a crash.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Closes its stdin (a graceful stop: it leaves when `leave_on_exit`) and waits
    /// at most `within` before killing it.
    pub async fn stop(&mut self, within: Duration) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(within, self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }
}

async fn read_lines(stdout: tokio::process::ChildStdout, seen: Arc<Mutex<Seen>>) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(text)) = lines.next_line().await {
        let Ok(line) = serde_json::from_str::<Line>(&text) else {
            continue;
        };
        let mut seen = lock(&seen);
        match line {
            Line::Joined { count, .. } => seen.joined = Some(Ok(count)),
            Line::Failed { kind, message, .. } => seen.joined = Some(Err((kind, message))),
            Line::Status {
                calls,
                superseded,
                healthy,
                slowest_heartbeat_ms,
            } => {
                seen.calls = calls;
                seen.superseded = superseded;
                seen.healthy = healthy;
                seen.slowest_heartbeat_ms = seen.slowest_heartbeat_ms.max(slowest_heartbeat_ms);
                seen.lines += 1;
            }
        }
    }
    lock(&seen).ended = true;
}

/// Error counts by kind code, summed over every operation, from `operation:kind` calls.
pub fn errors_by_kind<'a>(
    calls: impl IntoIterator<Item = &'a BTreeMap<String, u64>>,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for map in calls {
        for (key, n) in map {
            let kind = key.rsplit(':').next().unwrap_or(key);
            if kind != "ok" && *n > 0 {
                *out.entry(kind.to_owned()).or_insert(0) += n;
            }
        }
    }
    out
}

/// The member processes of a scenario.
#[derive(Debug)]
pub struct Fleet {
    launch: Launch,
    /// The processes, in start order.
    pub processes: Vec<MemberProcess>,
}

impl Fleet {
    /// Starts `processes` processes of `per_process` members each (ids `m00000` on)
    /// and waits until every one joined.
    pub async fn start(launch: Launch, processes: usize, per_process: usize) -> Result<Self> {
        let mut fleet = Fleet {
            launch,
            processes: Vec::new(),
        };
        for p in 0..processes {
            let name = format!("p{p}");
            let process = MemberProcess::spawn(
                &fleet.launch,
                &name,
                p * per_process,
                per_process,
                &ProcessOptions::default(),
            )
            .await?;
            fleet.processes.push(process);
        }
        for process in &fleet.processes {
            match process.joined(Duration::from_secs(60)).await? {
                Ok(_) => {}
                Err((kind, message)) => {
                    return Err(FaultsError::Member {
                        name: process.name.clone(),
                        message: format!("join failed ({kind}): {message}"),
                    })
                }
            }
        }
        Ok(fleet)
    }

    /// How processes are launched.
    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    /// Every member id of every process still in the fleet.
    pub fn ids(&self) -> Vec<String> {
        self.processes.iter().flat_map(|p| p.ids()).collect()
    }

    /// Error counts by kind, over every process.
    pub fn errors_by_kind(&self) -> BTreeMap<String, u64> {
        let calls: Vec<_> = self.processes.iter().map(|p| p.calls()).collect();
        errors_by_kind(calls.iter())
    }

    /// Members fenced, over every process.
    pub fn superseded(&self) -> u64 {
        self.processes.iter().map(|p| p.superseded()).sum()
    }

    /// The slowest heartbeat batch any process reported (ms).
    pub fn slowest_heartbeat_ms(&self) -> u64 {
        self.processes
            .iter()
            .map(|p| p.slowest_heartbeat_ms())
            .max()
            .unwrap_or(0)
    }

    /// The pids of every running member process.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().filter_map(|p| p.pid()).collect()
    }
}
