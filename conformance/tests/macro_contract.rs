//! What `conformance_suite!` promises: one test per case in table order, declared
//! skips emitted as ignored tests (so runners report them as skipped, never passed),
//! and every other way of not running a case is a failure.
//!
//! The suite here runs on a plain `Config` (no hooks), so the cases needing hooks must
//! be, and are, declared skipped.

use std::process::Command;

use servicegroup_conformance::{cases, conformance_suite, run_case, unique_name, Clock, CASES};
use servicegroup_core::{
    async_trait, Beats, Capabilities, Config, Driver, GroupId, HeartbeatReport, HolderUpdate,
    InstanceId, MemberKey, MemberRecord, Metadata, Registered, Registration, Result,
};
use servicegroup_driver_inproc::{InprocConfig, InprocDriver};

async fn setup() -> Result<Config> {
    let mut config = Config::with_driver("inproc");
    config.set("inproc.name", unique_name("contract"))?;
    Ok(config)
}

conformance_suite!(plain_config, setup, clock: paused, skip: {
    outage_is_an_error_never_down: "this fixture has no outage hook",
    heartbeats_recover_after_outage: "this fixture has no outage hook",
    outage_logs_lost_and_recovered_once: "this fixture has no outage hook",
    heartbeat_batch_costs_few_backend_operations: "this fixture counts no backend operations",
});

#[test]
fn the_macro_emits_every_case_of_the_table_in_order() {
    let table: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    assert_eq!(plain_config::CASE_NAMES, table.as_slice());
    assert!(table.len() >= 25, "{} cases", table.len());
    let mut unique = table.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), table.len(), "duplicate case names");
    for case in CASES {
        assert!(
            !case.summary.trim().is_empty(),
            "{} has no summary",
            case.name
        );
    }
}

#[test]
fn declared_skips_are_ignored_tests_with_their_reason() {
    assert_eq!(plain_config::DECLARED_SKIPS.len(), 4);
    // Ask this very test binary which tests are ignored.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--list", "--ignored", "--format", "terse"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8(out.stdout).unwrap();
    let mut ignored: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    ignored.sort();
    let mut declared: Vec<String> = plain_config::DECLARED_SKIPS
        .iter()
        .map(|(case, _)| format!("plain_config::{case}"))
        .collect();
    declared.sort();
    assert_eq!(ignored, declared);
}

#[test]
#[should_panic(expected = "declare the case skipped with a reason")]
fn a_missing_hook_that_was_not_declared_fails() {
    run_case(
        "outage_is_an_error_never_down",
        Clock::Paused,
        None,
        setup,
        cases::outage_is_an_error_never_down,
    );
}

#[test]
#[should_panic(expected = "it ran because ignored tests were requested")]
fn a_declared_skip_run_anyway_fails_rather_than_passes() {
    run_case(
        "outage_is_an_error_never_down",
        Clock::Paused,
        Some("this fixture has no outage hook"),
        setup,
        cases::outage_is_an_error_never_down,
    );
}

#[test]
#[should_panic(expected = "the setup function failed: no database here")]
fn a_failing_setup_fails_the_case() {
    run_case(
        "join_is_visible_at_once",
        Clock::Real,
        None,
        || async { Err::<Config, _>("no database here") },
        cases::join_is_visible_at_once,
    );
}

/// inproc, but claiming not to follow tokio's clock.
#[derive(Debug)]
struct WallClockOnly(InprocDriver);

#[async_trait]
impl Driver for WallClockOnly {
    fn name(&self) -> &str {
        "wall-clock-only"
    }
    fn capabilities(&self) -> Capabilities {
        let mut caps = self.0.capabilities();
        caps.follows_tokio_clock = false;
        caps
    }
    async fn register(&self, registration: &Registration) -> Result<Registered> {
        self.0.register(registration).await
    }
    async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        self.0.heartbeat(batch).await
    }
    async fn remove(&self, key: &MemberKey, holder: Option<InstanceId>) -> Result<bool> {
        self.0.remove(key, holder).await
    }
    async fn set_metadata(
        &self,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        self.0.set_metadata(key, instance, metadata).await
    }
    async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool> {
        self.0.set_forced_down(key, forced_down).await
    }
    async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>> {
        self.0.get(key).await
    }
    async fn list(&self, group: &GroupId) -> Result<Vec<MemberRecord>> {
        self.0.list(group).await
    }
    async fn groups(&self) -> Result<Vec<GroupId>> {
        self.0.groups().await
    }
}

servicegroup_core::register_driver! {
    name: "wall-clock-only",
    description: "inproc claiming not to follow tokio's clock (conformance self-test)",
    build: |config: Config| Box::pin(async move {
        let store = config.driver_config::<InprocConfig>("inproc")?.name;
        Ok(std::sync::Arc::new(WallClockOnly(InprocDriver::new(&store))) as std::sync::Arc<dyn Driver>)
    }),
}

#[test]
#[should_panic(expected = "does not follow tokio's clock")]
fn a_paused_clock_on_a_driver_that_does_not_follow_it_fails() {
    run_case(
        "join_is_visible_at_once",
        Clock::Paused,
        None,
        || async {
            let mut config = Config::with_driver("wall-clock-only");
            config.set("inproc.name", unique_name("wall")).unwrap();
            config
        },
        cases::join_is_visible_at_once,
    );
}
