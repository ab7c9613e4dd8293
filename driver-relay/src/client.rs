//! The HTTP side: one hyper-util client per distinct target (URL, CA file, bound,
//! timeout, protocol), shared by every relay driver of the process, and the request
//! loop that fails over between a driver's URLs.
//!
//! hyper-util's legacy `Client` over an `HttpConnector` with `set_nodelay(true)`
//! (off, small requests wait on Nagle); TLS by rustls with the ring provider selected
//! explicitly (never the process default: two providers in one binary make rustls'
//! default panic). Two protocols (`relay.http2`):
//!
//! - HTTP/1.1 (the default): a pool of keep-alive connections, one request at a time
//!   on each; any proxy or load balancer passes it.
//! - HTTP/2: one connection per target (prior knowledge on `http://`, ALPN `h2` on
//!   `https://`) carrying every request as a stream, with pings every `timeout`
//!   (a connection whose peer stopped answering is closed within two `timeout`s, and
//!   the next request opens a new one or fails over). Measured on two cores with
//!   the simulator's 1,500 driver instances in one process: 33 % of a core for the
//!   relay at 15,600 requests a second instead of 49 % (docs/relay.md).
//!
//! A semaphore per target bounds the requests in flight (so the connections, or the
//! streams), however many driver instances share the target.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use servicegroup_core::json::{kind_of, ErrorBody, ErrorDetail, LIVENESS_EXPIRY, LIVENESS_HEADER};
use servicegroup_core::{Error, ErrorKind, Result};
use tokio::sync::Semaphore;

use crate::{RelayConfig, NAME};

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What makes two drivers share a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TargetKey {
    url: String,
    ca_file: Option<PathBuf>,
    max_connections: usize,
    timeout: Duration,
    http2: bool,
}

/// One relay URL's pool.
pub struct Target {
    url: String,
    client: HttpClient,
    slots: Semaphore,
    /// This URL's heartbeat request counter ([`heartbeat_requests`]).
    heartbeats: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("url", &self.url).finish()
    }
}

fn pools() -> &'static Mutex<HashMap<TargetKey, Weak<Target>>> {
    static POOLS: std::sync::OnceLock<Mutex<HashMap<TargetKey, Weak<Target>>>> =
        std::sync::OnceLock::new();
    POOLS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn heartbeat_counters() -> &'static Mutex<HashMap<String, Arc<std::sync::atomic::AtomicU64>>> {
    static COUNTERS: std::sync::OnceLock<
        Mutex<HashMap<String, Arc<std::sync::atomic::AtomicU64>>>,
    > = std::sync::OnceLock::new();
    COUNTERS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The heartbeat request counter of relay URL `url` (one per URL for the process's
/// lifetime, whichever pools come and go).
fn heartbeat_counter(url: &str) -> Arc<std::sync::atomic::AtomicU64> {
    let mut counters = heartbeat_counters()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    counters.entry(url.to_owned()).or_default().clone()
}

/// How many heartbeat requests the relay drivers of this process have sent to relay
/// URL `url` so far (one per handle's tick: tests check that heartbeats are batched).
pub fn heartbeat_requests(url: &str) -> u64 {
    heartbeat_counter(url.trim_end_matches('/')).load(Ordering::Relaxed)
}

/// How many distinct targets (pools) this process holds now.
pub fn live_pools() -> usize {
    let pools = pools().lock().unwrap_or_else(|e| e.into_inner());
    pools.values().filter(|w| w.strong_count() > 0).count()
}

fn tls_config(ca_file: Option<&PathBuf>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
            Error::config(format!(
                "relay.ca_file {}: cannot read it: {e}",
                path.display()
            ))
        })?;
        for cert in certs {
            let cert = cert.map_err(|e| {
                Error::config(format!(
                    "relay.ca_file {}: not a PEM certificate: {e}",
                    path.display()
                ))
            })?;
            roots.add(cert).map_err(|e| {
                Error::config(format!(
                    "relay.ca_file {}: unusable certificate: {e}",
                    path.display()
                ))
            })?;
        }
        if roots.is_empty() {
            return Err(Error::config(format!(
                "relay.ca_file {}: holds no certificate",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Target {
    /// The shared pool of `key`, made on first use.
    fn shared(key: TargetKey) -> Result<Arc<Target>> {
        let mut pools = pools().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(target) = pools.get(&key).and_then(Weak::upgrade) {
            return Ok(target);
        }
        pools.retain(|_, w| w.strong_count() > 0);
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(key.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(key.ca_file.as_ref())?)
            .https_or_http();
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(30));
        let client = if key.http2 {
            builder
                .http2_only(true)
                .timer(TokioTimer::new())
                .http2_keep_alive_interval(key.timeout)
                .http2_keep_alive_timeout(key.timeout)
                .http2_keep_alive_while_idle(true)
                .build(https.enable_http2().wrap_connector(http))
        } else {
            builder
                .pool_max_idle_per_host(key.max_connections)
                .build(https.enable_http1().wrap_connector(http))
        };
        let target = Arc::new(Target {
            url: key.url.clone(),
            client,
            heartbeats: heartbeat_counter(&key.url),
            slots: Semaphore::new(key.max_connections),
        });
        pools.insert(key, Arc::downgrade(&target));
        Ok(target)
    }
}

/// An answer of a relay: its status and body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    /// The records' liveness is the backend's own expiry ([`LIVENESS_HEADER`]).
    pub(crate) expiry: bool,
}

impl Answer {
    /// The body as `T`; a body that is not is a `Backend` error naming the call.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::backend(format!(
                "the relay's answer to {what} is not what it should be: {e}"
            ))
        })
    }

    /// The library error an error answer carries (its `kind` and `message`).
    pub(crate) fn error(&self, what: &str) -> Error {
        let detail = serde_json::from_slice::<ErrorBody>(&self.body)
            .ok()
            .map(|b| b.error);
        error_of(self.status, detail, what)
    }

    /// The holder of a refused conditional write (`error.found`).
    pub(crate) fn found(&self) -> Option<Option<servicegroup_core::Holder>> {
        let body: ErrorBody = serde_json::from_slice(&self.body).ok()?;
        body.error.found.map(|f| f.map(Into::into))
    }
}

fn error_of(status: StatusCode, detail: Option<ErrorDetail>, what: &str) -> Error {
    let (kind_name, message) = match detail {
        Some(d) => (d.kind, d.message),
        None => (String::new(), format!("HTTP {status}")),
    };
    let kind = kind_of(&kind_name).unwrap_or(match status {
        StatusCode::UNAUTHORIZED => ErrorKind::Config,
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => ErrorKind::Timeout,
        StatusCode::SERVICE_UNAVAILABLE => ErrorKind::Unavailable,
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        _ => ErrorKind::Backend,
    });
    let hint = if status == StatusCode::UNAUTHORIZED {
        " (check relay.token)"
    } else {
        ""
    };
    Error::new(
        kind,
        format!("{what}: the relay answered {status}: {message}{hint}"),
    )
    .with_driver(NAME)
}

/// A driver's relays: its targets in order, the token, the timeout.
#[derive(Debug)]
pub struct Relays {
    targets: Vec<Arc<Target>>,
    authorization: Option<http::HeaderValue>,
    timeout: Duration,
    /// The target that answered last: requests start there.
    preferred: AtomicUsize,
}

impl Relays {
    /// The pools of `config`'s URLs (shared with other drivers of the same targets),
    /// starting at a random one with `relay.spread`.
    pub fn new(config: &RelayConfig) -> Result<Self> {
        let urls = config.url_list();
        if urls.is_empty() {
            return Err(Error::config(
                "relay.urls is empty: name at least one relay (SERVICEGROUP_RELAY__URLS, comma-separated)",
            )
            .with_driver(NAME));
        }
        let targets = urls
            .into_iter()
            .map(|url| {
                Target::shared(TargetKey {
                    url,
                    ca_file: config.ca_file.clone(),
                    max_connections: config.max_connections,
                    timeout: config.timeout,
                    http2: config.http2,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let authorization = config
            .token
            .as_ref()
            .map(|t| {
                let mut v = http::HeaderValue::from_str(&format!("Bearer {}", t.expose()))
                    .map_err(|_| {
                        Error::config("relay.token holds characters a header cannot carry")
                    })?;
                v.set_sensitive(true);
                Ok::<_, Error>(v)
            })
            .transpose()?;
        let start = if config.spread {
            random_index(targets.len())
        } else {
            0
        };
        Ok(Self {
            targets,
            authorization,
            timeout: config.timeout,
            preferred: AtomicUsize::new(start),
        })
    }

    /// Sends one request, failing over to the next relay on a connect error, a
    /// broken connection or a 5xx answer; returns the first other answer. All
    /// relays failing: the last failure (`Unavailable`, `Timeout`, or the 5xx's kind).
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<Answer> {
        let n = self.targets.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let body = body.map(Bytes::from);
        let mut last = None;
        for i in 0..n {
            let index = (start + i) % n;
            let target = &self.targets[index];
            match self.once(target, &method, path, body.clone(), what).await {
                Ok(answer) if !answer.status.is_server_error() => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(answer) => {
                    tracing::debug!(url = %target.url, status = answer.status.as_u16(), "relay answered 5xx, trying the next");
                    last = Some(answer.error(what));
                }
                Err(error) => {
                    tracing::debug!(url = %target.url, "relay unreachable, trying the next: {error}");
                    let timeout = error.kind() == ErrorKind::Timeout;
                    last = Some(error);
                    if timeout {
                        // The request may be running there: do not send it twice.
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::unavailable("no relay configured").with_driver(NAME)))
    }

    async fn once(
        &self,
        target: &Target,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
        what: &str,
    ) -> Result<Answer> {
        if path == "/v1/heartbeat" {
            target.heartbeats.fetch_add(1, Ordering::Relaxed);
        }
        let uri = format!("{}{path}", target.url);
        let mut request = Request::builder().method(method.clone()).uri(&uri);
        if let Some(auth) = &self.authorization {
            request = request.header(header::AUTHORIZATION, auth.clone());
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| {
                Error::config(format!("{what}: cannot build a request to {uri}: {e}"))
                    .with_driver(NAME)
            })?;
        let exchange = async {
            let _slot = target.slots.acquire().await.map_err(|_| {
                Error::unavailable(format!("{what}: the pool of {} is closed", target.url))
            })?;
            let response = target.client.request(request).await.map_err(|e| {
                Error::unavailable(format!(
                    "{what}: cannot reach relay {}: {}",
                    target.url,
                    chain(&e)
                ))
            })?;
            let status = response.status();
            let expiry = response
                .headers()
                .get(LIVENESS_HEADER)
                .is_some_and(|v| v.as_bytes() == LIVENESS_EXPIRY.as_bytes());
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| {
                    Error::unavailable(format!(
                        "{what}: relay {} broke off its answer: {e}",
                        target.url
                    ))
                })?
                .to_bytes();
            Ok(Answer {
                status,
                body,
                expiry,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result.map_err(|e: Error| e.with_driver(NAME)),
            Err(_) => Err(Error::timeout(format!(
                "{what}: relay {} did not answer within {:?} (relay.timeout)",
                target.url, self.timeout
            ))
            .with_driver(NAME)),
        }
    }

    /// `GET /healthz` of the first relay whose answer (200 or 503) reads, if any.
    pub(crate) async fn health(&self) -> Option<servicegroup_core::json::HealthBody> {
        for target in &self.targets {
            if let Ok(answer) = self
                .once(target, &Method::GET, "/healthz", None, "healthz")
                .await
            {
                if let Ok(body) = answer.json("healthz") {
                    return Some(body);
                }
            }
        }
        None
    }
}

/// A random index below `n` (`relay.spread`: the processes of a fleet spread over
/// the listed relays without a load balancer; failing over still goes down the list).
fn random_index(n: usize) -> usize {
    let bytes = servicegroup_core::InstanceId::random().to_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    (u64::from_le_bytes(first) % n as u64) as usize
}

/// An error and its sources, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use servicegroup_core::config::Secret;

    fn config(urls: &[&str], max_connections: usize) -> RelayConfig {
        RelayConfig {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            timeout: Duration::from_secs(2),
            max_connections,
            ..RelayConfig::default()
        }
    }

    #[test]
    fn spread_starts_at_every_target_and_plain_at_the_first() {
        let plain = config(&["http://127.0.0.1:1", "http://127.0.0.1:2"], 4);
        let spread = RelayConfig {
            spread: true,
            ..plain.clone()
        };
        let mut starts = [0usize; 2];
        for _ in 0..64 {
            let relays = Relays::new(&spread).unwrap();
            starts[relays.preferred.load(Ordering::Relaxed)] += 1;
        }
        // All 64 on one target has probability 2^-63.
        assert!(starts[0] > 0 && starts[1] > 0, "{starts:?}");
        let relays = Relays::new(&plain).unwrap();
        assert_eq!(relays.preferred.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn drivers_share_pools_and_never_show_the_token() {
        let mut with_token = config(&["http://127.0.0.1:9"], 4);
        with_token.token = Some(Secret::new("tok-very-secret"));
        let a = Relays::new(&with_token).unwrap();
        let b = Relays::new(&with_token).unwrap();
        assert!(
            Arc::ptr_eq(&a.targets[0], &b.targets[0]),
            "one pool per target"
        );
        let c = Relays::new(&config(&["http://127.0.0.1:9"], 8)).unwrap();
        assert!(
            !Arc::ptr_eq(&a.targets[0], &c.targets[0]),
            "another bound, another pool"
        );
        let h2 = Relays::new(&RelayConfig {
            http2: true,
            ..with_token.clone()
        })
        .unwrap();
        assert!(
            !Arc::ptr_eq(&a.targets[0], &h2.targets[0]),
            "another protocol, another pool"
        );
        assert!(!format!("{a:?}").contains("tok-very-secret"), "{a:?}");
        assert!(Relays::new(&config(&[], 4)).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_relay_is_unavailable_never_an_answer() {
        for http2 in [false, true] {
            let relays = Relays::new(&RelayConfig {
                http2,
                ..config(&["http://127.0.0.1:1", "http://127.0.0.1:2"], 4)
            })
            .unwrap();
            let e = relays
                .send(Method::GET, "/v1/groups", None, "groups")
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unavailable, "http2 {http2}: {e}");
            assert!(
                e.to_string().contains("127.0.0.1:2"),
                "the last relay tried is named: {e}"
            );
        }
    }
}
