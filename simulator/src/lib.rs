//! The servicegroup fleet simulator: N members heartbeat against a configured driver,
//! observer tasks ask for the group's down set and check single members, a fraction
//! of the members is killed at random times (heartbeats stop, no leave) and watched
//! until judged down. The [`Report`] says how fast heartbeats went, how late kills
//! were detected and whether any live member was judged down (a false down).
//!
//! `servicegroup simulate` is its command-line front; this crate is the library:
//!
//! - [`Options`]: fleet size, [`Topology`], run length, kill fraction, observers,
//!   and an optional [`Baseline`];
//! - [`Simulation::prepare`] builds the system under test from a
//!   [`Config`](servicegroup::Config) (the driver by its registered name, the
//!   intervals), then [`Simulation::run`] measures; [`run`] does both;
//! - [`Report`]: serializable (the CLI's `--json` keys) and [`Report::text`].
//!
//! Topologies: [`Topology::Shared`] (the default) spreads the members over a few
//! `ServiceGroup` handles sharing one driver instance, so each handle reports all its
//! members in one driver call per tick. [`Topology::PerProcess`] gives every member
//! its own handle, as one process per host: each simulated process sends its own
//! heartbeat call every tick, and up to [`Options::processes_per_driver`] of them
//! share one driver instance's connections without their calls being merged.
//!
//! Per-member state is a few flat arrays; no task per member (beyond the heartbeat
//! task of each handle). Heartbeat calls are timed at the driver. Latencies are
//! `hdrhistogram` histograms (p50 / p99 / max, 0.1 % precision).
//!
//! With the `nova` feature, [`Baseline::Nova`] runs Nova's own database driver
//! instead: same fleet, kill schedule and report, on the PostgreSQL of `db.url`, in
//! its own table; its observers list the whole group and judge every row, as Nova
//! does (it has no down-set query).
//!
//! Drivers are found through the registry: the binary must link the driver crates
//! (the `servicegroup` facade's features do).

mod chaos;
mod cleanup;
mod connections;
mod error;
mod fleet;
mod join;
mod latency;
mod observe;
mod options;
mod report;
mod run;
mod timing;
mod topology;
mod usage;

#[cfg(feature = "nova")]
mod baseline;

pub use error::Error;
pub use options::{
    Baseline, Observe, Options, Topology, DEMO_REPORT_INTERVAL, DEMO_SERVICE_DOWN_TIME,
};
pub use report::{Quantiles, Report};
pub use run::{run, Simulation};
pub use usage::{ServerUsage, SimulatorUsage};
