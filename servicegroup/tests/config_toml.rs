//! Loading our own TOML files: every key, the alias, options tables, and every
//! error naming the key and the file.
// The keys of every bundled driver: needs all of them linked.
#![cfg(all(feature = "db", feature = "mc", feature = "inproc"))]

use std::path::PathBuf;
use std::time::Duration;

use servicegroup::db::DbConfig;
use servicegroup::inproc::InprocConfig;
use servicegroup::mc::McConfig;
use servicegroup::{Config, ConfigLoader, ErrorKind, Origin, Value};

/// The db driver's table of `c`, read as the driver reads it.
#[allow(dead_code)]
fn db(c: &Config) -> DbConfig {
    c.driver_config("db").unwrap()
}

/// The mc driver's table of `c`.
#[allow(dead_code)]
fn mc(c: &Config) -> McConfig {
    c.driver_config("mc").unwrap()
}

/// The inproc driver's table of `c`.
#[allow(dead_code)]
fn inproc(c: &Config) -> InprocConfig {
    c.driver_config("inproc").unwrap()
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn load_err(name: &str, text: &str) -> (PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, name, text);
    let err = ConfigLoader::new().file(&path).load().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    (path, err.to_string())
}

#[test]
fn full_example_sets_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "servicegroup.toml",
        r#"
# servicegroup configuration
driver = "mc"
report_interval = "200ms"
service_down_time = 1.5
call_timeout = "2s"
watch_interval = 0.1

[db]
url = "postgres://nova:s3cr3t@db.example:5432/nova"
pool_size = 16
timeout = 3

[mc]
servers = ["10.0.0.1:11211", "10.0.0.2:11211"]
timeout = "500ms"

[inproc]
name = "tests"

[options.mine]
endpoint = "http://x"
retries = 3
"#,
    );
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    let c = &loaded.config;
    assert_eq!(c.driver, "mc");
    assert_eq!(c.report_interval, Duration::from_millis(200));
    assert_eq!(c.service_down_time, Duration::from_millis(1500));
    assert_eq!(c.call_timeout, Duration::from_secs(2));
    assert_eq!(c.watch_interval, Some(Duration::from_millis(100)));
    let url = db(c).url.unwrap();
    assert_eq!(url.expose(), "postgres://nova:s3cr3t@db.example:5432/nova");
    assert_eq!(db(c).pool_size, 16);
    assert_eq!(db(c).timeout, Duration::from_secs(3));
    assert_eq!(mc(c).servers, ["10.0.0.1:11211", "10.0.0.2:11211"]);
    assert_eq!(mc(c).timeout, Duration::from_millis(500));
    assert_eq!(inproc(c).name, "tests");
    let mine = c.options("mine").unwrap();
    assert_eq!(
        mine.get("endpoint").and_then(Value::as_str),
        Some("http://x")
    );
    assert_eq!(mine.get("retries").and_then(Value::as_u64), Some(3));

    for key in [
        "driver",
        "report_interval",
        "service_down_time",
        "call_timeout",
        "watch_interval",
        "db.url",
        "db.pool_size",
        "db.timeout",
        "mc.servers",
        "mc.timeout",
        "inproc.name",
    ] {
        assert_eq!(
            loaded.origin(key),
            Some(&Origin::File(path.clone())),
            "{key}"
        );
    }
    // The password stays out of Debug.
    assert!(!format!("{loaded:?}").contains("s3cr3t"));
}

#[test]
fn empty_file_gives_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "empty.toml", "");
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    assert_eq!(loaded.config, Config::default());
    assert!(loaded.origins.values().all(|o| *o == Origin::Default));
}

#[test]
fn nova_alias_for_driver() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "a.toml", "servicegroup_driver = \"inproc\"\n");
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    assert_eq!(loaded.config.driver, "inproc");
    assert_eq!(loaded.origin("driver"), Some(&Origin::File(path)));

    let (path, err) = load_err("b.toml", "driver = \"db\"\nservicegroup_driver = \"mc\"\n");
    assert!(err.contains("servicegroup_driver"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn unknown_keys_name_key_and_file() {
    for (text, key) in [
        ("report_intervall = 10\n", "`report_intervall`"),
        ("[db]\nurll = \"sqlite://x\"\n", "`db.urll`"),
        ("[mc]\nserver = [\"a:1\"]\n", "`mc.server`"),
        ("[inproc]\nnames = \"x\"\n", "`inproc.names`"),
        ("[DEFAULTS]\nx = 1\n", "`DEFAULTS`"),
    ] {
        let (path, err) = load_err("c.toml", text);
        assert!(err.contains("unknown key"), "{err}");
        assert!(err.contains(key), "{text:?}: {err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}

#[test]
fn bad_durations_name_key_and_file() {
    for (text, key, why) in [
        (
            "report_interval = 0\n",
            "`report_interval`",
            "greater than zero, found 0",
        ),
        (
            "service_down_time = -5\n",
            "`service_down_time`",
            "greater than zero, found -5",
        ),
        ("call_timeout = \"soon\"\n", "`call_timeout`", "\"soon\""),
        ("watch_interval = nan\n", "`watch_interval`", "finite"),
        ("report_interval = inf\n", "`report_interval`", "finite"),
        (
            "report_interval = \"0ms\"\n",
            "`report_interval`",
            "greater than zero",
        ),
        ("[db]\ntimeout = 0.0\n", "`db.timeout`", "greater than zero"),
        ("[mc]\ntimeout = \"-1s\"\n", "`mc.timeout`", "-1s"),
        (
            "report_interval = true\n",
            "`report_interval`",
            "found bool true",
        ),
    ] {
        let (path, err) = load_err("d.toml", text);
        assert!(
            err.contains(&format!("invalid value for {key} in {}", path.display())),
            "{text:?}: {err}"
        );
        assert!(err.contains(why), "{text:?}: {err}");
    }
}

#[test]
fn wrong_types_name_key_and_file() {
    for (text, key) in [
        ("driver = 5\n", "`driver`"),
        ("[db]\npool_size = \"many\"\n", "`db.pool_size`"),
        ("[db]\npool_size = -1\n", "`db.pool_size`"),
        ("[mc]\nservers = \"a:1\"\n", "`mc.servers`"),
        ("db = 5\n", "`db`"),
        ("[options]\nmine = 1\n", "`options.mine`"),
    ] {
        let (path, err) = load_err("e.toml", text);
        assert!(
            err.contains(&format!("invalid value for {key} in {}", path.display())),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn empty_driver_or_url_is_an_error() {
    let (path, err) = load_err("f.toml", "driver = \"\"\n");
    assert!(
        err.contains("`driver`") && err.contains(&path.display().to_string()),
        "{err}"
    );
    let (path, err) = load_err("g.toml", "[db]\nurl = \" \"\n");
    assert!(
        err.contains("`db.url`") && err.contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn broken_toml_is_reported_as_toml_with_position_and_no_password() {
    let (path, err) = load_err(
        "broken.toml",
        "driver = \"db\"\n[db]\nurl = \"postgres://nova:Hunter2pw@db/nova\npool_size = 3\n",
    );
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("not valid TOML at line 3"), "{err}");
    assert!(!err.contains("Hunter2pw"), "{err}");

    // Not `.toml`, but our tables: still a TOML error, not a silent INI read.
    let (_, err) = load_err(
        "servicegroup.conf",
        "[db]\nurl = postgres://nova:Hunter2pw@db/nova\n",
    );
    assert!(err.contains("not valid TOML"), "{err}");
    assert!(!err.contains("Hunter2pw"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let err = ConfigLoader::new().file(&path).load().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn windows_paths_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "win.toml",
        "[db]\nurl = 'sqlite:///C:\\ProgramData\\nova\\nova.sqlite'\n[inproc]\nname = \"C:\\\\x\\\\y\"\n",
    );
    let c = ConfigLoader::new().file(&path).load().unwrap().config;
    assert_eq!(
        db(&c).url.unwrap().expose(),
        r"sqlite:///C:\ProgramData\nova\nova.sqlite"
    );
    assert_eq!(inproc(&c).name, r"C:\x\y");
}
