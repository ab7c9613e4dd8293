//! [`Ctx`]: what a running case works with (the configuration with timings
//! applied, the driver's capabilities, hooks, unique names, deadlines), and
//! [`run`], which checks a case's needs and runs it under its time budget.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use servicegroup_core::{Capabilities, Config, Driver, Registry, ServiceGroup};
use tokio::time::Instant;

use crate::failure::{CaseFailure, Context, FailureKind};
use crate::fixture::{random_hex, Fixture, HeartbeatOps, Outage, Timings};
use crate::instrument::{Counters, Instrumented};
use crate::logs::{self, Captured, THREAD_PREFIX};
use crate::need::Need;

/// The running case's context.
pub(crate) struct Ctx {
    /// The case name.
    pub case: &'static str,
    /// The fixture's configuration with the case timings applied.
    config: Config,
    /// The timings in effect (down time raised for coarse drivers).
    pub t: Timings,
    /// The driver's capabilities.
    pub caps: Capabilities,
    outage: Option<Arc<dyn Outage>>,
    heartbeat_ops: Option<HeartbeatOps>,
    suffix: String,
    log_prefix: Option<String>,
    _guards: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("case", &self.case)
            .field("driver", &self.config.driver)
            .field("timings", &self.t)
            .finish()
    }
}

/// The `sgc-<run>:` prefix of the current thread, if the runner created it.
fn current_log_prefix() -> Option<String> {
    let thread = std::thread::current();
    let name = thread.name()?;
    if !name.starts_with(THREAD_PREFIX) {
        return None;
    }
    let end = name.find(':')?;
    Some(name[..=end].to_owned())
}

/// Checks the case's needs against the fixture, builds the context and runs `body`
/// within the case budget. Every failure carries the case name.
pub(crate) async fn run<F, Fut>(
    case: &'static str,
    needs: &[Need],
    fixture: Fixture,
    body: F,
) -> Result<(), CaseFailure>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<(), CaseFailure>>,
{
    let result = async {
        fixture.timings.check()?;
        for need in needs {
            let met = match need {
                Need::Outage => fixture.outage.is_some(),
                Need::HeartbeatOps => fixture.heartbeat_ops.is_some(),
                Need::LogCapture => logs::install() && current_log_prefix().is_some(),
            };
            if !met {
                return Err(CaseFailure::new(
                    FailureKind::MissingRequirement,
                    format!(
                        "this case needs {}, which this fixture does not provide. Provide it, or, if \
                         the driver cannot support it, declare the case skipped with a reason: \
                         `conformance_suite!(<name>, <setup>, skip: {{ {case}: \"why\" }})`",
                        need.how_to_provide()
                    ),
                ));
            }
        }
        let budget = fixture.timings.case_budget;
        let ctx = Ctx::new(case, fixture).await?;
        match tokio::time::timeout(budget, body(ctx)).await {
            Ok(result) => result,
            Err(_) => Err(CaseFailure::new(
                FailureKind::Hung,
                format!("the case did not finish within {budget:?} (Timings::case_budget)"),
            )),
        }
    }
    .await;
    result.map_err(|f| f.in_case(case))
}

impl Ctx {
    async fn new(case: &'static str, fixture: Fixture) -> Result<Self, CaseFailure> {
        let Fixture {
            mut config,
            timings,
            outage,
            heartbeat_ops,
            guards,
            paused_clock,
        } = fixture;
        let probe_config = config.clone().validated().map_err(|e| {
            CaseFailure::new(
                FailureKind::Setup,
                format!("the fixture's configuration is invalid: {e}"),
            )
        })?;
        let probe = Registry::build(&probe_config).await.map_err(|e| {
            CaseFailure::new(
                FailureKind::Setup,
                format!(
                    "cannot build driver {:?} from the fixture's configuration: {e}",
                    config.driver
                ),
            )
        })?;
        let caps = probe.capabilities();
        drop(probe);
        if paused_clock && !caps.follows_tokio_clock {
            return Err(CaseFailure::new(
                FailureKind::Setup,
                format!(
                    "`clock: paused` was given, but driver {:?} does not follow tokio's clock \
                     (Capabilities::follows_tokio_clock is false): remove `clock: paused`",
                    config.driver
                ),
            ));
        }
        let res = caps.liveness_resolution;
        let mut t = timings;
        t.service_down_time = t.service_down_time.max(res * 4).max(t.report_interval * 3);
        config.report_interval = t.report_interval;
        config.service_down_time = t.service_down_time;
        config.call_timeout = t.call_timeout;
        config.watch_interval = Some(t.watch_interval);
        Ok(Self {
            case,
            config,
            t,
            caps,
            outage,
            heartbeat_ops,
            suffix: random_hex(8),
            log_prefix: current_log_prefix(),
            _guards: guards,
        })
    }

    /// The configuration every handle of this case uses.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// The driver's liveness resolution: the margin around every boundary.
    pub fn res(&self) -> Duration {
        self.caps.liveness_resolution
    }

    /// The driver name.
    pub fn driver(&self) -> &str {
        &self.config.driver
    }

    /// A new handle on the fixture's backend.
    pub async fn connect(&self) -> Result<ServiceGroup, CaseFailure> {
        self.connect_with(self.config()).await
    }

    /// A new handle built from `config` (a variant of [`Self::config`]).
    pub async fn connect_with(&self, config: Config) -> Result<ServiceGroup, CaseFailure> {
        ServiceGroup::connect(config).await.ctx(format_args!(
            "ServiceGroup::connect (driver {:?})",
            self.driver()
        ))
    }

    /// A driver built by the registry from this case's configuration, with no handle
    /// on it: for asking the driver what core does not expose (its revision).
    pub async fn build_driver(&self) -> Result<Arc<dyn Driver>, CaseFailure> {
        let config = self.config().validated().ctx("Config::validated")?;
        Registry::build(&config)
            .await
            .ctx(format_args!("Registry::build (driver {:?})", self.driver()))
    }

    /// A new handle whose driver (built by the registry) is wrapped in [`Instrumented`].
    pub async fn connect_instrumented(&self) -> Result<(ServiceGroup, Arc<Counters>), CaseFailure> {
        self.connect_instrumented_with(self.config()).await
    }

    /// [`Self::connect_instrumented`] with another configuration.
    pub async fn connect_instrumented_with(
        &self,
        config: Config,
    ) -> Result<(ServiceGroup, Arc<Counters>), CaseFailure> {
        // Exactly what `ServiceGroup::connect` does: the driver gets the validated
        // configuration (Nova's down-time rule applied), as a TTL driver must.
        let config = config.validated().ctx("Config::validated")?;
        let driver = Registry::build(&config)
            .await
            .ctx(format_args!("Registry::build (driver {:?})", self.driver()))?;
        let wrapped = Instrumented::new(driver);
        let counters = wrapped.counters();
        let sg = ServiceGroup::with_driver(Arc::new(wrapped), config)
            .ctx("ServiceGroup::with_driver")?;
        Ok((sg, counters))
    }

    /// A group name unique to this case run: `<label>-<random>`.
    pub fn group(&self, label: &str) -> String {
        format!("{label}-{}", self.suffix)
    }

    /// The random suffix of this run's group names.
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// How long to wait between two polls.
    pub fn poll_every(&self) -> Duration {
        (self.t.report_interval / 8)
            .min(Duration::from_millis(25))
            .max(Duration::from_millis(1))
    }

    /// Sleeps one poll interval.
    pub async fn pause(&self) {
        tokio::time::sleep(self.poll_every()).await;
    }

    /// The longest a thing that must happen by the next heartbeat may take: one
    /// report interval, one call timeout (a call hung at that moment), the driver's
    /// resolution and the slack.
    pub fn next_heartbeat_within(&self) -> Duration {
        self.t.report_interval + self.t.call_timeout + self.res() + self.t.slack
    }

    /// A deadline `after` from now.
    pub fn deadline(&self, after: Duration) -> Deadline {
        let now = Instant::now();
        Deadline {
            started: now,
            at: now + after,
        }
    }

    /// The outage hook (the case declared [`Need::Outage`]).
    pub fn outage(&self) -> Result<&dyn Outage, CaseFailure> {
        self.outage
            .as_deref()
            .ok_or_else(|| CaseFailure::new(FailureKind::MissingRequirement, "no outage hook"))
    }

    /// Stops the backend through the outage hook.
    pub async fn stop_backend(&self) -> Result<(), CaseFailure> {
        self.outage()?.stop().await.map_err(|e| {
            CaseFailure::new(
                FailureKind::Setup,
                format!("the outage hook's stop() failed: {e}"),
            )
        })
    }

    /// Starts the backend again through the outage hook.
    pub async fn start_backend(&self) -> Result<(), CaseFailure> {
        self.outage()?.start().await.map_err(|e| {
            CaseFailure::new(
                FailureKind::Setup,
                format!("the outage hook's start() failed: {e}"),
            )
        })
    }

    /// Backend operations spent on heartbeats so far (the case declared [`Need::HeartbeatOps`]).
    pub fn heartbeat_ops(&self) -> Result<u64, CaseFailure> {
        self.heartbeat_ops
            .as_ref()
            .map(|count| count())
            .ok_or_else(|| CaseFailure::new(FailureKind::MissingRequirement, "no op counter"))
    }

    /// The events this case's threads logged (the case declared [`Need::LogCapture`]).
    pub fn logs(&self) -> Vec<Captured> {
        match &self.log_prefix {
            Some(prefix) => logs::captured(prefix),
            None => Vec::new(),
        }
    }
}

/// A point in time by which something must have happened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    started: Instant,
    at: Instant,
}

impl Deadline {
    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        Instant::now() > self.at
    }

    /// A [`FailureKind::Violation`] saying `what` did not happen in time, once the
    /// deadline has passed; `Ok` before.
    pub fn check(&self, what: impl FnOnce() -> String) -> Result<(), CaseFailure> {
        if self.passed() {
            Err(CaseFailure::violation(format!(
                "{} (waited {:?})",
                what(),
                self.at - self.started
            )))
        } else {
            Ok(())
        }
    }
}
