//! [`Relay`]: builds the driver, the handle and the router, and serves them on
//! plain HTTP (loopback) or TLS (rustls, ring) with axum-server, with hyper's
//! header-read timeout so a slow or idle client cannot hold a connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use servicegroup_core::{Config, Driver, Registry, ServiceGroup};

use crate::api::{router, Shared};
use crate::auth::TokenCheck;
use crate::error::RelayError;
use crate::options::RelayOptions;
use crate::watch::Hub;

/// A relay ready to serve: its driver, handle and options.
#[derive(Debug)]
pub struct Relay {
    shared: Arc<Shared>,
    options: RelayOptions,
}

/// A relay serving in the background.
#[derive(Debug)]
pub struct RunningRelay {
    addr: SocketAddr,
    handle: Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Relay {
    /// Checks `options`, then builds the driver `config` names through the registry
    /// (as `ServiceGroup::connect` does).
    pub async fn build(config: Config, options: RelayOptions) -> Result<Self, RelayError> {
        options.check()?;
        let config = config.validated()?;
        let driver = Registry::build(&config).await?;
        Self::with_driver(driver, config, options)
    }

    /// A relay on an already built driver.
    pub fn with_driver(
        driver: Arc<dyn Driver>,
        config: Config,
        options: RelayOptions,
    ) -> Result<Self, RelayError> {
        options.check()?;
        // Every client's heartbeats and registrations go through core's coalescer:
        // concurrent requests within `coalesce_window` become one driver call. The
        // handle below is built on the same coalescer (never wrapped twice).
        let driver: Arc<dyn Driver> = servicegroup_core::coalesce::Coalescer::shared(
            &driver,
            servicegroup_core::coalesce::CoalesceOptions::from_config(&config),
        );
        let sg = ServiceGroup::with_driver(driver.clone(), config)?;
        let interval = sg.config().effective_watch_interval();
        let shared = Arc::new(Shared {
            hub: Hub::new(sg.clone(), interval),
            sg,
            driver,
            max_batch: options.max_batch,
        });
        Ok(Self { shared, options })
    }

    /// The relay's handle on its driver (reads pass through, as for any handle):
    /// what the status page and per-group gauges list.
    pub fn handle(&self) -> ServiceGroup {
        self.shared.sg.clone()
    }

    /// The relay's driver name.
    pub fn driver_name(&self) -> &str {
        self.shared.driver.name()
    }

    /// Binds the listen address and serves in the background.
    pub async fn start(self) -> Result<RunningRelay, RelayError> {
        let o = &self.options;
        let app = router(
            self.shared.clone(),
            TokenCheck::new(o.token.as_ref()),
            o.body_limit,
            o.request_timeout,
        );
        let handle = Handle::new();
        let listener =
            std::net::TcpListener::bind(o.listen).map_err(|source| RelayError::Listen {
                address: o.listen,
                source,
            })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| RelayError::Listen {
                address: o.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| RelayError::Listen {
            address: o.listen,
            source,
        })?;
        let header_timeout = o.header_timeout;
        let service = app.into_make_service();
        let task = match &o.tls {
            None => {
                let mut server = axum_server::from_tcp(listener)
                    .map_err(|source| RelayError::Listen {
                        address: o.listen,
                        source,
                    })?
                    .handle(handle.clone());
                tune(server.http_builder(), header_timeout);
                tokio::spawn(server.serve(service))
            }
            Some(files) => {
                let tls = tls_config(files).await?;
                let mut server = axum_server::from_tcp_rustls(listener, tls)
                    .map_err(|source| RelayError::Listen {
                        address: o.listen,
                        source,
                    })?
                    .handle(handle.clone());
                tune(server.http_builder(), header_timeout);
                tokio::spawn(server.serve(service))
            }
        };
        tracing::info!(
            address = %addr,
            tls = o.tls.is_some(),
            token = o.token.is_some(),
            driver = self.driver_name(),
            "relay listening"
        );
        Ok(RunningRelay { addr, handle, task })
    }
}

/// hyper's limits: headers (and the next request of a kept-alive connection) within
/// `header_timeout`; h2 pings so dead peers are noticed.
fn tune(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    header_timeout: Duration,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(header_timeout))
        .keep_alive_timeout(header_timeout);
}

async fn tls_config(files: &crate::options::TlsFiles) -> Result<RustlsConfig, RelayError> {
    for (what, path) in [("--tls-cert", &files.cert), ("--tls-key", &files.key)] {
        if let Err(e) = std::fs::metadata(path) {
            return Err(RelayError::File {
                what,
                path: path.clone(),
                message: e.to_string(),
            });
        }
    }
    RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .map_err(|e| RelayError::File {
            what: "--tls-cert/--tls-key",
            path: files.cert.clone(),
            message: format!("not a usable certificate and key: {e}"),
        })
}

impl RunningRelay {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish for up to `grace`, and waits.
    pub async fn shutdown(self, grace: Duration) -> std::io::Result<()> {
        self.handle.graceful_shutdown(Some(grace));
        self.wait().await
    }

    /// Waits until the server stops (an accept error, or a shutdown).
    pub async fn wait(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(format!(
                "the relay's server task ended: {e}"
            ))),
        }
    }
}
