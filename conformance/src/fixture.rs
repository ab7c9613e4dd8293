//! What a driver author hands the suite: a [`Fixture`] (a fresh, isolated
//! configuration plus optional hooks) and the [`Timings`] the cases use.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use servicegroup_core::{BoxError, Config};

use crate::failure::{CaseFailure, FailureKind};

/// Makes the fixture's backend unreachable and reachable again, for the outage cases.
///
/// `stop` must make every call of every handle built from the fixture's configuration
/// fail (connection refused, reset, or hang until core's `call_timeout`), without
/// affecting other fixtures that run at the same time. `start` undoes it. Whether data
/// survives the outage is up to the backend (a restarted memcached loses it; the suite
/// then expects the members to be registered again by their heartbeats).
#[async_trait]
pub trait Outage: Send + Sync + 'static {
    /// Makes the backend unreachable. Returns once calls fail.
    async fn stop(&self) -> Result<(), BoxError>;
    /// Makes the backend reachable again. Returns once it accepts calls.
    async fn start(&self) -> Result<(), BoxError>;
}

/// An [`Outage`] made of one async function: called with `false` to stop, `true` to start.
/// Built by [`Fixture::with_outage_switch`].
pub struct OutageSwitch<F> {
    switch: F,
}

impl<F> fmt::Debug for OutageSwitch<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OutageSwitch")
    }
}

#[async_trait]
impl<F, Fut> Outage for OutageSwitch<F>
where
    F: Fn(bool) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    async fn stop(&self) -> Result<(), BoxError> {
        (self.switch)(false).await
    }

    async fn start(&self) -> Result<(), BoxError> {
        (self.switch)(true).await
    }
}

/// Counts the backend operations (statements, round trips) a driver has spent storing
/// heartbeats so far. See [`Fixture::with_heartbeat_ops`].
pub type HeartbeatOps = Arc<dyn Fn() -> u64 + Send + Sync + 'static>;

/// The timings cases run with. The suite writes them into every configuration it
/// builds (`report_interval`, `service_down_time`, `call_timeout`, `watch_interval`),
/// so a case never depends on the fixture's own values. Cases that need other
/// relations (the `service_down_time <= report_interval` override) derive them from these.
///
/// `service_down_time` is raised to at least 4 × the driver's
/// [`Capabilities::liveness_resolution`](servicegroup_core::Capabilities) and
/// 3 × `report_interval`, so the boundary cases keep a window in which the verdict is certain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timings {
    /// Heartbeat period. Default 200 ms.
    pub report_interval: Duration,
    /// Liveness window. Default 1 s.
    pub service_down_time: Duration,
    /// Core's bound on every driver call. Default 1 s.
    pub call_timeout: Duration,
    /// How often watches poll. Default 50 ms.
    pub watch_interval: Duration,
    /// Allowance for scheduling and backend latency in deadlines of things that must
    /// happen *eventually* (never used to excuse a wrong verdict). Default 1 s.
    pub slack: Duration,
    /// A case that runs longer than this fails as hung. Default 60 s.
    pub case_budget: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            report_interval: Duration::from_millis(200),
            service_down_time: Duration::from_secs(1),
            call_timeout: Duration::from_secs(1),
            watch_interval: Duration::from_millis(50),
            slack: Duration::from_secs(1),
            case_budget: Duration::from_secs(60),
        }
    }
}

impl Timings {
    /// Checks the timings are usable (no zero durations, down time above report interval).
    pub(crate) fn check(&self) -> Result<(), CaseFailure> {
        let all = [
            ("report_interval", self.report_interval),
            ("service_down_time", self.service_down_time),
            ("call_timeout", self.call_timeout),
            ("watch_interval", self.watch_interval),
            ("case_budget", self.case_budget),
        ];
        for (name, value) in all {
            if value.is_zero() {
                return Err(CaseFailure::new(
                    FailureKind::Setup,
                    format!("Timings::{name} must be greater than zero"),
                ));
            }
        }
        if self.service_down_time <= self.report_interval {
            return Err(CaseFailure::new(
                FailureKind::Setup,
                format!(
                    "Timings::service_down_time ({:?}) must be larger than report_interval ({:?})",
                    self.service_down_time, self.report_interval
                ),
            ));
        }
        Ok(())
    }
}

/// A fresh, isolated configuration for one case, with optional hooks.
///
/// Every case calls the setup function once and builds all its handles from the
/// fixture's [`Config`] (with [`Timings`] applied), so the handles of one case share a
/// backend and different cases never see each other's members.
///
/// ```
/// use servicegroup_conformance::Fixture;
/// use servicegroup_core::Config;
/// // Linked, so its `[inproc]` table is known.
/// use servicegroup_driver_inproc as _;
///
/// let mut config = Config::with_driver("inproc");
/// config.set("inproc.name", servicegroup_conformance::unique_name("doc"))?;
/// let fixture = Fixture::new(config);
/// assert!(!fixture.has_outage());
/// # Ok::<(), servicegroup_core::Error>(())
/// ```
pub struct Fixture {
    pub(crate) config: Config,
    pub(crate) timings: Timings,
    pub(crate) outage: Option<Arc<dyn Outage>>,
    pub(crate) heartbeat_ops: Option<HeartbeatOps>,
    pub(crate) guards: Vec<Box<dyn Any + Send + Sync>>,
    /// Set by the macro's runner for `clock: paused`.
    pub(crate) paused_clock: bool,
}

impl fmt::Debug for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture")
            .field("driver", &self.config.driver)
            .field("timings", &self.timings)
            .field("outage", &self.outage.is_some())
            .field("heartbeat_ops", &self.heartbeat_ops.is_some())
            .field("guards", &self.guards.len())
            .finish()
    }
}

impl Fixture {
    /// A fixture with `config` (which must select the driver and isolate the backend),
    /// the default [`Timings`] and no hooks.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            timings: Timings::default(),
            outage: None,
            heartbeat_ops: None,
            guards: Vec::new(),
            paused_clock: false,
        }
    }

    /// Uses other timings (slower backends, whole-second TTLs).
    pub fn with_timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// Adds an outage hook, enabling the cases that need [`crate::Need::Outage`].
    pub fn with_outage(mut self, outage: impl Outage) -> Self {
        self.outage = Some(Arc::new(outage));
        self
    }

    /// Adds an outage hook made of one async function: `switch(false)` makes the backend
    /// unreachable, `switch(true)` reachable again.
    pub fn with_outage_switch<F, Fut>(self, switch: F) -> Self
    where
        F: Fn(bool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.with_outage(OutageSwitch { switch })
    }

    /// Adds a counter of backend operations spent on heartbeats, enabling the case that
    /// needs [`crate::Need::HeartbeatOps`] (a batch of members must cost a few backend
    /// operations, not one per member).
    pub fn with_heartbeat_ops(mut self, count: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.heartbeat_ops = Some(Arc::new(count));
        self
    }

    /// Keeps `guard` alive until the case ends (a temporary directory, a server process).
    pub fn keep(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guards.push(Box::new(guard));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The timings.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Whether an outage hook is present.
    pub fn has_outage(&self) -> bool {
        self.outage.is_some()
    }

    /// Whether a heartbeat operation counter is present.
    pub fn has_heartbeat_ops(&self) -> bool {
        self.heartbeat_ops.is_some()
    }
}

impl From<Config> for Fixture {
    fn from(config: Config) -> Self {
        Fixture::new(config)
    }
}

/// What a setup function may return: a [`Fixture`], a plain [`Config`], or a `Result`
/// of either (an `Err` fails the case as [`FailureKind::Setup`]).
pub trait IntoFixture {
    /// Converts into a fixture.
    fn into_fixture(self) -> Result<Fixture, CaseFailure>;
}

impl IntoFixture for Fixture {
    fn into_fixture(self) -> Result<Fixture, CaseFailure> {
        Ok(self)
    }
}

impl IntoFixture for Config {
    fn into_fixture(self) -> Result<Fixture, CaseFailure> {
        Ok(Fixture::new(self))
    }
}

impl<T: IntoFixture, E: fmt::Display> IntoFixture for Result<T, E> {
    fn into_fixture(self) -> Result<Fixture, CaseFailure> {
        match self {
            Ok(t) => t.into_fixture(),
            Err(e) => Err(CaseFailure::new(
                FailureKind::Setup,
                format!("the setup function failed: {e}"),
            )),
        }
    }
}

/// A boxed setup future, for code that stores setup functions.
pub type SetupFuture = Pin<Box<dyn Future<Output = Fixture> + Send>>;

/// A name no other call in this process (or, practically, on this machine) returns:
/// `prefix-<pid>-<counter>-<random>`, made of `[a-z0-9-]` (plus the prefix). Use it
/// for `[inproc] name`, database schema names, memcached key prefixes.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{}", std::process::id(), random_hex(6))
}

/// `len` random lowercase hex digits (std's randomly keyed hasher; not cryptographic).
pub(crate) fn random_hex(len: usize) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut h = RandomState::new().build_hasher();
        h.write_usize(out.len());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        let a = unique_name("x");
        let b = unique_name("x");
        assert_ne!(a, b);
        assert!(a.starts_with("x-"));
        assert_eq!(random_hex(20).len(), 20);
    }

    #[test]
    fn timings_are_checked() {
        assert!(Timings::default().check().is_ok());
        let t = Timings {
            service_down_time: Duration::from_millis(200),
            ..Timings::default()
        };
        assert_eq!(t.check().unwrap_err().kind(), FailureKind::Setup);
    }
}
