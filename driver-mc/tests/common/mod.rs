//! Helpers shared by the mc driver's integration tests: the test servers, unique
//! key prefixes, dedicated servers for restart/outage tests, log capture.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use servicegroup_core::{
    Beats, Condition, Config, Driver, HeartbeatReport, InstanceId, MemberKey, Metadata, Registered,
    Registration,
};
use servicegroup_driver_mc::McConfig;

/// The variable scripts/lib/memcached.sh exports.
pub const SERVERS_VAR: &str = "SERVICEGROUP_TEST_MEMCACHED_SERVERS";

/// The shared test servers (`host:port`), three of them. Fails loudly when unset:
/// these tests need real memcached servers, which `scripts/test` starts.
pub fn shared_servers() -> Vec<String> {
    let value = std::env::var(SERVERS_VAR).unwrap_or_default();
    let servers: Vec<String> = value
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(
        !servers.is_empty(),
        "{SERVERS_VAR} is not set: these tests need real memcached servers. Run them with \
         `scripts/test` (it starts three throwaway servers), or start some with \
         `scripts/lib/memcached.sh start DIR PORT` and export {SERVERS_VAR}=127.0.0.1:PORT[,...]"
    );
    servers
}

/// A key prefix no other test (or earlier run) uses.
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t{tag}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `[mc]` table of `config`, as the driver reads it.
#[allow(dead_code)]
pub fn mc(config: &Config) -> McConfig {
    config.driver_config("mc").expect("a valid [mc] table")
}

/// An mc configuration on `servers` under a fresh prefix, with test timings.
pub fn config(servers: &[String], tag: &str) -> Config {
    let mut c = Config::with_driver("mc");
    c.set("mc.servers", servers.to_vec())
        .and_then(|c| {
            c.set("mc.prefix", unique_prefix(tag))?
                .set("mc.timeout", Duration::from_millis(500))
        })
        .expect("the mc driver's keys");
    c.report_interval = Duration::from_millis(200);
    c.service_down_time = Duration::from_secs(2);
    c.call_timeout = Duration::from_secs(2);
    c
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/memcached.sh")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A memcached server of one test's own (started with scripts/lib/memcached.sh),
/// stopped when dropped. Restart and outage tests use these, never the shared ones.
pub struct Dedicated {
    dir: tempfile::TempDir,
    port: u16,
}

impl Dedicated {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("sg-mc-").tempdir().unwrap();
        // memcached drops to `nobody` before writing its pid file.
        Command::new("chmod")
            .arg("755")
            .arg(dir.path())
            .status()
            .unwrap();
        let server = Self {
            dir,
            port: free_port(),
        };
        server.up();
        server
    }

    /// `127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    /// Starts the server again (empty) on the same port.
    pub fn up(&self) {
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(self.state())
            .arg(self.port.to_string())
            .output()
            .expect("run scripts/lib/memcached.sh");
        assert!(
            out.status.success(),
            "scripts/lib/memcached.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (its data is lost).
    pub fn down(&self) {
        let out = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.state())
            .output()
            .expect("run scripts/lib/memcached.sh");
        assert!(
            out.status.success(),
            "scripts/lib/memcached.sh stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.state())
            .output();
    }
}

/// Log lines captured from `tracing` (install with [`capture_logs`]).
pub use servicegroup_conformance::logs::ThreadLogs as Logs;

/// Captures this thread's `tracing` output (INFO and up) until the guard drops.
/// Use it with a current-thread runtime, so the heartbeat task logs here too.
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    servicegroup_conformance::logs::capture_thread(tracing::Level::INFO)
}

/// Polls `check` every 25 ms until it returns `Some`, at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A registration of `key` by `instance` with no metadata.
pub fn registration(key: &MemberKey, instance: InstanceId, condition: Condition) -> Registration {
    Registration {
        key: key.clone(),
        instance,
        metadata: Metadata::new(),
        condition,
    }
}

/// Registers `keys` for `instance` unconditionally (takeover), asserting every one
/// was stored; returns the epochs.
pub async fn register_all(
    driver: &dyn Driver,
    keys: &[MemberKey],
    instance: InstanceId,
) -> Vec<u64> {
    let registrations: Vec<Registration> = keys
        .iter()
        .map(|k| registration(k, instance, Condition::Always))
        .collect();
    driver
        .register_many(&registrations)
        .await
        .unwrap()
        .into_iter()
        .map(|outcome| match outcome {
            Registered::Stored { epoch } => epoch,
            Registered::Refused { found } => {
                panic!("an unconditional registration was refused ({found:?})")
            }
        })
        .collect()
}

/// One heartbeat of `keys` (sorted) by `instance`.
pub async fn beat(
    driver: &dyn Driver,
    instance: InstanceId,
    keys: &[MemberKey],
) -> HeartbeatReport {
    driver.heartbeat(&[Beats { instance, keys }]).await.unwrap()
}
