//! Test harness: runs the built `servicegroup` binary as a user would, each test in
//! its own backend (a SQLite file in a temp dir, or a fresh PostgreSQL database), with
//! short intervals from the environment.
#![allow(dead_code)]

pub mod exporter;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// `report_interval` the tests run with.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(200);
/// `service_down_time` the tests run with.
pub const SERVICE_DOWN_TIME: Duration = Duration::from_secs(2);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_servicegroup")
}

/// A test environment: a temp dir (state dir, SQLite file) and the variables every
/// command of the test gets.
pub struct Env {
    pub dir: TempDir,
    vars: Vec<(String, String)>,
    cleanup: Option<Box<dyn FnOnce() + Send>>,
    pub backend: &'static str,
    /// The relay's base URL when this is a relay client environment ([`Env::relay`]).
    pub relay_url: Option<String>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(f) = self.cleanup.take() {
            f();
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Env {
    /// No backend configured at all: only the state directory is private.
    pub fn bare() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let vars = vec![
            (
                "XDG_STATE_HOME".to_owned(),
                dir.path().join("state").display().to_string(),
            ),
            (
                "HOME".to_owned(),
                dir.path().join("home").display().to_string(),
            ),
        ];
        Self {
            dir,
            vars,
            cleanup: None,
            backend: "none",
            relay_url: None,
        }
    }

    /// The `db` driver on a SQLite file in a temp dir, short intervals.
    pub fn sqlite() -> Self {
        let mut env = Self::bare();
        let url = format!("sqlite://{}/x.db", env.dir.path().display());
        env.set("SERVICEGROUP_DRIVER", "db");
        env.set("SERVICEGROUP_DB__URL", &url);
        env.short_intervals();
        env.backend = "sqlite";
        env
    }

    /// The `db` driver on a fresh PostgreSQL database (created with psql on the server
    /// that scripts/test starts), short intervals. Fails when no server is configured.
    pub fn postgres(test: &str) -> Self {
        let Ok(base) = std::env::var("SERVICEGROUP_TEST_POSTGRES_URL") else {
            panic!(
                "SERVICEGROUP_TEST_POSTGRES_URL is not set: the PostgreSQL tests need the server \
                 that scripts/test starts. Run `scripts/test` (or set the variable to a \
                 postgres:// URL of a server where this user may CREATE DATABASE)."
            );
        };
        let name = format!(
            "sg_cli_{}_{}_{}",
            test.chars().take(30).collect::<String>(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        psql(&base, &format!("CREATE DATABASE {name}"));
        let url = with_database(&base, &name);
        let mut env = Self::bare();
        env.set("SERVICEGROUP_DRIVER", "db");
        env.set("SERVICEGROUP_DB__URL", &url);
        env.short_intervals();
        env.backend = "postgres";
        let base_for_drop = base.clone();
        env.cleanup = Some(Box::new(move || {
            let _ = Command::new("psql")
                .args([
                    base_for_drop.as_str(),
                    "-q",
                    "-c",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }));
        env
    }

    /// The `mc` driver on the memcached servers scripts/test starts
    /// (`SERVICEGROUP_TEST_MEMCACHED_SERVERS`), with a key prefix of its own so tests
    /// don't see each other. Fails when no servers are configured.
    pub fn memcached(test: &str) -> Self {
        let Ok(servers) = std::env::var("SERVICEGROUP_TEST_MEMCACHED_SERVERS") else {
            panic!(
                "SERVICEGROUP_TEST_MEMCACHED_SERVERS is not set: the memcached tests need the \
                 servers that scripts/test starts. Run `scripts/test` (or set the variable to \
                 host:port[,host:port…])."
            );
        };
        let prefix = format!(
            "cli{}x{}x{}",
            test.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(20)
                .collect::<String>(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut env = Self::bare();
        env.set("SERVICEGROUP_DRIVER", "mc");
        env.set("SERVICEGROUP_MC__SERVERS", &servers);
        env.set("SERVICEGROUP_MC__PREFIX", &prefix);
        env.short_intervals();
        env.backend = "memcached";
        env
    }

    /// The `relay` driver in front of a `servicegroup relay` process serving `backend`
    /// (the relay gets the backend's variables and [`RELAY_TOKEN`] in a token file).
    /// The relay process and the backend end with the returned environment.
    pub fn relay(backend: Env) -> Self {
        let relay = RelayProcess::start(&backend, &[]);
        let mut env = Self::relay_client(&relay.url);
        env.cleanup = Some(Box::new(move || {
            drop(relay);
            drop(backend);
        }));
        env
    }

    /// The `relay` driver on relays already running (`urls`, comma-separated), with
    /// [`RELAY_TOKEN`] and short intervals.
    pub fn relay_client(urls: &str) -> Self {
        let mut env = Self::bare();
        env.set("SERVICEGROUP_DRIVER", "relay");
        env.set("SERVICEGROUP_RELAY__URLS", urls);
        env.set("SERVICEGROUP_RELAY__TOKEN", RELAY_TOKEN);
        env.short_intervals();
        env.backend = "relay";
        env.relay_url = Some(urls.to_owned());
        env
    }

    /// How much later than `service_down_time` after the last heartbeat a member may
    /// still be up: memcached's TTL has whole seconds (`ceil(sdt) + 1`).
    pub fn liveness_slack(&self) -> Duration {
        if self.backend == "memcached" {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        }
    }

    fn short_intervals(&mut self) {
        self.set("SERVICEGROUP_REPORT_INTERVAL", "200ms");
        self.set("SERVICEGROUP_SERVICE_DOWN_TIME", "2s");
        self.set("SERVICEGROUP_WATCH_INTERVAL", "100ms");
    }

    /// The variables every command of this environment gets (to configure a library
    /// handle on the same backend: `ConfigLoader::env_from`).
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// Sets a variable for every command of this environment.
    pub fn set(&mut self, key: &str, value: &str) {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_owned(), value.to_owned()));
    }

    /// Removes a variable.
    pub fn unset(&mut self, key: &str) {
        self.vars.retain(|(k, _)| k != key);
    }

    /// A command with this environment (and none of the caller's SERVICEGROUP_* or RUST_LOG).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("SERVICEGROUP_") || k == "RUST_LOG" || k == "RUST_BACKTRACE" {
                cmd.env_remove(&k);
            }
        }
        cmd.env("RUST_BACKTRACE", "1");
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd.args(args);
        cmd
    }

    /// Runs a command to completion (at most `timeout`).
    pub fn run_timeout(&self, args: &[&str], timeout: Duration) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn servicegroup");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let out = thread::spawn(move || read_all(stdout));
        let err = thread::spawn(move || read_all(stderr));
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`servicegroup {}` did not finish within {timeout:?}; stderr: {}",
                    args.join(" "),
                    err.join().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        Run {
            args: args.join(" "),
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    }

    /// Runs a command to completion (at most 60 s).
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_timeout(args, Duration::from_secs(60))
    }

    /// Starts a long-running command (join, watch) in the background.
    pub fn spawn(&self, args: &[&str]) -> Bg {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn servicegroup");
        let (out_tx, out_rx) = channel();
        let (err_tx, err_rx) = channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out_tx.send(line);
            }
        });
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        Bg {
            args: args.join(" "),
            child,
            stdout: out_rx,
            stderr: err_rx,
            seen_out: Vec::new(),
            seen_err: Vec::new(),
        }
    }
}

/// The token the relay test environments use.
pub const RELAY_TOKEN: &str = "relay-test-token-7b1f";

/// A `servicegroup relay` process (killed when dropped).
pub struct RelayProcess {
    /// Its base URL (`http://127.0.0.1:PORT`, `https://...` with TLS).
    pub url: String,
    /// The process.
    pub bg: Bg,
}

impl RelayProcess {
    /// Starts `servicegroup relay --listen 127.0.0.1:0` with `backend`'s variables, a
    /// token file holding [`RELAY_TOKEN`] (unless `extra` has `--insecure` or its own
    /// `--token-file`) and `extra` arguments; waits for its `listening on` line.
    pub fn start(backend: &Env, extra: &[&str]) -> Self {
        let token_file = backend.dir.path().join("relay-token");
        std::fs::write(&token_file, format!("{RELAY_TOKEN}\n")).expect("token file");
        let token_file = token_file.display().to_string();
        let mut args = vec!["relay", "--listen", "127.0.0.1:0"];
        if !extra
            .iter()
            .any(|a| *a == "--insecure" || *a == "--token-file")
        {
            args.extend(["--token-file", token_file.as_str()]);
        }
        args.extend(extra);
        let mut bg = backend.spawn(&args);
        let line = bg.wait_stdout("`listening on URL`", Duration::from_secs(60), |l| {
            l.starts_with("listening on ")
        });
        let url = line.trim_start_matches("listening on ").to_owned();
        Self { url, bg }
    }

    /// `host:port` of the relay.
    pub fn addr(&self) -> String {
        self.url.rsplit("//").next().unwrap_or_default().to_owned()
    }
}

fn read_all(mut r: impl std::io::Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// Runs psql against `url`; panics with its output on failure.
fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("psql (PostgreSQL client) must be installed for the PostgreSQL tests");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, db: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let authority_start = head.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match head[authority_start..].find('/') {
        Some(slash) => &head[..authority_start + slash],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Run {
    pub args: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The exit code (panics if killed by a signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("`{}` was killed by a signal: {self:?}", self.args))
    }

    /// Asserts the exit code, showing the output otherwise.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "`servicegroup {}` exited {:?}\nstdout: {}\nstderr: {}",
            self.args,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts success and returns stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        self.expect_code(0);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("`{}` printed no JSON ({e}): {:?}", self.args, self.stdout))
    }

    /// Asserts exit code 2 and a single `error: …` line on stderr with no panic; returns it.
    pub fn expect_one_line_error(&self) -> String {
        self.expect_code(2);
        let text = self.stderr.trim_end();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "`{}`: expected one stderr line, got {lines:#?}",
            self.args
        );
        assert!(
            lines[0].starts_with("error: "),
            "`{}`: {:?}",
            self.args,
            lines[0]
        );
        assert!(
            !text.contains("panicked") && !text.contains("backtrace"),
            "{text}"
        );
        lines[0].to_owned()
    }
}

/// A command running in the background.
pub struct Bg {
    pub args: String,
    pub child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    pub seen_out: Vec<String>,
    pub seen_err: Vec<String>,
}

impl Bg {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line matching `pred` (within `timeout`) and returns it.
    pub fn wait_stdout(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.seen_out.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    self.drain_stderr();
                    panic!(
                        "`servicegroup {}`: no stdout line {what} within {timeout:?}; stdout so far: {:#?}; stderr: {:#?}; exited: {:?}",
                        self.args,
                        self.seen_out,
                        self.seen_err,
                        self.child.try_wait()
                    );
                }
            }
        }
    }

    /// Waits for a stderr line matching `pred`.
    pub fn wait_stderr(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen_err.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "`servicegroup {}`: no stderr line {what} within {timeout:?}; stderr so far: {:#?}; exited: {:?}",
                    self.args,
                    self.seen_err,
                    self.child.try_wait()
                ),
            }
        }
    }

    /// Waits for the `joined …` line of `servicegroup join`.
    pub fn wait_joined(&mut self) -> String {
        self.wait_stdout("starting with `joined`", Duration::from_secs(30), |l| {
            l.starts_with("joined ")
        })
    }

    /// Waits for the `joined …` line and reads the holder it names.
    pub fn wait_holder(&mut self) -> Holder {
        let line = self.wait_joined();
        Holder::of_joined_line(&line)
    }

    /// The lines this process printed on stderr that start with `error: `.
    pub fn error_lines(&self) -> Vec<&str> {
        self.seen_err
            .iter()
            .map(String::as_str)
            .filter(|l| l.starts_with("error: "))
            .collect()
    }

    fn drain_stderr(&mut self) {
        while let Ok(line) = self.stderr.try_recv() {
            self.seen_err.push(line);
        }
    }

    /// Sends a signal (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("kill(1)")
            .success();
        assert!(ok, "kill -{name} {} failed", self.pid());
    }

    /// SIGKILL: the process dies at once, without leaving.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// Waits for the process to exit (within `timeout`), then collects the rest of its
    /// output into `seen_out` / `seen_err`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                self.drain_stderr();
                panic!(
                    "`servicegroup {}` did not exit within {timeout:?}; stderr: {:#?}",
                    self.args, self.seen_err
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        // The reader threads end at EOF; give them a moment to deliver the last lines.
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(2)) {
            self.seen_out.push(line);
        }
        self.drain_stderr();
        status
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The holder a `joined …` line names: `…, instance <32 hex>, epoch <n>); …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The instance, 32 lowercase hex digits.
    pub instance: String,
    /// The record's epoch.
    pub epoch: u64,
}

impl Holder {
    /// Reads the holder from a `joined` line; panics (naming the line) when it lacks one.
    pub fn of_joined_line(line: &str) -> Self {
        let after = |word: &str| -> &str {
            let start = line
                .find(word)
                .unwrap_or_else(|| panic!("no `{word}` in the joined line {line:?}"))
                + word.len();
            let rest = &line[start..];
            let end = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            &rest[..end]
        };
        let instance = after(", instance ").to_owned();
        assert_instance(&instance);
        let epoch = after(", epoch ")
            .parse()
            .unwrap_or_else(|e| panic!("bad epoch in {line:?}: {e}"));
        Self { instance, epoch }
    }
}

/// Asserts `text` is an instance id: 32 lowercase hex digits.
pub fn assert_instance(text: &str) {
    assert!(
        text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "not 32 lowercase hex digits: {text:?}"
    );
}

/// Asserts `text` is RFC 3339 in UTC with a `Z` suffix and returns the time.
pub fn assert_rfc3339_utc(text: &str) -> chrono::DateTime<chrono::Utc> {
    let t = chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
    assert_eq!(t.offset().local_minus_utc(), 0, "{text} is not UTC");
    assert!(text.ends_with('Z'), "{text}");
    t.with_timezone(&chrono::Utc)
}

/// A group name unique to this test run.
pub fn group(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// Checks a simulator report.
pub fn assert_simulation_ok(r: &Value, members: u64, killed: u64, sdt: f64, ri: f64) {
    let expected: BTreeSet<&str> = [
        "driver",
        "baseline",
        "group",
        "members",
        "join_failures",
        "handles",
        "topology",
        "processes_per_driver",
        "driver_instances",
        "connections",
        "observers",
        "observe",
        "join_seconds",
        "duration_seconds",
        "report_interval_seconds",
        "service_down_time_seconds",
        "heartbeats",
        "heartbeats_per_second",
        "heartbeat_batches",
        "heartbeat_batch_latency_ms",
        "heartbeat_lateness_ms",
        "listings",
        "listing_latency_ms",
        "checks",
        "killed",
        "detected",
        "undetected",
        "detection_delay_ms",
        "detection_budget_ms",
        "false_downs",
        "errors",
        "simulator",
        "server",
        "relays",
        "relay_cpu_us_per_heartbeat",
        "ok",
    ]
    .into_iter()
    .collect();
    let got: BTreeSet<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(got, expected, "{r:#}");
    assert_eq!(r["members"], members, "{r:#}");
    assert_eq!(r["false_downs"], 0, "{r:#}");
    assert_eq!(r["killed"], killed, "{r:#}");
    assert_eq!(r["detected"], killed, "{r:#}");
    assert_eq!(r["undetected"], 0, "{r:#}");
    assert_eq!(r["ok"], true, "{r:#}");
    let budget_ms = (sdt + ri + 1.0) * 1000.0;
    assert_eq!(r["detection_budget_ms"].as_f64().unwrap(), budget_ms);
    for q in ["p50", "p99", "max"] {
        let d = r["detection_delay_ms"][q]
            .as_f64()
            .unwrap_or_else(|| panic!("{r:#}"));
        assert!(
            d <= budget_ms,
            "detection {q} {d} ms over budget {budget_ms} ms: {r:#}"
        );
        assert!(
            r["heartbeat_batch_latency_ms"][q].as_f64().is_some(),
            "{r:#}"
        );
        assert!(r["listing_latency_ms"][q].as_f64().is_some(), "{r:#}");
    }
    // Killed members cannot be detected before service_down_time minus one interval.
    let min_possible = (sdt - ri) * 1000.0 - 100.0;
    assert!(
        r["detection_delay_ms"]["p50"].as_f64().unwrap() >= min_possible,
        "{r:#}"
    );
    let hb = r["heartbeats_per_second"].as_f64().unwrap();
    let expected_hb = members as f64 / ri;
    assert!(
        hb > expected_hb * 0.5,
        "heartbeats/s {hb} far below {expected_hb}: {r:#}"
    );
    assert!(r["listings"].as_u64().unwrap() > 0 && r["checks"].as_u64().unwrap() > 0);
    assert!(r["errors"].as_object().unwrap().is_empty(), "{r:#}");
    // The simulator measures itself (Linux /proc).
    let sim = &r["simulator"];
    for key in ["cpu_seconds", "cpu_percent", "rss_mb", "peak_rss_mb"] {
        assert!(sim[key].as_f64().is_some_and(|v| v >= 0.0), "{key}: {r:#}");
    }
}
