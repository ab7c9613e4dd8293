//! The body of the hidden `member` subcommand: one process, one [`ServiceGroup`]
//! handle, N members joined on it, and a JSON line on stdout every 250 ms
//! ([`crate::fleet::Line`]) with the driver calls by outcome kind and the members
//! fenced so far. The process stops when its stdin closes (the runner dropped it),
//! leaving its records as a crash would unless `leave_on_exit` is set.

use std::io::Write;
use std::time::{Duration, Instant};

use servicegroup::{JoinOptions, Membership, ServiceGroup};
use tokio::io::AsyncReadExt;

use crate::counters::CallCounters;
use crate::fleet::{member_id, Line};

/// What one member process does.
#[derive(Debug, Clone)]
pub struct MemberArgs {
    /// The driver (`db`, `mc`, `etcd`, `relay`).
    pub driver: String,
    /// Configuration keys and values (`db.url`, `report_interval`, ...).
    pub settings: Vec<(String, String)>,
    /// The group to join.
    pub group: String,
    /// Index of the first member id (`m00017`).
    pub first: usize,
    /// How many members.
    pub count: usize,
    /// Join each member exclusively (refuse a live member held by another instance).
    pub exclusive: bool,
    /// Leave every member on exit instead of leaving the records behind.
    pub leave_on_exit: bool,
}

fn emit(line: &Line) {
    let mut out = std::io::stdout().lock();
    if let Ok(text) = serde_json::to_string(line) {
        // A closed stdout means the runner is gone; the stdin watch ends the process.
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// Runs the member process until stdin closes; the exit code says how it went
/// (0 fine, 2 configuration, 3 join failed).
pub async fn run(args: MemberArgs) -> i32 {
    let counters = CallCounters::new();
    if let Err(e) = counters.install() {
        emit(&Line::Failed {
            stage: "metrics".into(),
            kind: "config".into(),
            message: e,
        });
        return 2;
    }
    let config = match crate::backend::config_of(&args.driver, &args.settings) {
        Ok(c) => c,
        Err(e) => {
            emit(&Line::Failed {
                stage: "config".into(),
                kind: e.kind().code().into(),
                message: e.to_string(),
            });
            return 2;
        }
    };
    let sg = match ServiceGroup::connect(config).await {
        Ok(sg) => sg,
        Err(e) => {
            emit(&Line::Failed {
                stage: "connect".into(),
                kind: e.kind().code().into(),
                message: e.to_string(),
            });
            return 2;
        }
    };
    let ids: Vec<String> = (args.first..args.first + args.count)
        .map(member_id)
        .collect();
    let started = Instant::now();
    let joined = join(&sg, &args, &ids).await;
    let memberships = match joined {
        Ok(m) => m,
        Err(e) => {
            emit(&Line::Failed {
                stage: "join".into(),
                kind: e.kind().code().into(),
                message: e.to_string(),
            });
            // Stay until the runner drops us: it reads the line, then closes stdin.
            wait_for_stdin_close().await;
            return 3;
        }
    };
    emit(&Line::Joined {
        count: memberships.len(),
        instance: sg.instance().to_string(),
        ms: started.elapsed().as_millis() as u64,
    });
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let stdin_closed = wait_for_stdin_close();
    tokio::pin!(stdin_closed);
    loop {
        tokio::select! {
            _ = &mut stdin_closed => break,
            _ = tick.tick() => emit(&Line::Status {
                calls: counters.calls(),
                superseded: counters.superseded(),
                healthy: sg.is_healthy(),
                slowest_heartbeat_ms: (counters.take_slowest_heartbeat() * 1000.0) as u64,
            }),
        }
    }
    if args.leave_on_exit {
        for m in memberships {
            let _ = m.leave().await;
        }
    } else {
        for m in memberships {
            m.crash();
        }
    }
    0
}

async fn join(
    sg: &ServiceGroup,
    args: &MemberArgs,
    ids: &[String],
) -> servicegroup::Result<Vec<Membership>> {
    if !args.exclusive {
        return sg
            .join_many(args.group.as_str(), ids.iter().map(String::as_str))
            .await;
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(
            sg.join_with(args.group.as_str(), id.as_str(), JoinOptions::exclusive())
                .await?,
        );
    }
    Ok(out)
}

async fn wait_for_stdin_close() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
