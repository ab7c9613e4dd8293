//! Each scenario of the fault matrix, once, on its quick backend
//! (`ScenarioName::quick_backend`), with a small fleet: the subset CI runs.
//!
//! A backend's server is started by the scenario itself (its own directory and
//! ports, because scenarios stop and hang it); the `SERVICEGROUP_TEST_*` variable
//! that scripts/test exports for that backend says the server is installed. Without
//! it the test is skipped, except under `CI=true`, where it fails. The disk scenario
//! needs root (it mounts a tmpfs) and the clock scenario `faketime`: missing, they
//! are skipped the same way.

use std::path::PathBuf;

use servicegroup_faults::scenario::{self, ScenarioName};
use servicegroup_faults::Context;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `Some(why)` when the scenario cannot run here.
fn missing(s: ScenarioName) -> Option<String> {
    if let Some(var) = s.quick_backend().test_env() {
        if std::env::var_os(var).is_none() {
            return Some(format!("{var} is not set"));
        }
    }
    if s == ScenarioName::Disk && !scenario::disk::is_root() {
        return Some("the disk scenario mounts a tmpfs and needs root".into());
    }
    let has_faketime = std::process::Command::new("faketime")
        .args(["-f", "+0", "true"])
        .status()
        .is_ok_and(|st| st.success());
    if s == ScenarioName::Clock && !has_faketime {
        return Some("faketime is not installed".into());
    }
    None
}

async fn quick(s: ScenarioName) {
    if let Some(why) = missing(s) {
        assert!(!ci(), "{s}: {why} (CI=true: a missing backend fails)");
        eprintln!("skipped {s}: {why}");
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("servicegroup-faults-test.")
        .tempdir()
        .expect("a temporary directory");
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod the work directory");
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib");
    let mut ctx = Context::new(
        PathBuf::from(env!("CARGO_BIN_EXE_servicegroup-faults")),
        scripts,
        work.path().to_owned(),
    );
    // A smaller fleet than the report's: CI shares two cores with the other tests.
    ctx.processes = 2;
    ctx.per_process = 20;
    let row = scenario::run(&ctx, s, s.quick_backend()).await;
    eprintln!("{}\nnotes: {}", row.summary(), row.notes.join("; "));
    assert!(
        row.outcome.is_ok(),
        "{}\nnotes: {}",
        row.summary(),
        row.notes.join("; ")
    );
}

macro_rules! quick_tests {
    ($($name:ident => $scenario:ident,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            quick(ScenarioName::$scenario).await;
        }
    )*};
}

quick_tests! {
    s01_hang => Hang,
    s02_slow => Slow,
    s03_resets => Resets,
    s04_restart => Restart,
    s05_eviction => Eviction,
    s06_failover => Failover,
    s07_quorum => Quorum,
    s08_disk => Disk,
    s09_clock => Clock,
    s10_watch => Watch,
    s11_duplicate => Duplicate,
    s12_relay_loss => RelayLoss,
}
