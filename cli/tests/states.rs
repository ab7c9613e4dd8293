//! `servicegroup list --state up|down` and `servicegroup summary [GROUP] [--json]`
//! through the binary on real backends (SQLite file, PostgreSQL, memcached; the
//! servers are the ones scripts/test starts, and without them these tests fail, never
//! skip).
//!
//! One fleet: in group `zz-…` a live member, a member killed with `kill -9` (gone
//! down after service_down_time) and a live member forced down; in group `aa-…` one
//! live member. Then:
//!
//! - `list GROUP --state down` shows exactly the killed and the forced-down member,
//!   `--state up` exactly the live one, in the table, `--wide` and `--json` (the same
//!   objects as `list GROUP --json`); without GROUP the filter applies to every group;
//! - `summary GROUP --json` is exactly `{"group","up","down","forced_down","total"}`
//!   with the counts, `summary --json` an array of such objects sorted by group, the
//!   table `GROUP UP DOWN FORCED_DOWN TOTAL`; an unknown group counts zero;
//! - a bad `--state` is one `error:` line naming `up` and `down`, exit 2.
//!
//! Intervals: report_interval 200 ms, service_down_time 2 s.

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{group, Env};
use serde_json::{json, Value};

/// The keys of one `list --json` object, sorted.
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

/// `(group, member)` of every row of a `list --json` array.
fn names(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|r| {
            (
                r["group"].as_str().unwrap().to_owned(),
                r["member"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The whitespace-separated words of every line.
fn words(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The member column (second word) of every table row below the header.
fn table_members(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .skip(1)
        .map(|w| w.get(1).cloned().unwrap_or_default())
        .collect()
}

/// The exact `summary --json` object of one group, keys in the contract's order.
fn summary_text(g: &str, up: u64, down: u64, forced_down: u64) -> String {
    format!(
        r#"{{"group":"{g}","up":{up},"down":{down},"forced_down":{forced_down},"total":{}}}"#,
        up + down + forced_down
    )
}

fn states_and_summary(env: Env) {
    let (ga, gz) = (group("aa-states"), group("zz-states"));
    let mut live = env.spawn(&["join", &gz, "live", "--meta", "role=live"]);
    let mut killed = env.spawn(&["join", &gz, "killed"]);
    let mut forced = env.spawn(&["join", &gz, "forced"]);
    let mut other = env.spawn(&["join", &ga, "other"]);
    let h_live = live.wait_holder();
    let h_killed = killed.wait_holder();
    let h_forced = forced.wait_holder();
    other.wait_joined();
    env.run(&["force-down", &gz, "forced"]).expect_code(0);
    killed.kill9();
    let deadline = Instant::now() + Duration::from_secs(20) + env.liveness_slack();
    while env.run(&["status", &gz, "killed"]).code() != 1 {
        assert!(Instant::now() < deadline, "killed never went down");
        sleep(Duration::from_millis(100));
    }
    env.run(&["status", &gz, "live"]).expect_code(0);

    // --state down: exactly the killed and the forced-down member, the same objects
    // as the full listing.
    let full = env.run(&["list", &gz, "--json"]).json();
    let down = env.run(&["list", &gz, "--state", "down", "--json"]).json();
    assert_eq!(
        names(&down),
        [(gz.clone(), "forced".into()), (gz.clone(), "killed".into())],
        "{down}"
    );
    for row in down.as_array().unwrap() {
        assert_eq!(keys(row), MEMBER_KEYS, "{row}");
        assert_eq!(row["state"], "down", "{row}");
        let same = full
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["member"] == row["member"])
            .unwrap_or_else(|| panic!("{row} not in the full listing {full}"));
        // Everything but the heartbeat times (they move between the two calls).
        for key in [
            "group",
            "member",
            "state",
            "forced_down",
            "instance",
            "epoch",
            "holder_since",
            "metadata",
        ] {
            assert_eq!(row[key], same[key], "{key}: {row} vs {same}");
        }
    }
    assert_eq!(down[0]["forced_down"], true, "{down}");
    assert_eq!(down[0]["instance"], h_forced.instance.as_str(), "{down}");
    assert_eq!(down[1]["forced_down"], false, "{down}");
    assert_eq!(down[1]["instance"], h_killed.instance.as_str(), "{down}");

    // --state up: exactly the live one.
    let up = env.run(&["list", &gz, "--state", "up", "--json"]).json();
    assert_eq!(names(&up), [(gz.clone(), "live".into())], "{up}");
    assert_eq!(keys(&up[0]), MEMBER_KEYS, "{up}");
    assert_eq!(up[0]["state"], "up", "{up}");
    assert_eq!(up[0]["forced_down"], false, "{up}");
    assert_eq!(up[0]["instance"], h_live.instance.as_str(), "{up}");
    assert_eq!(up[0]["metadata"], json!({"role": "live"}), "{up}");
    // --wide changes nothing in JSON.
    let up_wide = env
        .run(&["list", &gz, "--state", "up", "--json", "--wide"])
        .json();
    assert_eq!(names(&up_wide), names(&up));

    // The table and the wide table, with the same columns as `list`.
    let plain = env.run(&["list", &gz]);
    plain.expect_code(0);
    let table = env.run(&["list", &gz, "--state", "down"]);
    table.expect_code(0);
    assert_eq!(
        table_members(&table.stdout),
        ["forced", "killed"],
        "{}",
        table.stdout
    );
    assert_eq!(
        words(&table.stdout)[0],
        words(&plain.stdout)[0],
        "the header of `list`"
    );
    let wide = env.run(&["list", &gz, "--wide", "--state", "down"]);
    wide.expect_code(0);
    assert_eq!(
        table_members(&wide.stdout),
        ["forced", "killed"],
        "{}",
        wide.stdout
    );
    for word in ["INSTANCE", "EPOCH", "HOLDER SINCE", "METADATA"] {
        assert!(wide.stdout.contains(word), "{word}:\n{}", wide.stdout);
        assert!(!table.stdout.contains(word), "{word}:\n{}", table.stdout);
    }
    assert!(wide.stdout.contains(&h_killed.instance), "{}", wide.stdout);
    assert!(wide.stdout.contains(&h_forced.instance), "{}", wide.stdout);
    assert!(!wide.stdout.contains(&h_live.instance), "{}", wide.stdout);
    let table = env.run(&["list", &gz, "--state", "up"]);
    assert_eq!(table_members(&table.stdout), ["live"], "{}", table.stdout);
    let wide = env.run(&["list", &gz, "--state", "up", "--wide"]);
    assert_eq!(table_members(&wide.stdout), ["live"], "{}", wide.stdout);
    assert!(wide.stdout.contains("role=live"), "{}", wide.stdout);

    // Without GROUP: the filter applies to every group, sorted by group then member.
    let down_all = env.run(&["list", "--state", "down", "--json"]).json();
    assert_eq!(
        names(&down_all),
        [(gz.clone(), "forced".into()), (gz.clone(), "killed".into())],
        "{down_all}"
    );
    let up_all = env.run(&["list", "--state", "up", "--json"]).json();
    assert_eq!(
        names(&up_all),
        [(ga.clone(), "other".into()), (gz.clone(), "live".into())],
        "{up_all}"
    );
    let table = env.run(&["list", "--state", "up"]);
    assert_eq!(
        table_members(&table.stdout),
        ["other", "live"],
        "{}",
        table.stdout
    );

    // summary GROUP --json: one object, exactly the contract's keys, integers.
    let one = env.run(&["summary", &gz, "--json"]);
    one.expect_code(0);
    assert_eq!(one.stdout.trim_end(), summary_text(&gz, 1, 1, 1));
    let v: Value = serde_json::from_str(&one.stdout).unwrap();
    assert_eq!(keys(&v), ["down", "forced_down", "group", "total", "up"]);
    for key in ["up", "down", "forced_down", "total"] {
        assert!(v[key].is_u64(), "{key} is not an integer: {v}");
    }
    // summary --json: one object per group, sorted by group.
    let all = env.run(&["summary", "--json"]);
    all.expect_code(0);
    assert_eq!(
        all.stdout.trim_end(),
        format!(
            "[{},{}]",
            summary_text(&ga, 1, 0, 0),
            summary_text(&gz, 1, 1, 1)
        )
    );
    // The tables.
    let table = env.run(&["summary"]);
    table.expect_code(0);
    let header = ["GROUP", "UP", "DOWN", "FORCED_DOWN", "TOTAL"].map(String::from);
    let row = |g: &str, counts: [u64; 4]| -> Vec<String> {
        std::iter::once(g.to_owned())
            .chain(counts.iter().map(u64::to_string))
            .collect()
    };
    assert_eq!(
        words(&table.stdout),
        [
            header.to_vec(),
            row(&ga, [1, 0, 0, 1]),
            row(&gz, [1, 1, 1, 3])
        ],
        "{}",
        table.stdout
    );
    let table = env.run(&["summary", &gz]);
    assert_eq!(
        words(&table.stdout),
        [header.to_vec(), row(&gz, [1, 1, 1, 3])],
        "{}",
        table.stdout
    );

    // An unknown group: zeros, and empty listings.
    let ghost = group("ghosts");
    let zero = env.run(&["summary", &ghost, "--json"]);
    zero.expect_code(0);
    assert_eq!(zero.stdout.trim_end(), summary_text(&ghost, 0, 0, 0));
    for state in ["up", "down"] {
        let list = env.run(&["list", &ghost, "--state", state, "--json"]);
        assert_eq!(list.json(), json!([]), "{state}");
    }

    // A bad state against a real backend: one line, exit 2, nothing printed.
    let bad = env.run(&["list", &gz, "--state", "dead", "--json"]);
    let line = bad.expect_one_line_error();
    assert!(
        line.contains("\"dead\"") && line.contains("`up`") && line.contains("`down`"),
        "{line}"
    );
    assert!(bad.stdout.is_empty(), "{}", bad.stdout);

    // Clearing the flag moves the member back to up, at once.
    env.run(&["force-down", &gz, "forced", "--clear"])
        .expect_code(0);
    let up = env.run(&["list", &gz, "--state", "up", "--json"]).json();
    assert_eq!(
        names(&up),
        [(gz.clone(), "forced".into()), (gz.clone(), "live".into())],
        "{up}"
    );
    let one = env.run(&["summary", &gz, "--json"]);
    assert_eq!(one.stdout.trim_end(), summary_text(&gz, 2, 1, 0));

    // Everyone gone: no groups, no summaries.
    for p in [&mut live, &mut forced, &mut other] {
        p.signal("TERM");
        assert!(p.wait_exit(Duration::from_secs(15)).success());
    }
    env.run(&["remove", &gz, "killed"]).expect_code(0);
    assert_eq!(env.run(&["summary", "--json"]).json(), json!([]));
    assert_eq!(
        env.run(&["summary", &gz, "--json"]).stdout.trim_end(),
        summary_text(&gz, 0, 0, 0)
    );
    assert_eq!(
        env.run(&["list", "--state", "down", "--json"]).json(),
        json!([])
    );
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
    };
}

on_every_backend!(states_and_summary);

/// The summary object is built the way the tests above compare it.
#[test]
fn summary_text_is_the_contract_order() {
    assert_eq!(
        summary_text("g", 3, 2, 1),
        r#"{"group":"g","up":3,"down":2,"forced_down":1,"total":6}"#
    );
}
