//! The HTTP side: the Prometheus recorder, and the router serving `/metrics`,
//! `/` (the status page) and `/status.json`, which `servicegroup exporter` serves
//! and the relay merges into its own router.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::collector::{CollectorOptions, FleetWatch};
use crate::page::{self, PageQuery};

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// The process already has a metrics recorder (one per process).
    #[error("cannot install the Prometheus recorder: {0}")]
    Recorder(String),
    /// The listen address could not be bound or served.
    #[error("cannot serve on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Installs the process-wide Prometheus recorder (histograms as buckets: the
/// library's latency buckets for `*_seconds`, batch sizes for the batch size),
/// describes every metric of the library and the exporter, and starts the
/// recorder's upkeep. Call once per process, inside a tokio runtime.
pub fn install_recorder() -> Result<PrometheusHandle, ExporterError> {
    use servicegroup_core::metrics as lib;
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), lib::SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(lib::HEARTBEAT_BATCH_MEMBERS.into()),
                lib::BATCH_MEMBERS_BUCKETS,
            )
        })
        .map_err(|e| ExporterError::Recorder(e.to_string()))?;
    let handle = builder
        .install_recorder()
        .map_err(|e| ExporterError::Recorder(e.to_string()))?;
    lib::describe();
    crate::collector::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// What the routes read: the collector's latest view and the recorder.
#[derive(Clone)]
pub struct StatusState {
    /// The collector's output.
    pub fleet: FleetWatch,
    /// The installed recorder, rendered by `/metrics`.
    pub metrics: PrometheusHandle,
}

/// `/metrics`, `/` and `/status.json`.
pub fn router(state: StatusState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .route("/status.json", get(status))
        .with_state(state)
}

async fn metrics(State(state): State<StatusState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn index(State(state): State<StatusState>, Query(query): Query<PageQuery>) -> Response {
    let view = state.fleet.borrow().clone();
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(page::render(&view, &query)),
    )
        .into_response()
}

async fn status(State(state): State<StatusState>, Query(query): Query<PageQuery>) -> Response {
    let view = state.fleet.borrow().clone();
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(page::status_json(&view, &query)),
    )
        .into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ExporterError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ExporterError::Listen { addr, source })
}

/// Everything `servicegroup exporter` does, for any process with a handle (the
/// exporter command, the relay's status address): installs the recorder, starts the
/// collector on `sg` and serves [`router`] on `listener` until `shutdown`.
pub async fn run(
    listener: tokio::net::TcpListener,
    sg: servicegroup_core::ServiceGroup,
    options: CollectorOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ExporterError> {
    let metrics = install_recorder()?;
    let fleet = crate::collector::spawn(sg, options);
    serve(listener, router(StatusState { fleet, metrics }), shutdown).await
}
