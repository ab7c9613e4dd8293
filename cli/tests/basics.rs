//! Tests of the `servicegroup` binary that need no database server: the command
//! line, `drivers`, `config` (origins, masked secrets, bad files), errors as one line,
//! the zero-setup default location, and the simulator on the in-process driver.

mod common;

use std::time::Duration;

use common::{assert_simulation_ok, with_database, Env};

#[test]
fn harness_replaces_database_names() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5/postgres", "x"),
        "postgres://postgres@127.0.0.1:5/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h:5/db?sslmode=disable", "x"),
        "postgres://u:p@h:5/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:5", "x"), "postgres://h:5/x");
}

#[test]
fn drivers_lists_every_linked_driver() {
    let out = Env::bare().run(&["drivers"]);
    out.expect_code(0);
    let names: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert!(names.contains(&"db"), "{}", out.stdout);
    assert!(names.contains(&"inproc"), "{}", out.stdout);
    for line in out.stdout.lines() {
        assert!(
            line.split_whitespace().count() > 1,
            "no description: {line:?}"
        );
    }
}

#[test]
fn help_and_usage_errors() {
    let env = Env::bare();
    let help = env.run(&["--help"]);
    help.expect_code(0);
    for cmd in [
        "drivers",
        "config",
        "join",
        "list",
        "summary",
        "status",
        "force-down",
        "remove",
        "watch",
        "simulate",
    ] {
        assert!(help.stdout.contains(cmd), "{cmd} missing in --help");
    }
    let bad = env.run(&["status", "only-group"]);
    bad.expect_code(2);
    assert!(bad.stderr.starts_with("error:"), "{}", bad.stderr);
    env.run(&["no-such-command"]).expect_code(2);
    env.run(&["simulate", "--kill", "2"]).expect_code(2);
}

#[test]
fn config_shows_origins_and_masks_secrets() {
    let mut env = Env::bare();
    env.set(
        "SERVICEGROUP_DB__URL",
        "postgres://nova:s3cr3tpw@db.example:5432/nova",
    );
    env.set("SERVICEGROUP_REPORT_INTERVAL", "5s");
    let file = env.dir.path().join("sg.toml");
    std::fs::write(
        &file,
        "service_down_time = \"30s\"\n[mc]\nservers = [\"127.0.0.1:11211\"]\n",
    )
    .unwrap();
    let out = env.run(&[
        "--config",
        file.to_str().unwrap(),
        "--driver",
        "inproc",
        "config",
    ]);
    out.expect_code(0);
    let text = &out.stdout;
    assert!(!text.contains("s3cr3tpw"), "password shown:\n{text}");
    let line = |key: &str| -> &str {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("{key} missing:\n{text}"))
    };
    assert!(
        line("db.url").contains("nova:***@db.example:5432"),
        "{text}"
    );
    assert!(
        line("db.url").ends_with("# env SERVICEGROUP_DB__URL"),
        "{text}"
    );
    assert!(line("report_interval").contains("\"5s\""), "{text}");
    assert!(
        line("report_interval").ends_with("# env SERVICEGROUP_REPORT_INTERVAL"),
        "{text}"
    );
    assert!(line("service_down_time").contains("30s"), "{text}");
    assert!(
        line("service_down_time").contains(&format!("# file {}", file.display())),
        "{text}"
    );
    assert!(line("mc.servers").contains("127.0.0.1:11211"), "{text}");
    assert!(line("driver").contains("\"inproc\""), "{text}");
    assert!(line("driver").ends_with("# flag --driver"), "{text}");
    assert!(line("call_timeout").ends_with("# default"), "{text}");
}

#[test]
fn config_reads_nova_conf() {
    let env = Env::bare();
    let file = env.dir.path().join("nova.conf");
    std::fs::write(
        &file,
        "[DEFAULT]\nservicegroup_driver = inproc\nreport_interval = 7\nservice_down_time = 70\nmy_ip = 10.0.0.1\n\n[database]\nconnection = sqlite:////tmp/nova.sqlite\n",
    )
    .unwrap();
    let out = env.run(&["--config", file.to_str().unwrap(), "config"]);
    out.expect_code(0);
    assert!(out.stdout.contains("\"inproc\""), "{}", out.stdout);
    assert!(out.stdout.contains("\"7s\""), "{}", out.stdout);
    assert!(
        out.stdout.contains("1m 10s") || out.stdout.contains("70s"),
        "{}",
        out.stdout
    );
}

#[test]
fn zero_setup_default_is_sqlite_in_the_state_dir() {
    let env = Env::bare();
    let out = env.run(&["config"]);
    out.expect_code(0);
    let state = env.dir.path().join("state");
    let db_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("db.url"))
        .unwrap()
        .to_owned();
    assert!(
        db_line.contains(
            &state
                .join("servicegroup")
                .join("servicegroup.db")
                .display()
                .to_string()
        ),
        "{db_line}"
    );
    assert!(out.stdout.contains("\"db\""), "{}", out.stdout);
    // First use creates it.
    env.run(&["list", "--json"]).json();
    assert!(state.join("servicegroup").join("servicegroup.db").exists());

    // Without XDG_STATE_HOME: ~/.local/state.
    let mut env = Env::bare();
    env.unset("XDG_STATE_HOME");
    env.run(&["list", "--json"]).json();
    let home_db = env
        .dir
        .path()
        .join("home/.local/state/servicegroup/servicegroup.db");
    assert!(home_db.exists(), "{} missing", home_db.display());
}

#[test]
fn zero_setup_join_in_one_process_list_in_another() {
    let env = Env::bare();
    let mut p = env.spawn(&["join", "compute", "host-1"]);
    p.wait_joined();
    let list = env.run(&["list", "--json"]).json();
    assert_eq!(list[0]["group"], "compute");
    assert_eq!(list[0]["member"], "host-1");
    assert_eq!(list[0]["state"], "up");
    env.run(&["status", "compute", "host-1"]).expect_code(0);
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(20)).success());
    env.run(&["status", "compute", "host-1"]).expect_code(3);
}

#[test]
fn bad_config_is_one_line_naming_key_and_file() {
    let env = Env::bare();
    let dir = env.dir.path();
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "zero.toml",
            "report_interval = 0\n",
            vec!["report_interval", "zero.toml"],
        ),
        (
            "neg.toml",
            "service_down_time = -5\n",
            vec!["service_down_time", "neg.toml"],
        ),
        (
            "words.toml",
            "report_interval = \"soon\"\n",
            vec!["report_interval", "words.toml"],
        ),
        (
            "unknown.toml",
            "no_such_option = 1\n",
            vec!["no_such_option", "unknown.toml"],
        ),
        ("broken.toml", "report_interval = [\n", vec!["broken.toml"]),
        (
            "nova.conf",
            "[DEFAULT]\nreport_interval = abc\n",
            vec!["report_interval", "nova.conf"],
        ),
    ];
    for (name, content, needles) in cases {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        for cmd in [vec!["list"], vec!["status", "g", "m"], vec!["config"]] {
            let mut args = vec!["--config", path.to_str().unwrap()];
            args.extend(cmd.iter().copied());
            let line = env.run(&args).expect_one_line_error();
            for n in &needles {
                assert!(
                    line.contains(n),
                    "{name} {cmd:?}: {n:?} not named in {line:?}"
                );
            }
        }
    }
    let missing = dir.join("missing.toml");
    let line = env
        .run(&["--config", missing.to_str().unwrap(), "list"])
        .expect_one_line_error();
    assert!(line.contains("missing.toml"), "{line}");

    let line = env
        .run(&["--driver", "nosuch", "list"])
        .expect_one_line_error();
    assert!(
        line.contains("nosuch") && line.contains("inproc") && line.contains("db"),
        "{line}"
    );

    let mut env = Env::bare();
    env.set("SERVICEGROUP_REPORT_INTERVAL", "0");
    let line = env.run(&["status", "g", "m"]).expect_one_line_error();
    assert!(line.contains("SERVICEGROUP_REPORT_INTERVAL"), "{line}");
}

#[test]
fn inproc_status_of_unknown_member_is_3() {
    let env = Env::bare();
    env.run(&["--driver", "inproc", "status", "g", "m"])
        .expect_code(3);
    env.run(&["--driver", "inproc", "force-down", "g", "m"])
        .expect_code(3);
    env.run(&["--driver", "inproc", "remove", "g", "m"])
        .expect_code(3);
    let list = env.run(&["--driver", "inproc", "list", "--json"]).json();
    assert_eq!(list, serde_json::json!([]));
}

#[test]
fn simulate_on_inproc() {
    let env = Env::bare();
    let out = env.run_timeout(
        &[
            "--driver",
            "inproc",
            "simulate",
            "--members",
            "500",
            "--handles",
            "4",
            "--duration",
            "5s",
            "--kill",
            "0.1",
            "--report-interval",
            "200ms",
            "--service-down-time",
            "1s",
            "--json",
        ],
        Duration::from_secs(60),
    );
    let r = out.json();
    assert_simulation_ok(&r, 500, 50, 1.0, 0.2);
    assert_eq!(r["driver"], "inproc");
    assert_eq!(r["handles"], 4);
    // One batch per handle per tick: about duration / report_interval * handles.
    let batches = r["heartbeat_batches"].as_u64().unwrap();
    assert!((60..=140).contains(&batches), "{batches} batches: {r:#}");

    let text = env.run_timeout(
        &[
            "--driver",
            "inproc",
            "simulate",
            "--members",
            "50",
            "--duration",
            "2s",
            "--kill",
            "0",
            "--report-interval",
            "200ms",
            "--service-down-time",
            "1s",
        ],
        Duration::from_secs(60),
    );
    text.expect_code(0);
    for word in [
        "heartbeats",
        "heartbeat batch",
        "listing",
        "detection delay",
        "false downs        0",
        "result: OK",
    ] {
        assert!(
            text.stdout.contains(word),
            "{word} missing:\n{}",
            text.stdout
        );
    }
}

#[test]
fn closed_stdout_is_no_panic() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let env = Env::bare();
    let mut watch = env
        .command(&["watch", "compute", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(watch.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.starts_with("watching group compute"), "{first}");
    // Nobody reads the events any more.
    drop(watch.stdout.take());
    let mut joined = env.spawn(&["join", "compute", "h1"]);
    joined.wait_joined();
    // The next event hits the closed pipe: watch ends quietly, exit 0.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "watch did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(!rest.contains("panicked"), "{rest}");
    joined.signal("TERM");
    assert!(joined.wait_exit(Duration::from_secs(20)).success());

    // A one-shot command whose reader is gone keeps its exit code.
    let mut list = env
        .command(&["status", "compute", "nobody", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(list.stdout.take());
    let out = list.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn help_lists_exit_code_4_and_the_new_options() {
    let env = Env::bare();
    let help = env.run(&["--help"]);
    help.expect_code(0);
    let text = help.stdout.replace('\n', " ");
    for needle in ["3 no such member", "4 join: superseded"] {
        assert!(
            text.contains(needle),
            "{needle:?} missing in --help:\n{}",
            help.stdout
        );
    }
    let join = env.run(&["join", "--help"]);
    join.expect_code(0);
    for needle in ["--meta <KEY=VALUE>", "--exclusive", "Exit 4"] {
        assert!(
            join.stdout.contains(needle),
            "{needle:?} missing:\n{}",
            join.stdout
        );
    }
    let list = env.run(&["list", "--help"]);
    list.expect_code(0);
    assert!(list.stdout.contains("--wide"), "{}", list.stdout);
    assert!(list.stdout.contains("--state <up|down>"), "{}", list.stdout);
    let summary = env.run(&["summary", "--help"]);
    summary.expect_code(0);
    for needle in ["[GROUP]", "--json", "forced down"] {
        assert!(
            summary.stdout.contains(needle),
            "{needle:?} missing:\n{}",
            summary.stdout
        );
    }
}

/// A bad `list --state` is one `error:` line naming the accepted values, exit 2,
/// found before anything connects (the backend configured here does not exist).
#[test]
fn bad_state_is_one_line_before_connecting() {
    let mut env = Env::bare();
    env.set("SERVICEGROUP_DRIVER", "db");
    env.set(
        "SERVICEGROUP_DB__URL",
        "postgres://sguser:hunter2secret@127.0.0.1:1/nodb",
    );
    for args in [
        vec!["list", "g", "--state", "sideways"],
        vec!["list", "--state", "Down", "--json"],
        vec!["list", "g", "--state", "forced_down", "--wide"],
        vec!["list", "g", "--state", ""],
    ] {
        let run = env.run_timeout(&args, Duration::from_secs(20));
        let line = run.expect_one_line_error();
        let value = args[args.iter().position(|a| *a == "--state").unwrap() + 1];
        assert!(
            line.contains("--state")
                && line.contains(&format!("{value:?}"))
                && line.contains("`up`")
                && line.contains("`down`"),
            "{args:?}: {line}"
        );
        assert!(!line.contains("127.0.0.1"), "it connected first: {line}");
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    // Without a value it is the parser's usage error, exit 2 as well.
    env.run(&["list", "g", "--state"]).expect_code(2);
    // A bad group id is one line too, for both commands.
    for args in [
        vec!["summary", "a b"],
        vec!["summary", "a b", "--json"],
        vec!["list", "a b", "--state", "down"],
    ] {
        let line = env.run(&args).expect_one_line_error();
        assert!(line.contains("invalid") && line.contains("id"), "{line}");
    }
}

/// `summary` on an empty store: no groups is `[]` (and a bare header), an unknown
/// group counts zero; `list --state` of an unknown group is `[]`.
#[test]
fn inproc_summary_of_nothing_is_zero() {
    let env = Env::bare();
    let all = env.run(&["--driver", "inproc", "summary", "--json"]);
    assert_eq!(all.json(), serde_json::json!([]));
    let one = env.run(&["--driver", "inproc", "summary", "ghosts", "--json"]);
    one.expect_code(0);
    assert_eq!(
        one.stdout,
        "{\"group\":\"ghosts\",\"up\":0,\"down\":0,\"forced_down\":0,\"total\":0}\n"
    );
    let table = env.run(&["--driver", "inproc", "summary"]);
    table.expect_code(0);
    assert_eq!(
        table.stdout.split_whitespace().collect::<Vec<_>>(),
        ["GROUP", "UP", "DOWN", "FORCED_DOWN", "TOTAL"]
    );
    let table = env.run(&["--driver", "inproc", "summary", "ghosts"]);
    let lines: Vec<Vec<&str>> = table
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[1], ["ghosts", "0", "0", "0", "0"], "{}", table.stdout);
    for state in ["up", "down"] {
        let list = env.run(&[
            "--driver", "inproc", "list", "ghosts", "--state", state, "--json",
        ]);
        assert_eq!(list.json(), serde_json::json!([]));
    }
}

/// A bad `--meta` is one `error:` line and exit 2, found before anything connects:
/// the backend configured here does not exist, and the error is about the metadata.
#[test]
fn bad_meta_is_one_line_before_connecting() {
    let mut env = Env::bare();
    env.set("SERVICEGROUP_DRIVER", "db");
    env.set(
        "SERVICEGROUP_DB__URL",
        "postgres://sguser:hunter2secret@127.0.0.1:1/nodb",
    );
    let key64 = format!("{}=v", "k".repeat(64));
    let value1025 = format!("k={}", "v".repeat(1025));
    let metas: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    let big: Vec<String> = (0..5)
        .map(|i| format!("k{i}={}", "x".repeat(1000)))
        .collect();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["zone"], "KEY=VALUE"),
        (vec!["Zone=x"], "'Z'"),
        (vec!["a b=x"], "' '"),
        (vec!["=x"], "must not be empty"),
        (vec![&key64], "64 bytes"),
        (vec![&value1025], "1025 bytes"),
        (metas.iter().map(String::as_str).collect(), "33 entries"),
        (big.iter().map(String::as_str).collect(), "4096"),
        (vec!["a=1", "a=2"], "twice"),
    ];
    for (metas, needle) in cases {
        let mut args = vec!["join", "g", "m"];
        for m in &metas {
            args.extend(["--meta", m]);
        }
        let run = env.run_timeout(&args, Duration::from_secs(20));
        let line = run.expect_one_line_error();
        assert!(
            line.starts_with("error: invalid metadata"),
            "{metas:?}: {line}"
        );
        assert!(line.contains(needle), "{needle:?} not named: {line}");
        assert!(line.len() < 400, "the line quotes too much: {line}");
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    // A bad id is still reported as one (ids are checked first).
    let line = env
        .run(&["join", "g", "bad id", "--meta", "zone"])
        .expect_one_line_error();
    assert!(line.contains("invalid id"), "{line}");
}
