//! [`CaseFailure`]: why a conformance case did not pass.

use std::fmt;

use servicegroup_core::Error;

/// What kind of failure a [`CaseFailure`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The driver broke the contract: an observation contradicts what the case requires.
    Violation,
    /// An API call failed where the case expects it to succeed.
    UnexpectedError,
    /// The case needs a hook or capability the fixture does not provide and was not
    /// declared skipped (see [`crate::Need`]).
    MissingRequirement,
    /// The setup function failed or returned an unusable fixture.
    Setup,
    /// The case did not finish within its time budget ([`crate::Timings::case_budget`]).
    Hung,
}

impl FailureKind {
    /// A short lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Violation => "contract violation",
            FailureKind::UnexpectedError => "unexpected error",
            FailureKind::MissingRequirement => "missing requirement",
            FailureKind::Setup => "setup failed",
            FailureKind::Hung => "hung",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A conformance case failed: the case name, the kind of failure and a message that
/// says what was observed and what was required.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CaseFailure {
    case: &'static str,
    kind: FailureKind,
    message: String,
}

impl CaseFailure {
    /// A failure of `kind` with `message` (the case name is filled in by the runner).
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            case: "",
            kind,
            message: message.into(),
        }
    }

    /// A [`FailureKind::Violation`].
    pub fn violation(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Violation, message)
    }

    /// A [`FailureKind::UnexpectedError`] for `error` returned by the call described by `what`.
    pub fn unexpected(what: impl fmt::Display, error: &Error) -> Self {
        Self::new(
            FailureKind::UnexpectedError,
            format!("{what} failed: {error} (kind: {:?})", error.kind()),
        )
    }

    /// The case this failure belongs to.
    pub fn case(&self) -> &'static str {
        self.case
    }

    /// The kind of failure.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// What was observed and what was required.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn in_case(mut self, case: &'static str) -> Self {
        if self.case.is_empty() {
            self.case = case;
        }
        self
    }
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.case.is_empty() {
            write!(f, "{}: {}", self.kind, self.message)
        } else {
            write!(
                f,
                "conformance case `{}` failed ({}): {}",
                self.case, self.kind, self.message
            )
        }
    }
}

/// Adds context to API results inside cases: `sg.is_up(g, m).await.ctx("is_up after join")?`.
pub(crate) trait Context<T> {
    /// Turns an API error into a [`FailureKind::UnexpectedError`] naming the call.
    fn ctx(self, what: impl fmt::Display) -> Result<T, CaseFailure>;
}

impl<T> Context<T> for Result<T, Error> {
    fn ctx(self, what: impl fmt::Display) -> Result<T, CaseFailure> {
        self.map_err(|e| CaseFailure::unexpected(what, &e))
    }
}

/// Returns a [`FailureKind::Violation`] unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::failure::CaseFailure::violation(format!($($fmt)+)));
        }
    };
}
pub(crate) use ensure;
