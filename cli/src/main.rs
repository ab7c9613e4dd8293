//! `servicegroup`: the operator tool and fleet simulator of servicegroup.
//!
//! Commands: `drivers`, `config`, `join`, `list`, `status`, `force-down`, `remove`,
//! `watch`, `simulate`. The command line, its exit codes and JSON keys are a contract
//! relied on by scripts: see docs/cli.md.
//!
//! Exit codes: 0 success (`status`: up), 1 `status`: down / `simulate`: false downs,
//! 2 any error (one `error: …` line on stderr), 3 no such member.

mod args;
mod commands;
mod drivers_linked;
mod failure;
mod output;
mod settings;
mod signals;
mod simulate;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

// The facade names every enabled driver crate, so their registrations are linked.
use servicegroup as _;

use crate::args::{Cli, Command};
use crate::failure::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
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

/// Logs go to stderr. Long-running commands log at INFO by default (so "lost
/// connection" / "recovered" lines show), the others only WARN and above. Each `-v`
/// raises the level; RUST_LOG, when set, decides instead.
fn init_logging(cli: &Cli) {
    let long_running = matches!(
        cli.command,
        Command::Join { .. } | Command::Watch { .. } | Command::Simulate(_)
    );
    let levels = ["warn", "info", "debug", "trace"];
    let base = usize::from(long_running) + usize::from(cli.global.verbose);
    let level = levels[base.min(levels.len() - 1)];
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(spec).unwrap_or_else(|e| {
            eprintln!("warning: ignoring RUST_LOG ({e}); using {level}");
            EnvFilter::new(level)
        }),
        _ => EnvFilter::new(level),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

async fn dispatch(cli: Cli) -> Result<u8, Failure> {
    let global = cli.global;
    match cli.command {
        Command::Drivers => commands::admin::drivers(),
        Command::Config => commands::admin::config(&settings::load(&global)?),
        Command::Join { group, member } => {
            commands::join::join(settings::load(&global)?, group, member).await
        }
        Command::List { group, json } => {
            commands::query::list(settings::load(&global)?, group, json).await
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
        Command::Simulate(args) => simulate::run(&global, args).await,
    }
}
