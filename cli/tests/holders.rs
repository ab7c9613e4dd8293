//! Who holds a member, and what it says about itself, through the `servicegroup`
//! binary on real backends (SQLite file, PostgreSQL, memcached; the servers are the
//! ones scripts/test starts, and without them these tests fail, never skip):
//!
//! - two real `join` processes on one member: the second takes over (epoch 2, another
//!   instance), the first prints `error: superseded: …` and exits 4 without leaving;
//! - `join --exclusive` against a live holder: one `conflict` line, exit 2, nothing
//!   changed; against a down or absent member it joins;
//! - `list --json` / `status --json` carry `instance`, `epoch`, `holder_since` and
//!   `metadata` (from `--meta`); `list --wide` shows them, plain `list` does not;
//! - `watch` / `watch --json` print `updated` and `replaced`.
//!
//! Intervals: report_interval 200 ms, service_down_time 2 s.

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{assert_instance, assert_rfc3339_utc, group, Bg, Env, Holder, REPORT_INTERVAL};
use serde_json::{json, Value};

/// How long a superseded `join` may take to notice and exit: its next heartbeat tick
/// comes within one report_interval of the takeover; the rest is slack for the
/// call itself, the process exit and a machine busy with other tests.
const SUPERSEDED_WITHIN: Duration = REPORT_INTERVAL
    .saturating_mul(5)
    .saturating_add(Duration::from_secs(2));

fn sorted_keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// The only row of `list GROUP --json`.
fn only_row(env: &Env, g: &str) -> Value {
    let list = env.run(&["list", g, "--json"]).json();
    let rows = list.as_array().expect("array");
    assert_eq!(rows.len(), 1, "{list}");
    rows[0].clone()
}

/// Waits for the next `watch --json` event and checks its kind and fixed keys.
fn next_event(w: &mut Bg, kind: &str, g: &str, m: &str, within: Duration) -> Value {
    let line = w.wait_stdout(&format!("with event {kind}"), within, |_| true);
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert_eq!(v["event"], kind, "{v}");
    assert_eq!(v["group"], g, "{v}");
    assert_eq!(v["member"], m, "{v}");
    assert_rfc3339_utc(v["at"].as_str().expect("at"));
    let expected: &[&str] = match kind {
        "replaced" => &[
            "at", "epoch", "event", "group", "instance", "member", "metadata",
        ],
        "updated" => &["at", "event", "group", "member", "metadata"],
        _ => &["at", "event", "group", "member"],
    };
    assert_eq!(sorted_keys(&v), expected, "{v}");
    v
}

fn start_watch(env: &Env, g: &str, json: bool) -> Bg {
    let mut args = vec!["watch", g];
    if json {
        args.push("--json");
    }
    let mut w = env.spawn(&args);
    w.wait_stderr("`watching …`", Duration::from_secs(30), |l| {
        l.starts_with("watching group")
    });
    w
}

/// Two real `join` processes on one member: the second takes it over, the first is
/// told (one `error: superseded: …` line, exit 4) and does not delete the record.
fn second_join_takes_over(env: Env) {
    let g = group("takeover");
    let mut w = start_watch(&env, &g, true);

    let mut first = env.spawn(&["join", &g, "host", "--meta", "zone=eu-1"]);
    let a = first.wait_holder();
    assert_eq!(a.epoch, 1, "a new record starts at epoch 1");
    next_event(&mut w, "joined", &g, "host", Duration::from_secs(5));
    let row = only_row(&env, &g);
    assert_eq!(row["instance"], a.instance.as_str(), "{row}");
    assert_eq!(row["epoch"], 1, "{row}");
    assert_eq!(row["metadata"], json!({"zone": "eu-1"}), "{row}");
    let since_a = assert_rfc3339_utc(row["holder_since"].as_str().expect("holder_since"));

    let mut second = env.spawn(&["join", &g, "host", "--meta", "zone=eu-2"]);
    let b = second.wait_holder();
    let taken = Instant::now();
    assert_eq!(b.epoch, 2, "a takeover adds one to the epoch");
    assert_ne!(b.instance, a.instance, "each process is its own instance");

    let exit = first.wait_exit(SUPERSEDED_WITHIN);
    assert_eq!(
        exit.code(),
        Some(4),
        "superseded join: {exit:?}, stderr {:#?}",
        first.seen_err
    );
    let noticed = taken.elapsed();
    let expected = format!(
        "error: superseded: {g} host was taken over by instance {} (epoch 2)",
        b.instance
    );
    assert_eq!(
        first.error_lines(),
        [expected.as_str()],
        "{:#?}",
        first.seen_err
    );
    assert!(
        !first.seen_err.iter().any(|l| l.contains("panicked")),
        "{:#?}",
        first.seen_err
    );
    assert!(
        !first.seen_out.iter().any(|l| l.starts_with("left ")),
        "a superseded join must not leave: {:#?}",
        first.seen_out
    );
    eprintln!("superseded join exited {noticed:?} after the takeover");

    // The record is the new holder's, untouched by the first process's exit.
    let replaced = next_event(&mut w, "replaced", &g, "host", Duration::from_secs(5));
    assert_eq!(replaced["instance"], b.instance.as_str(), "{replaced}");
    assert_eq!(replaced["epoch"], 2, "{replaced}");
    assert_eq!(replaced["metadata"], json!({"zone": "eu-2"}), "{replaced}");
    sleep(REPORT_INTERVAL * 2);
    env.run(&["status", &g, "host"]).expect_code(0);
    let row = only_row(&env, &g);
    assert_eq!(row["instance"], b.instance.as_str(), "{row}");
    assert_eq!(row["epoch"], 2, "{row}");
    assert_eq!(row["state"], "up", "{row}");
    assert_eq!(row["metadata"], json!({"zone": "eu-2"}), "{row}");
    let since_b = assert_rfc3339_utc(row["holder_since"].as_str().expect("holder_since"));
    assert!(
        since_b >= since_a,
        "holder_since went back: {since_a} → {since_b}"
    );

    second.signal("TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert!(
        second
            .seen_out
            .iter()
            .any(|l| l == &format!("left {g} host")),
        "{:#?}",
        second.seen_out
    );
    next_event(&mut w, "left", &g, "host", Duration::from_secs(5));
    env.run(&["status", &g, "host"]).expect_code(3);
    sleep(Duration::from_millis(500));
    w.signal("TERM");
    assert_eq!(w.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_eq!(
        w.seen_out.len(),
        3,
        "joined, replaced, left: {:#?}",
        w.seen_out
    );
}

/// `--exclusive` refuses a live holder (one `conflict` line, exit 2, nothing changed)
/// and takes a member that is down or absent.
fn exclusive_join(env: Env) {
    let g = group("exclusive");
    let mut holder = env.spawn(&["join", &g, "host", "--meta", "owner=first"]);
    let a = holder.wait_holder();

    let refused = env.run(&["join", &g, "host", "--exclusive", "--meta", "owner=second"]);
    let line = refused.expect_one_line_error();
    assert!(line.contains("conflict"), "{line}");
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    // Nothing changed: same holder, same epoch, same metadata; it keeps heartbeating.
    let row = only_row(&env, &g);
    assert_eq!(row["instance"], a.instance.as_str(), "{row}");
    assert_eq!(row["epoch"], 1, "{row}");
    assert_eq!(row["metadata"], json!({"owner": "first"}), "{row}");
    sleep(REPORT_INTERVAL * 3);
    assert!(
        holder.child.try_wait().unwrap().is_none(),
        "the live holder exited after a refused exclusive join: {:#?}",
        holder.seen_err
    );
    env.run(&["status", &g, "host"]).expect_code(0);

    // A down member is taken, exclusive or not.
    holder.kill9();
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.run(&["status", &g, "host"]).code() != 1 {
        assert!(Instant::now() < deadline, "never went down after kill -9");
        sleep(Duration::from_millis(100));
    }
    let mut taker = env.spawn(&["join", &g, "host", "--exclusive"]);
    let b = taker.wait_holder();
    assert_eq!(b.epoch, 2);
    assert_ne!(b.instance, a.instance);
    let row = only_row(&env, &g);
    assert_eq!(row["instance"], b.instance.as_str(), "{row}");
    assert_eq!(row["state"], "up", "{row}");
    assert_eq!(
        row["metadata"],
        json!({}),
        "a takeover replaces the metadata: {row}"
    );

    // An absent member too.
    let mut fresh = env.spawn(&["join", &g, "fresh", "--exclusive"]);
    assert_eq!(fresh.wait_holder().epoch, 1);
    for p in [&mut taker, &mut fresh] {
        p.signal("TERM");
        assert_eq!(p.wait_exit(Duration::from_secs(15)).code(), Some(0));
    }
    assert_eq!(env.run(&["list", &g, "--json"]).json(), json!([]));
}

/// `list --json` and `status --json` carry the holder and the `--meta` metadata with
/// the right types; `list --wide` shows them in the table, plain `list` does not.
fn listing_shows_holder_and_metadata(env: Env) {
    let g = group("meta");
    let note = "héllo wörld = ✓ \"quoted\"";
    let mut one = env.spawn(&[
        "join",
        &g,
        "m1",
        "--meta",
        "zone=eu-1",
        "--meta",
        "address=10.0.0.7:8774",
        "--meta",
        &format!("note={note}"),
        "--meta",
        "empty=",
    ]);
    let h1 = one.wait_holder();
    let mut two = env.spawn(&["join", &g, "m2"]);
    let h2 = two.wait_holder();

    let list = env.run(&["list", &g, "--json"]).json();
    let rows = list.as_array().expect("array");
    assert_eq!(rows.len(), 2, "{list}");
    for (row, holder) in rows.iter().zip([&h1, &h2]) {
        assert_eq!(
            sorted_keys(row),
            [
                "age_seconds",
                "epoch",
                "forced_down",
                "group",
                "holder_since",
                "instance",
                "last_heartbeat",
                "member",
                "metadata",
                "state"
            ],
            "{row}"
        );
        let instance = row["instance"].as_str().expect("instance is a string");
        assert_instance(instance);
        assert_eq!(instance, holder.instance, "{row}");
        assert!(row["epoch"].is_u64(), "epoch is an integer: {row}");
        assert_eq!(row["epoch"], 1, "{row}");
        let since = assert_rfc3339_utc(row["holder_since"].as_str().expect("holder_since"));
        let last = assert_rfc3339_utc(row["last_heartbeat"].as_str().expect("last_heartbeat"));
        assert!(
            since <= last + chrono::Duration::milliseconds(5),
            "holder since {since} after the last heartbeat {last}: {row}"
        );
        assert!(row["metadata"].is_object(), "{row}");
    }
    assert_eq!(
        rows[0]["metadata"],
        json!({"address": "10.0.0.7:8774", "empty": "", "note": note, "zone": "eu-1"}),
        "metadata round-trips exactly"
    );
    assert_eq!(rows[1]["metadata"], json!({}), "no metadata is {{}}");

    // status --json is the same object.
    let st = env.run(&["status", &g, "m1", "--json"]);
    st.expect_code(0);
    let obj: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(obj["instance"], h1.instance.as_str());
    assert_eq!(obj["metadata"], rows[0]["metadata"]);
    assert_eq!(sorted_keys(&obj), sorted_keys(&rows[0]));

    // --wide with --json changes nothing.
    let wide_json = env.run(&["list", &g, "--json", "--wide"]).json();
    assert_eq!(wide_json.as_array().unwrap().len(), 2);
    assert_eq!(sorted_keys(&wide_json[0]), sorted_keys(&rows[0]));

    let plain = env.run(&["list", &g]);
    plain.expect_code(0);
    let wide = env.run(&["list", &g, "--wide"]);
    wide.expect_code(0);
    let wide_columns = ["INSTANCE", "EPOCH", "HOLDER SINCE", "METADATA"];
    for word in wide_columns.iter().copied().chain([
        h1.instance.as_str(),
        h2.instance.as_str(),
        "zone=eu-1",
    ]) {
        assert!(
            !plain.stdout.contains(word),
            "{word} in plain list:\n{}",
            plain.stdout
        );
        assert!(
            wide.stdout.contains(word),
            "{word} missing in --wide:\n{}",
            wide.stdout
        );
    }
    for word in [
        "GROUP",
        "MEMBER",
        "STATE",
        "FORCED DOWN",
        "LAST HEARTBEAT",
        "AGE",
    ] {
        assert!(
            plain.stdout.contains(word),
            "{word} missing:\n{}",
            plain.stdout
        );
        assert!(
            wide.stdout.contains(word),
            "{word} missing:\n{}",
            wide.stdout
        );
    }
    assert_eq!(wide.stdout.lines().count(), 3, "{}", wide.stdout);
    let m1_line = wide
        .stdout
        .lines()
        .find(|l| l.contains(" m1 "))
        .unwrap_or_else(|| panic!("no m1 row:\n{}", wide.stdout));
    assert!(
        m1_line.contains(&format!(
            "address=10.0.0.7:8774,empty=,note={note},zone=eu-1"
        )),
        "{m1_line}"
    );
    let m2_line = wide.stdout.lines().find(|l| l.contains(" m2 ")).unwrap();
    assert!(
        m2_line.trim_end().ends_with(" -"),
        "no metadata shows `-`: {m2_line}"
    );
    let since_text = rows[0]["holder_since"].as_str().unwrap().replace('T', " ");
    assert!(
        m1_line.contains(&since_text),
        "{since_text} missing: {m1_line}"
    );

    for p in [&mut one, &mut two] {
        p.signal("TERM");
        assert_eq!(p.wait_exit(Duration::from_secs(15)).code(), Some(0));
    }
}

/// `watch` prints `updated` (metadata changed by the holder, here a library handle
/// on the same backend) and `replaced` (another instance took over), in both forms.
fn watch_prints_updated_and_replaced(env: Env) {
    use servicegroup::{ConfigLoader, JoinOptions, ServiceGroup};

    let g = group("updated");
    let mut json_watch = start_watch(&env, &g, true);
    let mut text_watch = start_watch(&env, &g, false);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let loaded = ConfigLoader::new()
        .env_from(env.vars().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .load()
        .expect("the test's configuration loads");
    let (sg1, sg2) = runtime.block_on(async {
        (
            ServiceGroup::connect(loaded.config.clone()).await.unwrap(),
            ServiceGroup::connect(loaded.config.clone()).await.unwrap(),
        )
    });
    // Each step waits for both watches to report it (they poll on their own
    // schedule, so two changes within one poll would be one event).
    let text_event = |w: &mut Bg, kind: &str| {
        let line = w.wait_stdout(&format!("with {kind}"), Duration::from_secs(5), |_| true);
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            parts.len(),
            4,
            "the same four fields for every event: {line}"
        );
        assert_rfc3339_utc(parts[0]);
        assert_eq!(&parts[1..], [kind, g.as_str(), "m"], "{line}");
    };
    let first = runtime
        .block_on(sg1.join_with(&g, "m", JoinOptions::new().with_meta("zone", "a")))
        .unwrap();
    next_event(&mut json_watch, "joined", &g, "m", Duration::from_secs(5));
    text_event(&mut text_watch, "joined");

    runtime
        .block_on(first.set_metadata([("zone", "b"), ("version", "2.0")]))
        .unwrap();
    let updated = next_event(&mut json_watch, "updated", &g, "m", Duration::from_secs(5));
    assert_eq!(
        updated["metadata"],
        json!({"version": "2.0", "zone": "b"}),
        "{updated}"
    );
    text_event(&mut text_watch, "updated");
    assert_eq!(
        env.run(&["list", &g, "--json"]).json()[0]["metadata"],
        json!({"version": "2.0", "zone": "b"})
    );

    let second = runtime
        .block_on(sg2.join_with(&g, "m", JoinOptions::new().with_meta("zone", "c")))
        .unwrap();
    let replaced = next_event(&mut json_watch, "replaced", &g, "m", Duration::from_secs(5));
    assert_eq!(
        replaced["instance"],
        sg2.instance().to_string(),
        "{replaced}"
    );
    assert_eq!(replaced["epoch"], second.epoch(), "{replaced}");
    assert_eq!(replaced["epoch"], 2, "{replaced}");
    assert_eq!(replaced["metadata"], json!({"zone": "c"}), "{replaced}");
    text_event(&mut text_watch, "replaced");

    // The first handle is told, and stops heartbeating the member.
    let told = runtime
        .block_on(async { tokio::time::timeout(SUPERSEDED_WITHIN, first.superseded()).await })
        .expect("the first handle was never told it was superseded");
    assert_eq!(told.instance, sg2.instance());
    assert!(first.is_superseded());
    drop(first);
    runtime.block_on(second.leave()).unwrap();
    next_event(&mut json_watch, "left", &g, "m", Duration::from_secs(5));
    text_event(&mut text_watch, "left");

    sleep(Duration::from_millis(500));
    for w in [&mut json_watch, &mut text_watch] {
        w.signal("TERM");
        assert_eq!(w.wait_exit(Duration::from_secs(15)).code(), Some(0));
        assert_eq!(w.seen_out.len(), 4, "each event once: {:#?}", w.seen_out);
    }
    drop((sg1, sg2));
    runtime.shutdown_timeout(Duration::from_secs(5));
}

/// A bad `--meta` against a real backend: one `error:` line, exit 2, nothing joined.
fn bad_meta_joins_nothing(env: Env) {
    let g = group("badmeta");
    for meta in ["zone", "Zone=x", "=x"] {
        let line = env
            .run(&["join", &g, "m", "--meta", meta])
            .expect_one_line_error();
        assert!(line.contains("metadata"), "{meta}: {line}");
    }
    assert_eq!(env.run(&["list", &g, "--json"]).json(), json!([]));
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

on_every_backend!(
    second_join_takes_over,
    exclusive_join,
    listing_shows_holder_and_metadata,
    watch_prints_updated_and_replaced,
    bad_meta_joins_nothing,
);

/// The holder of a joined line is parsed the way the tests above rely on.
#[test]
fn joined_line_names_instance_and_epoch() {
    let h = Holder::of_joined_line(
        "joined g m (driver db, report_interval 200ms, service_down_time 2s, instance 0123456789abcdef0123456789abcdef, epoch 12); SIGINT or SIGTERM leaves",
    );
    assert_eq!(h.instance, "0123456789abcdef0123456789abcdef");
    assert_eq!(h.epoch, 12);
}
