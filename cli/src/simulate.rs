//! `servicegroup simulate`: the front of the fleet simulator (`servicegroup-simulator`).
//! It resolves the intervals (flag, else configuration, else the simulator's short demo
//! defaults), maps the flags to [`Options`], runs, and prints the report (text or one
//! JSON line). Exit 0 when there were no false downs and every killed member was judged
//! down, 1 otherwise, 2 when it could not run.

use servicegroup_simulator::{
    Baseline, Error, Observe, Options, Simulation, Topology, DEMO_REPORT_INTERVAL,
    DEMO_SERVICE_DOWN_TIME,
};

use crate::args::{self, GlobalArgs, SimulateArgs};
use crate::console;
use crate::failure::{describe, Failure, EXIT_DOWN, EXIT_OK};
use crate::settings;

/// Runs the simulation and prints its report.
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
    let json = args.json;
    let options = Options {
        members: args.members,
        handles: args.handles,
        topology: match args.topology {
            args::Topology::Shared => Topology::Shared,
            args::Topology::PerProcess => Topology::PerProcess,
        },
        processes_per_driver: args.processes_per_driver,
        duration: args.duration,
        kill: args.kill,
        group: args.group,
        observers: args.observers,
        observe: match args.observe {
            args::Observe::DownSet => Observe::DownSet,
            args::Observe::Watch => Observe::Watch,
        },
        join_batch: args.join_batch,
        join_concurrency: args.join_concurrency,
        join_timeout: args.join_timeout,
        cleanup_concurrency: args.cleanup_concurrency,
        keep: args.keep,
        baseline: args.baseline.map(|args::Baseline::Nova| Baseline::Nova),
        server_pids: args.server_pids.clone(),
        relay_pids: args.relay_pids.clone(),
        progress: true,
    };
    let simulation = Simulation::prepare(config, options)
        .await
        .map_err(failure)?;
    // Connected: from now on "lost / recovered connection" lines show.
    crate::logging::running();
    let report = simulation.run().await.map_err(failure)?;
    if json {
        let line = serde_json::to_string(&report)
            .map_err(|e| Failure::msg(format!("cannot encode the report as JSON: {e}")))?;
        console::line(line)?;
    } else {
        console::out(&report.text())?;
    }
    Ok(if report.ok { EXIT_OK } else { EXIT_DOWN })
}

/// The simulator's error as the CLI says it: options by their flag, library errors
/// with their causes.
fn failure(error: Error) -> Failure {
    match error {
        Error::Servicegroup(e) => Failure::msg(describe(&e)),
        Error::InvalidOption { option, reason } => Failure::msg(format!("--{option} {reason}")),
        other => Failure::msg(other.to_string()),
    }
}
