//! `servicegroup relay`: the thin front of [`servicegroup_relay`]: options from the
//! command line and `relay.token`, one `listening on URL` line on stdout once bound,
//! then serve until SIGINT/SIGTERM.

use std::time::Duration;

use servicegroup::{LoadedConfig, RelayConfig};
use servicegroup_relay::{options::read_token_file, Relay, RelayOptions, TlsFiles};

use crate::args::RelayArgs;
use crate::console;
use crate::failure::{Failure, EXIT_OK};
use crate::signals::Shutdown;

/// How long requests in flight may finish after a signal.
const GRACE: Duration = Duration::from_secs(5);

/// Serves the configured driver until a signal.
pub async fn relay(loaded: LoadedConfig, args: RelayArgs) -> Result<u8, Failure> {
    let mut shutdown = Shutdown::install()?;
    let mut options = RelayOptions::new(args.listen);
    options.token = match &args.token_file {
        Some(path) => Some(read_token_file(path).map_err(relay_failure)?),
        None => loaded.config.driver_config::<RelayConfig>("relay")?.token,
    };
    options.tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    options.insecure = args.insecure;
    options.body_limit = args.body_limit;
    options.request_timeout = args.request_timeout;
    options.header_timeout = args.header_timeout;
    let tls = options.tls.is_some();
    let relay = Relay::build(loaded.config, options)
        .await
        .map_err(relay_failure)?;
    let status = match args.status_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Failure::msg(format!("cannot listen on {addr} (--status-listen): {e}"))
        })?),
        None => None,
    };
    let handle = relay.handle();
    let running = relay.start().await.map_err(relay_failure)?;
    let scheme = if tls { "https" } else { "http" };
    console::line(format_args!("listening on {scheme}://{}", running.addr()))?;
    if let Some(listener) = status {
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::msg(format!("cannot read the status address: {e}")))?;
        let options = servicegroup_exporter::CollectorOptions {
            interval: args.status_interval,
            ..Default::default()
        };
        tokio::spawn(async move {
            if let Err(e) =
                servicegroup_exporter::run(listener, handle, options, std::future::pending()).await
            {
                tracing::error!(error = %e, "the relay's status address stopped: {e}");
            }
        });
        console::line(format_args!(
            "status page and metrics on http://{addr} (/, /metrics, /status.json)"
        ))?;
    }
    crate::logging::running();
    let signal = shutdown.wait().await;
    tracing::info!(signal, "stopping the relay");
    running
        .shutdown(GRACE)
        .await
        .map_err(|e| Failure::msg(format!("the relay stopped with an error: {e}")))?;
    Ok(EXIT_OK)
}

fn relay_failure(e: servicegroup_relay::RelayError) -> Failure {
    match e {
        servicegroup_relay::RelayError::Driver(error) => error.into(),
        other => Failure::msg(other.to_string()),
    }
}
