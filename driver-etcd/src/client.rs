//! The HTTP side: etcd's JSON gateway (`POST /v3/...`) over hyper, on several
//! endpoints with failover, optional TLS (rustls, ring provider) and authentication.
//!
//! A request goes to the endpoint that answered last. On a connect error or an
//! "unavailable" answer (gRPC code 14: no leader, member stopping) it is sent to the
//! next endpoint, each endpoint once; a timeout is not retried (the request may have
//! been applied) but moves the next request to the next endpoint. Watch streams
//! start at the other endpoints, in turn ([`Client::stream`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::Request;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use servicegroup_core::{Error, Result};

use crate::config::{EtcdConfig, Password};
use crate::NAME;

type Http = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// gRPC status codes etcd answers with (in the JSON body's `code`).
pub(crate) mod code {
    /// "grpc: the client connection is closing": the gateway's connection to its
    /// etcd server is going away (the member is stopping). Never a cancel of ours:
    /// the driver drops a request's future, it gets no status for it.
    pub const CANCELLED: i64 = 1;
    /// Bad request (also: authentication failed).
    pub const INVALID_ARGUMENT: i64 = 3;
    /// The request did not finish in time on the server.
    pub const DEADLINE_EXCEEDED: i64 = 4;
    /// Lease not found.
    pub const NOT_FOUND: i64 = 5;
    /// Permission denied (the user's role lacks the key range).
    pub const PERMISSION_DENIED: i64 = 7;
    /// A message larger than the gateway or server accepts.
    pub const RESOURCE_EXHAUSTED: i64 = 8;
    /// Revision compacted, or in the future.
    pub const OUT_OF_RANGE: i64 = 11;
    /// No leader, leader changed, member stopping, request timed out.
    pub const UNAVAILABLE: i64 = 14;
    /// Invalid or expired auth token.
    pub const UNAUTHENTICATED: i64 = 16;
}

/// Why a request failed, before it becomes a servicegroup [`Error`].
#[derive(Debug)]
pub(crate) enum CallError {
    /// Could not connect (nothing was sent).
    Connect(String),
    /// No complete answer within `etcd.timeout`.
    Timeout(String),
    /// etcd answered with an error status.
    Status {
        /// gRPC code.
        code: i64,
        /// etcd's message.
        message: String,
        /// The endpoint.
        endpoint: String,
    },
    /// The connection broke, or the answer was not what the gateway sends.
    Broken(String),
}

impl CallError {
    fn fails_over(&self) -> bool {
        match self {
            CallError::Connect(_) => true,
            CallError::Status { code, .. } => {
                *code == code::UNAVAILABLE || *code == code::CANCELLED
            }
            _ => false,
        }
    }

    /// etcd's "requested lease not found".
    pub(crate) fn is_lease_not_found(&self) -> bool {
        matches!(self, CallError::Status { code, message, .. }
            if *code == code::NOT_FOUND && message.contains("lease not found"))
    }

    /// etcd's "required revision has been compacted".
    pub(crate) fn is_compacted(&self) -> bool {
        matches!(self, CallError::Status { code, message, .. }
            if *code == code::OUT_OF_RANGE && message.contains("compacted"))
    }

    /// etcd's "required revision is a future revision": the member asked has not
    /// applied it yet (a serializable read on a member behind the leader).
    pub(crate) fn is_future_revision(&self) -> bool {
        matches!(self, CallError::Status { code, message, .. }
            if *code == code::OUT_OF_RANGE && message.contains("future revision"))
    }

    /// A refusal of the user's role (etcd's "permission denied").
    pub(crate) fn is_permission_denied(&self) -> bool {
        matches!(self, CallError::Status { code, .. } if *code == code::PERMISSION_DENIED)
    }

    /// An answer too large for the gateway's (or server's) message limit.
    pub(crate) fn is_too_large(&self) -> bool {
        matches!(self, CallError::Status { code, .. } if *code == code::RESOURCE_EXHAUSTED)
    }

    /// The servicegroup error, `what` naming the operation.
    pub(crate) fn into_error(self, what: &str) -> Error {
        let error = match self {
            CallError::Connect(m) => Error::unavailable(format!("{what}: {m}")),
            CallError::Timeout(m) => Error::timeout(format!("{what}: {m}")),
            CallError::Broken(m) => Error::unavailable(format!("{what}: {m}")),
            CallError::Status {
                code,
                message,
                endpoint,
            } => {
                let text = format!("{what}: etcd at {endpoint} answered {message:?} (code {code})");
                match code {
                    code::UNAVAILABLE | code::CANCELLED => Error::unavailable(text),
                    code::DEADLINE_EXCEEDED => Error::timeout(text),
                    code::UNAUTHENTICATED | code::PERMISSION_DENIED => Error::config(format!(
                        "{text}: check `etcd.username` / `etcd.password` and the user's role"
                    )),
                    _ => Error::backend(text),
                }
            }
        };
        error.with_driver(NAME)
    }
}

/// Credentials and the tokens they got, per endpoint.
struct Auth {
    user: String,
    password: Password,
    tokens: Mutex<HashMap<usize, String>>,
}

/// The JSON gateway client of one driver.
pub(crate) struct Client {
    http: Http,
    endpoints: Vec<String>,
    current: AtomicUsize,
    /// Streams opened so far (spreads them over the other endpoints).
    streams: AtomicUsize,
    timeout: Duration,
    auth: Option<Auth>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .field("user", &self.auth.as_ref().map(|a| a.user.as_str()))
            .finish()
    }
}

/// The TLS settings: the CA file's certificates as the only roots (ring provider).
fn tls_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
            Error::config(format!("cannot read `etcd.ca_file` {path:?}: {e}")).with_driver(NAME)
        })?;
        for cert in certs {
            let cert = cert.map_err(|e| {
                Error::config(format!(
                    "`etcd.ca_file` {path:?} holds a bad certificate: {e}"
                ))
                .with_driver(NAME)
            })?;
            roots.add(cert).map_err(|e| {
                Error::config(format!(
                    "`etcd.ca_file` {path:?}: unusable CA certificate: {e}"
                ))
                .with_driver(NAME)
            })?;
        }
        if roots.is_empty() {
            return Err(
                Error::config(format!("`etcd.ca_file` {path:?} holds no PEM certificate"))
                    .with_driver(NAME),
            );
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS setup failed: {e}")).with_driver(NAME))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Client {
    /// A client for the checked `[etcd]` options. Connects nothing yet.
    pub(crate) fn new(options: &EtcdConfig) -> Result<Self> {
        let tls = tls_config(options.ca_file.as_deref())?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(options.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let auth = match (&options.username, &options.password) {
            (Some(user), Some(password)) => Some(Auth {
                user: user.clone(),
                password: password.clone(),
                tokens: Mutex::new(HashMap::new()),
            }),
            _ => None,
        };
        Ok(Self {
            http,
            endpoints: options.endpoint_list(),
            current: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            timeout: options.timeout,
            auth,
        })
    }

    /// The bound on every request (`etcd.timeout`).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The endpoints, in configured order.
    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// `POST path` with `body` on the current endpoint, failing over (see the module docs).
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for attempt in 0..n {
            let i = (start + attempt) % n;
            match self.post_to(i, path, body).await {
                Ok(v) => {
                    if attempt > 0 {
                        self.current.store(i, Ordering::Relaxed);
                    }
                    return Ok(v);
                }
                Err(e) if e.fails_over() && attempt + 1 < n => {
                    tracing::debug!(driver = NAME, endpoint = %self.endpoints[i], error = ?e, "failing over to the next etcd endpoint");
                    last = Some(e);
                }
                Err(e) => {
                    if matches!(e, CallError::Timeout(_)) || e.fails_over() {
                        self.current.store((i + 1) % n, Ordering::Relaxed);
                    }
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| CallError::Connect("no etcd endpoint configured".into())))
    }

    async fn post_to(&self, i: usize, path: &str, body: &Value) -> Result<Value, CallError> {
        let mut retried_auth = false;
        loop {
            let token = self.token(i).await?;
            match self.exchange(i, path, body, token.as_deref()).await {
                Err(CallError::Status { code, .. })
                    if code == code::UNAUTHENTICATED && self.auth.is_some() && !retried_auth =>
                {
                    // The token expired (etcd's simple tokens live 5 minutes): a new one.
                    if let Some(auth) = &self.auth {
                        crate::lock(&auth.tokens).remove(&i);
                    }
                    retried_auth = true;
                }
                other => return other,
            }
        }
    }

    /// The auth token for endpoint `i` (authenticating first if there is none yet).
    async fn token(&self, i: usize) -> Result<Option<String>, CallError> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        if let Some(token) = crate::lock(&auth.tokens).get(&i) {
            return Ok(Some(token.clone()));
        }
        let body = json!({ "name": auth.user, "password": auth.password.expose() });
        let answer = self
            .exchange(i, "/v3/auth/authenticate", &body, None)
            .await
            .map_err(|e| match e {
                CallError::Status {
                    code,
                    message,
                    endpoint,
                } if code == code::INVALID_ARGUMENT => CallError::Status {
                    code: code::UNAUTHENTICATED,
                    message: format!("authentication as user {:?} failed: {message}", auth.user),
                    endpoint,
                },
                other => other,
            })?;
        let token = answer
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| CallError::Broken("the authenticate answer has no token".into()))?
            .to_owned();
        crate::lock(&auth.tokens).insert(i, token.clone());
        Ok(Some(token))
    }

    fn request(
        &self,
        i: usize,
        path: &str,
        body: String,
        token: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, CallError> {
        let mut request = Request::post(format!("{}{path}", self.endpoints[i]))
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, token);
        }
        request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Broken(format!("bad request to {}: {e}", self.endpoints[i])))
    }

    fn send_error(&self, i: usize, e: hyper_util::client::legacy::Error) -> CallError {
        let endpoint = &self.endpoints[i];
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        if e.is_connect() {
            CallError::Connect(format!("cannot connect to etcd at {endpoint}: {text}"))
        } else {
            CallError::Broken(format!(
                "the connection to etcd at {endpoint} broke: {text}"
            ))
        }
    }

    async fn exchange(
        &self,
        i: usize,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Value, CallError> {
        let endpoint = &self.endpoints[i];
        let request = self.request(i, path, body.to_string(), token)?;
        let work = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| self.send_error(i, e))?;
            let status = response.status();
            let bytes = response.into_body().collect().await.map_err(|e| {
                CallError::Broken(format!("reading the answer of etcd at {endpoint}: {e}"))
            })?;
            Ok::<_, CallError>((status, bytes.to_bytes()))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| {
                CallError::Timeout(format!(
                    "etcd at {endpoint} did not answer {path} within {:?} (`etcd.timeout`)",
                    self.timeout
                ))
            })??;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            CallError::Broken(format!(
                "etcd at {endpoint} answered {path} with HTTP {status} and no JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        if let Some(error) = status_of(&value) {
            return Err(CallError::Status {
                code: error.0,
                message: error.1,
                endpoint: endpoint.clone(),
            });
        }
        if !status.is_success() {
            return Err(CallError::Broken(format!(
                "etcd at {endpoint} answered {path} with HTTP {status}"
            )));
        }
        Ok(value)
    }

    /// Opens a streaming `POST path` (a watch; `body` may hold several requests) on
    /// the first endpoint that accepts it; the answer's body is read by [`Lines`].
    /// With several endpoints, streams start at the members other than the one the
    /// requests go to, in turn: a member serves a watch from its own store, so the
    /// member taking the requests (often the leader) does not also encode every event
    /// of every watch (a fleet's join is a million record events for each).
    pub(crate) async fn stream(&self, path: &str, body: String) -> Result<Lines, CallError> {
        let n = self.endpoints.len();
        let current = self.current.load(Ordering::Relaxed);
        let start = match n {
            0 | 1 => current,
            _ => current + 1 + self.streams.fetch_add(1, Ordering::Relaxed) % (n - 1),
        };
        let mut last = None;
        for attempt in 0..n {
            let i = (start + attempt) % n;
            match self.open_stream(i, path, &body).await {
                Ok(lines) => return Ok(lines),
                Err(e) => {
                    tracing::debug!(driver = NAME, endpoint = %self.endpoints[i], error = ?e, "cannot open an etcd watch here");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| CallError::Connect("no etcd endpoint configured".into())))
    }

    async fn open_stream(&self, i: usize, path: &str, body: &str) -> Result<Lines, CallError> {
        let token = self.token(i).await?;
        let request = self.request(i, path, body.to_owned(), token.as_deref())?;
        let endpoint = self.endpoints[i].clone();
        let response = tokio::time::timeout(self.timeout, self.http.request(request))
            .await
            .map_err(|_| CallError::Timeout(format!("etcd at {endpoint} did not open {path}")))?
            .map_err(|e| self.send_error(i, e))?;
        if !response.status().is_success() {
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if let Some((code, message)) = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .as_ref()
                .and_then(status_of)
            {
                return Err(CallError::Status {
                    code,
                    message,
                    endpoint,
                });
            }
            return Err(CallError::Broken(format!(
                "etcd at {endpoint} answered {path} with HTTP {status}"
            )));
        }
        Ok(Lines {
            body: response.into_body(),
            buffer: Vec::new(),
            endpoint,
        })
    }
}

/// The error an answer carries (`{"error": .., "code": ..}`), if any.
fn status_of(value: &Value) -> Option<(i64, String)> {
    let code = value.get("code").and_then(Value::as_i64)?;
    if code == 0 {
        return None;
    }
    let message = value
        .get("message")
        .or_else(|| value.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Some((code, message))
}

/// The JSON objects of a streaming answer, one per line.
pub(crate) struct Lines {
    body: Incoming,
    buffer: Vec<u8>,
    endpoint: String,
}

impl Lines {
    /// The next object; `Err` when the stream ended or broke.
    pub(crate) async fn next(&mut self) -> Result<Value, CallError> {
        loop {
            if let Some(at) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=at).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let value: Value = serde_json::from_slice(line).map_err(|e| {
                    CallError::Broken(format!(
                        "etcd at {} sent a watch line that is not JSON: {e}",
                        self.endpoint
                    ))
                })?;
                let inner = value.get("result").cloned();
                if let Some(err) = value.get("error") {
                    if let Some((code, message)) = status_of(err).or_else(|| status_of(&value)) {
                        return Err(CallError::Status {
                            code,
                            message,
                            endpoint: self.endpoint.clone(),
                        });
                    }
                }
                return inner.ok_or_else(|| {
                    CallError::Broken(format!(
                        "etcd at {} sent a watch line without result",
                        self.endpoint
                    ))
                });
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    return Err(CallError::Broken(format!(
                        "the watch stream from etcd at {} broke: {e}",
                        self.endpoint
                    )))
                }
                None => {
                    return Err(CallError::Broken(format!(
                        "etcd at {} ended the watch stream",
                        self.endpoint
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use servicegroup_core::ErrorKind;

    fn status(code: i64, message: &str) -> CallError {
        CallError::Status {
            code,
            message: message.to_owned(),
            endpoint: "http://127.0.0.1:2379".to_owned(),
        }
    }

    #[test]
    fn a_member_stopping_is_unavailable_and_fails_over() {
        // What the gateway of an etcd member that is shutting down answers
        // (seen by the fault matrix, scenario 10 on etcd-3).
        let closing = status(code::CANCELLED, "grpc: the client connection is closing");
        assert!(closing.fails_over());
        assert_eq!(
            closing.into_error("keeping the lease alive").kind(),
            ErrorKind::Unavailable
        );
        assert!(status(code::UNAVAILABLE, "etcdserver: no leader").fails_over());
        let other = status(
            code::OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
        );
        assert!(!other.fails_over());
        assert_eq!(other.into_error("x").kind(), ErrorKind::Backend);
    }
}
