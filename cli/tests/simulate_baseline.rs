//! `simulate --baseline nova` on the PostgreSQL server scripts/test starts
//! (`SERVICEGROUP_TEST_POSTGRES_URL`; without it the test fails, it never passes
//! silently): a small fleet runs Nova's read-then-update heartbeats with zero false
//! downs and the same report as ours, plus the server's CPU when given its pid.

mod common;

use std::time::Duration;

use common::{assert_simulation_ok, Env};

#[test]
fn nova_baseline_small_fleet_has_no_false_downs() {
    // Nova's five round trips per member report are slow in a debug build on a busy
    // machine: 200 members at 1 s need 200 reports/s, well within reach.
    let env = Env::postgres("nova_baseline");
    let out = env.run_timeout(
        &[
            "simulate",
            "--baseline",
            "nova",
            "--members",
            "200",
            "--duration",
            "8s",
            "--kill",
            "0.1",
            "--report-interval",
            "1s",
            "--service-down-time",
            "3s",
            "--server-pid",
            &std::process::id().to_string(),
            // Repeatable (a cluster's members): summed. Here this test's parent.
            "--server-pid",
            &std::os::unix::process::parent_id().to_string(),
            "--json",
        ],
        Duration::from_secs(120),
    );
    let r = out.json();
    assert_simulation_ok(&r, 200, 20, 3.0, 1.0);
    assert_eq!(r["driver"], "nova-db", "{r:#}");
    assert_eq!(r["baseline"], "nova", "{r:#}");
    // One transaction per member heartbeat: as many "batches" as heartbeats.
    assert_eq!(r["heartbeat_batches"], r["heartbeats"], "{r:#}");
    let lateness = &r["heartbeat_lateness_ms"];
    assert!(lateness["p99"].as_f64().is_some(), "{r:#}");
    // --server-pid is read from /proc (here: this test process, which surely exists).
    assert!(r["server"]["cpu_seconds"].as_f64().is_some(), "{r:#}");
    assert!(r["server"]["pss_mb"].as_f64().is_some(), "{r:#}");
    let pids: Vec<u64> = r["server"]["pids"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(
        pids,
        [
            u64::from(std::process::id()),
            u64::from(std::os::unix::process::parent_id())
        ],
        "{r:#}"
    );
}

#[test]
fn nova_baseline_needs_postgresql() {
    let env = Env::sqlite();
    let out = env.run(&["simulate", "--baseline", "nova", "--members", "10"]);
    let line = out.expect_one_line_error();
    assert!(line.contains("PostgreSQL"), "{line}");
}
