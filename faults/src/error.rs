//! [`FaultsError`]: what can go wrong while running the fault matrix itself (as
//! opposed to what a scenario measures, which goes into its [`crate::report::Row`]).

use std::path::PathBuf;

/// A failure of the harness: a server that would not start, a member process that
/// died, a report that could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaultsError {
    /// A backend script (`scripts/lib/*.sh`) failed.
    #[error("{script} {action} failed (exit {code:?}): {stderr}")]
    Script {
        /// The script run.
        script: PathBuf,
        /// Its action (`start`, `stop`, ...).
        action: String,
        /// Its exit code, `None` when killed by a signal.
        code: Option<i32>,
        /// The tail of its standard error.
        stderr: String,
    },
    /// A process could not be started or signalled.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A member process did not report what it should have in time.
    #[error("member process {name}: {message}")]
    Member {
        /// The process's name in the fleet (`p0`, `p1`, ...).
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A library call the harness itself needed failed.
    #[error("{what}: {source}")]
    Library {
        /// What was being done.
        what: String,
        /// The servicegroup error.
        #[source]
        source: servicegroup::Error,
    },
    /// A precondition of a scenario does not hold on this machine.
    #[error("{0}")]
    Setup(String),
}

impl FaultsError {
    /// An [`FaultsError::Io`] error.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        FaultsError::Io {
            what: what.into(),
            source,
        }
    }

    /// A [`FaultsError::Library`] error.
    pub fn library(what: impl Into<String>, source: servicegroup::Error) -> Self {
        FaultsError::Library {
            what: what.into(),
            source,
        }
    }
}

/// Shorthand for results of the harness.
pub type Result<T, E = FaultsError> = std::result::Result<T, E>;
