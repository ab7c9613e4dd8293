//! [`FaultProxy`]: a TCP forwarder on loopback that makes a healthy server look slow
//! or flaky to the clients connected through it, changeable while they run.
//!
//! - **Latency:** every chunk the server sends is held for the current latency before
//!   it is passed on (the chunks queue, so the link keeps its throughput): each
//!   request/answer round trip takes that much longer.
//! - **Resets:** each chunk the server sends is, with the current probability, cut
//!   in the middle: its first half is passed on, then the client's socket is closed
//!   with `SO_LINGER` 0, which sends a TCP RST (a connection reset mid-response).
//!   Pooled connections are hit too, not only new ones.
//!
//! (driver-db's `ThrottleProxy` limits bandwidth per connection for its lane test;
//! this one adds round-trip latency and resets, which that one cannot.)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Debug, Default)]
struct State {
    latency_us: AtomicU64,
    /// Probability of cutting a server chunk, in millionths.
    reset_ppm: AtomicU32,
    connections: AtomicU64,
    resets: AtomicU64,
}

/// A forwarder from a free port of 127.0.0.1 to one upstream address. Stops when
/// dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`, with no fault yet.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let task = tokio::spawn(accept_loop(listener, upstream, state.clone()));
        Ok(Self {
            addr,
            upstream,
            state,
            task,
        })
    }

    /// Starts one proxy per upstream, in order.
    pub async fn start_all(upstreams: &[SocketAddr]) -> std::io::Result<Vec<Self>> {
        let mut out = Vec::with_capacity(upstreams.len());
        for u in upstreams {
            out.push(Self::start(*u).await?);
        }
        Ok(out)
    }

    /// The address clients use instead of the upstream's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Holds every server chunk for `latency` from now on (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.state.latency_us.store(us, Ordering::SeqCst);
    }

    /// Cuts each server chunk with probability `fraction` (0 to 1) from now on.
    pub fn set_reset_fraction(&self, fraction: f64) {
        let ppm = (fraction.clamp(0.0, 1.0) * 1_000_000.0) as u32;
        self.state.reset_ppm.store(ppm, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Connections reset so far.
    pub fn resets(&self) -> u64 {
        self.state.resets.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(forward(client, upstream, state.clone()));
    }
}

async fn forward(client: TcpStream, upstream: SocketAddr, state: Arc<State>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>, bool)>();
    let read_down = {
        let state = state.clone();
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match server_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let ppm = state.reset_ppm.load(Ordering::SeqCst);
                let doomed = ppm > 0 && fastrand::u32(0..1_000_000) < ppm;
                let due =
                    Instant::now() + Duration::from_micros(state.latency_us.load(Ordering::SeqCst));
                if tx.send((due, buf[..n].to_vec(), doomed)).is_err() || doomed {
                    break;
                }
            }
        }
    };
    let write_down = async move {
        while let Some((due, chunk, doomed)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if doomed {
                let _ = client_write.write_all(&chunk[..chunk.len() / 2]).await;
                let _ = client_write.as_ref().set_zero_linger();
                state.resets.fetch_add(1, Ordering::SeqCst);
                // No FIN first (dropping a write half shuts it down): the socket closes
                // when the read half goes too, and with linger 0 that is an RST.
                client_write.forget();
                return true;
            }
            if client_write.write_all(&chunk).await.is_err() {
                return false;
            }
        }
        let _ = client_write.shutdown().await;
        false
    };
    let ((), reset) = tokio::join!(read_down, write_down);
    if reset {
        up.abort();
    } else {
        let _ = up.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let echo = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn adds_latency_per_round_trip() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 4];
        c.write_all(b"ping").await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        proxy.set_latency(Duration::from_millis(300));
        let started = std::time::Instant::now();
        c.write_all(b"pong").await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        let took = started.elapsed();
        assert_eq!(&buf, b"pong");
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn resets_mid_answer() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        proxy.set_reset_fraction(1.0);
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"abcdefgh").await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let outcome = loop {
            match c.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        assert!(got.len() < 8, "the answer was cut: {got:?}");
        assert_eq!(
            outcome.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset)
        );
        assert_eq!(proxy.resets(), 1);
    }
}
