//! `servicegroup`: the operator tool and fleet simulator of servicegroup.
//!
//! Commands: `drivers`, `config`, `join`, `list`, `summary`, `status`, `force-down`,
//! `remove`, `watch`, `exporter`, `relay`, `simulate`. The command line, its exit codes and JSON keys are a
//! contract relied on by scripts: see docs/cli.md.
//!
//! Exit codes: 0 success (`status`: up), 1 `status`: down / `simulate`: false downs,
//! 2 any error (one `error: …` line on stderr), 3 no such member, 4 `join`: superseded
//! (another process took the member over).

mod args;
mod commands;
mod console;
mod drivers_linked;
mod failure;
mod logging;
mod output;
mod settings;
mod signals;
mod simulate;

use std::process::ExitCode;

use clap::Parser;
// The facade names every enabled driver crate, so their registrations are linked.
use servicegroup as _;

use crate::args::{Cli, Command};
use crate::failure::Failure;

/// mimalloc instead of glibc's allocator: a `perf` profile of `servicegroup relay`
/// serving ~10,000 heartbeat requests per second put a quarter of its CPU in glibc's
/// `malloc`/`free` (docs/relay.md, "Sizing").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Failure::msg(format!("cannot start the async runtime: {e}")).report(),
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => failure.report(),
    }
}

async fn dispatch(cli: Cli) -> Result<u8, Failure> {
    let global = cli.global;
    match cli.command {
        Command::Drivers => commands::admin::drivers(),
        Command::Config => commands::admin::config(&settings::load(&global)?),
        Command::Join {
            group,
            member,
            meta,
            exclusive,
        } => {
            let loaded = settings::load(&global)?;
            // Ids and metadata are checked before connecting: a bad one is an error
            // whatever the backend.
            let request = commands::join::JoinRequest::parse(group, member, &meta, exclusive)?;
            commands::join::join(loaded, request).await
        }
        Command::List {
            group,
            json,
            wide,
            state,
        } => {
            let format = output::ListFormat::from_flags(json, wide);
            // A bad state is an error before anything is loaded or connected.
            let state = state
                .as_deref()
                .map(commands::query::parse_state)
                .transpose()?;
            commands::query::list(settings::load(&global)?, group, state, format).await
        }
        Command::Summary { group, json } => {
            commands::query::summary(settings::load(&global)?, group, json).await
        }
        Command::Status {
            group,
            member,
            json,
        } => commands::query::status(settings::load(&global)?, group, member, json).await,
        Command::ForceDown {
            group,
            member,
            clear,
        } => commands::operator::force_down(settings::load(&global)?, group, member, clear).await,
        Command::Remove { group, member } => {
            commands::operator::remove(settings::load(&global)?, group, member).await
        }
        Command::Watch { group, json } => {
            commands::watch::watch(settings::load(&global)?, group, json).await
        }
        Command::Exporter {
            listen,
            groups,
            interval,
            per_member,
        } => {
            let loaded = settings::load(&global)?;
            let request =
                commands::exporter::ExporterRequest::parse(listen, groups, interval, per_member)?;
            commands::exporter::exporter(loaded, request).await
        }
        Command::Relay(args) => commands::relay::relay(settings::load(&global)?, args).await,
        Command::Simulate(args) => simulate::run(&global, args).await,
    }
}
