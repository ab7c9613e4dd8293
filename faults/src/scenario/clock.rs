//! Scenario 9, *clock jump on a client*: two more member processes run under
//! libfaketime (`faketime -f +1h` and `-1h`; the monotonic clock untouched, so only
//! wall-clock time jumps). Liveness is judged on the backend's clock, so their
//! members must be listed up like everyone else's, through more than one
//! service_down_time.

use std::time::Duration;

use crate::backend::BackendName;
use crate::error::{FaultsError, Result};
use crate::fleet::{MemberProcess, ProcessOptions};
use crate::report::Row;
use crate::scenario::harness::{Harness, Setup};
use crate::scenario::ScenarioName;
use crate::Context;

const PER_SKEWED: usize = 10;

/// Runs the scenario on `backend`.
pub async fn run(ctx: &Context, backend: BackendName) -> Result<Row> {
    if std::process::Command::new("faketime")
        .arg("-f")
        .arg("+1h")
        .arg("true")
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        return Err(FaultsError::Setup(
            "faketime is not installed (apt-get install faketime)".into(),
        ));
    }
    let mut h = Harness::start(ctx, ScenarioName::Clock, backend, Setup::default()).await?;
    let launch = h.fleet.launch().clone();
    let mut first = ctx.processes * ctx.per_process;
    for (name, offset) in [("ahead", "+1h"), ("behind", "-1h")] {
        let options = ProcessOptions {
            wrapper: vec!["faketime".into(), "-f".into(), offset.into()],
            env: vec![("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into())],
            ..ProcessOptions::default()
        };
        let p = MemberProcess::spawn(&launch, name, first, PER_SKEWED, &options).await?;
        match p.joined(Duration::from_secs(30)).await? {
            Ok(_) => {}
            Err((kind, message)) => {
                h.row.fail(format!(
                    "the member {offset} failed to join ({kind}): {message}"
                ));
            }
        }
        h.observer.now_live(&p.ids());
        h.fleet.processes.push(p);
        first += PER_SKEWED;
    }
    h.row.note(format!(
        "{PER_SKEWED} members an hour ahead, {PER_SKEWED} an hour behind"
    ));
    h.run_for(ctx.timing.service_down_time + Duration::from_secs(3))
        .await;
    h.finish().await
}
