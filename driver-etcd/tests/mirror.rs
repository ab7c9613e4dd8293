//! Group mirrors (`etcd.mirror`, `etcd.mirror_idle`): listings answered from the copy the driver's
//! watch keeps must be what a fresh read of the group says, right after every kind
//! of write by another process (read-your-writes across processes), including a
//! member going down by its lease expiring; a mirror ends when idle and starts again
//! at the next listing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use servicegroup_core::{Config, MemberStatus, ServiceGroup, State};
use servicegroup_driver_etcd::EtcdDriver;
use tokio::time::Instant;

const GROUP: &str = "compute";

/// What a listing says of a member, heartbeat times aside (a fresh read happens
/// later than the mirror's, and heartbeats go on in between).
fn seen(list: Vec<MemberStatus>) -> Vec<String> {
    let mut out: Vec<String> = list
        .into_iter()
        .map(|m| {
            format!(
                "{} {:?} forced={} holder={} metadata={:?}",
                m.member, m.state, m.forced_down, m.holder, m.metadata
            )
        })
        .collect();
    out.sort();
    out
}

/// An observer with its own driver (another process), mirrors kept `mirror_idle`
/// (`None`: `etcd.mirror = false`).
async fn observer(config: &Config, mirror_idle: Option<&str>) -> (ServiceGroup, EtcdDriver) {
    let mut config = config.clone();
    match mirror_idle {
        Some(idle) => config.set("etcd.mirror_idle", idle).unwrap(),
        None => config.set("etcd.mirror", false).unwrap(),
    };
    let driver = EtcdDriver::connect(&config).await.unwrap();
    let handle = ServiceGroup::with_driver(Arc::new(driver.clone()), config).unwrap();
    (handle, driver)
}

/// The mirror's answers equal a fresh read's, for all three kinds of listing.
async fn agree(mirrored: &ServiceGroup, fresh: &ServiceGroup, after: &str) {
    let m = seen(mirrored.members(GROUP).await.unwrap());
    let f = seen(fresh.members(GROUP).await.unwrap());
    assert_eq!(m, f, "members after {after}");
    let m = seen(mirrored.members_in(GROUP, State::Down).await.unwrap());
    let f = seen(fresh.members_in(GROUP, State::Down).await.unwrap());
    assert_eq!(m, f, "down members after {after}");
    let (m, f) = (
        mirrored.summary(GROUP).await.unwrap(),
        fresh.summary(GROUP).await.unwrap(),
    );
    assert_eq!(
        (m.up, m.down, m.forced_down),
        (f.up, f.down, f.forced_down),
        "summary after {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_answers_what_a_fresh_read_does_after_every_write() {
    let mut config = common::config(&common::shared_endpoints(), "mirror");
    config.report_interval = Duration::from_millis(300);
    config.service_down_time = Duration::from_secs(3);
    let (mirrored, driver) = observer(&config, Some("5m")).await;
    let (fresh, fresh_driver) = observer(&config, None).await;
    let writer = ServiceGroup::connect(config.clone()).await.unwrap();
    let other = ServiceGroup::connect(config.clone()).await.unwrap();

    agree(&mirrored, &fresh, "nothing").await;
    assert_eq!(
        driver.mirrors_running(),
        1,
        "the first listing starts a mirror"
    );
    assert_eq!(
        fresh_driver.mirrors_running(),
        0,
        "etcd.mirror = false keeps none"
    );

    let mut held = writer
        .join_many(GROUP, ["a", "b", "c", "d", "e"])
        .await
        .unwrap();
    agree(&mirrored, &fresh, "five joins").await;
    held[1].set_metadata([("zone", "z1")]).await.unwrap();
    agree(&mirrored, &fresh, "metadata").await;
    writer.set_forced_down(GROUP, "c", true).await.unwrap();
    agree(&mirrored, &fresh, "forced down").await;
    held.remove(3).leave().await.unwrap();
    agree(&mirrored, &fresh, "a leave").await;
    // An operator removes a member its holder no longer heartbeats (a live holder
    // would register it again at its next tick).
    drop(held.pop());
    writer.remove(GROUP, "e").await.unwrap();
    agree(&mirrored, &fresh, "an operator's remove").await;
    let _taken = other.join(GROUP, "a").await.unwrap();
    agree(&mirrored, &fresh, "a takeover").await;
    writer.set_forced_down(GROUP, "c", false).await.unwrap();
    agree(&mirrored, &fresh, "forced down cleared").await;
    let listed = seen(mirrored.members(GROUP).await.unwrap());
    assert_eq!(listed.len(), 3, "a, b, c remain: {listed:?}");
    assert_eq!(driver.mirrors_running(), 1, "one mirror served every call");

    // A crashed member: its lease expires, etcd deletes the alive key, and the
    // mirror lists the member down (not dropped), as a fresh read does.
    let crashing = ServiceGroup::connect(config.clone()).await.unwrap();
    crashing.join(GROUP, "g").await.unwrap().crash();
    agree(&mirrored, &fresh, "a join").await;
    let deadline = Instant::now() + config.service_down_time + Duration::from_secs(6);
    loop {
        let down = mirrored.members_in(GROUP, State::Down).await.unwrap();
        if down.iter().any(|m| m.member.as_str() == "g") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mirror never listed the crashed member down: {:?}",
            seen(mirrored.members(GROUP).await.unwrap())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The fresh read is later: it must agree.
    agree(&mirrored, &fresh, "a lease expiry").await;
    drop(held);
}

/// Listings while another process writes all the time: every one answered by the
/// same mirror (none read the group afresh), each showing every join that finished
/// before it began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mirror_serves_listings_while_another_process_writes() {
    let config = common::config(&common::shared_endpoints(), "mirror-busy");
    let (observer, driver) = observer(&config, Some("5m")).await;
    assert!(observer.members(GROUP).await.unwrap().is_empty());
    // Four writers (processes) joining side by side, so writes commit while a
    // listing's sync write is in flight.
    let joined = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let writer = ServiceGroup::connect(config.clone()).await.unwrap();
        let joined = joined.clone();
        writers.push(tokio::spawn(async move {
            let mut held = Vec::new();
            for i in 0..40 {
                held.push(writer.join(GROUP, format!("m-{w}-{i}")).await.unwrap());
                joined.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            held
        }));
    }
    let mut listings = 0;
    while writers.iter().any(|w| !w.is_finished()) || listings == 0 {
        let finished_before = joined.load(std::sync::atomic::Ordering::SeqCst);
        let listed = observer.members(GROUP).await.unwrap().len();
        assert!(
            listed >= finished_before,
            "listed {listed} members after {finished_before} joins had finished"
        );
        listings += 1;
    }
    let mut held = Vec::new();
    for w in writers {
        held.push(w.await.unwrap());
    }
    assert_eq!(observer.members(GROUP).await.unwrap().len(), 160);
    assert_eq!(
        driver.mirrors_started(),
        1,
        "{listings} listings during the joins must not restart the mirror"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_mirror_ends_and_the_next_listing_starts_one() {
    let config = common::config(&common::shared_endpoints(), "mirror-idle");
    let (observer, driver) = observer(&config, Some("1s")).await;
    let writer = ServiceGroup::connect(config.clone()).await.unwrap();
    let _a = writer.join(GROUP, "a").await.unwrap();
    assert_eq!(observer.members(GROUP).await.unwrap().len(), 1);
    assert_eq!(driver.mirrors_running(), 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    while driver.mirrors_running() > 0 {
        assert!(Instant::now() < deadline, "the idle mirror did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Changes while no mirror ran are read by the next listing.
    let _b = writer.join(GROUP, "b").await.unwrap();
    assert_eq!(observer.members(GROUP).await.unwrap().len(), 2);
    assert_eq!(driver.mirrors_running(), 1);
}
