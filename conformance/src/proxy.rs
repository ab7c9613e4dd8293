//! [`OutageProxy`]: a TCP forwarder that can cut a fixture off its backend, for
//! drivers talking to a server (database, memcached) that other tests share.
//!
//! Point the fixture's configuration at [`OutageProxy::addr`] instead of the server
//! and add the proxy as the fixture's outage hook. `stop()` closes every forwarded
//! connection and closes each new one right after accepting it (the driver sees
//! resets and refused handshakes: `Unavailable`); `start()` forwards again. Only this
//! fixture's connections are affected.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use servicegroup_core::BoxError;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fixture::Outage;

#[derive(Debug)]
struct State {
    reachable: AtomicBool,
    /// Connections forwarded so far.
    forwarded: AtomicU64,
    /// Bumped on every stop; forwarding tasks end when it changes.
    cut: watch::Sender<u64>,
}

/// A TCP forwarder on `127.0.0.1` to one upstream address; also an [`Outage`].
/// It runs on the tokio runtime it was started on and stops when dropped.
#[derive(Debug)]
pub struct OutageProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl OutageProxy {
    /// Listens on a free port of `127.0.0.1` and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (cut, _) = watch::channel(0u64);
        let state = Arc::new(State {
            reachable: AtomicBool::new(true),
            forwarded: AtomicU64::new(0),
            cut,
        });
        let task = tokio::spawn(accept_loop(listener, upstream, state.clone()));
        Ok(Self {
            addr,
            upstream,
            state,
            task,
        })
    }

    /// The address to give the driver instead of the upstream server's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Cuts every connection and refuses new ones (`false`), or forwards again (`true`).
    pub fn set_reachable(&self, reachable: bool) {
        self.state.reachable.store(reachable, Ordering::SeqCst);
        if !reachable {
            self.state.cut.send_modify(|generation| *generation += 1);
        }
    }

    /// Whether connections are forwarded.
    pub fn is_reachable(&self) -> bool {
        self.state.reachable.load(Ordering::SeqCst)
    }

    /// How many client connections it has forwarded so far (refused ones not
    /// counted): how many connections a driver opened through it.
    pub fn forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for OutageProxy {
    fn drop(&mut self) {
        self.set_reachable(false);
        self.task.abort();
    }
}

#[async_trait]
impl Outage for OutageProxy {
    async fn stop(&self) -> Result<(), BoxError> {
        self.set_reachable(false);
        Ok(())
    }

    async fn start(&self) -> Result<(), BoxError> {
        self.set_reachable(true);
        Ok(())
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if !state.reachable.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        state.forwarded.fetch_add(1, Ordering::SeqCst);
        let cut = state.cut.subscribe();
        tokio::spawn(forward(client, upstream, cut));
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<u64>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn forwards_cuts_and_forwards_again() {
        // An echo server as upstream.
        let echo = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let upstream = echo.local_addr().unwrap();
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
        let proxy = OutageProxy::start(upstream).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        assert_eq!(proxy.forwarded(), 1);

        proxy.stop().await.unwrap();
        // The open connection is cut: reading ends (EOF or reset).
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest).await;
        // New connections are closed at once.
        let mut c2 = TcpStream::connect(proxy.addr()).await.unwrap();
        let _ = c2.write_all(b"x").await;
        let mut one = [0u8; 1];
        assert!(matches!(c2.read(&mut one).await, Ok(0) | Err(_)));

        proxy.start().await.unwrap();
        let mut c3 = TcpStream::connect(proxy.addr()).await.unwrap();
        c3.write_all(b"pong").await.unwrap();
        c3.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        assert_eq!(
            proxy.forwarded(),
            2,
            "the refused connection is not counted"
        );
    }
}
