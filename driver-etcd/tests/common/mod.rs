//! Helpers shared by the etcd driver's integration tests: the shared test cluster,
//! unique key prefixes, clusters of a test's own for fault tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use servicegroup_core::Config;

/// The variable scripts/lib/etcd.sh exports.
pub const ENDPOINTS_VAR: &str = "SERVICEGROUP_TEST_ETCD_ENDPOINTS";

/// The shared 3-member test cluster's endpoints. Fails loudly when unset: these tests
/// need a real etcd cluster, which `scripts/test` starts.
pub fn shared_endpoints() -> Vec<String> {
    let value = std::env::var(ENDPOINTS_VAR).unwrap_or_default();
    let endpoints: Vec<String> = value
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(
        endpoints.len() >= 3,
        "{ENDPOINTS_VAR} must list the three members of a real etcd cluster (it is {value:?}). \
         Run the tests with `scripts/test` (it starts one), or start one with \
         `scripts/lib/etcd.sh start DIR` and export {ENDPOINTS_VAR}=<the endpoints it prints>"
    );
    endpoints
}

/// An etcd configuration on `endpoints` under a fresh prefix.
pub fn config(endpoints: &[String], tag: &str) -> Config {
    let mut c = Config::with_driver("etcd");
    c.set("etcd.endpoints", endpoints.to_vec())
        .and_then(|c| {
            c.set("etcd.prefix", servicegroup_conformance::unique_name(tag))?
                .set("etcd.timeout", Duration::from_millis(800))
        })
        .expect("the etcd driver's keys");
    c
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/etcd.sh")
}

/// Runs `scripts/lib/etcd.sh ARGS...`, returning its stdout; panics with its stderr.
pub fn etcd_sh(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("run scripts/lib/etcd.sh");
    assert!(
        out.status.success(),
        "scripts/lib/etcd.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A 3-member cluster of one test's own (fault tests stop its members), destroyed
/// when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    /// Client URLs of members a, b, c.
    pub endpoints: Vec<String>,
}

impl Cluster {
    /// Starts a cluster in a new temporary directory.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sg-etcd-")
            .tempdir()
            .unwrap();
        let endpoints = etcd_sh(&["start", dir.path().to_str().unwrap()])
            .split(',')
            .map(str::to_owned)
            .collect();
        Self { dir, endpoints }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    /// The current leader's name (a, b or c).
    pub fn leader(&self) -> String {
        etcd_sh(&["leader", self.path()])
    }

    /// The current leader's name, or `None` while there is none.
    pub fn try_leader(&self) -> Option<String> {
        let out = Command::new("bash")
            .arg(script())
            .args(["leader", self.path()])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Stops member `name`, keeping its data.
    pub fn stop_member(&self, name: &str) {
        etcd_sh(&["stop-member", self.path(), name]);
    }

    /// Starts member `name` again and waits until it is healthy.
    pub fn start_member(&self, name: &str) {
        etcd_sh(&["start-member", self.path(), name]);
    }

    /// Stops every member, deletes the data, starts an empty cluster on the same ports.
    pub fn wipe(&self) {
        etcd_sh(&["wipe", self.path()]);
    }

    /// Stops every member's process (SIGSTOP) until the returned guard is dropped
    /// (SIGCONT): the cluster hangs, its connections stay open and silent.
    pub fn stall(&self) -> Stall {
        let pids: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|name| {
                let file = self.dir.path().join(format!("{name}.pid"));
                std::fs::read_to_string(&file)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                    .trim()
                    .to_owned()
            })
            .collect();
        signal(&pids, "STOP");
        Stall { pids }
    }
}

fn signal(pids: &[String], signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids)
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pids:?}: {status}");
}

/// A stalled cluster ([`Cluster::stall`]); continued when dropped, also when a test
/// fails meanwhile (a stopped etcd would not stop).
pub struct Stall {
    pids: Vec<String>,
}

impl Drop for Stall {
    fn drop(&mut self) {
        signal(&self.pids, "CONT");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", self.path()])
            .output();
    }
}
