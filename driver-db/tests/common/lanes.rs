//! Heartbeats never wait behind anything else: a heartbeat batch and a join complete
//! within their deadline while slow listings hold every connection of the general
//! pool. The listings are made slow by a real mechanism, a link of limited
//! bandwidth: [`ThrottleProxy`] forwards the database's answers at a fixed rate per
//! connection, so a listing of thousands of rows takes seconds while a heartbeat's
//! few hundred bytes pass in milliseconds (each connection has its own link, as
//! each has its own socket).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use servicegroup_core::{
    Beats, Condition, DatabaseUrl, Driver, GroupId, InstanceId, MemberId, MemberKey, Metadata,
    Registration,
};
use servicegroup_driver_db::{DbConfig, DbDriver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

/// A TCP forwarder on `127.0.0.1` that passes the server's bytes to the client at
/// `rate` bytes per second per connection (client to server unthrottled), counting
/// them per connection. It stops forwarding when dropped.
pub struct ThrottleProxy {
    addr: SocketAddr,
    /// Bytes sent to the client so far, one counter per accepted connection.
    sent: Arc<Mutex<Vec<Arc<AtomicU64>>>>,
    tasks: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl ThrottleProxy {
    /// Listens on a free port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr, rate: u64) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let sent: Arc<Mutex<Vec<Arc<AtomicU64>>>> = Arc::default();
        let tasks: Arc<Mutex<JoinSet<()>>> = Arc::default();
        let accept = tokio::spawn({
            let (sent, tasks) = (sent.clone(), tasks.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let counter = Arc::new(AtomicU64::new(0));
                    sent.lock().unwrap().push(counter.clone());
                    tasks
                        .lock()
                        .unwrap()
                        .spawn(forward(client, server, rate, counter));
                }
            }
        });
        Self {
            addr,
            sent,
            tasks,
            accept,
        }
    }

    /// The address to connect to instead of the server's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections have passed at least `bytes` to their client.
    pub fn connections_past(&self, bytes: u64) -> usize {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.load(Ordering::Relaxed) >= bytes)
            .count()
    }
}

impl Drop for ThrottleProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.tasks.lock().unwrap().abort_all();
    }
}

async fn forward(client: TcpStream, server: TcpStream, rate: u64, sent: Arc<AtomicU64>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let down = async move {
        // Chunks of at most 1/20 s worth of bytes, each followed by its share of a
        // second: the client sees a steady `rate`.
        let mut buf = vec![0u8; (rate / 20).max(64) as usize];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            sent.fetch_add(n as u64, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}

/// `url` (`scheme://user@HOST:PORT/db…`) with its host and port replaced by `addr`;
/// and the upstream address it named.
pub fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL with ://");
    let (authority, path) = rest.split_once('/').expect("URL with a database");
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!("{scheme}://{}{addr}/{path}", user.unwrap_or_default())
}

/// The `HOST:PORT` a URL names (resolving `localhost`).
pub fn upstream(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("URL with ://").1;
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .expect("a resolvable host:port")
        .next()
        .expect("an address")
}

fn options(url: &str, pool_size: u32, heartbeat_pool_size: u32) -> DbConfig {
    let mut options = DbConfig::default();
    options.url = Some(DatabaseUrl::new(url));
    options.pool_size = pool_size;
    options.heartbeat_pool_size = heartbeat_pool_size;
    options.timeout = Duration::from_secs(60);
    options
}

fn registrations(
    group: &GroupId,
    prefix: &str,
    n: usize,
    instance: InstanceId,
) -> Vec<Registration> {
    (0..n)
        .map(|i| Registration {
            key: MemberKey::new(
                group.clone(),
                MemberId::new(format!("{prefix}{i:05}")).expect("member id"),
            ),
            instance,
            metadata: Metadata::new(),
            condition: Condition::Always,
        })
        .collect()
}

/// Rows in the listed group: at ~50–80 bytes a row on the wire, ~400 KB a listing.
const LISTED: usize = 6_000;
/// The throttled link: a listing takes ~10 s, a heartbeat's answer ~10 ms.
const RATE: u64 = 40 * 1024;
/// How long a heartbeat batch and a join may take (the margin is large: unhindered,
/// each takes a few tens of milliseconds through the link).
const DEADLINE: Duration = Duration::from_secs(3);

/// What one run saw: whether the heartbeat batch and the join each completed within
/// [`DEADLINE`] while every general connection was busy listing.
#[derive(Debug, PartialEq, Eq)]
pub struct LaneRun {
    pub heartbeat_in_time: bool,
    pub join_in_time: bool,
}

/// Starts `pool_size + 1` slow listings through a [`ThrottleProxy`], waits until
/// every general connection is in the middle of one, then times a heartbeat batch
/// of 100 members and a join of a new member, each against [`DEADLINE`].
pub async fn heartbeat_under_slow_listings(direct_url: &str, heartbeat_pool_size: u32) -> LaneRun {
    const POOL: u32 = 2;
    let group = GroupId::new("listed").unwrap();
    let beaten = GroupId::new("beaten").unwrap();
    let instance = InstanceId::random();
    // Fill the listed group directly (unthrottled).
    {
        let filler = DbDriver::open(&options(direct_url, 2, 1))
            .await
            .expect("open");
        for chunk in registrations(&group, "m", LISTED, instance).chunks(2_000) {
            filler.register_many(chunk).await.expect("fill");
        }
    }
    let proxy = ThrottleProxy::start(upstream(direct_url), RATE).await;
    let url = through(direct_url, proxy.addr());
    let driver = Arc::new(
        DbDriver::open(&options(&url, POOL, heartbeat_pool_size))
            .await
            .expect("open through the throttled link"),
    );
    // The members to heartbeat, registered (ids cached) before the listings start.
    let members = registrations(&beaten, "hb", 100, instance);
    driver.register_many(&members).await.expect("register");
    let keys: Vec<MemberKey> = members.iter().map(|r| r.key.clone()).collect();

    let mut listings = JoinSet::new();
    for _ in 0..=POOL {
        let (driver, group) = (driver.clone(), group.clone());
        listings.spawn(async move { driver.list(&group).await.map(|r| r.len()) });
    }
    // Every general connection is mid-listing once POOL connections have passed
    // 32 KB to the client (nothing else sends that much: handshakes, heartbeats and
    // registrations are a few hundred bytes).
    let waited = Instant::now();
    while proxy.connections_past(32 * 1024) < POOL as usize {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "the listings did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let batch = [Beats {
        instance,
        keys: &keys,
    }];
    let heartbeat = timeout(DEADLINE, driver.heartbeat(&batch)).await;
    if let Ok(report) = &heartbeat {
        let report = report.as_ref().expect("heartbeat");
        assert!(
            report.missing.is_empty() && report.superseded.is_empty(),
            "{report:?}"
        );
    }
    let join = registrations(&beaten, "new", 1, instance);
    let joined = timeout(DEADLINE, driver.register(&join[0])).await;
    if let Ok(result) = &joined {
        result.as_ref().expect("join");
    }
    // The general connections were still busy all along: no listing has finished.
    assert_eq!(
        listings.len(),
        POOL as usize + 1,
        "the listings must still be running"
    );
    assert!(
        listings.try_join_next().is_none(),
        "a listing finished before the heartbeat was timed: the link is not slow enough"
    );
    listings.abort_all();
    drop(proxy);
    LaneRun {
        heartbeat_in_time: heartbeat.is_ok(),
        join_in_time: joined.is_ok(),
    }
}
