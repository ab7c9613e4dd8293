//! Identity under contention: two processes join one member at the same instant
//! on the shared 3-member cluster. There is one holder, never two: with exclusive
//! joins one process gets the member and the other `Conflict`; with takeover joins
//! both succeed in some order (epochs 1 and 2) and the first is told it was
//! superseded.
//!
//! The test binary runs itself as the two processes (`harness = false`): with
//! `SG_ETCD_CHILD_MODE` set it is a child that joins and reports on stdout.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use servicegroup_core::chrono::Utc;
use servicegroup_core::{ErrorKind, JoinOptions, ServiceGroup};
// Name the driver crate, or the linker drops it and its registration.
use servicegroup_driver_etcd as _;

const GROUP: &str = "compute";
const MEMBER: &str = "contended";
const ROUNDS: usize = 3;

/// The test's one name, for the test runners' `--list`.
const NAME: &str = "two_processes_join_one_member_one_holder";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        // libtest's listing format, which cargo-nextest reads; no ignored tests.
        if !args.iter().any(|a| a == "--ignored") {
            println!("{NAME}: test");
        }
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match std::env::var("SG_ETCD_CHILD_MODE") {
        Ok(mode) => runtime.block_on(child(&mode)),
        Err(_) => {
            runtime.block_on(parent());
            println!("test {NAME} ... ok");
        }
    }
}

fn child_config() -> servicegroup_core::Config {
    let endpoints: Vec<String> = std::env::var("SG_ETCD_CHILD_ENDPOINTS")
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    let mut c = common::config(&endpoints, "unused");
    c.set(
        "etcd.prefix",
        std::env::var("SG_ETCD_CHILD_PREFIX").unwrap(),
    )
    .unwrap();
    c.report_interval = Duration::from_millis(200);
    c.service_down_time = Duration::from_secs(4);
    c
}

/// One contender: joins at the agreed instant, says what happened, then whether it
/// was superseded within 3 s.
async fn child(mode: &str) {
    let sg = ServiceGroup::connect(child_config()).await.unwrap();
    let at: i64 = std::env::var("SG_ETCD_CHILD_AT").unwrap().parse().unwrap();
    let wait = (at - Utc::now().timestamp_millis()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let options = JoinOptions::new().with_exclusive(mode == "exclusive");
    match sg.join_with(GROUP, MEMBER, options).await {
        Ok(m) => {
            println!("joined {} {}", m.instance(), m.epoch());
            match tokio::time::timeout(Duration::from_secs(3), m.superseded()).await {
                Ok(holder) => println!("superseded {holder}"),
                Err(_) => println!("held"),
            }
            // Keep the record for the parent to read; the process exits without leaving.
            m.crash();
        }
        Err(e) if e.kind() == ErrorKind::Conflict => println!("conflict"),
        Err(e) => println!("error {e}"),
    }
}

async fn parent() {
    let endpoints = common::shared_endpoints();
    let exe = std::env::current_exe().unwrap();
    for mode in ["exclusive", "takeover"] {
        for round in 0..ROUNDS {
            let prefix = servicegroup_conformance::unique_name("contend");
            let at = Utc::now().timestamp_millis() + 1500;
            let children: Vec<_> = (0..2)
                .map(|_| {
                    Command::new(&exe)
                        .env("SG_ETCD_CHILD_MODE", mode)
                        .env("SG_ETCD_CHILD_ENDPOINTS", endpoints.join(","))
                        .env("SG_ETCD_CHILD_PREFIX", &prefix)
                        .env("SG_ETCD_CHILD_AT", at.to_string())
                        .stdout(Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            let outputs: Vec<Vec<String>> = children
                .into_iter()
                .map(|c| {
                    let out = c.wait_with_output().unwrap();
                    assert!(out.status.success(), "a contender failed: {out:?}");
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .map(str::to_owned)
                        .collect()
                })
                .collect();
            let mut config = child_config_for(&endpoints, &prefix);
            config.service_down_time = Duration::from_secs(4);
            let observer = ServiceGroup::connect(config).await.unwrap();
            let status = observer.member(GROUP, MEMBER).await.unwrap();
            let holder = status.holder;
            eprintln!("{mode} round {round}: {outputs:?}; final holder {holder}");
            let joined: Vec<(String, u64)> = outputs
                .iter()
                .filter_map(|o| o.first())
                .filter_map(|l| l.strip_prefix("joined "))
                .map(|l| {
                    let (i, e) = l.split_once(' ').unwrap();
                    (i.to_owned(), e.parse().unwrap())
                })
                .collect();
            let held: Vec<&Vec<String>> = outputs
                .iter()
                .filter(|o| o.get(1).map(String::as_str) == Some("held"))
                .collect();
            assert!(
                held.len() <= 1,
                "{mode}: both processes kept the member: {outputs:?}"
            );
            match mode {
                "exclusive" => {
                    assert_eq!(joined.len(), 1, "exclusive: one join must win: {outputs:?}");
                    assert!(
                        outputs
                            .iter()
                            .any(|o| o.first().map(String::as_str) == Some("conflict")),
                        "exclusive: the other join must be Conflict: {outputs:?}"
                    );
                    assert_eq!(joined[0].1, 1);
                    assert_eq!(holder.instance.to_string(), joined[0].0);
                    assert_eq!(held.len(), 1, "exclusive: the winner keeps it: {outputs:?}");
                }
                _ => {
                    assert_eq!(joined.len(), 2, "takeover: both joins succeed: {outputs:?}");
                    let mut epochs: Vec<u64> = joined.iter().map(|j| j.1).collect();
                    epochs.sort();
                    assert_eq!(
                        epochs,
                        vec![1, 2],
                        "takeover: one after the other: {outputs:?}"
                    );
                    let last = joined.iter().find(|j| j.1 == 2).unwrap();
                    assert_eq!(holder.instance.to_string(), last.0);
                    assert_eq!(holder.epoch, 2);
                    let first = outputs
                        .iter()
                        .find(|o| o.first().is_some_and(|l| l.ends_with(" 1")))
                        .unwrap();
                    assert!(
                        first.get(1).is_some_and(|l| l.starts_with("superseded")),
                        "takeover: the first holder must be told: {outputs:?}"
                    );
                }
            }
        }
    }
}

fn child_config_for(endpoints: &[String], prefix: &str) -> servicegroup_core::Config {
    let mut c = common::config(endpoints, "unused");
    c.set("etcd.prefix", prefix.to_owned()).unwrap();
    c
}
