//! `simulate --topology per-process` on SQLite and on the PostgreSQL server
//! scripts/test starts (`SERVICEGROUP_TEST_POSTGRES_URL`; without it the test fails,
//! it never passes silently): every member its own handle, zero false downs, every
//! kill detected, one heartbeat call per simulated process per tick (never merged),
//! and the report naming the topology, the driver instances and the connections.

mod common;

use std::time::Duration;

use common::{assert_simulation_ok, Env};
use serde_json::Value;

const MEMBERS: u64 = 60;
const KILLED: u64 = 6;

fn run_per_process(env: &Env, per_driver: u32) -> Value {
    let per = per_driver.to_string();
    let out = env.run_timeout(
        &[
            "simulate",
            "--topology",
            "per-process",
            "--processes-per-driver",
            &per,
            "--members",
            &MEMBERS.to_string(),
            "--duration",
            "6s",
            "--kill",
            "0.1",
            "--report-interval",
            "500ms",
            "--service-down-time",
            "2s",
            "--json",
        ],
        Duration::from_secs(180),
    );
    out.json()
}

/// What every per-process report must say, for `per_driver` processes per instance.
fn assert_per_process(r: &Value, per_driver: u64) {
    assert_simulation_ok(r, MEMBERS, KILLED, 2.0, 0.5);
    assert_eq!(r["driver"], "db", "{r:#}");
    assert_eq!(r["topology"], "per-process", "{r:#}");
    assert_eq!(r["handles"], MEMBERS, "one handle per member: {r:#}");
    assert_eq!(r["processes_per_driver"], per_driver, "{r:#}");
    let instances = MEMBERS.div_ceil(per_driver) + 1;
    assert_eq!(
        r["driver_instances"], instances,
        "plus the observers': {r:#}"
    );
    // Every call carries one process's one member: as many calls as heartbeats, and
    // about one per live process per tick (the killed ones stop part-way).
    let (batches, heartbeats) = (
        r["heartbeat_batches"].as_u64().unwrap(),
        r["heartbeats"].as_u64().unwrap(),
    );
    assert_eq!(batches, heartbeats, "calls merged across processes: {r:#}");
    let ticks = r["duration_seconds"].as_f64().unwrap() / 0.5;
    let floor = ((MEMBERS - KILLED) as f64 * ticks * 0.8) as u64;
    assert!(batches >= floor, "{batches} calls < {floor}: {r:#}");
    // Every instance holds at least one connection, none more than its pool (8).
    let connections = r["connections"].as_u64().unwrap();
    assert!(
        (instances..=instances * 8).contains(&connections),
        "{connections} connections for {instances} instances: {r:#}"
    );
}

#[test]
fn per_process_on_sqlite() {
    let env = Env::sqlite();
    let r = run_per_process(&env, 1);
    assert_per_process(&r, 1);

    // The text report names the topology and what it used.
    let text = env.run_timeout(
        &[
            "simulate",
            "--topology",
            "per-process",
            "--processes-per-driver",
            "4",
            "--members",
            "20",
            "--duration",
            "2s",
            "--kill",
            "0",
            "--report-interval",
            "200ms",
            "--service-down-time",
            "1s",
        ],
        Duration::from_secs(120),
    );
    text.expect_code(0);
    assert!(
        text.stdout.contains(
            "topology           per-process: 20 processes, each its own handle; 6 driver instances (up to 4 processes per instance"
        ),
        "{}",
        text.stdout
    );
}

#[test]
fn per_process_on_postgres_shares_instances() {
    let env = Env::postgres("per_process");
    let r = run_per_process(&env, 10);
    assert_per_process(&r, 10);
}

#[test]
fn shared_topology_is_the_default_and_says_so() {
    let env = Env::sqlite();
    let out = env.run_timeout(
        &[
            "simulate",
            "--members",
            "40",
            "--handles",
            "2",
            "--duration",
            "4s",
            "--kill",
            "0.1",
            "--report-interval",
            "200ms",
            "--service-down-time",
            "1s",
            "--json",
        ],
        Duration::from_secs(120),
    );
    let r = out.json();
    assert_simulation_ok(&r, 40, 4, 1.0, 0.2);
    assert_eq!(r["topology"], "shared", "{r:#}");
    assert_eq!(r["processes_per_driver"], Value::Null, "{r:#}");
    assert_eq!(r["driver_instances"], 1, "{r:#}");
    assert!(r["connections"].as_u64().unwrap() >= 1, "{r:#}");
}
