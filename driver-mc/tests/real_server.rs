//! The mc driver against real memcached servers: behaviour the conformance suite
//! cannot see (restart healing, partial outages, logs, key layout).
//!
//! Shared servers come from `SERVICEGROUP_TEST_MEMCACHED_SERVERS` (set by
//! `scripts/test`); tests that stop or restart a server start their own.

mod common;

use std::time::Duration;

use common::*;
use servicegroup_core::{Condition, Driver, ErrorKind, InstanceId, MemberKey, ServiceGroup, State};
use servicegroup_driver_mc::{self as mc, McDriver};

fn key(g: &str, m: &str) -> MemberKey {
    MemberKey::new(g.parse().unwrap(), m.parse().unwrap())
}

async fn basics(servers: Vec<String>) {
    let config = config(&servers, "basic");
    let sg = ServiceGroup::connect(config.clone()).await.unwrap();
    assert_eq!(sg.driver_name(), "mc");
    assert!(sg.capabilities().shared_between_processes);
    let mut members = Vec::new();
    for i in 0..30 {
        members.push(sg.join("compute", format!("host-{i}")).await.unwrap());
    }
    let _s = sg.join("scheduler", "host-0").await.unwrap();
    assert_eq!(sg.groups().await.unwrap().len(), 2);

    // A second handle (another "process") sees the same membership.
    let other = ServiceGroup::connect(config.clone()).await.unwrap();
    let list = other.members("compute").await.unwrap();
    assert_eq!(list.len(), 30);
    assert!(list
        .iter()
        .all(|m| m.state == State::Up && m.last_heartbeat.is_some()));
    assert!(other.is_up("compute", "host-7").await.unwrap());
    assert!(other
        .get_updated_time("compute", "host-7")
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        other.is_up("compute", "nobody").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    other
        .set_forced_down("compute", "host-3", true)
        .await
        .unwrap();
    assert!(!sg.is_up("compute", "host-3").await.unwrap());
    other
        .set_forced_down("compute", "host-3", false)
        .await
        .unwrap();
    assert!(sg.is_up("compute", "host-3").await.unwrap());

    // Leave: gone at once. Crash: listed, down after service_down_time.
    members.pop().unwrap().leave().await.unwrap();
    members.pop().unwrap().crash();
    assert!(other.member("compute", "host-29").await.is_err());
    let sdt = sg.config().service_down_time;
    eventually(
        sdt + Duration::from_secs(3),
        "crashed host-28 listed down",
        || {
            let other = other.clone();
            async move {
                let list = other.members("compute").await.unwrap();
                let m = list.iter().find(|m| m.member.as_str() == "host-28")?;
                (m.state == State::Down).then_some(())
            }
        },
    )
    .await;
    let list = other.members("compute").await.unwrap();
    assert_eq!(list.len(), 29, "the crashed member stays listed");
    assert_eq!(list.iter().filter(|m| m.is_up()).count(), 28);
    for m in members.drain(..) {
        m.leave().await.unwrap();
    }
    other.remove("compute", "host-28").await.unwrap();
    assert_eq!(
        other.groups().await.unwrap(),
        vec!["scheduler".parse().unwrap()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basics_single_server() {
    basics(shared_servers()[..1].to_vec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basics_three_servers() {
    basics(shared_servers()).await;
}

/// memcached restarted empty: every live member is listed up again within one
/// report_interval (plus slack for the restart itself), no member lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_empty_heals_within_one_report_interval() {
    let server = Dedicated::start();
    let mut config = config(&[server.address()], "restart");
    config.report_interval = Duration::from_millis(500);
    config.service_down_time = Duration::from_secs(3);
    let sg = ServiceGroup::connect(config.clone()).await.unwrap();
    let observer = ServiceGroup::connect(config.clone()).await.unwrap();
    let n = 40;
    let _members = sg
        .join_many("compute", (0..n).map(|i| format!("host-{i}")))
        .await
        .unwrap();
    let forced = sg.join("scheduler", "s-1").await.unwrap();
    assert_eq!(observer.members("compute").await.unwrap().len(), n);

    let raw = memcache::exp::MetaClient::connect(server.address().as_str()).unwrap();
    raw.set("sentinel", "1").send().unwrap();
    server.down();
    server.up(); // empty now
    let back = tokio::time::Instant::now();
    // The raw client's pooled connection died with the server: allow one redial.
    let hit = (0..3)
        .find_map(|_| raw.get("sentinel").send().ok())
        .expect("raw get after restart")
        .hit();
    assert!(!hit, "the server kept its data");
    eventually(
        config.report_interval + Duration::from_secs(1),
        "all members listed up again",
        || {
            let observer = observer.clone();
            async move {
                let list = observer.members("compute").await.ok()?;
                let up = list.iter().filter(|m| m.is_up()).count();
                (up == n).then_some(())
            }
        },
    )
    .await;
    let took = back.elapsed();
    assert!(
        took <= config.report_interval + Duration::from_secs(1),
        "healing took {took:?}"
    );
    assert_eq!(observer.groups().await.unwrap().len(), 2);
    assert!(observer.is_up("scheduler", "s-1").await.unwrap());
    drop(forced);
}

/// memcached stopped: is_up and listings fail with Unavailable/Timeout (never
/// "down"); the loss is logged once, the recovery once.
#[tokio::test(flavor = "current_thread")]
async fn outage_is_an_error_logged_once() {
    let (logs, _guard) = capture_logs();
    let server = Dedicated::start();
    let config = config(&[server.address()], "outage");
    let sg = ServiceGroup::connect(config.clone()).await.unwrap();
    let _m = sg.join("compute", "host-1").await.unwrap();
    server.down();
    for _ in 0..3 {
        let e = sg.is_up("compute", "host-1").await.unwrap_err();
        assert!(e.kind().is_unreachable(), "{e}");
        let e = sg.members("compute").await.unwrap_err();
        assert!(e.kind().is_unreachable(), "{e}");
        let e = sg.groups().await.unwrap_err();
        assert!(e.kind().is_unreachable(), "{e}");
    }
    // Several failed ticks, one WARN.
    eventually(Duration::from_secs(3), "loss logged", || {
        let n = logs.count("lost connection to mc backend");
        async move { (n >= 1).then_some(()) }
    })
    .await;
    tokio::time::sleep(config.report_interval * 4).await;
    assert_eq!(
        logs.count("lost connection to mc backend"),
        1,
        "{}",
        logs.text()
    );

    server.up();
    eventually(Duration::from_secs(3), "member up again", || {
        let sg = sg.clone();
        async move { sg.is_up("compute", "host-1").await.ok().filter(|up| *up) }
    })
    .await;
    tokio::time::sleep(config.report_interval * 4).await;
    assert_eq!(
        logs.count("recovered connection to mc backend"),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(
        logs.count("lost connection to mc backend"),
        1,
        "{}",
        logs.text()
    );
}

/// One of three servers stopped: members on the others keep working; those on
/// it get typed errors; listings fail (they cannot be complete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_down() {
    let servers: Vec<Dedicated> = (0..3).map(|_| Dedicated::start()).collect();
    let addresses: Vec<String> = servers.iter().map(Dedicated::address).collect();
    let config = config(&addresses, "partial");
    let sg = ServiceGroup::connect(config.clone()).await.unwrap();
    let driver = McDriver::connect(&config.clone().validated().unwrap())
        .await
        .unwrap();
    let backend = driver.backend().unwrap().clone();
    let n = 30;
    let _members = sg
        .join_many("compute", (0..n).map(|i| format!("host-{i}")))
        .await
        .unwrap();
    let dead = 1;
    let on_dead: Vec<String> = (0..n)
        .map(|i| format!("host-{i}"))
        .filter(|m| backend.server_of(&key("compute", m)) == dead)
        .collect();
    assert!(!on_dead.is_empty() && on_dead.len() < n, "{on_dead:?}");
    servers[dead].down();

    // Past service_down_time, members on live servers are still up (heartbeats
    // go on), members on the dead one give typed errors.
    tokio::time::sleep(config.service_down_time + Duration::from_secs(2)).await;
    for i in 0..n {
        let m = format!("host-{i}");
        let r = sg.is_up("compute", &m).await;
        if on_dead.contains(&m) {
            let e = r.unwrap_err();
            assert!(e.kind().is_unreachable(), "{m}: {e}");
            assert!(e.to_string().contains(&addresses[dead]), "{e}");
        } else {
            assert!(r.unwrap(), "{m} on a live server must stay up");
        }
    }
    let e = sg.members("compute").await.unwrap_err();
    assert!(e.kind().is_unreachable(), "{e}");
    // A new member placed on a live server can join; one on the dead server cannot.
    let (live_new, dead_new) = {
        let mut live = None;
        let mut dead_m = None;
        for i in 100..200 {
            let m = format!("host-{i}");
            if backend.server_of(&key("compute", &m)) == dead {
                dead_m.get_or_insert(m);
            } else {
                live.get_or_insert(m);
            }
        }
        (live.unwrap(), dead_m.unwrap())
    };
    let _l = sg.join("compute", &live_new).await.unwrap();
    let e = sg.join("compute", &dead_new).await.unwrap_err();
    assert!(e.kind().is_unreachable(), "{e}");

    // Back (empty): its members register again through their heartbeats.
    servers[dead].up();
    eventually(Duration::from_secs(5), "complete listing again", || {
        let sg = sg.clone();
        async move {
            let list = sg.members("compute").await.ok()?;
            (list.len() == n + 1 && list.iter().all(|m| m.is_up())).then_some(())
        }
    })
    .await;
}

/// With no servers the driver runs in-process, with a WARN.
#[tokio::test(flavor = "current_thread")]
async fn no_servers_warns_and_runs_in_process() {
    let (logs, _guard) = capture_logs();
    let mut config = servicegroup_core::Config::with_driver("mc");
    config
        .set("mc.servers", ["<None>"])
        .and_then(|c| c.set("inproc.name", unique_prefix("fallback")))
        .unwrap();
    let sg = ServiceGroup::connect(config).await.unwrap();
    let _m = sg.join("compute", "h").await.unwrap();
    assert!(sg.is_up("compute", "h").await.unwrap());
    assert!(!sg.capabilities().shared_between_processes);
    assert_eq!(
        logs.count("NOT shared with other processes"),
        1,
        "{}",
        logs.text()
    );
}

/// A server that is down when the driver is built does not stop it; a server
/// that accepts but never answers gives Timeout within `mc.timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_at_start_and_hung_server() {
    let live = shared_servers()[0].clone();
    let refused = format!("127.0.0.1:{}", free_port());
    let config = config(&[live, refused.clone()], "startdown");
    let driver = McDriver::connect(&config.clone().validated().unwrap())
        .await
        .unwrap();
    let backend = driver.backend().unwrap().clone();
    let (mut on_live, mut on_down) = (None, None);
    for i in 0..100 {
        let k = key("g", &format!("m{i}"));
        if backend.server_of(&k) == 0 {
            on_live.get_or_insert(k);
        } else {
            on_down.get_or_insert(k);
        }
    }
    let (on_live, on_down) = (on_live.unwrap(), on_down.unwrap());
    let me = InstanceId::random();
    driver
        .register(&registration(&on_live, me, Condition::Always))
        .await
        .unwrap();
    assert!(driver.get(&on_live).await.unwrap().is_some());
    let e = driver
        .register(&registration(&on_down, me, Condition::Always))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains(&refused), "{e}");

    // Hung: a listener that accepts and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung = listener.local_addr().unwrap().to_string();
    let mut config = config.clone();
    config
        .set("mc.servers", [hung.clone()])
        .and_then(|c| c.set("mc.timeout", Duration::from_millis(300)))
        .unwrap();
    let driver = McDriver::connect(&config.validated().unwrap())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let e = driver.get(&on_live).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(e.to_string().contains("mc.timeout"), "{e}");
    drop(listener);
}

/// Heartbeat TTL and liveness window follow service_down_time (rounded up, + 1 s).
#[tokio::test]
async fn ttl_follows_service_down_time() {
    let mut config = config(&shared_servers()[..1], "ttl");
    config.service_down_time = Duration::from_millis(2_500);
    let driver = McDriver::connect(&config).await.unwrap();
    let backend = driver.backend().unwrap();
    assert_eq!(backend.ttl(), 4);
    assert_eq!(
        driver.capabilities().liveness_resolution,
        Duration::from_secs(2)
    );
    assert_eq!(mc::backend::heartbeat_ttl(Duration::from_secs(60)), 61);
}

/// Healing at scale: one handle with 5 000 members, memcached restarted empty.
/// Core re-registers the missing members in chunks (register_many), so all are up
/// again within one report_interval plus slack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_heals_five_thousand_members() {
    let server = Dedicated::start();
    let mut config = config(&[server.address()], "restart5k");
    config.report_interval = Duration::from_secs(1);
    config.service_down_time = Duration::from_secs(4);
    config.call_timeout = Duration::from_secs(5);
    let sg = ServiceGroup::connect(config.clone()).await.unwrap();
    let observer = ServiceGroup::connect(config.clone()).await.unwrap();
    let n = 5_000;
    let _members = sg
        .join_many("compute", (0..n).map(|i| format!("host-{i:05}")))
        .await
        .unwrap();
    server.down();
    server.up();
    let back = tokio::time::Instant::now();
    eventually(
        config.report_interval + Duration::from_secs(2),
        "5 000 members listed up again",
        || {
            let observer = observer.clone();
            async move {
                let list = observer.members("compute").await.ok()?;
                (list.len() == n && list.iter().all(|m| m.is_up())).then_some(())
            }
        },
    )
    .await;
    eprintln!(
        "5 000 members healed {:?} after the restart",
        back.elapsed()
    );
}
