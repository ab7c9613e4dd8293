//! Waiting for SIGINT (Ctrl-C) or SIGTERM.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::failure::Failure;

/// SIGINT and SIGTERM handlers, installed before the work starts so a signal that
/// arrives early is kept, not lost (and does not kill the process half-way).
#[derive(Debug)]
pub struct Shutdown {
    interrupt: Signal,
    terminate: Signal,
}

impl Shutdown {
    /// Installs the handlers.
    pub fn install() -> Result<Self, Failure> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind)
                .map_err(|e| Failure::msg(format!("cannot install the {name} handler: {e}")))
        };
        Ok(Self {
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// Waits for either signal and returns its name.
    pub async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
