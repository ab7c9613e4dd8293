//! The per-process topology through the library, on the PostgreSQL server scripts/test
//! starts (`SERVICEGROUP_TEST_POSTGRES_URL`; without it the test fails, it never
//! passes silently): processes sharing driver instances still send one heartbeat
//! statement each per tick — nothing merges their calls, neither in core nor in the
//! shared instance, as the statements counted at the database connections show.

use std::time::Duration;

use servicegroup::config::DatabaseUrl;
use servicegroup::Config;
use servicegroup_simulator::{Options, Topology};

#[test]
fn processes_sharing_an_instance_send_their_own_statements() {
    let Ok(url) = std::env::var("SERVICEGROUP_TEST_POSTGRES_URL") else {
        panic!(
            "SERVICEGROUP_TEST_POSTGRES_URL is not set: this test needs the PostgreSQL server \
             that scripts/test starts (run `scripts/test`, or set it to a postgres:// URL)"
        );
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config::with_driver("db");
    config.set("db.url", url.as_str()).unwrap();
    config.report_interval = Duration::from_millis(500);
    config.service_down_time = Duration::from_secs(2);
    let db_url = DatabaseUrl::new(url.as_str());
    let before = servicegroup::db::statements_sent(Some(&db_url)).unwrap();
    let options = Options {
        members: 40,
        topology: Topology::PerProcess,
        processes_per_driver: 10,
        duration: Duration::from_secs(5),
        kill: 0.1,
        group: Some(format!("sim-per-process-{}", std::process::id())),
        ..Options::default()
    };
    let report = runtime
        .block_on(servicegroup_simulator::run(config, options))
        .unwrap();
    let statements = servicegroup::db::statements_sent(Some(&db_url)).unwrap() - before;
    assert!(report.ok, "{}", report.text());
    assert_eq!(report.false_downs, 0);
    assert_eq!(report.killed, 4);
    assert_eq!(report.topology, "per-process");
    assert_eq!(
        report.driver_instances,
        Some(5),
        "4 shared + the observers'"
    );
    assert_eq!(report.processes_per_driver, Some(10));
    assert_eq!(report.handles, 40);
    // One member per call, about one call per live process per tick...
    assert_eq!(report.heartbeat_batches, report.heartbeats);
    let floor = (36.0 * report.duration_seconds / 0.5 * 0.8) as u64;
    assert!(report.heartbeat_batches >= floor, "{}", report.text());
    // ...and each call at least one statement at the database (joins, observers and
    // cleanup add more): calls merged anywhere below would send fewer.
    assert!(
        statements >= report.heartbeat_batches,
        "{statements} statements for {} heartbeat calls",
        report.heartbeat_batches
    );
}
