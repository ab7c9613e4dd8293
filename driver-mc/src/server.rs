//! One memcached server: its meta-protocol client (the `memcache` crate's
//! [`MetaClient`], with its own connection pool), work items run as sessions of
//! pipelined exchanges, and the mapping of client errors to servicegroup errors.
//!
//! Every server has its own client, built lazily: a server that is down or whose
//! name does not resolve at start only fails the operations placed on it, and is
//! retried on each later operation. The client dials with `[mc] timeout` as connect
//! timeout and bounds every exchange (request write plus all response reads) by
//! the same timeout. One exchange is one `run_batch` of the crate: the whole batch
//! goes to one connection, each command stamped with an opaque token whose echo
//! the crate checks.
//!
//! **Which life of the server an exchange talks to.** memcached's CAS counter
//! starts again at 1 when it restarts, so a CAS token remembered from before a
//! restart can equal the token of an item written after it. The crate's pool does
//! not say which connection an exchange used, nor that it dialed a new one (it
//! replaces a dead pooled connection transparently), so the driver cannot tie a
//! life to a connection. It ties it to the exchange instead: the server keeps a
//! *boot token* (module `cache`, a random value the driver stores once per life),
//! and a session that will send remembered CAS tokens first reads it in an exchange
//! of its own ([`Session::set_life`]); from then on every exchange of the session
//! opens with a read of the boot key, in the same batch and so on the same
//! connection, and is checked against it. An exchange that finds another token (or
//! none) fails the session with `Unavailable`, which runs the work once more from
//! the start: it then reads the new token, and what was remembered about the server
//! is forgotten before anything is sent (see `Backend::life`).

use std::sync::Mutex;
use std::time::Duration;

use memcache::exp::{Error as McError, Get, MetaClient, Op};
use servicegroup_core::{Error, ErrorKind, Result};

use crate::cache::{token_of, Token};
use crate::ops::{Batch, Reply};
use crate::NAME;

/// Most commands sent in one pipelined exchange; larger batches are split so that
/// each exchange finishes well within the timeout.
pub const CHUNK: usize = 2_000;
/// Most payload bytes in one exchange (commands with large values are split
/// sooner than [`CHUNK`]).
pub const CHUNK_BYTES: usize = 1 << 20;
/// Idle connections kept per server.
const MAX_IDLE: usize = 8;
/// Connections in use per server at most (further callers wait, up to the timeout).
const MAX_CONNECTIONS: usize = 32;

/// A configured memcached server.
pub struct Server {
    /// `host:port` as configured (also the placement identity).
    address: String,
    timeout: Duration,
    /// The key of the server's boot token.
    boot_key: String,
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

/// One work item's exchanges with one server; see [`Server::session`].
pub struct Session<'a> {
    server: &'a Server,
    client: MetaClient,
    /// The boot token this session's exchanges are checked against (see the
    /// module docs).
    life: Option<Token>,
}

impl Session<'_> {
    /// The boot token the session's exchanges are checked against, if any.
    pub fn life(&self) -> Option<Token> {
        self.life
    }

    /// From now on, every exchange opens with a read of the boot key and fails
    /// unless it finds `life`.
    pub fn set_life(&mut self, life: Token) {
        self.life = Some(life);
    }

    /// Sends `batch` as one pipelined exchange (one connection) and returns every
    /// answer, within the server's timeout. Any failed command fails the exchange.
    pub fn exchange(&mut self, batch: Batch) -> Result<Reply> {
        if batch.is_empty() {
            return Ok(Reply::default());
        }
        let (ops, plain_append) = batch.into_parts();
        let lead = usize::from(self.life.is_some());
        let ops: Vec<Op> = match self.life {
            Some(_) => std::iter::once(Get::new(&self.server.boot_key).into())
                .chain(ops)
                .collect(),
            None => ops,
        };
        let answers = self
            .client
            .run_batch(ops)
            .map_err(|e| self.server.error(e))?;
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(answer.map_err(|e| self.server.error(e))?);
        }
        if let Some(life) = self.life {
            let boot = results.first().and_then(|r| r.as_get());
            let found = boot.and_then(|g| g.value.as_deref().filter(|_| g.hit()));
            if found.map(token_of) != Some(life) {
                return Err(Error::unavailable(format!(
                    "memcached server {} restarted or was flushed during this operation (its boot token changed)",
                    self.server.address
                ))
                .with_driver(NAME));
            }
            results.drain(..lead);
        }
        Ok(Reply::new(results, plain_append))
    }
}

impl Server {
    /// A server at `address` whose boot token is under `boot_key`; tries to
    /// resolve it at once (a failure is kept for later).
    pub fn new(address: String, timeout: Duration, boot_key: String) -> Self {
        let server = Self {
            address,
            timeout,
            boot_key,
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

    /// Runs `work` as one session with this server (blocking: call it off the
    /// async runtime). When it fails with `Unavailable` (a connection refused,
    /// reset or closed, not a timeout; or the server's boot token changed under
    /// it), the pool is dropped and `work` runs once more, from the start, on new
    /// connections: after a memcached restart every pooled connection is dead.
    /// Work must be written so that a repeat is harmless: reads are, and so are
    /// writes conditional on what was read (a compare-and-set that had been
    /// applied answers "changed", and the repeat reads again and finds its own
    /// write).
    pub fn session<T>(&self, mut work: impl FnMut(&mut Session<'_>) -> Result<T>) -> Result<T> {
        let mut session = Session {
            server: self,
            client: self.client()?,
            life: None,
        };
        match work(&mut session) {
            Err(error) if error.kind() == ErrorKind::Unavailable => {
                tracing::debug!(driver = NAME, server = %self.address, error = %error, "retrying on new connections");
                self.reset();
                let mut session = Session {
                    server: self,
                    client: self.client()?,
                    life: None,
                };
                work(&mut session)
            }
            other => other,
        }
    }

    /// Maps a client error to a servicegroup error naming this server.
    pub fn error(&self, error: McError) -> Error {
        let kind = kind_of(&error);
        let what = match kind {
            ErrorKind::Timeout => format!(
                "memcached server {} did not answer within {:?} (`mc.timeout`)",
                self.address, self.timeout
            ),
            ErrorKind::Unavailable => format!("memcached server {} is unreachable", self.address),
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
