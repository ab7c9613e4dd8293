//! Helpers shared by the db driver's integration tests: configurations on real
//! databases (a SQLite file in a temporary directory, a fresh PostgreSQL database on
//! the server scripts/test starts), log capture, and a helper process (the test
//! binary itself, re-run with `--ignored --exact helper_process`).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use servicegroup_core::Config;

pub mod identity;
pub mod lanes;
#[cfg(feature = "mysql")]
pub mod mariadb;
pub mod outage;

/// The variable scripts/test exports with the shared throwaway PostgreSQL server.
pub const PG_ENV: &str = "SERVICEGROUP_TEST_POSTGRES_URL";

/// The shared test server's URL. Fails (never skips) when it is not set.
pub fn pg_admin_url() -> String {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{PG_ENV} is not set: the PostgreSQL tests need a server. Run them through \
             scripts/test (it starts a throwaway PostgreSQL and sets {PG_ENV}), or start one \
             with `scripts/lib/postgres.sh start DIR` and export {PG_ENV}=<the URL it prints>"
        ),
    }
}

/// `url` with its database name replaced by `dbname`.
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{dbname}?{q}"),
        None => format!("{base}/{dbname}"),
    }
}

/// A unique lowercase name usable as a database name.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs statements on the server `admin_url` names, on a connection of its own.
pub async fn pg_exec(admin_url: &str, statements: &[String]) {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    let mut conn = AsyncPgConnection::establish(admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server: {e}"));
    for sql in statements {
        diesel::sql_query(sql.as_str())
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A fresh, empty database on the shared server; returns its URL.
pub async fn fresh_pg_database(prefix: &str) -> String {
    let admin = pg_admin_url();
    let name = unique(prefix);
    pg_exec(&admin, &[format!("CREATE DATABASE {name}")]).await;
    with_dbname(&admin, &name)
}

/// A `db` configuration on `url` with short test timings.
pub fn config(url: &str) -> Config {
    let mut config = Config::with_driver("db");
    config
        .set("db.url", url)
        .and_then(|c| {
            c.set("db.timeout", Duration::from_secs(2))?
                .set("db.pool_size", 4)
        })
        .expect("the db driver's keys");
    config.report_interval = Duration::from_millis(500);
    config.service_down_time = Duration::from_secs(3);
    config.call_timeout = Duration::from_secs(3);
    config
}

/// `sqlite://<dir>/<name>`.
pub fn sqlite_url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(name).display())
}

/// A temporary directory the `postgres` user can enter (for a dedicated server).
pub fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("sg-db-test-")
        .tempdir()
        .expect("create a temporary directory");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the temporary directory");
    }
    dir
}

/// Log lines captured by [`capture_logs`].
pub use servicegroup_conformance::logs::ThreadLogs as Logs;

/// Captures every `tracing` event (DEBUG and up) of the current thread until the
/// guard drops. Use on a current-thread runtime so spawned tasks log here too.
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    servicegroup_conformance::logs::capture_thread(tracing::Level::DEBUG)
}

/// Starts this test binary again as a helper process running `action` (see
/// [`helper_main`]). Its stdout is piped; its stdin is piped and closing it ends
/// long-running actions.
pub fn spawn_helper(action: &str, url: &str, group: &str, member: &str) -> Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "helper_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SG_HELPER_ACTION", action)
        .env("SG_HELPER_URL", url)
        .env("SG_HELPER_GROUP", group)
        .env("SG_HELPER_MEMBER", member)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the helper process")
}

/// Reads the helper's stdout until a line starting with `prefix`; returns the lines
/// with that prefix seen up to then (and the first one).
pub fn read_until(child: &mut Child, prefix: &str) -> Vec<String> {
    use std::io::BufRead;
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut reader = std::io::BufReader::new(stdout);
    let mut out = Vec::new();
    let mut all = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .expect("read the helper's output");
        assert!(
            n > 0,
            "the helper process ended before printing {prefix:?}; its output: {all:?}"
        );
        let raw = line.trim_end().to_owned();
        all.push(raw.clone());
        // libtest may print "test helper_process ... " before the helper's first line.
        let Some(at) = raw.find("SG ") else { continue };
        let l = raw[at..].to_owned();
        out.push(l.clone());
        if l.starts_with(prefix) {
            return out;
        }
    }
}

/// The helper process: does what `SG_HELPER_ACTION` says and prints `SG …` lines.
///
/// - `migrate`: builds the driver (running migrations), prints `SG MIGRATED`.
/// - `join`: joins `SG_HELPER_MEMBER` to `SG_HELPER_GROUP`, prints `SG READY`, keeps
///   heartbeating until stdin closes, then leaves.
/// - `list`: prints `SG MEMBER <id> <state>` per member of the group, then `SG DONE`.
pub fn helper_main() {
    let Ok(action) = std::env::var("SG_HELPER_ACTION") else {
        // Run by hand or by `--ignored` without the parent: nothing to do.
        return;
    };
    let url = std::env::var("SG_HELPER_URL").expect("SG_HELPER_URL");
    let group = std::env::var("SG_HELPER_GROUP").unwrap_or_default();
    let member = std::env::var("SG_HELPER_MEMBER").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let config = config(&url);
        match action.as_str() {
            "migrate" => {
                servicegroup_driver_db::DbDriver::connect(&config)
                    .await
                    .expect("connect and migrate");
                println!("SG MIGRATED");
            }
            "join" => {
                let sg = servicegroup_core::ServiceGroup::connect(config)
                    .await
                    .expect("connect");
                let me = sg
                    .join(group.as_str(), member.as_str())
                    .await
                    .expect("join");
                println!("SG READY");
                tokio::task::spawn_blocking(|| {
                    let mut sink = String::new();
                    while std::io::stdin()
                        .read_line(&mut sink)
                        .map(|n| n > 0)
                        .unwrap_or(false)
                    {}
                })
                .await
                .expect("wait for stdin");
                me.leave().await.expect("leave");
                println!("SG LEFT");
            }
            "list" => {
                let sg = servicegroup_core::ServiceGroup::connect(config)
                    .await
                    .expect("connect");
                for m in sg.members(group.as_str()).await.expect("members") {
                    println!("SG MEMBER {} {}", m.member, m.state);
                }
                println!("SG DONE");
            }
            other => panic!("unknown SG_HELPER_ACTION {other:?}"),
        }
    });
}

use servicegroup_core::{
    Beats, Condition, Driver, GroupId, HeartbeatReport, InstanceId, MemberId, MemberKey, Metadata,
    Registration, ServiceGroup,
};
use servicegroup_driver_db::DbDriver;

/// `n` keys of `group`, sorted (`m00000`, `m00001`, …).
pub fn keys(group: &str, n: usize) -> Vec<MemberKey> {
    let group = GroupId::new(group).unwrap();
    (0..n)
        .map(|i| MemberKey::new(group.clone(), MemberId::new(format!("m{i:05}")).unwrap()))
        .collect()
}

/// An unconditional registration of `key` by `instance`, without metadata (join's
/// default).
pub fn registration(key: &MemberKey, instance: InstanceId) -> Registration {
    Registration {
        key: key.clone(),
        instance,
        metadata: Metadata::new(),
        condition: Condition::Always,
    }
}

/// Registers `key` for `instance` unconditionally; the epoch it got.
pub async fn register(driver: &DbDriver, instance: InstanceId, key: &MemberKey) -> u64 {
    match driver
        .register(&registration(key, instance))
        .await
        .expect("register")
    {
        servicegroup_core::Registered::Stored { epoch } => epoch,
        other => panic!("an unconditional registration of {key} was {other:?}"),
    }
}

/// Registers `keys` for `instance` through `driver` in chunks of 1,000 (as core's
/// join_many does).
pub async fn register_all(driver: &DbDriver, instance: InstanceId, keys: &[MemberKey]) {
    for chunk in keys.chunks(1000) {
        let registrations: Vec<Registration> =
            chunk.iter().map(|k| registration(k, instance)).collect();
        let outcomes = driver
            .register_many(&registrations)
            .await
            .expect("register_many");
        assert_eq!(outcomes.len(), chunk.len());
    }
}

/// One heartbeat of `keys` by `instance` (one part, as a handle's tick).
pub async fn beat(driver: &DbDriver, instance: InstanceId, keys: &[MemberKey]) -> HeartbeatReport {
    driver
        .heartbeat(&[Beats { instance, keys }])
        .await
        .expect("heartbeat")
}

/// One heartbeat batch of 10,000 members is exactly one statement on the driver's
/// connections, and a removed member comes back in `missing` (still one statement).
pub async fn direct_batch_is_one_statement(url: &str) {
    const N: usize = 10_000;
    let config = config(url);
    let driver = DbDriver::connect(&config).await.expect("connect");
    let keys = keys("compute", N);
    let me = InstanceId::random();
    register_all(&driver, me, &keys).await;

    for round in 0..3 {
        let before = driver.statistics();
        let report = beat(&driver, me, &keys).await;
        let after = driver.statistics();
        assert!(
            report.missing.is_empty() && report.superseded.is_empty(),
            "round {round}: {report:?}"
        );
        assert_eq!(
            after.statements - before.statements,
            1,
            "round {round}: a heartbeat batch of {N} members must be one statement"
        );
    }

    // Another driver (another process, an operator) removes a member: the next batch
    // reports it missing, with one more statement to find out which row is gone.
    let other = DbDriver::connect(&config).await.expect("connect");
    assert!(other.remove(&keys[4321], None).await.unwrap());
    let before = driver.statistics();
    let report = beat(&driver, me, &keys).await;
    assert_eq!(driver.statistics().statements - before.statements, 2);
    assert_eq!(report.missing, vec![(me, keys[4321].clone())]);
    assert!(report.superseded.is_empty(), "{report:?}");
    // The next batch without it is one statement again.
    let present: Vec<MemberKey> = keys.iter().filter(|k| **k != keys[4321]).cloned().collect();
    let before = driver.statistics();
    let report = beat(&driver, me, &present).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert_eq!(driver.statistics().statements - before.statements, 1);

    // Keys this driver never registered are looked up by name first (one query per
    // group, then cached), then updated by id: two statements on the first tick.
    let fresh = DbDriver::connect(&config).await.expect("connect");
    let before = fresh.statistics();
    let report = beat(&fresh, me, &keys).await;
    assert_eq!(fresh.statistics().statements - before.statements, 2);
    assert_eq!(report.missing, vec![(me, keys[4321].clone())]);
    // ... and by id afterwards.
    let before = fresh.statistics();
    let report = beat(&fresh, me, &present).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert_eq!(fresh.statistics().statements - before.statements, 1);

    // Another instance takes one member over: the old holder's next batch is fenced
    // for it (reported superseded, one more statement to find which), and one
    // statement again once core stops heartbeating it.
    let thief = InstanceId::random();
    assert_eq!(register(&other, thief, &keys[7]).await, 2);
    let before = driver.statistics();
    let report = beat(&driver, me, &present).await;
    assert_eq!(driver.statistics().statements - before.statements, 2);
    assert!(report.missing.is_empty(), "{report:?}");
    assert_eq!(report.superseded.len(), 1, "{report:?}");
    assert_eq!(report.superseded[0].key, keys[7]);
    assert_eq!(report.superseded[0].instance, me);
    assert_eq!(
        report.superseded[0].holder,
        servicegroup_core::Holder::new(thief, 2)
    );
    let rest: Vec<MemberKey> = present.iter().filter(|k| **k != keys[7]).cloned().collect();
    let before = driver.statistics();
    let report = beat(&driver, me, &rest).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert_eq!(driver.statistics().statements - before.statements, 1);
}

/// Through a `ServiceGroup` handle: 10,000 joined members cost one statement per
/// heartbeat tick, and all stay up. Returns (statements, ticks) of the window.
pub async fn handle_ticks_are_one_statement_each(url: &str) -> (u64, u64) {
    const N: usize = 10_000;
    let mut config = config(url);
    config.report_interval = Duration::from_secs(1);
    config.service_down_time = Duration::from_secs(5);
    config.call_timeout = Duration::from_secs(5);
    let driver = Arc::new(DbDriver::connect(&config).await.expect("connect"));
    let sg = ServiceGroup::with_driver(driver.clone(), config.clone()).expect("handle");
    let names: Vec<String> = (0..N).map(|i| format!("m{i:05}")).collect();
    let members = sg.join_many("compute", &names).await.expect("join_many");

    // Snapshot right after a tick completed: the next one is >= 0.9 s away, so the
    // snapshot cannot fall inside a tick (polling every 5 ms).
    let after_tick = |calls: u64| {
        let driver = driver.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let s = driver.statistics();
                if s.heartbeat_calls >= calls {
                    return s;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no heartbeat tick within 10 s: {s:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let start = driver.statistics().heartbeat_calls;
    let a = after_tick(start + 1).await;
    let b = after_tick(a.heartbeat_calls + 3).await;
    let statements = b.statements - a.statements;
    let ticks = b.heartbeat_calls - a.heartbeat_calls;
    assert_eq!(
        b.heartbeated_members - a.heartbeated_members,
        ticks * N as u64,
        "every tick carries all {N} members"
    );
    assert_eq!(
        statements, ticks,
        "{ticks} heartbeat ticks of {N} members took {statements} statements: must be one per tick"
    );

    // All up, seen by another driver.
    let observer = ServiceGroup::connect(config).await.expect("observer");
    let listed = observer.members("compute").await.expect("members");
    assert_eq!(listed.len(), N);
    assert!(listed.iter().all(|m| m.is_up()), "every member is up");
    drop(members);
    (statements, ticks)
}

/// Ages are measured on the database's clock: a heartbeat the database stored 30 s
/// ago (by its own clock) reads 30 s old whatever this host's clock says.
pub async fn age_comes_from_the_database(url: &str, set_old_sql: &str) {
    let config = config(url);
    let driver = DbDriver::connect(&config).await.expect("connect");
    let key = keys("clock", 1).remove(0);
    let me = InstanceId::random();
    register(&driver, me, &key).await;
    let fresh = driver.get(&key).await.unwrap().expect("registered");
    let servicegroup_core::Freshness::Age(age) = fresh.freshness else {
        panic!("db records carry ages: {fresh:?}")
    };
    assert!(age < Duration::from_secs(1), "just registered: {age:?}");
    // The backdating statement runs on the database with its own clock expression.
    raw_exec(url, set_old_sql).await;
    let old = driver.get(&key).await.unwrap().expect("still there");
    let servicegroup_core::Freshness::Age(age) = old.freshness else {
        panic!()
    };
    assert!(
        age >= Duration::from_secs(30) && age < Duration::from_secs(31),
        "age after backdating by 30 s on the database clock: {age:?}"
    );
    let listed = driver.list(&key.group).await.unwrap();
    assert_eq!(listed.len(), 1);
    let servicegroup_core::Freshness::Age(listed_age) = listed[0].freshness else {
        panic!()
    };
    assert!(
        listed_age >= Duration::from_secs(30) && listed_age < Duration::from_secs(31),
        "listed age: {listed_age:?}"
    );
    // The next heartbeat makes it fresh again.
    let report = beat(&driver, me, std::slice::from_ref(&key)).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    let servicegroup_core::Freshness::Age(age) = driver.get(&key).await.unwrap().unwrap().freshness
    else {
        panic!()
    };
    assert!(age < Duration::from_secs(1), "after a heartbeat: {age:?}");
}

/// Runs one statement on the database `url` names (SQLite file, PostgreSQL or
/// MariaDB), on a connection of its own.
pub async fn raw_exec(url: &str, sql: &str) -> usize {
    #[cfg(feature = "mysql")]
    if url.starts_with("mysql://") {
        return mariadb::mdb_raw_exec(url, sql).await;
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        use diesel::{Connection, RunQueryDsl};
        let (path, sql) = (path.to_owned(), sql.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut c = diesel::SqliteConnection::establish(&path).expect("open the SQLite file");
            diesel::sql_query(sql.as_str())
                .execute(&mut c)
                .expect("statement")
        })
        .await
        .unwrap()
    } else {
        use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
        let mut c = AsyncPgConnection::establish(url).await.expect("connect");
        diesel::sql_query(sql)
            .execute(&mut c)
            .await
            .expect("statement")
    }
}

/// Rows of diesel's migration bookkeeping table (one per applied migration).
pub async fn applied_migrations(url: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let sql = "SELECT count(*) AS n FROM __diesel_schema_migrations";
    #[cfg(feature = "mysql")]
    if url.starts_with("mysql://") {
        return mariadb::mdb_applied_migrations(url).await;
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        use diesel::{Connection, RunQueryDsl};
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut c = diesel::SqliteConnection::establish(&path).expect("open the SQLite file");
            diesel::sql_query(sql)
                .get_result::<N>(&mut c)
                .expect("count")
                .n
        })
        .await
        .unwrap()
    } else {
        use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
        let mut c = AsyncPgConnection::establish(url).await.expect("connect");
        diesel::sql_query(sql)
            .get_result::<N>(&mut c)
            .await
            .expect("count")
            .n
    }
}

/// Migrations: twice in one process is harmless, and two processes starting at once
/// on a fresh database both succeed and apply them once.
pub async fn migrations_are_idempotent_and_concurrency_safe(url_a: &str, url_b: &str) {
    let expected = shipped_migrations(url_a);
    // Twice in a row.
    let config = config(url_a);
    let first = DbDriver::connect(&config)
        .await
        .expect("first connect migrates");
    let key = keys("g", 1).remove(0);
    register(&first, InstanceId::random(), &key).await;
    let second = DbDriver::connect(&config).await.expect("second connect");
    assert!(
        second.get(&key).await.unwrap().is_some(),
        "data survives a second migration run"
    );
    assert_eq!(applied_migrations(url_a).await, expected);

    // Two processes at once on a fresh database.
    let mut children: Vec<Child> = (0..2)
        .map(|_| spawn_helper("migrate", url_b, "", ""))
        .collect();
    for child in &mut children {
        read_until(child, "SG MIGRATED");
    }
    for mut child in children {
        drop(child.stdin.take());
        let status = child.wait().expect("wait for the helper");
        assert!(status.success(), "helper process failed: {status}");
    }
    assert_eq!(applied_migrations(url_b).await, expected);
}

/// How many migrations the crate ships for the backend of `url` (the directories
/// under `migrations/<backend>`), so each is applied exactly once.
fn shipped_migrations(url: &str) -> i64 {
    let backend = if url.starts_with("postgres") {
        "postgres"
    } else if url.starts_with("mysql") {
        "mysql"
    } else {
        "sqlite"
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let n = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter(|entry| entry.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    assert!(n >= 1, "no migrations under {}", dir.display());
    i64::try_from(n).expect("migration count")
}

/// Drops a database of the shared test server when dropped (so a run's throwaway
/// databases do not pile up), terminating connections still open to it.
pub struct DropDatabase {
    admin_url: String,
    name: String,
}

impl DropDatabase {
    /// A guard for the database `url` names.
    pub fn for_url(url: &str) -> Self {
        let name = url
            .rsplit('/')
            .next()
            .unwrap_or("")
            .split('?')
            .next()
            .unwrap_or("")
            .to_owned();
        Self {
            admin_url: pg_admin_url(),
            name,
        }
    }
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Its own thread and runtime: the case's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
                let mut conn = AsyncPgConnection::establish(&admin).await.ok()?;
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}
