//! [`Options`]: what to simulate (fleet size, topology, run length, kills, observers).
//! The intervals come from the [`Config`](servicegroup::Config) given to
//! [`Simulation::prepare`](crate::Simulation::prepare).

use std::time::Duration;

use crate::Error;

/// `report_interval` a front should use when the user set none (neither flag nor
/// configuration): short, so the zero-setup run shows kills being detected within
/// its ~20 s.
pub const DEMO_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// `service_down_time` a front should use when the user set none (see
/// [`DEMO_REPORT_INTERVAL`]).
pub const DEMO_SERVICE_DOWN_TIME: Duration = Duration::from_secs(3);

/// How the simulated members are spread over handles and driver instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// `shared` (the default): the members are spread over [`Options::handles`]
    /// `ServiceGroup` handles that share **one driver instance** (one connection pool),
    /// so each handle reports all its members in one driver call per tick: one process
    /// reporting for many members.
    #[default]
    Shared,
    /// `per-process`: every member gets its own `ServiceGroup` handle, as one process
    /// per host would, sending its own heartbeat call every tick. Up to
    /// [`Options::processes_per_driver`] simulated processes share one driver instance
    /// (its connections), each through its own driver handle, so core never merges
    /// their calls; the observers get one more instance of their own.
    PerProcess,
}

impl Topology {
    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Topology::Shared => "shared",
            Topology::PerProcess => "per-process",
        }
    }
}

/// How the observers of ours watch the group (the Nova baseline's always list it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Observe {
    /// `down-set` (the default): ask for the down set (`members_in(group, Down)`) back
    /// to back, pausing twice a query's time, and check single members: as hard as an
    /// observer can ask.
    #[default]
    DownSet,
    /// `watch`: a `Watch` of the group (`ServiceGroup::watch`, one poll per
    /// `watch_interval`), each `down` event a judgement: what a deployed observer runs.
    Watch,
}

impl Observe {
    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Observe::DownSet => "down-set",
            Observe::Watch => "watch",
        }
    }
}

/// Baselines measured instead of a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Nova's own database servicegroup driver (one read-then-update transaction per
    /// member heartbeat, client clock), on the PostgreSQL of `db.url`, in its own table
    /// `nova_services`. Needs the crate's `nova` feature.
    Nova,
}

/// What to simulate. [`Default`] is the CLI's default run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Simulated members (at least 1).
    pub members: u32,
    /// Shared topology: handles the members are spread over (at least 1); ignored by
    /// the per-process topology (one handle per member).
    pub handles: u32,
    /// How the members map to handles and driver instances.
    pub topology: Topology,
    /// Per-process topology: simulated processes sharing one driver instance and its
    /// connections (at least 1; 1 = every process its own instance).
    pub processes_per_driver: u32,
    /// Length of the measured run (after every member joined).
    pub duration: Duration,
    /// Fraction of members killed at random times (heartbeats stop, no leave), 0..=1.
    pub kill: f64,
    /// Group the members join; `None`: a fresh `simulate-<UTC time>-<pid>`.
    pub group: Option<String>,
    /// Observer tasks asking for the group's down set and checking single members.
    pub observers: u32,
    /// How the observers watch the group.
    pub observe: Observe,
    /// Members per `join_many` call while the fleet starts (at least 1).
    pub join_batch: u32,
    /// Join batches in flight at once while the fleet starts; also driver instances
    /// built at once in the per-process topology (at least 1).
    pub join_concurrency: u32,
    /// Longest the fleet may take to join (above zero): past it the run stops, the
    /// members that joined are cleaned up and the error says how far joining got,
    /// so a backend that cannot take the fleet ends a benchmark instead of hanging it.
    pub join_timeout: Duration,
    /// Leave/remove calls in flight at once while cleaning up (at least 1).
    pub cleanup_concurrency: u32,
    /// Leave the member records in place at the end.
    pub keep: bool,
    /// Run a baseline instead of the configured driver.
    pub baseline: Option<Baseline>,
    /// Process ids of the store's servers on this machine (one for a database, each
    /// member of a cluster), to report their CPU and memory, summed.
    pub server_pids: Vec<u32>,
    /// Process ids of relays (`servicegroup relay`) the members talk through, to report
    /// their CPU (per heartbeat request too) and memory.
    pub relay_pids: Vec<u32>,
    /// Show progress bars on stderr (hidden anyway when stderr is not a terminal; a
    /// progress line is logged every 10 s instead).
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            members: 20_000,
            handles: 4,
            topology: Topology::Shared,
            processes_per_driver: 1,
            duration: Duration::from_secs(15),
            kill: 0.05,
            group: None,
            observers: 2,
            observe: Observe::DownSet,
            join_batch: 1000,
            join_concurrency: 4,
            join_timeout: Duration::from_secs(30 * 60),
            cleanup_concurrency: 64,
            keep: false,
            baseline: None,
            server_pids: Vec::new(),
            relay_pids: Vec::new(),
            progress: false,
        }
    }
}

impl Options {
    /// Checks every field's range; the first one out of range is the error.
    pub fn validate(&self) -> Result<(), Error> {
        let at_least_1 = [
            ("members", self.members),
            ("handles", self.handles),
            ("processes-per-driver", self.processes_per_driver),
            ("join-batch", self.join_batch),
            ("join-concurrency", self.join_concurrency),
            ("cleanup-concurrency", self.cleanup_concurrency),
        ];
        for (option, value) in at_least_1 {
            if value == 0 {
                return Err(Error::option(option, "must be at least 1"));
            }
        }
        if !(0.0..=1.0).contains(&self.kill) {
            return Err(Error::option(
                "kill",
                format!("must be a fraction between 0 and 1, not {}", self.kill),
            ));
        }
        for (option, value) in [
            ("duration", self.duration),
            ("join-timeout", self.join_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::option(option, "must be above zero"));
            }
        }
        if self.baseline.is_some() && self.topology != Topology::Shared {
            return Err(Error::option(
                "topology",
                "must be `shared` with a baseline (the Nova baseline runs one transaction per member report over `db.pool_size` connections)",
            ));
        }
        if self.baseline.is_some() && self.observe != Observe::DownSet {
            return Err(Error::option(
                "observe",
                "must be `down-set` with a baseline (the Nova baseline's observers list the whole group; it has no watch)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ranges_are_checked() {
        Options::default().validate().unwrap();
        let bad = |o: Options| o.validate().unwrap_err().to_string();
        let e = bad(Options {
            members: 0,
            ..Options::default()
        });
        assert_eq!(e, "`members` must be at least 1");
        let e = bad(Options {
            processes_per_driver: 0,
            ..Options::default()
        });
        assert!(e.contains("processes-per-driver"), "{e}");
        let e = bad(Options {
            kill: 1.5,
            ..Options::default()
        });
        assert!(e.contains("kill"), "{e}");
        let e = bad(Options {
            join_timeout: Duration::ZERO,
            ..Options::default()
        });
        assert_eq!(e, "`join-timeout` must be above zero");
        let e = bad(Options {
            topology: Topology::PerProcess,
            baseline: Some(Baseline::Nova),
            ..Options::default()
        });
        assert!(e.contains("topology"), "{e}");
        let e = bad(Options {
            observe: Observe::Watch,
            baseline: Some(Baseline::Nova),
            ..Options::default()
        });
        assert!(e.contains("observe") && e.contains("baseline"), "{e}");
    }
}
