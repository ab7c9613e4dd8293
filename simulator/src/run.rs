//! [`Simulation`]: prepare (build the system under test, reach the backend), then run
//! (join the fleet, heartbeat, observe, kill, wait for detections, clean up) and
//! return the [`Report`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use servicegroup::config::duration;
use servicegroup::{Config, GroupId, Membership, ServiceGroup};
use tokio::task::JoinSet;
use tokio::time::Instant;

#[cfg(feature = "nova")]
use crate::baseline::{self, Nova};
use crate::fleet::Fleet;
use crate::latency::Latency;
use crate::report::{Quantiles, Report};
use crate::timing::Stats;
use crate::topology::{self, Plan};
use crate::{chaos, cleanup, connections, join, observe, usage};
use crate::{Baseline, Error, Observe, Options, Topology};

/// How often a run without a terminal logs a progress line.
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(10);

/// Locks a mutex, taking over a poisoned one (the data are counters).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A progress bar on stderr with `template`, hidden unless `progress`.
pub(crate) fn bar(progress: bool, len: u64, template: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(len).with_style(style)
}

/// What the observers measured.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// Group queries: down sets (ours) or full listings (the Nova baseline); the
    /// report's `listings` and `listing_latency_ms`.
    pub listings: AtomicU64,
    pub checks: AtomicU64,
    pub listing_latency: Mutex<Latency>,
}

/// Shared state of one simulation.
pub(crate) struct Sim {
    pub group: GroupId,
    pub fleet: Fleet,
    pub stats: Arc<Stats>,
    pub observed: Observed,
    pub stop: AtomicBool,
    pub memberships: Mutex<Vec<Option<Membership>>>,
    /// Whether progress bars are shown.
    pub progress: bool,
}

impl Sim {
    /// A simulation of `members` in `group`, nothing joined yet.
    pub fn new(group: GroupId, members: u32, stats: Arc<Stats>, progress: bool) -> Self {
        Self {
            group,
            fleet: Fleet::new(members),
            stats,
            observed: Observed::default(),
            stop: AtomicBool::new(false),
            memberships: Mutex::new(Vec::new()),
            progress,
        }
    }

    /// Whether the simulation is over.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// What is being measured.
enum System {
    /// Our driver (the configured one) behind ServiceGroup handles.
    Ours {
        handles: Vec<ServiceGroup>,
        observer: ServiceGroup,
        driver_instances: u64,
    },
    /// Nova's database driver, reproduced, with as many worker connections as ours
    /// gets from its pool.
    #[cfg(feature = "nova")]
    Nova { nova: Arc<Nova>, pool_size: u32 },
}

/// A simulation ready to run: the handles (or the Nova baseline) are built and the
/// backend answered. [`run`](Self::run) measures and returns the report.
pub struct Simulation {
    config: Config,
    options: Options,
    sim: Arc<Sim>,
    system: System,
    fds: connections::Mark,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("driver", &self.driver_name())
            .field("group", &self.sim.group)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// `simulate-<UTC time>-<pid>`: a fresh group per run.
fn default_group() -> String {
    format!(
        "simulate-{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        std::process::id()
    )
}

impl Simulation {
    /// Checks `options`, validates `config` (its `report_interval` and
    /// `service_down_time` are the simulation's), builds the driver instances and
    /// handles of the chosen [`Topology`] through the registry by the configured
    /// driver's name (or connects the Nova baseline), and asks the backend once, so an
    /// unreachable backend fails here, clearly.
    pub async fn prepare(config: Config, options: Options) -> Result<Self, Error> {
        options.validate()?;
        let config = config.validated()?;
        let group = GroupId::new(options.group.clone().unwrap_or_else(default_group))?;
        let stats = Arc::new(Stats::default());
        let sim = Arc::new(Sim::new(
            group.clone(),
            options.members,
            stats.clone(),
            options.progress,
        ));
        let fds = connections::mark();
        let system = match options.baseline {
            None => {
                let built = topology::build(
                    Plan {
                        config: &config,
                        topology: options.topology,
                        handles: options.handles,
                        processes: options.members,
                        processes_per_driver: options.processes_per_driver,
                        concurrency: options.join_concurrency,
                    },
                    &stats,
                )
                .await?;
                // Fail early and clearly when the backend cannot be reached at all (a
                // counting query where the backend has one: a `--group` that already
                // holds members ships no rows).
                built.observer.summary(&group).await?;
                *lock(&sim.memberships) = (0..options.members).map(|_| None).collect();
                System::Ours {
                    handles: built.handles,
                    observer: built.observer,
                    driver_instances: built.driver_instances,
                }
            }
            Some(Baseline::Nova) => nova_system(&config, &sim).await?,
        };
        Ok(Self {
            config,
            options,
            sim,
            system,
            fds,
        })
    }

    /// The driver measured (`nova-db` for the Nova baseline).
    pub fn driver_name(&self) -> &str {
        match &self.system {
            System::Ours { observer, .. } => observer.driver_name(),
            #[cfg(feature = "nova")]
            System::Nova { .. } => "nova-db",
        }
    }

    /// Runs the simulation: joins every member, runs for `duration` with heartbeats,
    /// observers and kills, waits (at most twice the detection budget) for the killed
    /// members to be judged down, cleans up (unless `keep`) and returns the report.
    pub async fn run(self) -> Result<Report, Error> {
        let Self {
            config,
            options,
            sim,
            system,
            fds,
        } = self;
        let stats = sim.stats.clone();
        let ri = config.report_interval;
        let sdt = config.service_down_time;
        let budget = sdt + ri + Duration::from_secs(1);
        let driver = match &system {
            System::Ours { observer, .. } => observer.driver_name().to_owned(),
            #[cfg(feature = "nova")]
            System::Nova { .. } => "nova-db".to_owned(),
        };
        tracing::debug!(
            driver = %driver,
            group = %sim.group,
            members = options.members,
            topology = options.topology.name(),
            handles = options.handles,
            report_interval = %duration::render(ri),
            service_down_time = %duration::render(sdt),
            "simulation starting"
        );

        // 1. Join every member, a bounded number at a time.
        let join_mark = usage::mark(&[]);
        let join_started = Instant::now();
        let joining = async {
            match &system {
                System::Ours { handles, .. } => {
                    join::join_all(&sim, handles, options.join_batch, options.join_concurrency)
                        .await
                }
                #[cfg(feature = "nova")]
                System::Nova { nova, .. } => {
                    baseline::join_nova(&sim, nova, options.join_concurrency).await
                }
            }
        };
        let (joined, join_failures) =
            match tokio::time::timeout(options.join_timeout, joining).await {
                Ok(result) => result?,
                Err(_) => {
                    // The batches in flight were dropped with the join: what they stored
                    // stays behind as down records (no membership came back to leave).
                    let joined = (0..sim.fleet.len())
                        .filter(|&i| sim.fleet.is_joined(i))
                        .count() as u64;
                    tracing::warn!(
                        group = %sim.group,
                        joined,
                        members = options.members,
                        join_timeout = %duration::render(options.join_timeout),
                        "the fleet did not finish joining in time; cleaning up"
                    );
                    clean_up(system, &sim, &options).await;
                    return Err(Error::JoinTimedOut {
                        after: options.join_timeout,
                        joined,
                        members: options.members,
                    });
                }
            };
        let join_seconds = join_started.elapsed().as_secs_f64();
        let connections_joined = connections::since(&fds);

        // 2. The measured run: heartbeats, observers, kills.
        stats.reset_latency();
        let hb_before = stats.heartbeats.load(Ordering::SeqCst);
        let batches_before = stats.batches.load(Ordering::SeqCst);
        let run_mark = usage::mark(&options.server_pids);
        let relay_marks: Vec<(u32, usage::Mark)> = options
            .relay_pids
            .iter()
            .map(|&pid| (pid, usage::mark(&[pid])))
            .collect();
        let run_started = Instant::now();
        #[allow(unused_mut)] // only the Nova baseline has workers
        let mut workers: JoinSet<()> = JoinSet::new();
        #[cfg(feature = "nova")]
        if let System::Nova { nova, pool_size } = &system {
            // As many connections as ours gets from its pool, each busy with one
            // member's transaction at a time.
            let schedule = Arc::new(baseline::Schedule::new(run_started, ri));
            for _ in 0..(*pool_size).max(1) {
                workers.spawn(baseline::worker(
                    sim.clone(),
                    nova.clone(),
                    schedule.clone(),
                ));
            }
        }
        let observe_interval =
            (ri / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
        let mut observers = JoinSet::new();
        for _ in 0..options.observers {
            match &system {
                System::Ours { observer, .. } => match options.observe {
                    Observe::DownSet => {
                        observers.spawn(observe::observe(
                            sim.clone(),
                            observer.clone(),
                            observe_interval,
                        ));
                    }
                    Observe::Watch => {
                        observers.spawn(observe::watch(sim.clone(), observer.clone()));
                    }
                },
                #[cfg(feature = "nova")]
                System::Nova { nova, .. } => {
                    observers.spawn(baseline::observe_nova(
                        sim.clone(),
                        nova.clone(),
                        sdt,
                        observe_interval,
                    ));
                }
            }
        }
        let schedule = chaos::kill_schedule(&sim.fleet, options.kill, options.duration, budget);
        let kills_planned = schedule.len() as u64;
        let killer = tokio::spawn(chaos::kill(sim.clone(), schedule, run_started));

        let progress = bar(
            options.progress,
            options.duration.as_millis() as u64,
            "{prefix:>9} [{elapsed_precise}] {wide_bar} {msg}",
        );
        progress.set_prefix("running");
        let run_end = run_started + options.duration;
        let mut last_line = Instant::now();
        while Instant::now() < run_end {
            tokio::time::sleep(Duration::from_millis(200).min(run_end - Instant::now())).await;
            progress.set_position(run_started.elapsed().as_millis() as u64);
            let message = progress_message(&sim, hb_before, run_started);
            if progress.is_hidden() && last_line.elapsed() >= PROGRESS_LINE_EVERY {
                // No terminal (a benchmark's log): a plain line now and then.
                tracing::info!(elapsed_s = run_started.elapsed().as_secs(), "{message}");
                last_line = Instant::now();
            }
            progress.set_message(message);
        }
        let run_seconds = run_started.elapsed().as_secs_f64();
        let heartbeats = stats.heartbeats.load(Ordering::SeqCst) - hb_before;
        let batches = stats.batches.load(Ordering::SeqCst) - batches_before;
        let simulator_usage = usage::simulator(join_mark, run_mark, joined);
        let server_usage = usage::server(&options.server_pids, run_mark, joined);
        let relays: Vec<usage::ServerUsage> = relay_marks
            .iter()
            .filter_map(|&(pid, mark)| usage::server(&[pid], mark, joined))
            .collect();
        let relay_cpu_us_per_heartbeat = relays
            .iter()
            .map(|r| r.cpu_seconds)
            .sum::<Option<f64>>()
            .filter(|_| !relays.is_empty() && batches > 0)
            .map(|cpu| (cpu * 1e6 / batches as f64 * 100.0).round() / 100.0);
        let connections_run = connections::since(&fds);
        progress.finish_and_clear();
        if killer.await.is_err() {
            return Err(Error::Task("kill"));
        }

        // 3. Wait for the killed members still up to be judged down.
        let drain_deadline = Instant::now() + budget * 2;
        let progress = bar(
            options.progress,
            kills_planned,
            "{prefix:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} killed members judged down",
        );
        progress.set_prefix("detecting");
        while sim.fleet.detected() < sim.fleet.killed() && Instant::now() < drain_deadline {
            progress.set_position(sim.fleet.detected());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        progress.finish_and_clear();
        sim.stop.store(true, Ordering::SeqCst);
        while observers.join_next().await.is_some() {}
        workers.abort_all();
        while workers.join_next().await.is_some() {}

        let killed = sim.fleet.killed();
        let detected = sim.fleet.detected();
        let false_downs = sim.fleet.false_downs();
        let listing_latency = lock(&sim.observed.listing_latency).clone();
        let (lateness, handles, processes_per_driver, driver_instances) = match &system {
            System::Ours {
                driver_instances,
                handles,
                ..
            } => (
                None,
                handles.len() as u32,
                (options.topology == Topology::PerProcess).then_some(options.processes_per_driver),
                Some(*driver_instances),
            ),
            #[cfg(feature = "nova")]
            System::Nova { nova, pool_size } => (
                Some(Quantiles::from(&*lock(&nova.lateness))),
                *pool_size,
                None,
                None,
            ),
        };
        let report = Report {
            driver,
            baseline: options.baseline.map(|_| "nova".to_owned()),
            group: sim.group.to_string(),
            members: joined,
            join_failures,
            handles,
            topology: options.topology.name().to_owned(),
            processes_per_driver,
            driver_instances,
            connections: match (connections_joined, connections_run) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            observers: options.observers,
            observe: options.observe.name().to_owned(),
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
            relays,
            relay_cpu_us_per_heartbeat,
            ok: false_downs == 0 && detected == killed,
        };

        // 4. Clean up: leave the live members, remove the killed ones.
        clean_up(system, &sim, &options).await;
        Ok(report)
    }
}

/// Leaves the live members and removes the killed ones (Nova: one DELETE), unless
/// `keep`; closes the statistics either way.
async fn clean_up(system: System, sim: &Arc<Sim>, options: &Options) {
    match system {
        System::Ours {
            handles, observer, ..
        } => {
            if options.keep {
                sim.stats.close();
            } else {
                cleanup::clean_up(sim, &observer, options.cleanup_concurrency).await;
            }
            drop(handles);
        }
        #[cfg(feature = "nova")]
        System::Nova { nova, .. } => {
            sim.stats.close();
            if !options.keep {
                if let Err(error) = nova.clean_up(sim).await {
                    tracing::warn!(group = %sim.group, "cleaning up nova_services failed: {error}");
                }
            }
        }
    }
}

/// Prepares and runs one simulation: [`Simulation::prepare`] then
/// [`Simulation::run`].
pub async fn run(config: Config, options: Options) -> Result<Report, Error> {
    Simulation::prepare(config, options).await?.run().await
}

/// The Nova baseline on the PostgreSQL of `db.url`, with `db.pool_size` workers.
#[cfg(feature = "nova")]
async fn nova_system(config: &Config, sim: &Sim) -> Result<System, Error> {
    let db: servicegroup::DbConfig = config.driver_config(servicegroup::db::NAME)?;
    let nova = Nova::connect(db.url.as_ref(), db.timeout, sim.fleet.len()).await?;
    Ok(System::Nova {
        nova: Arc::new(nova),
        pool_size: db.pool_size,
    })
}

/// Without the `nova` feature there is no baseline to run.
#[cfg(not(feature = "nova"))]
async fn nova_system(_config: &Config, _sim: &Sim) -> Result<System, Error> {
    Err(Error::Baseline(
        "this build of the simulator has no Nova baseline (servicegroup-simulator's `nova` feature)"
            .to_owned(),
    ))
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
