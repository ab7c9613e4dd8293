//! How long listing one idle group takes (a benchmark, not a test): the db driver's
//! side of `cli/examples/list_latency.rs`, runnable without the CLI and without the
//! other drivers.
//!
//! ```sh
//! cargo run --release --example db_list_latency -p servicegroup-driver-db --features mysql -- \
//!     DATABASE_URL GROUP [--fill N] [--rounds R] [--driver] [--server NAME] \
//!     [--down-percent P --service-down-time SECS] [--query list|down|summary]
//! ```
//!
//! `DATABASE_URL` is a `[db] url` (`sqlite:///path/file.db`, `postgres://…`,
//! `mysql://…`). `--fill N` first registers N members `m000000…` of GROUP for four
//! instances with no metadata (as `servicegroup simulate --handles 4 --keep` leaves
//! them), unless the group already has members. Then it times R (default 30)
//! listings after one warm-up: `ServiceGroup::members` (driver listing, liveness
//! verdicts, sort; what `scripts/bench-listing` times), or with `--driver`
//! `Driver::list` alone. Prints one JSON object: members listed, rounds, latency
//! min/p50/p99/max in ms, and the CPU time per listing of this process (all
//! threads) and, with `--server NAME`, of every process named NAME (`postgres`,
//! `mariadbd`: the database server on this machine), from `/proc` (Linux).
//!
//! The down set: with `--down-percent P` (and `--service-down-time SECS`, default
//! 20), every `100/P`-th member of the filled group stops heartbeating: the example
//! waits SECS after the fill, heartbeats all the others once (batches of 100,000 as
//! their instances), and then times `--query down` (`Driver::list_in(group,
//! State::Down, SECS)`: only the stale members, judged by the database) or
//! `--query summary` (`Driver::summary`), checking every answer against the
//! expected count. The timed rounds must end within SECS of that heartbeat (the
//! others would go down too): the example stops early and says so otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use servicegroup_core::{
    Beats, Condition, Config, DatabaseUrl, Driver, GroupId, InstanceId, MemberId, MemberKey,
    Metadata, Registration, ServiceGroup, State,
};
use servicegroup_driver_db::{DbConfig, DbDriver};

fn usage() -> ! {
    eprintln!(
        "usage: db_list_latency DATABASE_URL GROUP [--fill N] [--rounds R] [--driver] [--server NAME] \
         [--down-percent P] [--service-down-time SECS] [--query list|down|summary]"
    );
    std::process::exit(2)
}

/// What to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Query {
    /// The whole group (`ServiceGroup::members`, or `Driver::list` with `--driver`).
    List,
    /// `Driver::list_in(group, State::Down, service_down_time)`.
    Down,
    /// `Driver::summary(group, service_down_time)`.
    Summary,
}

#[derive(Debug)]
struct Options {
    url: String,
    group: String,
    fill: usize,
    rounds: usize,
    driver_only: bool,
    server: Option<String>,
    down_percent: usize,
    service_down_time: Duration,
    /// What to time, in order (`--query` repeated; default the listing).
    queries: Vec<Query>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(group)) = (args.next(), args.next()) else {
        usage()
    };
    let mut o = Options {
        url,
        group,
        fill: 0,
        rounds: 30,
        driver_only: false,
        server: None,
        down_percent: 0,
        service_down_time: Duration::from_secs(20),
        queries: Vec::new(),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        let count = |v: String| v.parse::<usize>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--fill" => o.fill = count(value()),
            "--rounds" => o.rounds = count(value()).max(1),
            "--driver" => o.driver_only = true,
            "--server" => o.server = Some(value()),
            "--down-percent" => o.down_percent = count(value()).min(100),
            "--service-down-time" => {
                o.service_down_time = Duration::from_secs(count(value()).max(1) as u64)
            }
            "--query" => o.queries.push(match value().as_str() {
                "list" => Query::List,
                "down" => Query::Down,
                "summary" => Query::Summary,
                _ => usage(),
            }),
            _ => usage(),
        }
    }
    if o.queries.is_empty() {
        o.queries.push(Query::List);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(message) = rt.block_on(run(o)) {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

/// Whether member `i` of the filled group is one of the stale ones.
fn is_stale(i: usize, down_percent: usize) -> bool {
    down_percent > 0 && i % (100 / down_percent) == 0
}

async fn run(o: Options) -> Result<(), String> {
    let mut options = DbConfig::default();
    options.url = Some(DatabaseUrl::new(o.url.clone()));
    options.timeout = Duration::from_secs(30);
    let driver = Arc::new(DbDriver::open(&options).await.map_err(|e| e.to_string())?);
    let mut config = Config::with_driver("db");
    config.call_timeout = Duration::from_secs(60);
    let group = GroupId::new(o.group.clone()).map_err(|e| e.to_string())?;
    let instances: Vec<InstanceId> = (0..4).map(|_| InstanceId::random()).collect();
    let mut expected_down = None;
    let mut beaten_at = None;
    if o.fill > 0
        && driver
            .list(&group)
            .await
            .map_err(|e| e.to_string())?
            .is_empty()
    {
        let width = o.fill.saturating_sub(1).max(1).to_string().len();
        let registrations: Vec<Registration> = (0..o.fill)
            .map(|i| Registration {
                key: MemberKey::new(
                    group.clone(),
                    MemberId::new(format!("m{i:0width$}")).expect("a valid member id"),
                ),
                instance: instances[i % instances.len()],
                metadata: Metadata::new(),
                condition: Condition::Always,
            })
            .collect();
        let started = Instant::now();
        for chunk in registrations.chunks(1000) {
            driver
                .register_many(chunk)
                .await
                .map_err(|e| e.to_string())?;
        }
        eprintln!("registered {} members in {:.1?}", o.fill, started.elapsed());
        if o.down_percent > 0 {
            // Everyone but the stale ones heartbeats once, after service_down_time.
            tokio::time::sleep(o.service_down_time).await;
            let started = Instant::now();
            beaten_at = Some(started);
            for (n, instance) in instances.iter().enumerate() {
                let keys: Vec<MemberKey> = registrations
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % instances.len() == n && !is_stale(*i, o.down_percent))
                    .map(|(_, r)| r.key.clone())
                    .collect();
                for chunk in keys.chunks(100_000) {
                    let report = driver
                        .heartbeat(&[Beats {
                            instance: *instance,
                            keys: chunk,
                        }])
                        .await
                        .map_err(|e| e.to_string())?;
                    if !report.missing.is_empty() || !report.superseded.is_empty() {
                        return Err(format!("the heartbeat did not refresh: {report:?}"));
                    }
                }
            }
            expected_down = Some((0..o.fill).filter(|i| is_stale(*i, o.down_percent)).count());
            eprintln!(
                "heartbeated all but {} members in {:.1?}",
                expected_down.unwrap_or(0),
                started.elapsed()
            );
        }
    }
    let sg = ServiceGroup::with_driver(driver.clone(), config).map_err(|e| e.to_string())?;
    for &query in &o.queries {
        time(&o, query, &driver, &sg, &group, expected_down, beaten_at).await?;
    }
    Ok(())
}

/// Times `o.rounds` calls of `query` after one warm-up call and prints one JSON line.
async fn time(
    o: &Options,
    query: Query,
    driver: &DbDriver,
    sg: &ServiceGroup,
    group: &GroupId,
    expected_down: Option<usize>,
    beaten_at: Option<Instant>,
) -> Result<(), String> {
    let sdt = o.service_down_time;
    let call = async || -> Result<usize, String> {
        match query {
            Query::List if o.driver_only => {
                Ok(driver.list(group).await.map_err(|e| e.to_string())?.len())
            }
            Query::List => Ok(sg.members(group).await.map_err(|e| e.to_string())?.len()),
            Query::Down => Ok(driver
                .list_in(group, State::Down, sdt)
                .await
                .map_err(|e| e.to_string())?
                .len()),
            Query::Summary => {
                let s = driver
                    .summary(group, sdt)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((s.down + s.forced_down) as usize)
            }
        }
    };
    // One call first: connections, statement preparation and caches warm up.
    let answered = call().await?;
    if let Some(expected) = expected_down.filter(|_| query != Query::List) {
        if answered != expected {
            return Err(format!("{answered} members down, expected {expected}"));
        }
    }
    let mut ms = Vec::with_capacity(o.rounds);
    let own = std::process::id().to_string();
    let cpu = |name: Option<&str>| match name {
        Some(name) => cpu_ns(|pid| comm(pid).as_deref() == Some(name)),
        None => cpu_ns(|pid| pid == own),
    };
    let (client_cpu, server_cpu) = (cpu(None), o.server.as_deref().map(|s| cpu(Some(s))));
    for _ in 0..o.rounds {
        if beaten_at.is_some_and(|at| at.elapsed() + Duration::from_secs(2) > sdt) {
            eprintln!(
                "stopped after {} rounds: the heartbeated members go down after {sdt:?}",
                ms.len()
            );
            break;
        }
        let started = Instant::now();
        let got = call().await?;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        if got != answered {
            return Err(format!(
                "the answer changed while it was timed: {answered} then {got} members"
            ));
        }
    }
    if ms.is_empty() {
        return Err("no round was timed".to_owned());
    }
    let rounds = ms.len();
    let per_call = |before: u64, now: u64| now.saturating_sub(before) as f64 / 1e6 / rounds as f64;
    let client_ms = per_call(client_cpu, cpu(None));
    let server_ms = server_cpu.map(|before| per_call(before, cpu(o.server.as_deref())));
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{{\"backend\": \"{}\", \"query\": \"{}\", \"answered\": {answered}, \"rounds\": {rounds}, \"min_ms\": {:.1}, \"p50_ms\": {:.1}, \"p99_ms\": {:.1}, \"max_ms\": {:.1}, \"client_cpu_ms\": {client_ms:.1}{}}}",
        driver.backend(),
        format!("{query:?}").to_lowercase(),
        ms[0],
        at(0.5),
        at(0.99),
        ms[ms.len() - 1],
        server_ms.map_or(String::new(), |ms| format!(", \"server_cpu_ms\": {ms:.1}")),
    );
    Ok(())
}

/// The name of process `pid` (`/proc/PID/comm`).
fn comm(pid: &str) -> Option<String> {
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(name.trim_end().to_owned())
}

/// CPU time in ns so far of every thread of the processes `wanted` picks
/// (`/proc/PID/task/TID/schedstat`); 0 where `/proc` cannot be read.
fn cpu_ns(wanted: impl Fn(&str) -> bool) -> u64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in procs.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || !wanted(&pid) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(entry.path().join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}
