//! Scenario 6, *failover*: a PostgreSQL primary with a streaming standby, the driver
//! given both in one libpq multi-host URL (`target_session_attrs=read-write`).
//!
//! The first step is whether the db driver accepts such a URL at all; the row
//! reports its answer. (Building the standby and promoting it is only worth doing
//! once the driver can follow it.)

use std::time::Duration;

use crate::backend::BackendName;
use crate::error::Result;
use crate::report::Row;
use crate::scenario::harness::{Harness, Setup};
use crate::scenario::ScenarioName;
use crate::server::free_port;
use crate::Context;

/// Runs the scenario on `backend` (PostgreSQL).
pub async fn run(ctx: &Context, backend: BackendName) -> Result<Row> {
    let h = Harness::start(ctx, ScenarioName::Failover, backend, Setup::default()).await?;
    let primary = h.deployment.servers[0].socket_addrs()[0];
    let standby_port = free_port()?;
    let url = format!(
        "postgresql://postgres@{primary},127.0.0.1:{standby_port}/postgres?target_session_attrs=read-write"
    );
    let target = h.target.clone().with("db.url", url.clone());
    let mut row = h.finish().await?;
    row.notes.clear();
    let outcome = match target.config() {
        Err(e) => Err(e),
        Ok(config) => tokio::time::timeout(
            Duration::from_secs(10),
            servicegroup::ServiceGroup::connect(config),
        )
        .await
        .unwrap_or_else(|_| Err(servicegroup::Error::timeout("connect took over 10 s"))),
    };
    match outcome {
        Ok(sg) => match sg.join("faults-failover-probe", "probe").await {
            Ok(m) => {
                let _ = m.leave().await;
                row.fail("the driver accepts a multi-host URL, but the standby and promotion are not built yet");
            }
            Err(e) => row.fail(format!("multi-host URL connects but join fails: {e}")),
        },
        Err(e) => row.fail(format!(
            "driver-db does not accept a libpq multi-host URL ({}): {e}",
            url.replace(&standby_port.to_string(), "STANDBY_PORT")
        )),
    }
    row.note("standby, promotion and the follow-the-primary run not built: they need the driver to accept the URL first");
    Ok(row)
}
