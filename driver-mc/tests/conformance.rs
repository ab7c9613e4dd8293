//! The conformance suite on the `mc` driver, against real memcached servers:
//!
//! - `mc_single`: the first shared test server;
//! - `mc_multi`: all three shared test servers (members spread by placement);
//! - `mc_restart`: a dedicated server per case whose outage is a real stop and an
//!   empty restart, so the outage cases also prove that heartbeats put every lost
//!   member back.
//!
//! Each case gets its own key prefix. In `mc_single` / `mc_multi` the outage hook is
//! the suite's TCP proxy in front of each shared server (the shared servers keep
//! running for the other tests). The heartbeat operation counter counts pipelined
//! exchanges with memcached.

mod common;

use std::sync::Arc;

use servicegroup_conformance::proxy::OutageProxy;
use servicegroup_conformance::{conformance_suite, unique_name, Fixture};
use servicegroup_core::{BoxError, Config};
// Name the driver crate, or the linker drops it and its registration.
use servicegroup_driver_mc as _;

fn mc_config(servers: Vec<String>) -> Config {
    let mut config = Config::with_driver("mc");
    config
        .set("mc.servers", servers)
        .and_then(|c| c.set("mc.prefix", unique_name("cf")))
        .expect("the mc driver's keys");
    config
}

/// A fixture on `upstreams`, each behind its own outage proxy.
async fn proxied(upstreams: Vec<String>) -> Result<Fixture, BoxError> {
    let mut proxies = Vec::new();
    for upstream in &upstreams {
        let addr = upstream.parse()?;
        proxies.push(Arc::new(OutageProxy::start(addr).await?));
    }
    let config = mc_config(proxies.iter().map(|p| p.addr().to_string()).collect());
    let prefix = common::mc(&config).prefix;
    let switch = proxies.clone();
    Ok(Fixture::new(config)
        .with_outage_switch(move |reachable| {
            for proxy in &switch {
                proxy.set_reachable(reachable);
            }
            async { Ok(()) }
        })
        .with_heartbeat_ops(move || servicegroup_driver_mc::heartbeat_exchanges(&prefix))
        .keep(proxies))
}

async fn single() -> Result<Fixture, BoxError> {
    proxied(common::shared_servers()[..1].to_vec()).await
}

async fn multi() -> Result<Fixture, BoxError> {
    let servers = common::shared_servers();
    assert!(
        servers.len() >= 3,
        "{} must list three servers",
        common::SERVERS_VAR
    );
    proxied(servers).await
}

/// A dedicated server; the outage stops it and restarts it empty.
async fn restart() -> Result<Fixture, BoxError> {
    let server = Arc::new(tokio::task::spawn_blocking(common::Dedicated::start).await?);
    let config = mc_config(vec![server.address()]);
    let prefix = common::mc(&config).prefix;
    let switch = server.clone();
    Ok(Fixture::new(config)
        .with_outage_switch(move |reachable| {
            let server = switch.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    if reachable {
                        server.up()
                    } else {
                        server.down()
                    }
                })
                .await?;
                Ok(())
            }
        })
        .with_heartbeat_ops(move || servicegroup_driver_mc::heartbeat_exchanges(&prefix))
        .keep(server))
}

conformance_suite!(mc_single, single);
conformance_suite!(mc_multi, multi);
conformance_suite!(mc_restart, restart);
