//! Observers as deployed (`Observe::Watch`): each a `Watch` of the group, on a SQLite
//! file (the embedded default, nothing to start). Every kill is seen as a `down`
//! event in time and no live member ever is.

use std::time::Duration;

use servicegroup::Config;
use servicegroup_simulator::{Observe, Options};

#[test]
fn watch_observers_see_every_kill_and_no_live_member_down() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config::with_driver("db");
    config
        .set(
            "db.url",
            format!("sqlite://{}/sim.db", dir.path().display()),
        )
        .unwrap();
    config.report_interval = Duration::from_millis(500);
    config.service_down_time = Duration::from_secs(2);
    let options = Options {
        members: 400,
        handles: 2,
        duration: Duration::from_secs(4),
        kill: 0.05,
        observers: 2,
        observe: Observe::Watch,
        ..Options::default()
    };
    let report = runtime
        .block_on(servicegroup_simulator::run(config, options))
        .unwrap();
    assert!(report.ok, "{}", report.text());
    assert_eq!(report.observe, "watch");
    assert_eq!(report.killed, 20, "{}", report.text());
    assert_eq!(report.detected, report.killed, "{}", report.text());
    assert_eq!(report.false_downs, 0, "{}", report.text());
    // A watch's polls are not timed one by one, and it checks no single members.
    assert_eq!((report.listings, report.checks), (0, 0));
}
