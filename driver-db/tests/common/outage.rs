//! A database server of a test's own (started, stopped and destroyed with
//! `scripts/lib/<product>.sh`), the outage scenario every server backend runs
//! against it, a server that never answers, and the password checks these share
//! with the secret tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use servicegroup_core::{Error, ServiceGroup};
use servicegroup_driver_db::DbDriver;
use tokio::time::Instant;

use super::{config, open_tempdir, Logs};

/// The password the tests put in URLs; it must appear in no error, `Debug` or log line.
pub const SECRET: &str = "Sup3r-S3cret_pw";

/// Fails when `text` (named `what` in the message) shows [`SECRET`].
pub fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "the password appears in {what}: {text}"
    );
}

/// A database product a test can run a server of its own of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// `scripts/lib/postgres.sh`.
    Postgres,
    /// `scripts/lib/mariadb.sh`.
    Mariadb,
}

impl Product {
    /// The product's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Product::Postgres => "PostgreSQL",
            Product::Mariadb => "MariaDB",
        }
    }

    /// The script that installs, starts, stops and destroys its servers.
    pub fn script(self) -> PathBuf {
        let file = match self {
            Product::Postgres => "postgres.sh",
            Product::Mariadb => "mariadb.sh",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts/lib")
            .join(file)
    }
}

/// A server owned by one test (never the shared one), destroyed on drop.
pub struct OwnServer {
    product: Product,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl OwnServer {
    /// Installs and starts a server; returns it and its admin URL.
    pub fn start(product: Product) -> (Self, String) {
        let tmp = open_tempdir();
        let dir = tmp.path().join("server");
        let server = Self {
            product,
            dir,
            _tmp: tmp,
        };
        let url = server.run("start");
        (server, url)
    }

    /// `scripts/lib/<product>.sh ACTION DIR`; its stdout.
    pub fn run(&self, action: &str) -> String {
        let script = self.product.script();
        let out = Command::new("bash")
            .arg(&script)
            .arg(action)
            .arg(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} {action} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(self.product.script())
            .arg("destroy")
            .arg(&self.dir)
            .output();
    }
}

/// Waits until `check` holds, polling every 20 ms, at most `limit`; how long it took.
pub async fn wait_for(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `result` of `what` while the server is stopped must be `Unavailable` or `Timeout`
/// (never an answer such as "down") and must not show the password.
fn assert_unreachable(
    product: Product,
    what: &str,
    result: Result<impl std::fmt::Debug, Error>,
) -> Error {
    let name = product.name();
    match result {
        Ok(v) => panic!("{what} answered {v:?} while {name} is down: it must be an error"),
        Err(e) => {
            assert!(
                e.kind().is_unreachable(),
                "{what} while {name} is down must be Unavailable or Timeout, got {e}"
            );
            assert_no_secret(what, &format!("{e} {e:?}"));
            e
        }
    }
}

/// The server stopped mid-run: reads are `Unavailable`/`Timeout`, never "down"; the
/// heartbeat loop logs "lost" once and "recovered" once; after the restart every
/// member is up again within one report_interval (plus a margin), and no member record
/// was lost. `url` (with [`SECRET`] as its password) appears in no error or log line
/// of `logs`.
pub async fn outage_scenario(server: &OwnServer, url: &str, logs: &Logs) {
    let name = server.product.name();
    let product = server.product;
    let mut config = config(url);
    config.report_interval = Duration::from_millis(300);
    config.service_down_time = Duration::from_secs(1);
    config.call_timeout = Duration::from_secs(1);
    config
        .set("db.timeout", Duration::from_millis(500))
        .unwrap();
    let report_interval = config.report_interval;
    let names: Vec<String> = (0..5).map(|i| format!("host-{i}")).collect();

    let sg = ServiceGroup::connect(config.clone()).await.unwrap();
    let members = sg.join_many("compute", &names).await.unwrap();
    let observer = ServiceGroup::connect(config.clone()).await.unwrap();
    assert!(observer
        .members("compute")
        .await
        .unwrap()
        .iter()
        .all(|m| m.is_up()));
    assert_no_secret("Debug of the handle", &format!("{sg:?} {config:?}"));

    let stopped_at = Instant::now();
    server.run("stop");
    assert_unreachable(product, "is_up", observer.is_up("compute", "host-0").await);
    assert_unreachable(product, "members", observer.members("compute").await);
    assert_unreachable(product, "groups", observer.groups().await);
    assert_unreachable(
        product,
        "member",
        observer.member("compute", "host-1").await,
    );
    assert_unreachable(product, "join", observer.join("compute", "late").await);
    wait_for(
        "the heartbeat loop logs the lost connection",
        Duration::from_secs(5),
        async || logs.count("lost connection to db backend") >= 1,
    )
    .await;
    assert!(!sg.is_healthy());
    // Stay down past service_down_time, so the members' last heartbeats are stale.
    let outage = config.service_down_time + Duration::from_millis(500);
    tokio::time::sleep_until(stopped_at + outage).await;
    assert_unreachable(
        product,
        "members (later)",
        observer.members("compute").await,
    );

    // Start it again (same data directory, same port).
    server.run("start");
    let restarted = Instant::now();
    let took = wait_for(
        "every member up again after the restart",
        report_interval + Duration::from_secs(5),
        async || match observer.members("compute").await {
            Ok(list) => list.len() == names.len() && list.iter().all(|m| m.is_up()),
            Err(_) => false,
        },
    )
    .await;
    eprintln!("members up again {took:?} after {name} was restarted");
    assert!(
        took <= report_interval + Duration::from_secs(1),
        "members came back up {took:?} after the restart; must be within one report_interval \
         ({report_interval:?}) plus a 1 s margin"
    );
    wait_for(
        "the heartbeat loop logs the recovery",
        Duration::from_secs(3),
        async || logs.count("recovered connection to db backend") >= 1,
    )
    .await;
    assert!(sg.is_healthy());
    // A few more ticks: no further lost/recovered lines.
    tokio::time::sleep_until(restarted + report_interval * 4).await;
    let text = logs.text();
    assert_eq!(logs.count("lost connection to db backend"), 1, "{text}");
    assert_eq!(
        logs.count("recovered connection to db backend"),
        1,
        "{text}"
    );
    assert!(
        !text.contains("registered them again"),
        "a member record was lost during the outage: {text}"
    );
    let listed = observer.members("compute").await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|m| m.member.to_string())
            .collect::<Vec<_>>(),
        names,
        "no member record is lost"
    );
    assert_no_secret("the captured logs", &text);
    drop(members);
}

/// A server that accepts connections but never answers (`scheme://` URL with
/// [`SECRET`]): connecting is `Timeout`/`Unavailable` within `[db] timeout`, not a
/// hang, and the error does not show the password.
pub async fn silent_server_times_out(scheme: &str) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        }
    });
    let mut config = config(&format!("{scheme}://u:{SECRET}@127.0.0.1:{port}/db"));
    config
        .set("db.timeout", Duration::from_millis(500))
        .unwrap();
    let started = Instant::now();
    let err = DbDriver::connect(&config).await.unwrap_err();
    assert!(err.kind().is_unreachable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_no_secret("the timeout error", &format!("{err} {err:?}"));
    hold.abort();
}
