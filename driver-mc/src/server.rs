//! One memcached server: a pool of TCP connections speaking the meta protocol
//! ([`crate::wire`]), exchanges bounded by a deadline, and the mapping of failures
//! to servicegroup errors.
//!
//! A server's address is resolved lazily: one that is down or whose name does not
//! resolve at start only fails the operations placed on it, and is tried again on
//! each later operation. Connections are dialed with `[mc] timeout` as connect
//! timeout, and every exchange (request written in full, then every answer read)
//! is bounded by the same timeout.
//!
//! **Which life of the server a connection talks to.** memcached's CAS counter
//! starts again at 1 when it restarts, so a CAS token remembered from before a
//! restart can equal the token of an item written after it. A restart always
//! closes every connection, so a connection that is still open talks to the same
//! life of the server for as long as it lives. Each connection therefore carries
//! the server's *boot token* as it read it (module `cache`): a random value the
//! driver stores in the server once per life. Work that compares or sends
//! remembered CAS tokens runs only on a connection whose boot token is the one
//! those tokens were remembered under (see `Backend::life`). A new connection reads
//! the boot token once, before its first such exchange.

use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use servicegroup_core::{Error, ErrorKind, Result};

use crate::cache::Token;
use crate::wire::{read_reply, Batch, Reply, WireError};
use crate::NAME;

/// Most commands sent in one pipelined exchange; larger batches are split so that
/// each exchange finishes well within the timeout.
pub const CHUNK: usize = 2_000;
/// Most payload bytes in one exchange (commands with large values are split
/// sooner than [`CHUNK`]).
pub const CHUNK_BYTES: usize = 1 << 20;
/// Idle connections kept per server.
const MAX_IDLE: usize = 8;
/// An idle connection older than this is closed instead of reused (middleboxes
/// drop quiet connections).
const MAX_IDLE_AGE: Duration = Duration::from_secs(90);
/// Read buffer per connection.
const READ_BUFFER: usize = 64 * 1024;

/// A configured memcached server.
pub struct Server {
    /// `host:port` as configured (also the placement identity).
    address: String,
    timeout: Duration,
    resolved: Mutex<Option<Vec<SocketAddr>>>,
    idle: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One open connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
    /// The boot token this connection read (see the module docs).
    life: Option<Token>,
    /// When it was last put back in the pool.
    idle_since: Instant,
    /// Whether it came from the pool (and so may have died unnoticed).
    pooled: bool,
    /// An exchange on it failed: it is closed instead of put back.
    broken: bool,
}

impl Conn {
    /// The boot token this connection read, if it read one.
    pub fn life(&self) -> Option<Token> {
        self.life
    }

    /// Records the boot token read on this connection.
    pub fn set_life(&mut self, life: Option<Token>) {
        self.life = life;
    }

    /// Whether a pooled connection is still open and quiet: a non-blocking peek
    /// finds neither data nor end of stream (a restarted server closed it).
    fn usable(&mut self) -> bool {
        if !self.reader.buffer().is_empty() || self.idle_since.elapsed() > MAX_IDLE_AGE {
            return false;
        }
        let stream = self.reader.get_ref();
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        let quiet =
            matches!(stream.peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        stream.set_nonblocking(false).is_ok() && quiet
    }
}

/// The socket timeout for the time left until `deadline` (a spent deadline is a
/// timeout).
fn arm(stream: &TcpStream, deadline: Instant, write: bool) -> io::Result<()> {
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
    if write {
        stream.set_write_timeout(Some(left))
    } else {
        stream.set_read_timeout(Some(left))
    }
}

/// A checked-out connection of one server; see [`Server::session`].
pub struct Session<'a> {
    server: &'a Server,
    conn: Conn,
}

impl Session<'_> {
    /// The connection (its boot token).
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// Sends `batch` as one pipelined exchange and reads every answer, within the
    /// server's timeout. Any failure closes the connection.
    pub fn exchange(&mut self, batch: &Batch) -> Result<Reply> {
        if batch.is_empty() {
            return Ok(Reply::default());
        }
        let deadline = Instant::now() + self.server.timeout;
        let result = (|| -> std::result::Result<Reply, WireError> {
            let mut payload = batch.payload();
            while !payload.is_empty() {
                let stream = self.conn.reader.get_mut();
                arm(stream, deadline, true)?;
                match stream.write(payload) {
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                    Ok(n) => payload = &payload[n..],
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            read_reply(&mut self.conn.reader, batch, &mut |stream| {
                arm(stream, deadline, false)
            })
        })();
        result.map_err(|e| {
            self.conn.broken = true;
            self.server.error(e)
        })
    }
}

impl Server {
    /// A server at `address`; tries to resolve it at once (a failure is kept for later).
    pub fn new(address: String, timeout: Duration) -> Self {
        let server = Self {
            address,
            timeout,
            resolved: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
        };
        if let Err(error) = server.addrs() {
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

    fn addrs(&self) -> Result<Vec<SocketAddr>> {
        let mut slot = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(addrs) = slot.as_ref() {
            return Ok(addrs.clone());
        }
        let addrs: Vec<SocketAddr> = self
            .address
            .to_socket_addrs()
            .map_err(|e| self.error(WireError::Io(e)))?
            .collect();
        if addrs.is_empty() {
            return Err(Error::unavailable(format!(
                "memcached server {} resolves to no address",
                self.address
            ))
            .with_driver(NAME));
        }
        *slot = Some(addrs.clone());
        Ok(addrs)
    }

    /// Dials a new connection (every resolved address in turn, one deadline).
    fn dial(&self) -> Result<Conn> {
        let addrs = self.addrs()?;
        let deadline = Instant::now() + self.timeout;
        let mut last = None;
        for addr in &addrs {
            let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            else {
                break;
            };
            match TcpStream::connect_timeout(addr, left) {
                Ok(stream) => {
                    stream
                        .set_nodelay(true)
                        .map_err(|e| self.error(WireError::Io(e)))?;
                    tracing::trace!(driver = NAME, server = %self.address, "memcached connection open");
                    return Ok(Conn {
                        reader: BufReader::with_capacity(READ_BUFFER, stream),
                        life: None,
                        idle_since: Instant::now(),
                        pooled: false,
                        broken: false,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(self.error(WireError::Io(
            last.unwrap_or_else(|| io::Error::from(io::ErrorKind::TimedOut)),
        )))
    }

    fn checkout(&self) -> Result<Conn> {
        loop {
            let next = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match next {
                Some(mut conn) => {
                    if conn.usable() {
                        conn.pooled = true;
                        return Ok(conn);
                    }
                }
                None => return self.dial(),
            }
        }
    }

    fn checkin(&self, mut conn: Conn) {
        if conn.broken {
            return;
        }
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Runs `work` on one connection of this server (blocking: call it off the
    /// async runtime). A pooled connection that turns out dead (the server
    /// restarted, or closed it) fails with `Unavailable`; then `work` runs once
    /// more, from the start, on a new connection. Work must be written so that a
    /// repeat is harmless: reads are, and so are writes conditional on what was
    /// read (a compare-and-set that had been applied answers "changed", and the
    /// repeat reads again and finds its own write).
    pub fn session<T>(&self, mut work: impl FnMut(&mut Session<'_>) -> Result<T>) -> Result<T> {
        let conn = self.checkout()?;
        let pooled = conn.pooled;
        let mut session = Session { server: self, conn };
        match work(&mut session) {
            Ok(value) => {
                self.checkin(session.conn);
                Ok(value)
            }
            Err(error) if pooled && error.kind() == ErrorKind::Unavailable => {
                tracing::debug!(driver = NAME, server = %self.address, error = %error, "retrying on a new connection");
                // Its pool-mates are likely dead too (a restart closes them all).
                self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
                let mut session = Session {
                    server: self,
                    conn: self.dial()?,
                };
                let value = work(&mut session)?;
                self.checkin(session.conn);
                Ok(value)
            }
            Err(error) => Err(error),
        }
    }

    /// Maps a failure to a servicegroup error naming this server.
    pub fn error(&self, error: WireError) -> Error {
        let kind = match &error {
            WireError::Io(io) => match io.kind() {
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::Timeout,
                _ => ErrorKind::Unavailable,
            },
            WireError::Protocol(_) | WireError::Server(_) => ErrorKind::Backend,
        };
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
