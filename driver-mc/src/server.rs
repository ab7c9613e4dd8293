//! One memcached server: its meta-protocol client, blocking batch execution off
//! the async runtime, and the mapping of client errors to servicegroup errors.
//!
//! Every server has its own [`MetaClient`] (its own connection pool), built
//! lazily: a server that is down or whose name does not resolve at start only
//! fails the operations placed on it, and is retried on each later operation.
//! The client dials with `[mc] timeout` as connect timeout and bounds every
//! exchange (request write plus all response reads) by the same timeout.

use std::sync::Mutex;
use std::time::Duration;

use memcache::exp::{Error as McError, MetaClient, Op, OpResult};
use servicegroup_core::{Error, ErrorKind, Result};

use crate::NAME;

/// Most operations sent in one pipelined exchange; larger batches are split so
/// that each exchange finishes well within the io timeout.
pub const CHUNK: usize = 2_000;
/// Idle connections kept per server.
const MAX_IDLE: usize = 8;
/// Connections in use per server at most (further callers wait, up to the timeout).
const MAX_CONNECTIONS: usize = 32;

/// A configured memcached server.
pub struct Server {
    /// `host:port` as configured (also the placement identity).
    address: String,
    timeout: Duration,
    client: Mutex<Option<MetaClient>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server at `address`; tries to resolve it at once (a failure is kept for later).
    pub fn new(address: String, timeout: Duration) -> Self {
        let server = Self {
            address,
            timeout,
            client: Mutex::new(None),
        };
        if let Err(error) = server.client() {
            tracing::warn!(
                driver = NAME,
                server = %server.address,
                error = %error,
                "memcached server {} cannot be resolved yet; operations placed on it fail until it can",
                server.address
            );
        }
        server
    }

    /// The configured address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn client(&self) -> Result<MetaClient> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let client = MetaClient::builder()
            .connect_timeout(Some(self.timeout))
            .io_timeout(Some(self.timeout))
            .max_idle(MAX_IDLE)
            .max_connections(Some(MAX_CONNECTIONS))
            .connect(self.address.as_str())
            .map_err(|e| self.error(e))?;
        tracing::debug!(driver = NAME, server = %self.address, "memcached client ready");
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Drops the client and with it every pooled connection (after a connection
    /// failure they are likely all dead: a restarted server closed them).
    fn reset(&self) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Runs `ops` in order, pipelined in chunks of [`CHUNK`], on this thread
    /// (blocking). Any failed operation fails the whole call: the results of a
    /// batch are only used when every operation got an answer.
    ///
    /// A chunk that fails on the connection (refused, reset, closed; not a
    /// timeout) is retried once on fresh connections: after a memcached restart
    /// every pooled connection is dead, and only the first use finds out. A
    /// repeated read or unconditional write is harmless; a repeated
    /// compare-and-set that had been applied answers "changed", which the backend
    /// resolves by reading again (it then finds its own write).
    pub fn run_blocking(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let mut results = Vec::with_capacity(ops.len());
        let mut ops = ops.into_iter().peekable();
        let mut retried = false;
        while ops.peek().is_some() {
            let chunk: Vec<Op> = ops.by_ref().take(CHUNK).collect();
            match self.run_chunk(chunk.clone()) {
                Ok(answers) => results.extend(answers),
                Err(error) if !retried && error.kind() == ErrorKind::Unavailable => {
                    retried = true;
                    self.reset();
                    tracing::debug!(driver = NAME, server = %self.address, error = %error, "retrying on fresh connections");
                    results.extend(self.run_chunk(chunk)?);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(results)
    }

    /// Runs `ops` as one pipelined exchange, however many there are (callers keep
    /// them near [`CHUNK`]), retried once on fresh connections like
    /// [`Self::run_blocking`].
    pub fn run_exchange(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        match self.run_chunk(ops.clone()) {
            Err(error) if error.kind() == ErrorKind::Unavailable => {
                self.reset();
                tracing::debug!(driver = NAME, server = %self.address, error = %error, "retrying on fresh connections");
                self.run_chunk(ops)
            }
            other => other,
        }
    }

    fn run_chunk(&self, chunk: Vec<Op>) -> Result<Vec<OpResult>> {
        let client = self.client()?;
        let answers = client.run_batch(chunk).map_err(|e| self.error(e))?;
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            match answer {
                Ok(result) => results.push(result),
                Err(error) => {
                    let error = self.error(error);
                    if error.kind().is_unreachable() {
                        // The exchange failed mid-way: the connection was dropped,
                        // and its pool-mates may be stale too.
                        self.reset();
                    }
                    return Err(error);
                }
            }
        }
        Ok(results)
    }

    /// Maps a client error to a servicegroup error naming this server.
    pub fn error(&self, error: McError) -> Error {
        let kind = kind_of(&error);
        let what = match kind {
            ErrorKind::Timeout => format!(
                "memcached server {} did not answer within {:?} (`mc.timeout`)",
                self.address, self.timeout
            ),
            ErrorKind::Unavailable => {
                format!("memcached server {} is unreachable", self.address)
            }
            _ => format!("memcached server {} answered with an error", self.address),
        };
        Error::new(kind, format!("{what}: {error}"))
            .with_driver(NAME)
            .with_source(error)
    }
}

/// What kind of servicegroup error a client error is.
fn kind_of(error: &McError) -> ErrorKind {
    match error {
        McError::Io(io) => match io.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => ErrorKind::Timeout,
            _ => ErrorKind::Unavailable,
        },
        McError::Timeout { .. } => ErrorKind::Timeout,
        McError::Ambiguous { source, .. } => match kind_of(source) {
            ErrorKind::Timeout => ErrorKind::Timeout,
            _ => ErrorKind::Unavailable,
        },
        _ => ErrorKind::Backend,
    }
}

/// The [`memcache::exp::GetResult`] at `index`, or a protocol error.
pub fn get_at(results: &[OpResult], index: usize) -> Result<&memcache::exp::GetResult> {
    results
        .get(index)
        .and_then(OpResult::as_get)
        .ok_or_else(|| {
            Error::backend("memcached answered a get with another kind of result").with_driver(NAME)
        })
}

/// The [`memcache::exp::MutationResult`] at `index`, or a protocol error.
pub fn mutation_at(results: &[OpResult], index: usize) -> Result<&memcache::exp::MutationResult> {
    results
        .get(index)
        .and_then(OpResult::as_mutation)
        .ok_or_else(|| {
            Error::backend("memcached answered a store or delete with another kind of result")
                .with_driver(NAME)
        })
}
