//! [`Error`]: why a simulation could not run.

/// Why a simulation could not be prepared or run. A run that measured false downs is
/// not an error: it is a [`Report`](crate::Report) whose `ok` is false.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An [`Options`](crate::Options) field is out of range; `option` is the field's
    /// name (the CLI's flag without `--`, `_` as `-`).
    #[error("`{option}` {reason}")]
    InvalidOption {
        /// The option (field) name.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The Nova baseline cannot run with this configuration (no PostgreSQL `db.url`,
    /// or the simulator was built without the `nova` feature).
    #[error("{0}")]
    Baseline(String),
    /// The configuration, the driver or the backend failed (unreachable, timeout, bad
    /// id, ...), with the library's error kind.
    #[error(transparent)]
    Servicegroup(#[from] servicegroup::Error),
    /// Not one member could join (and no backend error says why).
    #[error("no member could join")]
    NoMemberJoined,
    /// The fleet did not finish joining within `join_timeout`; the members that had
    /// joined were cleaned up (unless `keep`).
    #[error(
        "the fleet did not finish joining within {} ({joined} of {members} members joined); \
         the backend cannot take members this fast: try fewer members or a longer --join-timeout",
        servicegroup::config::duration::render(*.after)
    )]
    JoinTimedOut {
        /// The `join_timeout` that ran out.
        after: std::time::Duration,
        /// Members joined when it ran out.
        joined: u64,
        /// Members of the fleet.
        members: u32,
    },
    /// One of the simulator's own tasks died.
    #[error("the simulator's {0} task failed")]
    Task(&'static str),
}

impl Error {
    /// An out-of-range option.
    pub(crate) fn option(option: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidOption {
            option,
            reason: reason.into(),
        }
    }
}
