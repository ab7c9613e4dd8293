//! `servicegroup simulate`: the fleet simulator.
//!
//! N members spread over M [`ServiceGroup`] handles heartbeat against the configured
//! driver (each handle reports all its members in one driver call per tick). Observer
//! tasks ask for the group's down set (`members_in(group, State::Down)`: a database
//! ships only the down rows) and check single members all the time. A fraction of the
//! members is killed at random times (heartbeats stop, no leave) and watched until
//! judged down. The driver is wrapped in a [`timing::TimingDriver`] to time the
//! heartbeat batches. Per-member state is a few flat arrays ([`fleet::Fleet`]); no
//! task per member.
//!
//! `--baseline nova` runs Nova's own database driver instead ([`baseline`]): same
//! fleet, kill schedule and report, on the PostgreSQL of `db.url`; its observers list
//! the whole group and judge every row, as Nova does (it has no down-set query).

mod baseline;
mod fleet;
mod histogram;
mod report;
mod timing;
mod usage;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use servicegroup::config::duration;
use servicegroup::{
    DbConfig, Driver, ErrorKind, GroupId, Membership, Registry, ServiceGroup, State,
};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::args::{Baseline, GlobalArgs, SimulateArgs};
use crate::console;
use crate::failure::{describe, Failure, EXIT_DOWN, EXIT_OK};
use crate::settings;
use baseline::Nova;
use fleet::Fleet;
use histogram::Histogram;
use report::{Quantiles, Report};
use timing::{Stats, TimingDriver};

/// Defaults when neither a flag nor the configuration sets the intervals: short, so the
/// zero-setup run shows kills being detected within its ~20 s.
const DEMO_REPORT_INTERVAL: Duration = Duration::from_secs(1);
const DEMO_SERVICE_DOWN_TIME: Duration = Duration::from_secs(3);
/// Single-member checks an observer makes after each listing.
const CHECKS_PER_ROUND: usize = 8;
/// How often a run without a terminal logs a progress line.
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(10);

/// What is being measured.
enum System {
    /// Our driver (the configured one) behind `--handles` ServiceGroup handles.
    Ours {
        handles: Vec<ServiceGroup>,
        observer: ServiceGroup,
    },
    /// Nova's database driver, reproduced.
    Nova(Arc<Nova>),
}

impl System {
    fn name(&self) -> &str {
        match self {
            System::Ours { observer, .. } => observer.driver_name(),
            System::Nova(_) => "nova-db",
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the observers measured.
#[derive(Debug, Default)]
struct Observed {
    /// Group queries: down sets (ours) or full listings (the Nova baseline); the
    /// report's `listings` and `listing_latency_ms`.
    listings: AtomicU64,
    checks: AtomicU64,
    listing_latency: Mutex<Histogram>,
}

/// Shared state of one simulation.
struct Sim {
    group: GroupId,
    fleet: Fleet,
    stats: Arc<Stats>,
    observed: Observed,
    stop: AtomicBool,
    memberships: Mutex<Vec<Option<Membership>>>,
}

impl Sim {
    /// Whether the simulation is over.
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Runs the simulation and prints its report. Exit 0 when there were no false downs and
/// every killed member was judged down, 1 otherwise, 2 when it could not run.
pub async fn run(global: &GlobalArgs, args: SimulateArgs) -> Result<u8, Failure> {
    let loaded = settings::load(global)?;
    let mut config = loaded.config.clone();
    config.report_interval =
        args.report_interval
            .unwrap_or(if settings::is_default(&loaded, "report_interval") {
                DEMO_REPORT_INTERVAL
            } else {
                config.report_interval
            });
    config.service_down_time =
        args.service_down_time
            .unwrap_or(if settings::is_default(&loaded, "service_down_time") {
                DEMO_SERVICE_DOWN_TIME
            } else {
                config.service_down_time
            });
    let config = config.validated()?;
    let group = GroupId::new(args.group.clone().unwrap_or_else(default_group))?;
    if args.members == 0 {
        return Err(Failure::msg("--members must be at least 1"));
    }

    let stats = Arc::new(Stats::default());
    let ri = config.report_interval;
    let sdt = config.service_down_time;
    let budget = sdt + ri + Duration::from_secs(1);
    let sim = Arc::new(Sim {
        group: group.clone(),
        fleet: Fleet::new(args.members),
        stats: stats.clone(),
        observed: Observed::default(),
        stop: AtomicBool::new(false),
        memberships: Mutex::new(Vec::new()),
    });

    // The db driver's options: the Nova baseline talks to its database, with as many
    // connections as its pool.
    let db: DbConfig = config.driver_config(servicegroup::db::NAME)?;
    // The system under test: our driver behind ServiceGroup handles, or Nova's.
    let system = match args.baseline {
        None => {
            let inner = Registry::build(&config).await?;
            let driver: Arc<dyn Driver> = Arc::new(TimingDriver::new(inner, stats.clone()));
            let handles = (0..args.handles)
                .map(|_| ServiceGroup::with_driver(driver.clone(), config.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            let observer = ServiceGroup::with_driver(driver.clone(), config.clone())?;
            // Fail early and clearly when the backend cannot be reached at all (a
            // counting query where the backend has one: a `--group` that already holds
            // members ships no rows).
            observer.summary(&group).await?;
            *lock(&sim.memberships) = (0..args.members).map(|_| None).collect();
            System::Ours { handles, observer }
        }
        Some(Baseline::Nova) => {
            let nova = Nova::connect(db.url.as_ref(), db.timeout, sim.fleet.len()).await?;
            System::Nova(Arc::new(nova))
        }
    };
    crate::logging::running();
    tracing::debug!(
        driver = system.name(),
        group = %group,
        members = args.members,
        handles = args.handles,
        report_interval = %duration::render(ri),
        service_down_time = %duration::render(sdt),
        "simulation starting"
    );

    // 1. Join every member, a bounded number at a time.
    let join_mark = usage::mark(None);
    let join_started = Instant::now();
    let (joined, join_failures) = match &system {
        System::Ours { handles, .. } => {
            join_all(&sim, handles, args.join_batch, args.join_concurrency).await?
        }
        System::Nova(nova) => join_nova(&sim, nova, args.join_concurrency).await?,
    };
    let join_seconds = join_started.elapsed().as_secs_f64();

    // 2. The measured run: heartbeats, observers, kills.
    stats.reset_latency();
    let hb_before = stats.heartbeats.load(Ordering::SeqCst);
    let batches_before = stats.batches.load(Ordering::SeqCst);
    let run_mark = usage::mark(args.server_pid);
    let run_started = Instant::now();
    let mut workers = JoinSet::new();
    if let System::Nova(nova) = &system {
        // As many connections as ours gets from its pool, each busy with one
        // member's transaction at a time.
        let schedule = Arc::new(baseline::Schedule::new(run_started, ri));
        for _ in 0..db.pool_size.max(1) {
            workers.spawn(baseline::worker(
                sim.clone(),
                nova.clone(),
                schedule.clone(),
            ));
        }
    }
    let observe_interval = (ri / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
    let mut observers = JoinSet::new();
    for _ in 0..args.observers {
        match &system {
            System::Ours { observer, .. } => {
                observers.spawn(observe(sim.clone(), observer.clone(), observe_interval));
            }
            System::Nova(nova) => {
                observers.spawn(observe_nova(
                    sim.clone(),
                    nova.clone(),
                    sdt,
                    observe_interval,
                ));
            }
        }
    }
    let schedule = kill_schedule(&sim.fleet, args.kill, args.duration, budget);
    let kills_planned = schedule.len() as u64;
    let killer = tokio::spawn(kill(sim.clone(), schedule, run_started));

    let bar = ProgressBar::new(args.duration.as_millis() as u64)
        .with_style(style("{prefix:>9} [{elapsed_precise}] {wide_bar} {msg}"));
    bar.set_prefix("running");
    let run_end = run_started + args.duration;
    let mut last_line = Instant::now();
    while Instant::now() < run_end {
        tokio::time::sleep(Duration::from_millis(200).min(run_end - Instant::now())).await;
        bar.set_position(run_started.elapsed().as_millis() as u64);
        let message = progress_message(&sim, hb_before, run_started);
        if bar.is_hidden() && last_line.elapsed() >= PROGRESS_LINE_EVERY {
            // No terminal (a benchmark's log): a plain line now and then.
            tracing::info!(elapsed_s = run_started.elapsed().as_secs(), "{message}");
            last_line = Instant::now();
        }
        bar.set_message(message);
    }
    let run_seconds = run_started.elapsed().as_secs_f64();
    let heartbeats = stats.heartbeats.load(Ordering::SeqCst) - hb_before;
    let batches = stats.batches.load(Ordering::SeqCst) - batches_before;
    let simulator_usage = usage::simulator(join_mark, run_mark, joined);
    let server_usage = args
        .server_pid
        .map(|pid| usage::server(pid, run_mark, joined));
    bar.finish_and_clear();
    if killer.await.is_err() {
        return Err(Failure::msg("the simulator's kill task failed"));
    }

    // 3. Wait for the killed members still up to be judged down.
    let drain_deadline = Instant::now() + budget * 2;
    let bar = ProgressBar::new(kills_planned).with_style(style(
        "{prefix:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} killed members judged down",
    ));
    bar.set_prefix("detecting");
    while sim.fleet.detected() < sim.fleet.killed() && Instant::now() < drain_deadline {
        bar.set_position(sim.fleet.detected());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bar.finish_and_clear();
    sim.stop.store(true, Ordering::SeqCst);
    while observers.join_next().await.is_some() {}
    workers.abort_all();
    while workers.join_next().await.is_some() {}

    let killed = sim.fleet.killed();
    let detected = sim.fleet.detected();
    let false_downs = sim.fleet.false_downs();
    let listing_latency = lock(&sim.observed.listing_latency).clone();
    let lateness = match &system {
        System::Nova(nova) => Some(Quantiles::from(&*lock(&nova.lateness))),
        System::Ours { .. } => None,
    };
    let report = Report {
        driver: system.name().to_owned(),
        baseline: args.baseline.map(|_| "nova".to_owned()),
        group: group.to_string(),
        members: joined,
        join_failures,
        handles: match &system {
            System::Ours { .. } => args.handles,
            System::Nova(_) => db.pool_size,
        },
        observers: args.observers,
        join_seconds,
        duration_seconds: run_seconds,
        report_interval_seconds: ri.as_secs_f64(),
        service_down_time_seconds: sdt.as_secs_f64(),
        heartbeats,
        heartbeats_per_second: heartbeats as f64 / run_seconds.max(1e-9),
        heartbeat_batches: batches,
        heartbeat_batch_latency_ms: Quantiles::from(&stats.batch_latency()),
        heartbeat_lateness_ms: lateness,
        listings: sim.observed.listings.load(Ordering::SeqCst),
        listing_latency_ms: Quantiles::from(&listing_latency),
        checks: sim.observed.checks.load(Ordering::SeqCst),
        killed,
        detected,
        undetected: killed - detected,
        detection_delay_ms: Quantiles::from(&*sim.fleet.detection()),
        detection_budget_ms: budget.as_secs_f64() * 1000.0,
        false_downs,
        errors: stats.errors.snapshot(),
        simulator: simulator_usage,
        server: server_usage,
        ok: false_downs == 0 && detected == killed,
    };

    // 4. Clean up: leave the live members, remove the killed ones (Nova: one DELETE).
    match system {
        System::Ours { handles, observer } => {
            if args.keep {
                stats.close();
            } else {
                clean_up(&sim, &observer, args.cleanup_concurrency).await;
            }
            drop(handles);
        }
        System::Nova(nova) => {
            stats.close();
            if !args.keep {
                if let Err(error) = nova.clean_up(&sim).await {
                    tracing::warn!(group = %sim.group, "cleaning up nova_services failed: {error}");
                }
            }
        }
    }

    if args.json {
        let line = serde_json::to_string(&report)
            .map_err(|e| Failure::msg(format!("cannot encode the report as JSON: {e}")))?;
        console::line(line)?;
    } else {
        console::out(&report.text())?;
    }
    Ok(if report.ok { EXIT_OK } else { EXIT_DOWN })
}

/// `simulate-<UTC time>-<pid>`: a fresh group per run.
fn default_group() -> String {
    format!(
        "simulate-{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        std::process::id()
    )
}

/// Joins every member in batches of `batch` (one `join_many` each: one driver round
/// trip per chunk where the driver supports it), batches spread over the handles, at
/// most `concurrency` batches in flight. Returns (joined, failed); an error when none
/// could join.
async fn join_all(
    sim: &Arc<Sim>,
    handles: &[ServiceGroup],
    batch: u32,
    concurrency: u32,
) -> Result<(u64, u64), Failure> {
    let n = sim.fleet.len();
    // Every handle gets its share even when the fleet is smaller than handles * batch.
    let batch = (batch as usize).min(n.div_ceil(handles.len())).max(1);
    let bar = ProgressBar::new(n as u64).with_style(style(
        "{prefix:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} members",
    ));
    bar.set_prefix("joining");
    let mut set = JoinSet::new();
    let (mut next, mut batch_no, mut joined, mut failed) = (0usize, 0usize, 0u64, 0u64);
    let mut first_error = None;
    while next < n || !set.is_empty() {
        while next < n && set.len() < concurrency as usize {
            let sg = handles[batch_no % handles.len()].clone();
            let range = next..(next + batch).min(n);
            let ids: Vec<String> = range.clone().map(|i| sim.fleet.member_id(i)).collect();
            let group = sim.group.clone();
            set.spawn(async move { (range, sg.join_many(group, ids).await) });
            next += batch;
            batch_no += 1;
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        match done {
            Ok((range, Ok(memberships))) => {
                let mut slots = lock(&sim.memberships);
                for (i, membership) in range.zip(memberships) {
                    sim.fleet.mark_joined(i);
                    slots[i] = Some(membership);
                    joined += 1;
                }
                drop(slots);
                bar.set_position(joined);
            }
            Ok((range, Err(error))) => {
                sim.stats.errors.add(error.kind());
                failed += range.len() as u64;
                if first_error.is_none() {
                    tracing::warn!(
                        first = %sim.fleet.member_id(range.start),
                        members = range.len(),
                        "joining a batch failed: {}",
                        describe(&error)
                    );
                    first_error = Some(error);
                }
            }
            Err(join_error) => {
                tracing::warn!("join task failed: {join_error}");
            }
        }
    }
    bar.finish_and_clear();
    if joined == 0 {
        return Err(match first_error {
            Some(error) => Failure::from(error),
            None => Failure::msg("no member could join"),
        });
    }
    Ok((joined, failed))
}

/// Joins the Nova baseline's fleet: `concurrency` tasks, each with its own
/// connection, inserting a contiguous part of the fleet. Returns (joined, failed).
async fn join_nova(
    sim: &Arc<Sim>,
    nova: &Arc<Nova>,
    concurrency: u32,
) -> Result<(u64, u64), Failure> {
    let n = sim.fleet.len();
    let bar = ProgressBar::new(n as u64).with_style(style(
        "{prefix:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} members",
    ));
    bar.set_prefix("joining");
    let parts = (concurrency as usize).clamp(1, n);
    let per_part = n.div_ceil(parts);
    let mut set = JoinSet::new();
    for p in 0..parts {
        let range = (p * per_part)..((p + 1) * per_part).min(n);
        let (sim, nova, bar) = (sim.clone(), nova.clone(), bar.clone());
        set.spawn(async move {
            let mut conn = nova.connection().await?;
            let mut joined = 0;
            let mut start = range.start;
            while start < range.end {
                let end = (start + 10_000).min(range.end);
                joined += nova.join(&mut conn, &sim, start..end).await?;
                bar.inc((end - start) as u64);
                start = end;
            }
            Ok::<u64, servicegroup::Error>(joined)
        });
    }
    let (mut joined, mut first_error) = (0, None);
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(k)) => joined += k,
            Ok(Err(error)) => {
                sim.stats.errors.add(error.kind());
                first_error.get_or_insert(error);
            }
            Err(join_error) => tracing::warn!("join task failed: {join_error}"),
        }
    }
    bar.finish_and_clear();
    if let Some(error) = first_error {
        // All or nothing, so the measured fleet is the requested one.
        return Err(Failure::from(error));
    }
    Ok((joined, n as u64 - joined))
}

/// Picks `round(joined * fraction)` joined members and a random kill time for each in
/// `[10 %, duration - budget]` of the run (so detection fits in the run when it can).
fn kill_schedule(
    fleet: &Fleet,
    fraction: f64,
    run: Duration,
    budget: Duration,
) -> Vec<(Duration, usize)> {
    let mut rng = fastrand::Rng::new();
    let mut candidates: Vec<u32> = (0..fleet.len())
        .filter(|&i| fleet.is_joined(i))
        .map(|i| i as u32)
        .collect();
    let k = ((candidates.len() as f64) * fraction).round() as usize;
    // Partial Fisher-Yates: the first k are a uniform sample.
    for i in 0..k.min(candidates.len()) {
        let j = rng.usize(i..candidates.len());
        candidates.swap(i, j);
    }
    let earliest = run.mul_f64(0.1);
    let latest = run.saturating_sub(budget).max(earliest);
    let span = (latest - earliest).as_secs_f64();
    let mut schedule: Vec<(Duration, usize)> = candidates[..k]
        .iter()
        .map(|&i| {
            (
                earliest + Duration::from_secs_f64(span * rng.f64()),
                i as usize,
            )
        })
        .collect();
    schedule.sort_unstable();
    schedule
}

/// Kills members on schedule: marks them killed, then drops their membership
/// (heartbeats stop, the record stays: a crash).
async fn kill(sim: Arc<Sim>, schedule: Vec<(Duration, usize)>, started: Instant) {
    for (at, i) in schedule {
        tokio::time::sleep_until(started + at).await;
        sim.fleet.mark_killed(i);
        let membership = lock(&sim.memberships).get_mut(i).and_then(Option::take);
        if let Some(m) = membership {
            m.crash();
        }
    }
}

/// One observer: ask for the group's down set, check a few single members, pause,
/// repeat.
///
/// Every kill and every false down is a member judged down, so the down set
/// (`members_in(group, State::Down)`: stale, expired or forced down) is all an
/// observer needs to see them; a database answers it with one query that ships only
/// the down rows, instead of the whole group each round. What is measured is
/// unchanged: each member of the down set is a detection (killed) or a false down
/// (live), exactly as the down members of a full listing were.
async fn observe(sim: Arc<Sim>, sg: ServiceGroup, pause: Duration) {
    let mut rng = fastrand::Rng::new();
    let n = sim.fleet.len();
    while !sim.stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let mut listed_in = Duration::ZERO;
        match sg.members_in(&sim.group, State::Down).await {
            Ok(down) => {
                listed_in = started.elapsed();
                lock(&sim.observed.listing_latency).record(listed_in);
                sim.observed.listings.fetch_add(1, Ordering::Relaxed);
                // Core re-checks every record against the rule; the filter only
                // states what the loop relies on.
                for m in down.iter().filter(|m| m.state == State::Down) {
                    if let Some(i) = sim.fleet.index_of(m.member.as_str()) {
                        sim.fleet.judged_down(i, m.member.as_str());
                    }
                }
            }
            Err(error) => sim.stats.errors.add(error.kind()),
        }
        for _ in 0..CHECKS_PER_ROUND {
            let i = rng.usize(..n);
            if !sim.fleet.is_joined(i) {
                continue;
            }
            let id = sim.fleet.member_id(i);
            match sg.member(&sim.group, id.as_str()).await {
                Ok(status) => {
                    sim.observed.checks.fetch_add(1, Ordering::Relaxed);
                    if !status.is_up() {
                        sim.fleet.judged_down(i, &id);
                    }
                }
                Err(error) => sim.stats.errors.add(error.kind()),
            }
        }
        tokio::time::sleep(observer_pause(pause, listed_in)).await;
    }
}

/// The pause after a group query that took `listed_in`: at least `pause`, and twice
/// its time, so observers of a huge group (a Nova listing of 1,000,000 members takes
/// seconds) spend at most a third of their time querying and never starve heartbeats.
fn observer_pause(pause: Duration, listed_in: Duration) -> Duration {
    pause.max(listed_in * 2)
}

/// One observer of the Nova baseline: list the group (`service_get_all_by_topic`),
/// judge every row on the client clock, check a few single members, pause, repeat.
async fn observe_nova(sim: Arc<Sim>, nova: Arc<Nova>, sdt: Duration, pause: Duration) {
    let mut rng = fastrand::Rng::new();
    let n = sim.fleet.len();
    let mut conn = None;
    while !sim.stop.load(Ordering::SeqCst) {
        if conn.is_none() {
            match nova.connection().await {
                Ok(c) => conn = Some(c),
                Err(error) => {
                    sim.stats.errors.add(error.kind());
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let started = Instant::now();
        let listed_in;
        match nova.list(c, &sim, sdt).await {
            Ok(rows) => {
                listed_in = started.elapsed();
                lock(&sim.observed.listing_latency).record(listed_in);
                sim.observed.listings.fetch_add(1, Ordering::Relaxed);
                for (i, _) in rows.into_iter().filter(|(_, up)| !up) {
                    sim.fleet.judged_down(i, &sim.fleet.member_id(i));
                }
            }
            Err(error) => {
                sim.stats.errors.add(error.kind());
                conn = None;
                continue;
            }
        }
        for _ in 0..CHECKS_PER_ROUND {
            let i = rng.usize(..n);
            if !sim.fleet.is_joined(i) {
                continue;
            }
            let Some(c) = conn.as_mut() else { break };
            match nova.check(c, &sim, i, sdt).await {
                Ok(Some(up)) => {
                    sim.observed.checks.fetch_add(1, Ordering::Relaxed);
                    if !up {
                        sim.fleet.judged_down(i, &sim.fleet.member_id(i));
                    }
                }
                Ok(None) => sim.stats.errors.add(ErrorKind::NotFound),
                Err(error) => {
                    sim.stats.errors.add(error.kind());
                    conn = None;
                }
            }
        }
        tokio::time::sleep(observer_pause(pause, listed_in)).await;
    }
}

fn progress_message(sim: &Sim, hb_before: u64, started: Instant) -> String {
    let hb = sim.stats.heartbeats.load(Ordering::Relaxed) - hb_before;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    format!(
        "{:.0} hb/s, killed {}, judged down {}, false downs {}",
        hb as f64 / secs,
        sim.fleet.killed(),
        sim.fleet.detected(),
        sim.fleet.false_downs()
    )
}

/// Leaves every live member and removes every killed one, a bounded number at a time.
/// Failures are logged, not reported: the measurement is over.
async fn clean_up(sim: &Arc<Sim>, observer: &ServiceGroup, concurrency: u32) {
    let memberships: Vec<(usize, Membership)> = lock(&sim.memberships)
        .iter_mut()
        .enumerate()
        .filter_map(|(i, m)| m.take().map(|m| (i, m)))
        .collect();
    let killed: Vec<usize> = (0..sim.fleet.len())
        .filter(|&i| sim.fleet.is_joined(i) && sim.fleet.is_killed(i))
        .collect();
    let bar = ProgressBar::new((memberships.len() + killed.len()) as u64).with_style(style(
        "{prefix:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} records",
    ));
    bar.set_prefix("cleaning");
    let mut set = JoinSet::new();
    let mut failures = 0u64;
    let mut tasks = memberships.into_iter().map(|(_, m)| Op::Leave(m)).chain(
        killed
            .into_iter()
            .map(|i| Op::Remove(sim.fleet.member_id(i))),
    );
    loop {
        while set.len() < concurrency as usize {
            let Some(op) = tasks.next() else { break };
            let (sg, group) = (observer.clone(), sim.group.clone());
            set.spawn(async move {
                match op {
                    Op::Leave(m) => m.leave().await,
                    Op::Remove(id) => match sg.remove(&group, id.as_str()).await {
                        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                        other => other,
                    },
                }
            });
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        bar.inc(1);
        if !matches!(done, Ok(Ok(()))) {
            failures += 1;
        }
    }
    sim.stats.close();
    bar.finish_and_clear();
    if failures > 0 {
        tracing::warn!(
            failures,
            group = %sim.group,
            "some member records could not be cleaned up; `servicegroup remove` them or let them stay down"
        );
    }
}

/// One clean-up step.
enum Op {
    Leave(Membership),
    Remove(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use servicegroup::inproc::InprocDriver;
    use servicegroup::{
        async_trait, Beats, Capabilities, Config, HeartbeatReport, HolderUpdate, InstanceId,
        MemberKey, MemberRecord, Metadata, Registered, Registration, Summary,
    };

    /// The in-process driver, counting the group queries that reach it.
    #[derive(Debug)]
    struct Counting {
        inner: InprocDriver,
        lists: AtomicU64,
        down_sets: AtomicU64,
        up_sets: AtomicU64,
    }

    #[async_trait]
    impl Driver for Counting {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        async fn register(&self, r: &Registration) -> servicegroup::Result<Registered> {
            self.inner.register(r).await
        }
        async fn heartbeat(&self, batch: &[Beats<'_>]) -> servicegroup::Result<HeartbeatReport> {
            self.inner.heartbeat(batch).await
        }
        async fn remove(
            &self,
            key: &MemberKey,
            holder: Option<InstanceId>,
        ) -> servicegroup::Result<bool> {
            self.inner.remove(key, holder).await
        }
        async fn set_metadata(
            &self,
            key: &MemberKey,
            instance: InstanceId,
            metadata: &Metadata,
        ) -> servicegroup::Result<HolderUpdate> {
            self.inner.set_metadata(key, instance, metadata).await
        }
        async fn set_forced_down(&self, key: &MemberKey, on: bool) -> servicegroup::Result<bool> {
            self.inner.set_forced_down(key, on).await
        }
        async fn get(&self, key: &MemberKey) -> servicegroup::Result<Option<MemberRecord>> {
            self.inner.get(key).await
        }
        async fn list(&self, group: &GroupId) -> servicegroup::Result<Vec<MemberRecord>> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            self.inner.list(group).await
        }
        async fn list_in(
            &self,
            group: &GroupId,
            state: State,
            sdt: Duration,
        ) -> servicegroup::Result<Vec<MemberRecord>> {
            match state {
                State::Down => &self.down_sets,
                State::Up => &self.up_sets,
            }
            .fetch_add(1, Ordering::SeqCst);
            self.inner.list_in(group, state, sdt).await
        }
        async fn summary(&self, group: &GroupId, sdt: Duration) -> servicegroup::Result<Summary> {
            self.inner.summary(group, sdt).await
        }
        async fn groups(&self) -> servicegroup::Result<Vec<GroupId>> {
            self.inner.groups().await
        }
    }

    /// An observer asks for the down set only (through the timing driver, which must
    /// pass the query on rather than list the group), and still sees both a kill (a
    /// detection) and a live member forced down (a false down).
    #[test]
    fn observers_ask_for_the_down_set_and_see_kills_and_false_downs() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let counting = Arc::new(Counting {
                inner: InprocDriver::new(&format!("observe-{}", std::process::id())),
                lists: AtomicU64::new(0),
                down_sets: AtomicU64::new(0),
                up_sets: AtomicU64::new(0),
            });
            let stats = Arc::new(Stats::default());
            let driver: Arc<dyn Driver> =
                Arc::new(TimingDriver::new(counting.clone(), stats.clone()));
            let mut config = Config::with_driver("inproc");
            config.report_interval = Duration::from_millis(100);
            config.service_down_time = Duration::from_millis(600);
            let sg = ServiceGroup::with_driver(driver, config).unwrap();
            let group = GroupId::new("observed").unwrap();
            let sim = Arc::new(Sim {
                group: group.clone(),
                fleet: Fleet::new(3),
                stats,
                observed: Observed::default(),
                stop: AtomicBool::new(false),
                memberships: Mutex::new(Vec::new()),
            });
            let ids: Vec<String> = (0..3).map(|i| sim.fleet.member_id(i)).collect();
            let mut memberships = sg.join_many(&group, ids.clone()).await.unwrap();
            for i in 0..3 {
                sim.fleet.mark_joined(i);
            }
            // m1 crashes; m2 lives on but is forced down.
            sim.fleet.mark_killed(1);
            memberships.remove(1).crash();
            sg.set_forced_down(&group, ids[2].as_str(), true)
                .await
                .unwrap();
            counting.lists.store(0, Ordering::SeqCst);

            let observer =
                tokio::spawn(observe(sim.clone(), sg.clone(), Duration::from_millis(20)));
            let deadline = Instant::now() + Duration::from_secs(10);
            while sim.fleet.detected() < 1 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sim.stop.store(true, Ordering::SeqCst);
            observer.await.unwrap();

            assert_eq!(sim.fleet.detected(), 1, "the kill was never seen");
            assert_eq!(sim.fleet.false_downs(), 1, "the forced-down member");
            let down_sets = counting.down_sets.load(Ordering::SeqCst);
            assert!(down_sets > 0);
            assert_eq!(
                sim.observed.listings.load(Ordering::SeqCst),
                down_sets,
                "each observer query is one down-set query at the driver"
            );
            assert_eq!(counting.lists.load(Ordering::SeqCst), 0, "a whole listing");
            assert_eq!(counting.up_sets.load(Ordering::SeqCst), 0);
            drop(memberships);
        });
    }
}
