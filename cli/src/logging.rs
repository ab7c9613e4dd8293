//! Logs on stderr with `tracing-subscriber`.
//!
//! Every command starts at WARN (each `-v` one level more), so a command that fails
//! prints its one `error:` line and nothing else. Long-running commands (`join`,
//! `watch`, `simulate`) call [`running`] once they are up, which raises the level to
//! INFO (plus `-v`), so "lost connection" / "recovered connection" lines show. When
//! `RUST_LOG` is set it decides, and nothing is raised.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

const LEVELS: [&str; 4] = ["warn", "info", "debug", "trace"];

/// Raises the filter to the long-running level; set by [`init`] when allowed.
static RAISE: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();

fn level(base: usize, verbose: u8) -> &'static str {
    LEVELS[(base + usize::from(verbose)).min(LEVELS.len() - 1)]
}

/// Installs the subscriber: `RUST_LOG` if set, else WARN raised by `verbose`.
pub fn init(verbose: u8) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|spec| !spec.trim().is_empty());
    let start = level(0, verbose);
    let filter = match &from_env {
        Some(spec) => EnvFilter::try_new(spec).unwrap_or_else(|e| {
            eprintln!("warning: ignoring RUST_LOG ({e}); using {start}");
            EnvFilter::new(start)
        }),
        None => EnvFilter::new(start),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter_reloading();
    let handle = builder.reload_handle();
    builder.init();
    if from_env.is_none() {
        let running = level(1, verbose);
        let _ = RAISE.set(Box::new(move || {
            let _ = handle.reload(EnvFilter::new(running));
        }));
    }
}

/// A long-running command is up: log at INFO (plus `-v`) from now on.
pub fn running() {
    if let Some(raise) = RAISE.get() {
        raise();
    }
}
