//! What a case needs beyond a configuration ([`Need`]) and the case table entry ([`CaseInfo`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::failure::CaseFailure;
use crate::fixture::Fixture;

/// A running case, boxed.
pub type CaseFuture = Pin<Box<dyn Future<Output = Result<(), CaseFailure>> + Send>>;

/// A hook or facility a case needs. A case whose need is not met fails with
/// [`crate::FailureKind::MissingRequirement`] unless the driver declared it skipped in
/// [`conformance_suite!`](crate::conformance_suite) (then it is reported as ignored
/// with the declared reason, never as passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Need {
    /// An outage hook: [`crate::Fixture::with_outage`] or [`crate::Fixture::with_outage_switch`].
    Outage,
    /// A count of backend operations spent on heartbeats: [`crate::Fixture::with_heartbeat_ops`].
    HeartbeatOps,
    /// The suite's log capture, a global `tracing` subscriber it installs itself. It is
    /// missing when the test binary installed its own global subscriber first.
    LogCapture,
}

impl Need {
    /// What provides it, for failure messages.
    pub fn how_to_provide(self) -> &'static str {
        match self {
            Need::Outage => {
                "an outage hook (Fixture::with_outage / Fixture::with_outage_switch) that makes the backend unreachable and back"
            }
            Need::HeartbeatOps => {
                "a counter of backend operations spent on heartbeats (Fixture::with_heartbeat_ops)"
            }
            Need::LogCapture => {
                "the suite's log capture, a global tracing subscriber (another global subscriber was installed first in this test binary)"
            }
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Need::Outage => "outage hook",
            Need::HeartbeatOps => "heartbeat operation counter",
            Need::LogCapture => "log capture",
        })
    }
}

/// One entry of [`crate::CASES`]: a case's name, what it needs, what it checks, and
/// the case itself ([`CaseInfo::run`]).
#[derive(Clone, Copy)]
pub struct CaseInfo {
    /// The name: the function in [`crate::cases`] and the test name the macro emits.
    pub name: &'static str,
    /// What the case needs beyond a configuration.
    pub needs: &'static [Need],
    /// What it checks (its doc comment).
    pub summary: &'static str,
    pub(crate) run: fn(Fixture) -> CaseFuture,
}

impl CaseInfo {
    /// Runs the case on `fixture` (the same as calling its function in [`crate::cases`]).
    pub fn run(&self, fixture: Fixture) -> CaseFuture {
        (self.run)(fixture)
    }
}

impl fmt::Debug for CaseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaseInfo")
            .field("name", &self.name)
            .field("needs", &self.needs)
            .finish()
    }
}
