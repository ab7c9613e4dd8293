//! The conformance suite on the `relay` driver, against real `servicegroup relay`
//! processes (one per case), each on its own backend:
//!
//! - `relay_sqlite`: a SQLite file in the case's temp dir;
//! - `relay_postgres`: a fresh database on the shared test server
//!   (`SERVICEGROUP_TEST_POSTGRES_URL`);
//! - `relay_sqlite_http2`: as `relay_sqlite`, the driver speaking HTTP/2
//!   (`relay.http2`: h2c, every request a stream of one connection);
//! - `relay_memcached`: the shared test servers (`SERVICEGROUP_TEST_MEMCACHED_SERVERS`)
//!   with a key prefix of the case's own.
//!
//! The relay gets the case's `service_down_time` (memcached's TTLs are written by the
//! relay's mc driver from it). The outage hook is the suite's TCP proxy in front of the
//! relay: calls then fail as with a relay that went away.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Env, RelayProcess, RELAY_TOKEN};
use servicegroup::{BoxError, Config};
use servicegroup_conformance::proxy::OutageProxy;
use servicegroup_conformance::{conformance_suite, Fixture, Timings};

/// The relay process and its backend, kept for the case.
struct Relay {
    _process: Mutex<RelayProcess>,
    _backend: Mutex<Env>,
}

async fn relay_on(
    mut backend: Env,
    mut timings: Timings,
    http2: bool,
) -> Result<Fixture, BoxError> {
    timings.call_timeout = Duration::from_secs(2);
    backend.set(
        "SERVICEGROUP_SERVICE_DOWN_TIME",
        &format!("{}ms", timings.service_down_time.as_millis()),
    );
    backend.set(
        "SERVICEGROUP_REPORT_INTERVAL",
        &format!("{}ms", timings.report_interval.as_millis()),
    );
    // Nested bounds, each inside the next: the relay's db driver (1.2 s) < the
    // relay's call_timeout (1.5 s) < relay.timeout (1.8 s) < the client's call_timeout
    // (2 s: a debug-build relay listing 800 members shares two cores with the rest of
    // the suite).
    backend.set("SERVICEGROUP_CALL_TIMEOUT", "1500ms");
    backend.set("SERVICEGROUP_DB__TIMEOUT", "1200ms");
    backend.set("SERVICEGROUP_DB__POOL_SIZE", "4");
    let (process, backend) = tokio::task::spawn_blocking(move || {
        let process = RelayProcess::start(&backend, &[]);
        (process, backend)
    })
    .await?;
    let proxy = Arc::new(OutageProxy::start(process.addr().parse()?).await?);
    let url = format!("http://{}", proxy.addr());
    let mut config = Config::with_driver("relay");
    config
        .set("relay.urls", vec![url.clone()])?
        .set("relay.token", RELAY_TOKEN)?
        .set("relay.timeout", Duration::from_millis(1800))?
        .set("relay.http2", http2)?;
    let switch = proxy.clone();
    Ok(Fixture::new(config)
        .with_timings(timings)
        .with_outage_switch(move |reachable| {
            switch.set_reachable(reachable);
            async { Ok(()) }
        })
        // One HTTP request per handle's tick is the relay driver's backend operation.
        .with_heartbeat_ops(move || servicegroup::relay::heartbeat_requests(&url))
        .keep(proxy)
        .keep(Relay {
            _process: Mutex::new(process),
            _backend: Mutex::new(backend),
        }))
}

async fn sqlite() -> Result<Fixture, BoxError> {
    relay_on(Env::sqlite(), Timings::default(), false).await
}

async fn sqlite_http2() -> Result<Fixture, BoxError> {
    relay_on(Env::sqlite(), Timings::default(), true).await
}

async fn postgres() -> Result<Fixture, BoxError> {
    let backend = tokio::task::spawn_blocking(|| Env::postgres("relay_conf")).await?;
    relay_on(backend, Timings::default(), false).await
}

async fn memcached() -> Result<Fixture, BoxError> {
    let backend = tokio::task::spawn_blocking(|| Env::memcached("relayconf")).await?;
    // Whole-second TTLs: the suite would raise the window to 4 x the resolution
    // (1 s + 1 ms); the relay must write the same one, so give it outright.
    let mut timings = Timings::default();
    timings.service_down_time = Duration::from_secs(5);
    relay_on(backend, timings, false).await
}

conformance_suite!(relay_sqlite, sqlite);
conformance_suite!(relay_sqlite_http2, sqlite_http2);
conformance_suite!(relay_postgres, postgres);
conformance_suite!(relay_memcached, memcached);
