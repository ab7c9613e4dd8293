//! HTTP/2 between the relay driver (`relay.http2`) and a real relay (`Relay::build`
//! and `start` over the inproc driver, token required): the relay serves h2c (prior
//! knowledge) on the same port as HTTP/1.1, every relay driver of a process with the
//! same target multiplexes its requests on one connection, and a cut connection is
//! `Unavailable` (never an answer, never "down") and replaced by a new one.
//! Connections are counted by the conformance crate's TCP proxy in front of the relay.

use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use servicegroup_conformance::proxy::OutageProxy;
use servicegroup_core::config::Secret;
use servicegroup_core::{Config, ErrorKind, ServiceGroup, State};
use servicegroup_driver_inproc as _;
use servicegroup_driver_relay::heartbeat_requests;
use servicegroup_relay::{Relay, RelayOptions, RunningRelay};

const TOKEN: &str = "http2-token";

async fn relay(name: &str) -> RunningRelay {
    let mut config = Config::with_driver("inproc");
    config.set("inproc.name", name).unwrap();
    let mut options = RelayOptions::new("127.0.0.1:0".parse().unwrap());
    options.token = Some(Secret::new(TOKEN));
    Relay::build(config, options)
        .await
        .unwrap()
        .start()
        .await
        .unwrap()
}

fn client(url: &str) -> Config {
    let mut config = Config::with_driver("relay");
    config
        .set("relay.urls", vec![url.to_owned()])
        .unwrap()
        .set("relay.token", TOKEN)
        .unwrap()
        .set("relay.http2", true)
        .unwrap()
        .set("relay.timeout", Duration::from_secs(5))
        .unwrap()
        .set("report_interval", Duration::from_millis(200))
        .unwrap()
        .set("service_down_time", Duration::from_secs(5))
        .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_driver_of_a_process_shares_one_http2_connection() {
    let relay = relay("relay-http2-one-connection").await;
    let proxy = OutageProxy::start(relay.addr()).await.unwrap();
    let url = format!("http://{}", proxy.addr());
    let config = client(&url);

    // Eight driver instances (eight handles, as eight libraries of one process
    // would hold), 64 members joined at once.
    let handles = try_join_all((0..8).map(|_| ServiceGroup::connect(config.clone())))
        .await
        .unwrap();
    let group = "h2";
    let memberships = try_join_all(
        handles
            .iter()
            .enumerate()
            .flat_map(|(h, sg)| (0..8).map(move |m| sg.join(group, format!("host-{h}-{m}")))),
    )
    .await
    .unwrap();
    assert_eq!(memberships.len(), 64);

    // Three ticks of every handle's heartbeat go through.
    let before = heartbeat_requests(&url);
    let deadline = Instant::now() + Duration::from_secs(20);
    while heartbeat_requests(&url) < before + 3 * 8 {
        assert!(Instant::now() < deadline, "heartbeats did not go out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let up = handles[3].members_in(group, State::Up).await.unwrap();
    assert_eq!(up.len(), 64, "{up:?}");
    assert_eq!(
        proxy.forwarded(),
        1,
        "eight drivers, 64 concurrent joins and their heartbeats on one HTTP/2 connection"
    );

    // The connection cut: a call fails as unreachable, then a new connection serves.
    // (The proxy's forwarding tasks see the cut a moment later: a request already on
    // its way may still be answered, so the failure is awaited with a deadline.)
    proxy.set_reachable(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    let e = loop {
        match handles[0].members(group).await {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "calls still answered after the cut"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    proxy.set_reachable(true);
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        match handles[0].members(group).await {
            Ok(listed) => break listed,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no answer after the proxy forwarded again: {e}"),
        }
    };
    assert_eq!(listed.len(), 64, "no record lost: {listed:?}");
    assert!(
        listed.iter().all(|m| m.state == State::Up),
        "a cut connection is no reason for a down: {listed:?}"
    );
    assert_eq!(proxy.forwarded(), 2, "one new connection after the cut");

    for m in memberships {
        m.leave().await.unwrap();
    }
    assert!(handles[0].members(group).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_serves_http1_and_http2_on_one_port() {
    let relay = relay("relay-http2-both").await;
    let url = format!("http://{}", relay.addr());
    let h2 = ServiceGroup::connect(client(&url)).await.unwrap();
    let mut h1_config = client(&url);
    h1_config.set("relay.http2", false).unwrap();
    let h1 = ServiceGroup::connect(h1_config).await.unwrap();
    let joined = h2.join("both", "host-a").await.unwrap();
    let seen = h1.member("both", "host-a").await.unwrap();
    assert_eq!(seen.state, State::Up, "{seen:?}");
    assert_eq!(seen.holder, joined.holder(), "{seen:?}");
    joined.leave().await.unwrap();
    assert!(h1.members("both").await.unwrap().is_empty());
}
