//! End-to-end tests of the `servicegroup` binary on real backends: each scenario runs
//! on a SQLite file, on PostgreSQL (`SERVICEGROUP_TEST_POSTGRES_URL`) and on memcached
//! (`SERVICEGROUP_TEST_MEMCACHED_SERVERS`), both set by scripts/test; without them
//! those tests fail, they never pass silently.
//! Intervals: report_interval 200 ms, service_down_time 2 s.

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{assert_simulation_ok, group, Env, REPORT_INTERVAL, SERVICE_DOWN_TIME};
use serde_json::Value;

/// The keys of one `list --json` / `status --json` object, sorted.
const MEMBER_KEYS: [&str; 10] = [
    "age_seconds",
    "epoch",
    "forced_down",
    "group",
    "holder_since",
    "instance",
    "last_heartbeat",
    "member",
    "metadata",
    "state",
];

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

fn assert_rfc3339_utc(text: &str) {
    let t = chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
    assert_eq!(t.offset().local_minus_utc(), 0, "{text} is not UTC");
    assert!(text.ends_with('Z'), "{text}");
}

fn status(env: &Env, g: &str, m: &str) -> i32 {
    env.run(&["status", g, m]).code()
}

/// One process joins; others list it and ask for its status.
fn join_list_status(env: Env) {
    let g = group("jls");
    let mut a = env.spawn(&["join", &g, "host-a"]);
    let line = a.wait_joined();
    assert!(line.contains(&g) && line.contains("host-a"), "{line}");
    let holder_a = common::Holder::of_joined_line(&line);
    let mut b = env.spawn(&["join", &g, "host-b"]);
    let holder_b = b.wait_holder();
    assert_eq!((holder_a.epoch, holder_b.epoch), (1, 1));
    assert_ne!(
        holder_a.instance, holder_b.instance,
        "one instance per process"
    );

    let list = env.run(&["list", &g, "--json"]).json();
    let rows = list.as_array().expect("array");
    assert_eq!(rows.len(), 2, "{list}");
    for (row, member) in rows.iter().zip(["host-a", "host-b"]) {
        assert_eq!(keys(row), MEMBER_KEYS, "{row}");
        assert_eq!(row["group"], g.as_str());
        assert_eq!(row["member"], member);
        assert_eq!(row["state"], "up");
        assert_eq!(row["forced_down"], false);
        assert_rfc3339_utc(
            row["last_heartbeat"]
                .as_str()
                .expect("last_heartbeat string"),
        );
        let age = row["age_seconds"].as_f64().expect("age_seconds number");
        assert!(
            (0.0..=SERVICE_DOWN_TIME.as_secs_f64()).contains(&age),
            "{row}"
        );
        let holder = if member == "host-a" {
            &holder_a
        } else {
            &holder_b
        };
        assert_eq!(row["instance"], holder.instance.as_str(), "{row}");
        assert_eq!(row["epoch"], 1, "{row}");
        assert_rfc3339_utc(row["holder_since"].as_str().expect("holder_since string"));
        assert_eq!(row["metadata"], serde_json::json!({}), "{row}");
    }

    let st = env.run(&["status", &g, "host-a", "--json"]);
    st.expect_code(0);
    let obj: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(keys(&obj), MEMBER_KEYS);
    assert_eq!(obj["state"], "up");
    env.run(&["status", &g, "host-a"]).expect_code(0);

    // The table shows every column.
    let table = env.run(&["list", &g]);
    table.expect_code(0);
    for word in [
        "GROUP",
        "MEMBER",
        "STATE",
        "FORCED DOWN",
        "LAST HEARTBEAT",
        "AGE",
        "host-a",
        "host-b",
        "up",
    ] {
        assert!(
            table.stdout.contains(word),
            "{word} missing:\n{}",
            table.stdout
        );
    }
    for word in [
        "INSTANCE",
        "EPOCH",
        "HOLDER SINCE",
        "METADATA",
        &holder_a.instance,
    ] {
        assert!(
            !table.stdout.contains(word),
            "{word} in the plain table:\n{}",
            table.stdout
        );
    }

    a.signal("TERM");
    b.signal("TERM");
    assert!(a.wait_exit(Duration::from_secs(15)).success());
    assert!(b.wait_exit(Duration::from_secs(15)).success());
}

/// `list` without a group lists every group, sorted by group then member.
fn list_every_group_sorted(env: Env) {
    let (g1, g2) = (group("zz-sorted"), group("aa-sorted"));
    let mut procs = vec![
        env.spawn(&["join", &g1, "m2"]),
        env.spawn(&["join", &g2, "m9"]),
        env.spawn(&["join", &g1, "m1"]),
    ];
    for p in &mut procs {
        p.wait_joined();
    }
    let list = env.run(&["list", "--json"]).json();
    let got: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["group"].as_str().unwrap().to_owned(),
                r["member"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (g2.clone(), "m9".to_owned()),
            (g1.clone(), "m1".to_owned()),
            (g1.clone(), "m2".to_owned())
        ]
    );
    for mut p in procs {
        p.signal("INT");
        assert!(p.wait_exit(Duration::from_secs(15)).success());
    }
    assert_eq!(env.run(&["list", "--json"]).json(), serde_json::json!([]));
}

/// kill -9 of the joined process: the member stays up until service_down_time has
/// passed (minus at most one report_interval since its last heartbeat), then is down,
/// and is still listed (as down), not dropped.
fn kill9_goes_down_after_service_down_time(env: Env) {
    let g = group("kill9");
    let mut p = env.spawn(&["join", &g, "victim"]);
    p.wait_joined();
    assert_eq!(status(&env, &g, "victim"), 0);
    sleep(REPORT_INTERVAL * 2);
    let killed = Instant::now();
    p.kill9();

    // Earliest legitimate down: last heartbeat (>= kill - report_interval) + service_down_time.
    // A `down` answer asked before that is wrong; so is an `up` answer asked after the
    // latest moment (the verdict is taken after the process was started, so "asked"
    // is the safe time to judge by, whatever the machine's load).
    let earliest = killed + SERVICE_DOWN_TIME - REPORT_INTERVAL - Duration::from_millis(100);
    let latest = killed + SERVICE_DOWN_TIME + env.liveness_slack() + Duration::from_millis(500);
    let give_up = latest + Duration::from_secs(10);
    let mut ups = 0;
    loop {
        let asked = Instant::now();
        assert!(asked < give_up, "never went down after kill -9");
        match status(&env, &g, "victim") {
            0 => {
                assert!(
                    asked <= latest,
                    "still up when asked {:?} after kill -9 (service_down_time {SERVICE_DOWN_TIME:?})",
                    asked - killed
                );
                ups += 1;
            }
            1 => {
                assert!(
                    asked >= earliest,
                    "down too early: asked {:?} after kill -9 (service_down_time {SERVICE_DOWN_TIME:?}, report_interval {REPORT_INTERVAL:?})",
                    asked - killed
                );
                break;
            }
            other => panic!("status exited {other}"),
        }
        sleep(Duration::from_millis(50));
    }
    assert!(ups > 0, "never saw the member up after the kill");
    // Down members stay listed until they leave or are removed.
    let list = env.run(&["list", &g, "--json"]).json();
    assert_eq!(list[0]["member"], "victim");
    assert_eq!(list[0]["state"], "down");
    assert_eq!(list[0]["forced_down"], false);
    if env.backend == "memcached" {
        // The mc driver does not report the last heartbeat of an expired member
        // (null is allowed by the contract); when it does, it must be old enough.
        if let Some(age) = list[0]["age_seconds"].as_f64() {
            assert!(age > SERVICE_DOWN_TIME.as_secs_f64() - 0.2, "{list}");
        }
    } else {
        // Measured on the database clock: beyond service_down_time.
        let age = list[0]["age_seconds"].as_f64().unwrap();
        assert!(age > SERVICE_DOWN_TIME.as_secs_f64(), "{list}");
    }
    env.run(&["status", &g, "victim"]).expect_code(1);
}

/// SIGTERM and SIGINT leave gracefully: exit 0, a `left` line, gone from the listing.
fn signals_leave(env: Env) {
    let g = group("leave");
    for (signal, member) in [("TERM", "by-term"), ("INT", "by-int")] {
        let mut p = env.spawn(&["join", &g, member]);
        p.wait_joined();
        assert_eq!(status(&env, &g, member), 0);
        p.signal(signal);
        let exit = p.wait_exit(Duration::from_secs(15));
        assert_eq!(
            exit.code(),
            Some(0),
            "SIG{signal}: {exit:?} stderr {:?}",
            p.seen_err
        );
        assert!(
            p.seen_out
                .iter()
                .any(|l| l == &format!("left {g} {member}")),
            "{:?}",
            p.seen_out
        );
        assert_eq!(
            status(&env, &g, member),
            3,
            "SIG{signal}: member still there"
        );
    }
    assert_eq!(
        env.run(&["list", &g, "--json"]).json(),
        serde_json::json!([])
    );
}

/// force-down wins over heartbeats; --clear makes a live member up at once.
fn force_down_and_clear(env: Env) {
    let g = group("force");
    let mut p = env.spawn(&["join", &g, "host"]);
    p.wait_joined();
    let out = env.run(&["force-down", &g, "host"]);
    out.expect_code(0);
    assert!(out.stdout.contains("forced down"), "{}", out.stdout);
    // Still heartbeating, yet down.
    sleep(REPORT_INTERVAL * 2);
    env.run(&["status", &g, "host"]).expect_code(1);
    let row = &env.run(&["list", &g, "--json"]).json()[0];
    assert_eq!(row["state"], "down");
    assert_eq!(row["forced_down"], true);
    assert!(
        row["age_seconds"].as_f64().unwrap() < 1.0,
        "heartbeats go on: {row}"
    );
    let st: Value = serde_json::from_str(
        &env.run(&["status", &g, "host", "--json"])
            .expect_code(1)
            .stdout,
    )
    .unwrap();
    assert_eq!(st["forced_down"], true);

    env.run(&["force-down", &g, "host", "--clear"])
        .expect_code(0);
    env.run(&["status", &g, "host"]).expect_code(0);
    let row = &env.run(&["list", &g, "--json"]).json()[0];
    assert_eq!(row["state"], "up");
    assert_eq!(row["forced_down"], false);

    env.run(&["force-down", &g, "nobody"]).expect_code(3);
    env.run(&["force-down", &g, "nobody", "--clear"])
        .expect_code(3);
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(15)).success());
}

/// watch prints joined, down, up and left once each, in that order.
fn watch_events(env: Env) {
    let g = group("watch");
    let mut w = env.spawn(&["watch", &g, "--json"]);
    w.wait_stderr("`watching …`", Duration::from_secs(30), |l| {
        l.starts_with("watching group")
    });

    let mut j = env.spawn(&["join", &g, "w1"]);
    j.wait_joined();
    let event = |w: &mut common::Bg, kind: &str, within: Duration| -> Value {
        let line = w.wait_stdout(&format!("with event {kind}"), within, |_| true);
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let expected: &[&str] = if kind == "replaced" {
            &[
                "at", "epoch", "event", "group", "instance", "member", "metadata",
            ]
        } else {
            &["at", "event", "group", "member"]
        };
        assert_eq!(keys(&v), expected, "{v}");
        assert_eq!(v["event"], kind, "{v}");
        assert_eq!(v["group"], g.as_str());
        assert_eq!(v["member"], "w1");
        assert_rfc3339_utc(v["at"].as_str().unwrap());
        v
    };
    event(&mut w, "joined", Duration::from_secs(5));
    j.kill9();
    event(
        &mut w,
        "down",
        SERVICE_DOWN_TIME + env.liveness_slack() + Duration::from_secs(5),
    );
    // A new process is a new instance: it takes the down member over (replaced,
    // epoch 2), and the member is up again.
    let mut j = env.spawn(&["join", &g, "w1"]);
    let holder = j.wait_holder();
    assert_eq!(holder.epoch, 2);
    let replaced = event(&mut w, "replaced", Duration::from_secs(5));
    assert_eq!(replaced["instance"], holder.instance.as_str());
    assert_eq!(replaced["epoch"], 2);
    event(&mut w, "up", Duration::from_secs(5));
    j.signal("TERM");
    assert!(j.wait_exit(Duration::from_secs(15)).success());
    event(&mut w, "left", Duration::from_secs(5));
    // Nothing else happens: no repeated events.
    sleep(Duration::from_millis(600));
    w.signal("TERM");
    assert_eq!(w.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_eq!(w.seen_out.len(), 5, "{:#?}", w.seen_out);

    // The text form: one line per event, `<at> <event> <group> <member>`.
    let mut w = env.spawn(&["watch", &g]);
    w.wait_stderr("`watching …`", Duration::from_secs(30), |l| {
        l.starts_with("watching group")
    });
    let mut j = env.spawn(&["join", &g, "w2"]);
    j.wait_joined();
    let line = w.wait_stdout("joined", Duration::from_secs(5), |_| true);
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(parts.len(), 4, "{line}");
    assert_rfc3339_utc(parts[0]);
    assert_eq!(&parts[1..], ["joined", g.as_str(), "w2"]);
    j.signal("TERM");
    w.wait_stdout("left", Duration::from_secs(15), |l| l.contains(" left "));
    w.signal("INT");
    assert_eq!(w.wait_exit(Duration::from_secs(15)).code(), Some(0));
}

/// Every exit code of status / force-down / remove, and errors as one line.
fn exit_codes(env: Env) {
    let g = group("codes");
    env.run(&["status", &g, "ghost"]).expect_code(3);
    env.run(&["status", &g, "ghost", "--json"]).expect_code(3);
    env.run(&["remove", &g, "ghost"]).expect_code(3);
    let err = env.run(&["status", &g, "ghost"]);
    assert!(
        err.stderr.starts_with("error: ") && err.stderr.contains("ghost"),
        "{}",
        err.stderr
    );

    let mut p = env.spawn(&["join", &g, "real"]);
    p.wait_joined();
    env.run(&["status", &g, "real"]).expect_code(0);
    env.run(&["force-down", &g, "real"]).expect_code(0);
    env.run(&["status", &g, "real"]).expect_code(1);
    p.kill9();
    env.run(&["remove", &g, "real"]).expect_code(0);
    env.run(&["status", &g, "real"]).expect_code(3);
    assert_eq!(
        env.run(&["list", &g, "--json"]).json(),
        serde_json::json!([])
    );

    // Bad ids: exit 2, one line, naming the id.
    for args in [
        vec!["status", "bad group", "m"],
        vec!["status", "g", "bad\tmember"],
        vec!["join", "g", "bad member"],
        vec!["force-down", "g", ""],
        vec!["remove", "g", "x y"],
        vec!["list", "a b"],
        vec!["watch", "a b"],
    ] {
        let line = env.run(&args).expect_one_line_error();
        assert!(
            line.contains("invalid") && line.contains("id"),
            "{args:?}: {line}"
        );
    }
    let long = "x".repeat(256);
    let line = env.run(&["status", "g", &long]).expect_one_line_error();
    assert!(line.contains("256 bytes"), "{line}");
}

/// Backend unreachable: exit 2 (never 1 for "could not tell"), one line naming the
/// backend address, no password.
fn unreachable_backend(mut env: Env) {
    match env.backend {
        "postgres" => env.set(
            "SERVICEGROUP_DB__URL",
            "postgres://sguser:hunter2secret@127.0.0.1:1/nodb",
        ),
        "memcached" => env.set("SERVICEGROUP_MC__SERVERS", "127.0.0.1:1"),
        "relay" => env.set("SERVICEGROUP_RELAY__URLS", "http://127.0.0.1:1"),
        _ => {
            let url = format!("sqlite://{}/no/such/dir/x.db", env.dir.path().display());
            env.set("SERVICEGROUP_DB__URL", &url);
        }
    }
    env.set("SERVICEGROUP_DB__TIMEOUT", "2s");
    for args in [
        vec!["status", "g", "m"],
        vec!["list"],
        vec!["list", "g", "--json"],
        vec!["list", "g", "--state", "down"],
        vec!["list", "--state", "up", "--json"],
        vec!["summary"],
        vec!["summary", "g", "--json"],
        vec!["force-down", "g", "m"],
        vec!["remove", "g", "m"],
        vec!["join", "g", "m"],
    ] {
        let line = env.run(&args).expect_one_line_error();
        assert!(!line.contains("hunter2secret"), "password leaked: {line}");
        if env.backend == "sqlite" {
            assert!(
                line.contains("no/such/dir"),
                "{args:?}: path not named: {line}"
            );
        } else {
            assert!(
                line.contains("127.0.0.1:1"),
                "{args:?}: address not named: {line}"
            );
        }
    }
}

/// The simulator on a small fleet: zero false downs, every kill detected within
/// service_down_time + report_interval + 1 s.
fn simulate_small_fleet(env: Env) {
    // memcached's whole-second TTL (ceil(sdt) + 1) needs a report_interval that leaves
    // room in the budget sdt + ri + 1 s; the databases take the tight setting.
    // Intervals with room for a loaded test machine (other tests run in parallel).
    let (ri, sdt, ri_text, sdt_text) = if env.backend == "memcached" {
        (1.0, 2.0, "1s", "2s")
    } else {
        (0.5, 2.0, "500ms", "2s")
    };
    let out = env.run_timeout(
        &[
            "simulate",
            "--members",
            "300",
            "--handles",
            "3",
            "--duration",
            "8s",
            "--kill",
            "0.1",
            "--report-interval",
            ri_text,
            "--service-down-time",
            sdt_text,
            "--json",
        ],
        Duration::from_secs(120),
    );
    let r = out.json();
    assert_simulation_ok(&r, 300, 30, sdt, ri);
    let driver = match env.backend {
        "memcached" => "mc",
        "relay" => "relay",
        _ => "db",
    };
    assert_eq!(r["driver"], driver);
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Env::sqlite());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Env::postgres(stringify!($name)));
                }
            )*
        }
        mod memcached {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Env::memcached(stringify!($name)));
                }
            )*
        }
        /// Through the relay driver and a `servicegroup relay` process on SQLite.
        mod relay {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Env::relay(super::Env::sqlite()));
                }
            )*
        }
    };
}

on_every_backend!(
    join_list_status,
    list_every_group_sorted,
    kill9_goes_down_after_service_down_time,
    signals_leave,
    force_down_and_clear,
    watch_events,
    exit_codes,
    unreachable_backend,
    simulate_small_fleet,
);

/// A PostgreSQL server this test owns (scripts/lib/postgres.sh in a temp dir), so it
/// can stop and restart it.
struct OwnServer {
    dir: tempfile::TempDir,
    url: String,
}

impl OwnServer {
    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/postgres.sh")
    }

    fn run(action: &str, dir: &std::path::Path) -> String {
        let out = std::process::Command::new("bash")
            .arg(Self::script())
            .arg(action)
            .arg(dir)
            .output()
            .expect("bash scripts/lib/postgres.sh");
        assert!(
            out.status.success(),
            "scripts/lib/postgres.sh {action} failed (the PostgreSQL tests need the server \
             binaries that scripts/test installs): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sg-cli-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let url = Self::run("start", dir.path());
        assert!(url.starts_with("postgres://"), "{url}");
        Self { dir, url }
    }

    fn stop(&self) {
        Self::run("stop", self.dir.path());
    }

    fn restart(&self) {
        let url = Self::run("start", self.dir.path());
        assert_eq!(url, self.url, "the server came back on another port");
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(Self::script())
            .arg("destroy")
            .arg(self.dir.path())
            .output();
    }
}

/// `join` keeps going through a backend outage: "lost connection" logged once,
/// "recovered" once, the member up again afterwards, and SIGTERM still leaves.
#[test]
fn postgres_join_keeps_going_through_an_outage() {
    let server = OwnServer::start();
    let mut env = Env::bare();
    env.set("SERVICEGROUP_DRIVER", "db");
    env.set("SERVICEGROUP_DB__URL", &server.url);
    env.set("SERVICEGROUP_REPORT_INTERVAL", "200ms");
    env.set("SERVICEGROUP_SERVICE_DOWN_TIME", "2s");
    env.set("SERVICEGROUP_CALL_TIMEOUT", "1s");
    env.set("SERVICEGROUP_DB__TIMEOUT", "1s");
    let g = group("outage");
    let mut p = env.spawn(&["join", &g, "survivor"]);
    p.wait_joined();
    server.stop();
    p.wait_stderr("with `lost connection`", Duration::from_secs(10), |l| {
        l.contains("lost connection to db backend")
    });
    // Still running while the backend is away; status cannot tell: exit 2, never 1.
    sleep(Duration::from_millis(500));
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "join exited during the outage"
    );
    env.run(&["status", &g, "survivor"]).expect_one_line_error();
    server.restart();
    p.wait_stderr("with `recovered`", Duration::from_secs(20), |l| {
        l.contains("recovered connection to db backend")
    });
    env.run(&["status", &g, "survivor"]).expect_code(0);
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(15)).code(), Some(0));
    let lost = p
        .seen_err
        .iter()
        .filter(|l| l.contains("lost connection"))
        .count();
    let recovered = p
        .seen_err
        .iter()
        .filter(|l| l.contains("recovered connection"))
        .count();
    assert_eq!((lost, recovered), (1, 1), "{:#?}", p.seen_err);
    assert!(
        p.seen_out
            .iter()
            .any(|l| l == &format!("left {g} survivor")),
        "{:?}",
        p.seen_out
    );
    env.run(&["status", &g, "survivor"]).expect_code(3);
}

/// The simulator really detects false downs: an operator forcing down a live member
/// during the run makes it report one false down and exit 1.
#[test]
fn sqlite_simulate_counts_a_false_down() {
    let env = Env::sqlite();
    let g = group("simfalse");
    let sim = env
        .command(&[
            "simulate",
            "--group",
            &g,
            "--members",
            "100",
            "--handles",
            "2",
            "--duration",
            "5s",
            "--kill",
            "0",
            "--report-interval",
            "200ms",
            "--service-down-time",
            "1s",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the fleet is in, force one live member down.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let code = env.run(&["force-down", &g, "m50"]).code();
        if code == 0 {
            break;
        }
        assert_eq!(code, 3, "force-down failed");
        assert!(Instant::now() < deadline, "m50 never joined");
        sleep(Duration::from_millis(50));
    }
    let out = sim.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["false_downs"], 1, "{r:#}");
    assert_eq!(r["ok"], false, "{r:#}");
    assert_eq!(r["killed"], 0, "{r:#}");
}
