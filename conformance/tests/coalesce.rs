//! Coalescing, counted with the suite's instrumenting wrapper: handles built on one
//! driver instance in one process share one driver call per tick window
//! (`coalesce_window`), however many there are. The driver is the real `inproc`
//! driver, which follows tokio's clock, so the run uses the paused clock: the counts
//! are exact and the test takes no wall time to speak of.

use std::sync::Arc;
use std::time::Duration;

use servicegroup_conformance::instrument::Instrumented;
use servicegroup_conformance::unique_name;
use servicegroup_core::{Config, Driver, Registry, ServiceGroup, State};
use servicegroup_driver_inproc as _;
use tokio::time::Instant;

const HANDLES: usize = 10_000;

async fn inproc_config() -> Config {
    let mut config = Config::with_driver("inproc");
    config.set("inproc.name", unique_name("coalesce")).unwrap();
    config.report_interval = Duration::from_secs(1);
    config.service_down_time = Duration::from_secs(6);
    config
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_handles_on_one_driver_make_about_one_heartbeat_call_per_window() {
    let config = inproc_config().await;
    let window = config.coalesce_window;
    let built = Registry::build(&config).await.unwrap();
    let instrumented = Instrumented::new(built);
    let counters = instrumented.counters();
    let driver: Arc<dyn Driver> = Arc::new(instrumented);

    let group = "compute";
    let mut handles = Vec::with_capacity(HANDLES);
    for _ in 0..HANDLES {
        handles.push(ServiceGroup::with_driver(driver.clone(), config.clone()).unwrap());
    }
    // Every handle joins its own member, all at once (as 10,000 services starting).
    let joins = handles.iter().enumerate().map(|(i, sg)| {
        let sg = sg.clone();
        tokio::spawn(async move { sg.join(group, format!("host-{i:05}")).await })
    });
    let joins: Vec<_> = joins.collect();
    let mut memberships = Vec::with_capacity(HANDLES);
    for join in joins {
        memberships.push(join.await.unwrap().unwrap());
    }
    // Joins were merged too: far fewer registration calls than joins.
    let registration_calls = counters.register_calls() + counters.register_many_calls();
    assert_eq!(counters.registrations(), HANDLES as u64);
    assert!(
        registration_calls <= (HANDLES / 100) as u64,
        "{registration_calls} registration calls for {HANDLES} joins"
    );

    // Five report intervals of heartbeats.
    let seconds = 5u32;
    let from = Instant::now();
    let before = counters.heartbeats().len();
    tokio::time::sleep(Duration::from_secs(seconds.into())).await;
    let calls: Vec<_> = counters.heartbeats()[before..].to_vec();

    // Every handle heartbeated every tick (each handle's part is its one key)...
    let carried: usize = calls.iter().map(|c| c.keys).sum();
    let ticks = HANDLES * seconds as usize;
    assert!(
        carried >= ticks * 95 / 100,
        "{carried} member heartbeats carried, {ticks} ticks due"
    );
    // ...in about one call per window: the handles' ticks are spread over the
    // interval, so at most one call per window (plus one at each edge), never one
    // per handle.
    let windows = (Duration::from_secs(seconds.into()).as_nanos() / window.as_nanos()) as usize;
    assert!(
        calls.len() <= windows + 2,
        "{} heartbeat calls in {seconds} s, {windows} windows of {window:?}",
        calls.len()
    );
    assert!(
        calls.len() >= windows / 2,
        "{} calls: the ticks are spread over the interval, so most windows have one",
        calls.len()
    );
    // Consecutive calls are at least one window apart: a batch goes out when its
    // window ends (10,000 keys would close it early; one window never holds them).
    for pair in calls.windows(2) {
        assert!(
            pair[1].started - pair[0].started >= window,
            "calls {:?} apart",
            pair[1].started - pair[0].started
        );
    }
    assert!(calls.iter().all(|c| c.started >= from));
    let largest = calls.iter().map(|c| c.parts.len()).max().unwrap_or(0);
    assert!(largest > 1, "calls carry several handles' parts");

    // And every member is up, held by its own handle.
    let observer = ServiceGroup::with_driver(driver.clone(), config.clone()).unwrap();
    let down = observer.members_in(group, State::Down).await.unwrap();
    assert!(down.is_empty(), "{} members down", down.len());
    for (sg, m) in handles.iter().zip(&memberships).step_by(997) {
        assert_eq!(m.instance(), sg.instance());
        assert!(!m.is_superseded());
    }
}
