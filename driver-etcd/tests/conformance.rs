//! The conformance suite on the `etcd` driver, against the real 3-member cluster
//! `scripts/test` starts (`SERVICEGROUP_TEST_ETCD_ENDPOINTS`), every case, none skipped.
//!
//! Each case gets its own key prefix. The outage hook is the suite's TCP proxy in
//! front of each of the three members (the shared cluster keeps serving the other
//! tests); the heartbeat operation counter counts the keep-alive and beat-key
//! requests of the case's prefix.

mod common;

use std::sync::Arc;

use servicegroup_conformance::proxy::OutageProxy;
use servicegroup_conformance::{conformance_suite, Fixture};
use servicegroup_core::BoxError;
// Name the driver crate, or the linker drops it and its registration.
use servicegroup_driver_etcd as _;

async fn cluster() -> Result<Fixture, BoxError> {
    let mut proxies = Vec::new();
    for endpoint in common::shared_endpoints() {
        let addr = endpoint.trim_start_matches("http://").parse()?;
        proxies.push(Arc::new(OutageProxy::start(addr).await?));
    }
    let endpoints: Vec<String> = proxies
        .iter()
        .map(|p| format!("http://{}", p.addr()))
        .collect();
    let config = common::config(&endpoints, "cf");
    let options: servicegroup_driver_etcd::EtcdConfig = config.driver_config("etcd")?;
    let prefix = options.prefix;
    let switch = proxies.clone();
    Ok(Fixture::new(config)
        .with_outage_switch(move |reachable| {
            for proxy in &switch {
                proxy.set_reachable(reachable);
            }
            async { Ok(()) }
        })
        .with_heartbeat_ops(move || servicegroup_driver_etcd::heartbeat_requests(&prefix))
        .keep(proxies))
}

conformance_suite!(etcd_cluster, cluster);
