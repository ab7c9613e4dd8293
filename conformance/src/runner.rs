//! How the macro runs one case: on its own named threads, on its own runtime.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::failure::{CaseFailure, FailureKind};
use crate::fixture::{Fixture, IntoFixture};
use crate::logs::{self, THREAD_PREFIX};

/// Which clock the cases run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Real time on a multi-thread tokio runtime (two workers). Works for every driver.
    Real,
    /// Tokio's paused clock on a current-thread runtime: time jumps ahead whenever every
    /// task waits, so timing cases finish at once and deterministically. Only for drivers
    /// whose [`Capabilities::follows_tokio_clock`](servicegroup_core::Capabilities) is true.
    Paused,
}

/// Runs `case` on a fixture from `setup`, panicking with the failure message if it
/// fails. The macro calls this once per case; call it yourself to run a case as a test.
///
/// The case runs on a fresh thread named `sgc-<n>:case` with its own runtime (worker
/// threads `sgc-<n>:worker`), so the suite's log capture can tell its events apart.
/// `declared_skip` is the reason given in the macro's `skip:` list; such a case is
/// `#[ignore]`d, and when run anyway (`--ignored`) it runs for real, failing if its
/// needs are not met.
pub fn run_case<S, Fut, T, C, CFut>(
    case: &'static str,
    clock: Clock,
    declared_skip: Option<&'static str>,
    setup: S,
    body: C,
) where
    S: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: IntoFixture,
    C: FnOnce(Fixture) -> CFut + Send + 'static,
    CFut: Future<Output = Result<(), CaseFailure>>,
{
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("{THREAD_PREFIX}{run}:");
    logs::install();
    let worker_name = format!("{prefix}worker");
    let thread = std::thread::Builder::new()
        .name(format!("{prefix}case"))
        .spawn(move || -> Result<(), CaseFailure> {
            let runtime = match clock {
                Clock::Real => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(worker_name)
                    .enable_all()
                    .build(),
                Clock::Paused => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .start_paused(true)
                    .build(),
            }
            .map_err(|e| {
                CaseFailure::new(
                    FailureKind::Setup,
                    format!("cannot build a tokio runtime: {e}"),
                )
            })?;
            runtime.block_on(async move {
                let mut fixture = setup().await.into_fixture()?;
                fixture.paused_clock = clock == Clock::Paused;
                body(fixture).await
            })
        });
    let outcome = match thread {
        Ok(handle) => match handle.join() {
            Ok(outcome) => outcome,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(e) => Err(CaseFailure::new(
            FailureKind::Setup,
            format!("cannot spawn the case thread: {e}"),
        )),
    };
    if let Err(failure) = outcome {
        let failure = if failure.case().is_empty() {
            failure.in_case(case)
        } else {
            failure
        };
        match declared_skip {
            Some(reason) => panic!(
                "{failure}\n(this case is declared skipped: {reason:?}; it ran because ignored \
                 tests were requested)"
            ),
            None => panic!("{failure}"),
        }
    }
}
