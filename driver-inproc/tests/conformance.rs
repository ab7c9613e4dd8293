//! The conformance suite on the `inproc` driver, run exactly the way a third party
//! runs it on theirs: one setup function and one macro call. It runs twice: in real
//! time (as every driver does) and on tokio's paused clock (this driver follows it).

use servicegroup_conformance::{conformance_suite, unique_name, Fixture};
use servicegroup_core::{Config, Result};
// Name the driver crate: a crate nothing names is not linked, so its registration
// would never run and `Registry::build` would not find "inproc".
use servicegroup_driver_inproc as _;

/// A fresh in-process store per case (a unique `[inproc] name`), with an outage hook
/// that switches the store off and on.
async fn setup() -> Result<Fixture> {
    let name = unique_name("conformance");
    let mut config = Config::with_driver("inproc");
    config.set("inproc.name", &name)?;
    Ok(Fixture::new(config).with_outage_switch(move |reachable| {
        servicegroup_driver_inproc::set_reachable(&name, reachable);
        async { Ok(()) }
    }))
}

conformance_suite!(inproc, setup, skip: {
    heartbeat_batch_costs_few_backend_operations:
        "the in-process store has no backend operations to count (one map update per batch)",
});

conformance_suite!(inproc_paused_clock, setup, clock: paused, skip: {
    heartbeat_batch_costs_few_backend_operations:
        "the in-process store has no backend operations to count (one map update per batch)",
});
