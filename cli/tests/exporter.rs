//! `servicegroup exporter`: a real scrape of `/metrics`, `/status.json` and `/`
//! while a small fleet of real `join` processes runs, on SQLite, PostgreSQL and
//! memcached (the servers scripts/test starts; without them these tests fail).
//!
//! - the per-group gauges move as members join, die (`kill -9`) and are forced
//!   down, with exactly the name and labels dashboards rely on:
//!   `servicegroup_members{group="…",state="up"|"down"|"forced_down"}`;
//! - the library's own metrics (the exporter's listings are driver calls) are
//!   there, with help text, and no series names a member;
//! - the series count stays bounded with 10,000 members (and `--per-member` is
//!   what makes it grow);
//! - bad arguments are one `error:` line, exit 2, before anything connects.

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use common::exporter::{get, start_exporter, value};
use common::{group, Env};
use serde_json::Value;

/// Waits (at most `within`) until `/metrics` shows the counts `(up, down, forced_down)` for `g`.
fn wait_counts(url: &str, g: &str, want: (f64, f64, f64), within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, scrape) = get(&format!("{url}/metrics"));
        assert_eq!(status, 200, "{scrape}");
        let got = ["up", "down", "forced_down"].map(|s| {
            value(
                &scrape,
                &format!(r#"servicegroup_members{{group="{g}",state="{s}"}}"#),
            )
        });
        if got == [Some(want.0), Some(want.1), Some(want.2)] {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "counts of {g} never became {want:?} (last {got:?}):\n{scrape}"
        );
        sleep(Duration::from_millis(100));
    }
}

fn counts_move_with_the_fleet(env: Env) {
    let g = group("exporter");
    let (mut exporter, url) = start_exporter(&env, &[&g]);
    let driver = if env.backend == "memcached" {
        "mc"
    } else {
        "db"
    };
    counts_move(&env, &g, &url, driver);
    exporter.signal("TERM");
    assert!(exporter.wait_exit(Duration::from_secs(10)).success());
}

/// The fleet of `env` in group `g` (three real `join` processes: one kept, one
/// killed, one forced down) as the exporter (or relay) at `url` shows it; `driver`
/// is the driver its listings go through.
fn counts_move(env: &Env, g: &str, url: &str, driver: &str) {
    let (g, url) = (g.to_owned(), url.to_owned());
    let mut a = env.spawn(&["join", &g, "a", "--meta", "role=kept"]);
    let mut b = env.spawn(&["join", &g, "b"]);
    let mut c = env.spawn(&["join", &g, "c"]);
    a.wait_joined();
    b.wait_joined();
    c.wait_joined();
    let slack = env.liveness_slack();
    wait_counts(&url, &g, (3.0, 0.0, 0.0), Duration::from_secs(10));

    env.run(&["force-down", &g, "c"]).expect_code(0);
    wait_counts(&url, &g, (2.0, 0.0, 1.0), Duration::from_secs(10));
    b.kill9();
    let scrape = wait_counts(
        &url,
        &g,
        (1.0, 1.0, 1.0),
        Duration::from_secs(10) + common::SERVICE_DOWN_TIME + slack,
    );

    // State changes were counted (c forced down, b down), and the oldest heartbeat
    // of the members up is within the report interval's reach.
    let changes = value(
        &scrape,
        &format!(r#"servicegroup_member_state_changes_total{{group="{g}"}}"#),
    )
    .expect("state changes counter");
    assert!(changes >= 2.0, "{changes}\n{scrape}");
    let oldest = value(
        &scrape,
        &format!(r#"servicegroup_oldest_heartbeat_age_seconds{{group="{g}"}}"#),
    )
    .expect("oldest heartbeat gauge");
    assert!((0.0..2.0).contains(&oldest), "{oldest}\n{scrape}");
    assert_eq!(
        value(&scrape, "servicegroup_exporter_backend_reachable"),
        Some(1.0)
    );
    // The library's metrics: the exporter's own listings are driver calls.
    let listings = value(
        &scrape,
        &format!(
            r#"servicegroup_driver_calls_total{{driver="{driver}",operation="list",kind="ok"}}"#
        ),
    )
    .unwrap_or_else(|| panic!("no driver call counter for list:\n{scrape}"));
    assert!(listings >= 3.0, "{listings}");
    assert!(
        scrape.contains(&format!(
            r#"servicegroup_driver_call_seconds_bucket{{driver="{driver}",operation="list",le="0.1"}}"#
        )),
        "{scrape}"
    );
    for help in [
        "# HELP servicegroup_members ",
        "# HELP servicegroup_driver_calls_total ",
        "# TYPE servicegroup_driver_call_seconds histogram",
    ] {
        assert!(scrape.contains(help), "{help}:\n{scrape}");
    }
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("member=\""),
            "a per-member series without --per-member: {line}"
        );
    }

    // The page's data: b down, c forced down, oldest heartbeat first; a not listed.
    let (status, body) = get(&format!("{url}/status.json"));
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    let gj = json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["group"] == g.as_str())
        .unwrap_or_else(|| panic!("{g} not in {json}"))
        .clone();
    assert_eq!(
        (&gj["up"], &gj["down"], &gj["forced_down"], &gj["total"]),
        (
            &Value::from(1),
            &Value::from(1),
            &Value::from(1),
            &Value::from(3)
        ),
        "{gj}"
    );
    let listed: Vec<(&str, &str)> = gj["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["member"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("b", "down"), ("c", "forced_down")], "{gj}");
    // The page, readable without JavaScript: counts and the two rows in the HTML.
    let (status, html) = get(&format!("{url}/"));
    assert_eq!(status, 200);
    assert!(
        html.contains(r#"<tr data-member="b" data-state="down""#),
        "{html}"
    );
    assert!(
        html.contains(r#"<tr data-member="c" data-state="forced_down""#),
        "{html}"
    );
    assert!(!html.contains(r#"data-member="a""#), "{html}");
    drop((a, c));
}

#[test]
fn sqlite_counts_move_with_the_fleet() {
    counts_move_with_the_fleet(Env::sqlite());
}

#[test]
fn postgres_counts_move_with_the_fleet() {
    counts_move_with_the_fleet(Env::postgres("exporter_counts"));
}

#[test]
fn memcached_counts_move_with_the_fleet() {
    counts_move_with_the_fleet(Env::memcached("exporter_counts"));
}

/// The relay serves the same `/metrics` and page on its `--status-listen` address,
/// for a fleet that joins through it (the relay driver), its listings going through
/// the relay's own driver (`db` on PostgreSQL).
#[test]
fn the_relay_serves_the_same_metrics_and_page() {
    let backend = Env::postgres("relay_status");
    let mut relay = common::RelayProcess::start(
        &backend,
        &[
            "--status-listen",
            "127.0.0.1:0",
            "--status-interval",
            "200ms",
        ],
    );
    let line = relay.bg.wait_stdout(
        "`status page and metrics on`",
        Duration::from_secs(30),
        |l| l.starts_with("status page and metrics on http://"),
    );
    let status = line
        .split_whitespace()
        .nth(5)
        .expect("the status URL")
        .to_owned();
    let client = Env::relay_client(&relay.url);
    let g = group("relay-status");
    counts_move(&client, &g, &status, "db");
    // The relay's own HTTP API still wants its token; the status address needs none.
    let (code, _) = get(&format!("{}/v1/groups", relay.url));
    assert_eq!(code, 401);
}

/// Series in a scrape (lines that are not comments).
fn series(scrape: &str) -> usize {
    scrape
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

#[test]
fn the_series_count_is_bounded_with_ten_thousand_members() {
    use servicegroup::{ConfigLoader, ServiceGroup};
    let env = Env::sqlite();
    let g = group("exporter-card");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let loaded = ConfigLoader::new()
        .env_from(env.vars().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .load()
        .unwrap();
    let sg = runtime
        .block_on(ServiceGroup::connect(loaded.config))
        .unwrap();
    let _members = runtime
        .block_on(sg.join_many(g.as_str(), (0..10_000).map(|i| format!("m{i:05}"))))
        .unwrap();

    let (mut bounded, url) = start_exporter(&env, &[]);
    let scrape = wait_counts(&url, &g, (10_000.0, 0.0, 0.0), Duration::from_secs(30));
    let n = series(&scrape);
    assert!(n < 400, "{n} series for 10,000 members:\n{scrape}");
    assert!(!scrape.contains("m00042"), "a member id in the scrape");
    bounded.signal("TERM");
    assert!(bounded.wait_exit(Duration::from_secs(10)).success());

    // --per-member is what adds one series per member.
    let (mut per_member, url) = start_exporter(&env, &["--per-member", &g]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, scrape) = get(&format!("{url}/metrics"));
        if series(&scrape) >= 10_000 {
            assert!(
                scrape.contains(&format!(
                    r#"servicegroup_member_up{{group="{g}",member="m00042"}} 1"#
                )),
                "per-member series"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no per-member series within 30 s"
        );
        sleep(Duration::from_millis(200));
    }
    per_member.signal("TERM");
    assert!(per_member.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn bad_arguments_are_one_error_line_before_connecting() {
    // No backend configured at all: the arguments fail first.
    let env = Env::bare();
    let run = env.run(&["exporter", "--listen", "127.0.0.1:0", "bad group"]);
    run.expect_code(2);
    let line = run.expect_one_line_error();
    assert!(line.contains("bad group"), "{line}");
    let run = env.run(&["exporter", "--listen", "127.0.0.1:0", "--interval", "soon"]);
    run.expect_code(2);
    let line = run.expect_one_line_error();
    assert!(
        line.contains("--interval") && line.contains("soon"),
        "{line}"
    );
    let run = env.run(&["exporter", "--listen", "not-an-address"]);
    run.expect_code(2);
    let line = run.expect_one_line_error();
    assert!(line.contains("not-an-address"), "{line}");
}
