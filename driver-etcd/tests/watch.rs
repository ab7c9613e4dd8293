//! The native watch falling behind compaction: the watching handle is cut off its
//! endpoints (its watch stream breaks), members change meanwhile, etcd compacts past
//! every revision the watch saw, and the handle is reconnected. The watch cannot
//! resume from its revision, starts over from a fresh listing, and reports each
//! transition exactly once.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use servicegroup_conformance::proxy::OutageProxy;
use servicegroup_core::{Event, EventKind, ServiceGroup, Watch};
use tokio::time::Instant;
// Name the driver crate, or the linker drops it and its registration.
use servicegroup_driver_etcd as _;

const GROUP: &str = "compute";

fn etcdctl(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .output()
        .expect("etcdctl (Debian's etcd-client, installed by scripts/lib/etcd.sh)");
    assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Compacts the cluster at its current revision.
fn compact_now(endpoint: &str) {
    let status = etcdctl(endpoint, &["put", "sg-test-compact", "x", "-w", "json"]);
    let revision = status
        .split("\"revision\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .expect("a revision in etcdctl's answer")
        .to_owned();
    etcdctl(endpoint, &["compact", &revision]);
}

/// A proxy in front of each endpoint.
async fn proxies(endpoints: &[String]) -> Vec<Arc<OutageProxy>> {
    let mut proxies = Vec::new();
    for endpoint in endpoints {
        let addr = endpoint.trim_start_matches("http://").parse().unwrap();
        proxies.push(Arc::new(OutageProxy::start(addr).await.unwrap()));
    }
    proxies
}

/// The endpoints of `proxies`, in order.
fn proxied_urls(proxies: &[Arc<OutageProxy>]) -> Vec<String> {
    proxies
        .iter()
        .map(|p| format!("http://{}", p.addr()))
        .collect()
}

/// The next events (errors of the cut-off time skipped) until `n` arrived.
async fn events(watch: &mut Watch, n: usize, within: Duration) -> Vec<Event> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Ok(event)) => out.push(event),
            Ok(Err(e)) => assert!(e.kind().is_unreachable(), "{e}"),
            Err(_) => panic!("only {out:?} of {n} events within {within:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_behind_compaction_resynchronises_and_reports_each_transition_once() {
    let endpoints = common::shared_endpoints();
    let proxies = proxies(&endpoints).await;
    let proxied = proxied_urls(&proxies);
    let mut direct = common::config(&endpoints, "watch");
    direct.report_interval = Duration::from_millis(200);
    direct.service_down_time = Duration::from_secs(4);
    direct.watch_interval = Some(Duration::from_millis(50));
    let mut cut = direct.clone();
    cut.set("etcd.endpoints", proxied).unwrap();

    let actor = ServiceGroup::connect(direct).await.unwrap();
    let watcher = ServiceGroup::connect(cut).await.unwrap();
    let a = actor.join(GROUP, "a").await.unwrap();
    let mut watch = watcher.watch(GROUP).await.unwrap();
    let b_early = actor.join(GROUP, "b").await.unwrap();
    let seen = events(&mut watch, 1, Duration::from_secs(5)).await;
    assert_eq!(
        (seen[0].kind, seen[0].member.as_str()),
        (EventKind::Joined, "b")
    );

    for proxy in &proxies {
        proxy.set_reachable(false);
    }
    let c = actor.join(GROUP, "c").await.unwrap();
    actor.set_forced_down(GROUP, "a", true).await.unwrap();
    b_early.leave().await.unwrap();
    let endpoint = endpoints[0].clone();
    tokio::task::spawn_blocking(move || compact_now(&endpoint))
        .await
        .unwrap();
    for proxy in &proxies {
        proxy.set_reachable(true);
    }

    let mut seen: Vec<(EventKind, String)> = events(&mut watch, 3, Duration::from_secs(10))
        .await
        .into_iter()
        .map(|e| (e.kind, e.member.as_str().to_owned()))
        .collect();
    seen.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        seen,
        vec![
            (EventKind::Down, "a".to_owned()),
            (EventKind::Left, "b".to_owned()),
            (EventKind::Joined, "c".to_owned()),
        ]
    );
    // Exactly once: nothing more while nothing changes.
    let quiet = tokio::time::timeout(Duration::from_secs(2), watch.next()).await;
    assert!(quiet.is_err(), "an extra event: {quiet:?}");
    // And it follows live changes again.
    actor.set_forced_down(GROUP, "a", false).await.unwrap();
    let up = events(&mut watch, 1, Duration::from_secs(5)).await;
    assert_eq!((up[0].kind, up[0].member.as_str()), (EventKind::Up, "a"));
    drop((a, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_driver_ends_its_watches() {
    let config = common::config(&common::shared_endpoints(), "drop");
    let driver = servicegroup_driver_etcd::EtcdDriver::connect(&config)
        .await
        .unwrap();
    let weak = Arc::downgrade(driver.backend());
    let feed = servicegroup_core::Driver::change_feed(&driver, &"compute".try_into().unwrap())
        .await
        .unwrap();
    assert!(feed.is_some());
    // Let the fence watch connect and wait on its stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop((driver, feed));
    let deadline = Instant::now() + Duration::from_secs(2);
    while weak.upgrade().is_some() {
        assert!(
            Instant::now() < deadline,
            "the backend outlived its driver: a watch task keeps it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Watch streams go to the members the requests do not: with requests on the first
/// endpoint, the fence watch and a group mirror's watch open on the second and third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_go_to_the_other_members() {
    let endpoints = common::shared_endpoints();
    let proxies = proxies(&endpoints).await;
    let mut config = common::config(&endpoints, "spread");
    let proxied = proxied_urls(&proxies);
    config.set("etcd.endpoints", proxied).unwrap();
    let sg = ServiceGroup::connect(config).await.unwrap();
    let _a = sg.join(GROUP, "a").await.unwrap();
    // The first listing starts the group's mirror (its watch: a second stream).
    assert_eq!(sg.members(GROUP).await.unwrap().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let opened: Vec<u64> = proxies.iter().map(|p| p.forwarded()).collect();
        if opened[1] >= 1 && opened[2] >= 1 {
            assert!(
                opened[0] >= 1,
                "requests go to the first endpoint: {opened:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connections per endpoint {opened:?}: the streams did not spread"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
