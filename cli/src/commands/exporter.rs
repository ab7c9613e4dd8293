//! `servicegroup exporter --listen ADDR [GROUP...]`: Prometheus metrics and the
//! status page for the configured backend, until a signal.

use std::time::Duration;

use servicegroup::config::duration;
use servicegroup::{GroupId, LoadedConfig};
use servicegroup_exporter::CollectorOptions;

use crate::commands::connect;
use crate::console;
use crate::failure::{Failure, EXIT_OK};
use crate::signals::Shutdown;

/// What `exporter` was asked to serve.
#[derive(Debug)]
pub struct ExporterRequest {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the line printed says which).
    pub listen: String,
    /// Groups to cover; empty: every group.
    pub groups: Vec<GroupId>,
    /// Time between two rounds of listings.
    pub interval: Duration,
    /// One series per member too.
    pub per_member: bool,
}

impl ExporterRequest {
    /// Checks the arguments before anything connects: ids and the interval.
    pub fn parse(
        listen: String,
        groups: Vec<String>,
        interval: Option<String>,
        per_member: bool,
    ) -> Result<Self, Failure> {
        let groups = groups
            .into_iter()
            .map(GroupId::new)
            .collect::<Result<Vec<_>, _>>()?;
        let interval = match interval {
            None => CollectorOptions::default().interval,
            Some(text) => duration::parse(&text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Failure::msg(format!(
                        "invalid value {text:?} for --interval: expected a positive duration such as 5s or 500ms"
                    ))
                })?,
        };
        Ok(Self {
            listen,
            groups,
            interval,
            per_member,
        })
    }
}

/// Serves `/metrics`, `/` and `/status.json` until SIGINT/SIGTERM.
pub async fn exporter(loaded: LoadedConfig, request: ExporterRequest) -> Result<u8, Failure> {
    let mut shutdown = Shutdown::install()?;
    let listener = tokio::net::TcpListener::bind(&request.listen)
        .await
        .map_err(|e| Failure::msg(format!("cannot listen on {}: {e}", request.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::msg(format!("cannot read the listen address: {e}")))?;
    let sg = connect(loaded).await?;
    crate::logging::running();
    let covered = if request.groups.is_empty() {
        "every group".to_owned()
    } else {
        request
            .groups
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    console::line(format!(
        "exporter listening on http://{addr} (/metrics, /, /status.json); {covered}, listed every {}; SIGINT or SIGTERM stops",
        duration::render(request.interval)
    ))?;
    let options = CollectorOptions {
        groups: request.groups,
        interval: request.interval,
        per_member: request.per_member,
    };
    servicegroup_exporter::run(listener, sg, options, async move {
        shutdown.wait().await;
    })
    .await
    .map_err(|e| Failure::msg(e.to_string()))?;
    Ok(EXIT_OK)
}
