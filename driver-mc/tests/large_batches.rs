//! Batches larger than one work item of a server (heartbeats are written in
//! parallel parts and their index entries checked once; listings read in parts)
//! against the first shared memcached server.

mod common;

use common::*;
use servicegroup_core::{Driver, InstanceId, MemberKey};
use servicegroup_driver_mc::McDriver;

fn keys(group: &str, range: std::ops::Range<usize>) -> Vec<MemberKey> {
    range
        .map(|i| {
            MemberKey::new(
                group.parse().unwrap(),
                format!("host-{i:05}").parse().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_heartbeat_reports_each_missing_member_once_and_listing_is_complete() {
    let servers = shared_servers();
    let config = config(&servers[..1], "large");
    let driver = McDriver::connect(&config).await.unwrap();
    // 12 000 members: three write parts plus one index check on the server.
    let joined = keys("compute", 0..12_000);
    let me = InstanceId::random();
    register_all(&driver, &joined, me).await;

    let report = beat(&driver, me, &joined).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{:?}",
        &report.missing[..report.missing.len().min(5)]
    );

    // Never registered: no record and no index entry, reported once each.
    let mut batch = joined.clone();
    let strangers = keys("compute", 20_000..20_003);
    batch.splice(6_000..6_000, strangers.iter().cloned());
    let report = beat(&driver, me, &batch).await;
    let expected: Vec<_> = strangers.iter().map(|k| (me, k.clone())).collect();
    assert_eq!(report.missing, expected);
    assert!(report.superseded.is_empty());

    let listed = driver.list(&"compute".parse().unwrap()).await.unwrap();
    assert_eq!(listed.len(), joined.len());
    let mut listed_keys: Vec<MemberKey> = listed.iter().map(|r| r.key.clone()).collect();
    listed_keys.sort();
    let mut expected = joined.clone();
    expected.sort();
    assert_eq!(listed_keys, expected);
    assert!(listed.iter().all(|r| !r.forced_down));

    // A forced-down member is listed forced down (the flag is in its record).
    assert!(driver.set_forced_down(&joined[7_777], true).await.unwrap());
    let listed = driver.list(&"compute".parse().unwrap()).await.unwrap();
    let forced: Vec<&MemberKey> = listed
        .iter()
        .filter(|r| r.forced_down)
        .map(|r| &r.key)
        .collect();
    assert_eq!(forced, vec![&joined[7_777]]);
}
