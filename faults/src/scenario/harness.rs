//! What every scenario shares: a row's servers ([`Deployment`]), optional proxies in
//! front of them, the fleet, the observer, one member forced down by an operator
//! (its flag must survive the fault where the backend is durable), and
//! [`Harness::finish`], which judges the common expectations: zero false downs,
//! every live member up within the recovery window after the last fault, nobody
//! missing afterwards, the flag kept.

use std::path::PathBuf;
use std::time::Duration;

use servicegroup::State;
use tokio::time::Instant;

use crate::backend::{BackendName, Deployment, Target};
use crate::error::{FaultsError, Result};
use crate::fleet::{member_id, Fleet, Launch};
use crate::observer::Observer;
use crate::proxy::FaultProxy;
use crate::report::Row;
use crate::scenario::disk::SmallFs;
use crate::scenario::ScenarioName;
use crate::Context;

/// How a scenario wants its harness.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Put a [`FaultProxy`] in front of every upstream; members and observer use them.
    pub proxied: bool,
    /// Environment for memcached's script (`SG_MEMCACHED_MEMORY`).
    pub memcached_env: Vec<(String, String)>,
    /// Whether the forced-down flag is expected to survive (durable backends).
    pub durable_flag: Option<bool>,
    /// Put the row's files (the SQLite file) on a tmpfs of this many MiB.
    pub small_fs_mib: Option<u32>,
    /// Add a streaming standby to the PostgreSQL primary (clients get both hosts).
    pub standby: bool,
}

/// A running scenario.
#[derive(Debug)]
pub struct Harness {
    /// The context.
    pub ctx: Context,
    /// This row's directory.
    pub dir: PathBuf,
    /// The servers.
    pub deployment: Deployment,
    /// The proxies (empty unless [`Setup::proxied`]).
    pub proxies: Vec<FaultProxy>,
    /// What members and observer use.
    pub target: Target,
    /// The member processes.
    pub fleet: Fleet,
    /// The observer.
    pub observer: Observer,
    /// The group.
    pub group: String,
    /// The member forced down before the fault.
    pub forced: String,
    /// The row being filled.
    pub row: Row,
    durable_flag: bool,
    fault_ended: Option<Instant>,
    // Last: unmounted after everything using it stopped.
    _small_fs: Option<SmallFs>,
}

/// Whether a backend keeps the forced-down flag through restarts and evictions.
pub fn durable(backend: BackendName) -> bool {
    !matches!(backend, BackendName::Memcached | BackendName::Memcached3)
}

impl Harness {
    /// Starts servers, proxies, the fleet (the context's size) and the observer; forces
    /// member `m00000` down (it keeps heartbeating: the flag must win and last).
    pub async fn start(
        ctx: &Context,
        scenario: ScenarioName,
        backend: BackendName,
        setup: Setup,
    ) -> Result<Self> {
        let dir = ctx
            .work
            .join(format!("{}-{}", scenario.as_str(), backend.as_str()));
        if dir.exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| FaultsError::io(format!("create {}", dir.display()), e))?;
        let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
        let (small_fs, store_dir) = match setup.small_fs_mib {
            Some(mib) => {
                let path = dir.join("fs");
                (Some(SmallFs::mount(&path, mib)?), path)
            }
            None => (None, dir.clone()),
        };
        let mut deployment =
            Deployment::start(ctx, backend, &store_dir, setup.memcached_env.clone()).await?;
        if setup.standby {
            deployment.add_standby(&dir.join("standby")).await?;
        }
        let mut proxies = Vec::new();
        let target = if setup.proxied {
            proxies = FaultProxy::start_all(&deployment.upstreams())
                .await
                .map_err(|e| FaultsError::io("start proxies", e))?;
            let addrs: Vec<_> = proxies.iter().map(FaultProxy::addr).collect();
            deployment.target_via(Some(&addrs))
        } else {
            deployment.target()
        };
        let group = format!("faults-{}", scenario.as_str());
        let launch = Launch {
            exe: ctx.exe.clone(),
            target: target.clone(),
            group: group.clone(),
            log_dir: dir.clone(),
        };
        let fleet = Fleet::start(launch, ctx.processes, ctx.per_process).await?;
        let forced = member_id(0);
        let observer = Observer::start(
            &target,
            &group,
            fleet.ids().into_iter().filter(|m| *m != forced),
            ctx.timing.grace(),
        )
        .await?;
        observer
            .handle()
            .set_forced_down(group.as_str(), forced.as_str(), true)
            .await
            .map_err(|e| FaultsError::library("force a member down", e))?;
        let mut row = Row::new(&scenario.to_string(), backend.as_str());
        row.note(format!(
            "{} members in {} processes",
            ctx.processes * ctx.per_process,
            ctx.processes
        ));
        Ok(Self {
            ctx: ctx.clone(),
            dir,
            deployment,
            proxies,
            target,
            fleet,
            observer,
            group,
            forced,
            row,
            durable_flag: setup.durable_flag.unwrap_or_else(|| durable(backend)),
            fault_ended: None,
            _small_fs: small_fs,
        })
    }

    /// Lets the fleet run for `d` (a baseline, or the length of a fault).
    pub async fn run_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// The fault is being ended (the action that ends it starts now): readings until
    /// [`Harness::fault_ended`] count as recovering.
    pub fn fault_ending(&self) {
        self.observer.fault_ending();
    }

    /// The last fault ended now (recovery is timed from here).
    pub fn fault_ended(&mut self) {
        self.observer.fault_ended();
        self.fault_ended = Some(Instant::now());
    }

    /// `service_down_time + 2 s`: how long a fault lasts.
    pub fn fault_length(&self) -> Duration {
        self.ctx.timing.service_down_time + Duration::from_secs(2)
    }

    /// Waits for recovery after the last fault and checks it is within the window;
    /// returns it. Records a failure when it is not.
    pub async fn expect_recovery(&mut self) -> Option<Duration> {
        let limit = self.ctx.timing.grace();
        let recovered = self.observer.recovered(Duration::from_secs(30)).await;
        match recovered {
            Some(d) if d <= limit => {}
            Some(d) => self.row.fail(format!(
                "live members took {:.2} s to be listed up again (limit {:.1} s)",
                d.as_secs_f64(),
                limit.as_secs_f64()
            )),
            None => self
                .row
                .fail("live members were not all listed up within 30 s of the fault's end"),
        }
        self.row.recovery = recovered;
        recovered
    }

    /// Ends the scenario: waits for recovery (if a fault ended and it was not awaited
    /// yet), lets the fleet run 2 s more, takes a final listing and fills the row.
    pub async fn finish(mut self) -> Result<Row> {
        if self.fault_ended.is_some() && self.row.recovery.is_none() {
            self.expect_recovery().await;
        }
        self.run_for(Duration::from_secs(2)).await;
        let listing = self.observer.listing(Duration::from_secs(20)).await?;
        let (missing, down) = self.observer.lost_in(&listing);
        self.row.members_lost = missing.len() as u64;
        if !missing.is_empty() {
            self.row.fail(format!(
                "{} live member(s) missing from the final listing (first {})",
                missing.len(),
                missing[0]
            ));
        }
        if !down.is_empty() {
            self.row.fail(format!(
                "{} live member(s) down in the final listing (first {})",
                down.len(),
                down[0]
            ));
        }
        let flag = listing.iter().find(|m| m.member.as_str() == self.forced);
        let kept = flag.is_some_and(|m| m.forced_down && m.state == State::Down);
        self.row.records_lost = Some(u64::from(!kept));
        if !kept {
            if self.durable_flag {
                self.row
                    .fail(format!("the forced-down flag of {} was lost", self.forced));
            } else {
                self.row.note(format!(
                    "forced-down flag of {} lost: memcached keeps it only in memory, and a restart empties it",
                    self.forced
                ));
            }
        }
        let tally = self.observer.tally();
        self.row.false_downs = tally.false_down_members.len() as u64;
        if self.row.false_downs > 0 {
            let first = tally
                .false_down_members
                .iter()
                .next()
                .cloned()
                .unwrap_or_default();
            self.row.fail(format!(
                "{} live member(s) listed down ({} readings; first {first})",
                self.row.false_downs, tally.false_down_readings
            ));
        }
        if tally.missing_readings > 0 {
            self.row.fail(format!(
                "{} readings of a live member missing from a listing outside the recovery window",
                tally.missing_readings
            ));
        }
        if tally.recovering_readings > 0 {
            self.row.note(format!(
                "{} down readings inside the recovery window",
                tally.recovering_readings
            ));
        }
        let live: std::collections::BTreeSet<String> = self
            .fleet
            .ids()
            .into_iter()
            .filter(|m| *m != self.forced)
            .collect();
        let watch_downs = tally
            .events
            .iter()
            .filter(|e| e.kind == servicegroup::EventKind::Down && live.contains(&e.member))
            .count();
        if watch_downs > 0 {
            self.row.note(format!(
                "watch reported {watch_downs} down event(s) of live members"
            ));
        }
        self.row.member_errors = self.fleet.errors_by_kind();
        let mut observer_errors = tally.errors.clone();
        for (k, n) in &tally.watch_errors {
            *observer_errors.entry(format!("watch {k}")).or_insert(0) += n;
        }
        self.row.observer_errors = observer_errors;
        self.row.note(format!(
            "slowest heartbeat batch {} ms",
            self.fleet.slowest_heartbeat_ms()
        ));
        self.row.note(format!("{} listings", tally.listings));
        Ok(self.row)
    }

    /// Checks that every error kind the members and the observer saw is one of
    /// `allowed` (codes), recording a failure otherwise.
    pub fn expect_error_kinds(&mut self, allowed: &[&str]) {
        let mut seen = self.fleet.errors_by_kind();
        let tally = self.observer.tally();
        for (k, n) in tally.errors {
            *seen.entry(k).or_insert(0) += n;
        }
        let bad: Vec<String> = seen
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .cloned()
            .collect();
        if !bad.is_empty() {
            let messages: Vec<&str> = bad
                .iter()
                .filter_map(|k| tally.first_messages.get(k).map(String::as_str))
                .collect();
            self.row.fail(format!(
                "unexpected error kinds {bad:?} (expected only {allowed:?}; observer's first: {messages:?})"
            ));
        }
    }

    /// Fails the row unless every member process is still running and reporting.
    pub async fn expect_processes_alive(&mut self) {
        let before: Vec<u64> = self.fleet.processes.iter().map(|p| p.lines()).collect();
        tokio::time::sleep(Duration::from_millis(700)).await;
        for (p, b) in self.fleet.processes.iter().zip(before) {
            if p.pid().is_none() || p.lines() <= b {
                self.row.fail(format!(
                    "member process {} stopped reporting (panic?)",
                    p.name()
                ));
            }
        }
    }
}
