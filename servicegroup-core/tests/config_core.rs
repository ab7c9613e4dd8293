//! Core's own keys (`driver`, `report_interval`, `service_down_time`, `call_timeout`,
//! `watch_interval`, `coalesce_window`) with no driver linked: TOML, nova.conf, environment, overrides,
//! precedence and origins, every error naming the key and the source, Nova's 2.5x rule.
//! The keys of the bundled drivers are tested where they are linked (the
//! `servicegroup` facade's `tests/config_*.rs`, and each driver crate's tests);
//! a driver's table in general in `config_drivers.rs`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use servicegroup_core::{Config, ConfigLoader, ErrorKind, Origin};

const KEYS: [&str; 6] = [
    "driver",
    "report_interval",
    "service_down_time",
    "call_timeout",
    "watch_interval",
    "coalesce_window",
];

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

fn env_error(vars: &[(&str, &str)]) -> String {
    let err = ConfigLoader::new()
        .env_from(vars.iter().copied())
        .load()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    err.to_string()
}

#[test]
fn toml_sets_every_core_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "servicegroup.toml",
        "driver = \"mc\"\nreport_interval = \"200ms\"\nservice_down_time = 1.5\ncall_timeout = \"2s\"\nwatch_interval = 0.1\ncoalesce_window = \"3ms\"\n",
    );
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    let c = &loaded.config;
    assert_eq!(c.driver, "mc");
    assert_eq!(c.report_interval, Duration::from_millis(200));
    assert_eq!(c.service_down_time, Duration::from_millis(1500));
    assert_eq!(c.call_timeout, Duration::from_secs(2));
    assert_eq!(c.watch_interval, Some(Duration::from_millis(100)));
    assert_eq!(c.coalesce_window, Duration::from_millis(3));
    for key in KEYS {
        assert_eq!(
            loaded.origin(key),
            Some(&Origin::File(path.clone())),
            "{key}"
        );
    }
    // Core alone has no other keys.
    assert_eq!(loaded.origins.len(), KEYS.len(), "{:?}", loaded.origins);
}

#[test]
fn empty_file_and_no_source_give_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "empty.toml", "");
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    assert_eq!(loaded.config, Config::default());
    assert!(loaded.origins.values().all(|o| *o == Origin::Default));
    assert_eq!(
        ConfigLoader::new().load().unwrap().config,
        Config::default()
    );
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

    // In a file and in the environment they do not clash.
    let path = write(&dir, "c.toml", "servicegroup_driver = \"db\"\n");
    let c = ConfigLoader::new()
        .file(&path)
        .env_from([("SERVICEGROUP_DRIVER", "mc")])
        .load()
        .unwrap()
        .config;
    assert_eq!(c.driver, "mc");
}

#[test]
fn unknown_keys_name_key_file_and_known_keys() {
    for (text, key) in [
        ("report_intervall = 10\n", "`report_intervall`"),
        ("[DEFAULTS]\nx = 1\n", "`DEFAULTS`"),
        ("[db]\nurl = \"sqlite://x\"\n", "`db`"),
    ] {
        let (path, err) = load_err("c.toml", text);
        assert!(err.contains("unknown key"), "{err}");
        assert!(err.contains(key), "{text:?}: {err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("driver (or servicegroup_driver)"), "{err}");
        assert!(err.contains("report_interval, service_down_time"), "{err}");
    }
    // A table: maybe a driver that is not linked, and the message says so.
    let (_, err) = load_err("d.toml", "[db]\nurl = \"sqlite://x\"\n");
    assert!(err.contains("linked"), "{err}");
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
fn wrong_types_and_empty_driver_name_key_and_file() {
    for (text, key) in [
        ("driver = 5\n", "`driver`"),
        ("[options]\nmine = 1\n", "`options.mine`"),
        ("driver = \"\"\n", "`driver`"),
    ] {
        let (path, err) = load_err("e.toml", text);
        assert!(
            err.contains(&format!("invalid value for {key} in {}", path.display())),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn broken_toml_is_reported_as_toml_with_position_and_no_password() {
    let (path, err) = load_err(
        "broken.toml",
        "driver = \"db\"\nwatch_interval = \"postgres://nova:Hunter2pw@db/nova\ncall_timeout = 3\n",
    );
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("not valid TOML at line 2"), "{err}");
    assert!(!err.contains("Hunter2pw"), "{err}");
    // With no driver linked, only [DEFAULT] marks a nova.conf.
    assert!(err.contains("recognised by a [DEFAULT] section"), "{err}");
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
fn every_core_variable_maps_to_its_key() {
    let vars = [
        ("SERVICEGROUP_DRIVER", "inproc"),
        ("SERVICEGROUP_REPORT_INTERVAL", "200ms"),
        ("SERVICEGROUP_SERVICE_DOWN_TIME", "1"),
        ("SERVICEGROUP_CALL_TIMEOUT", "0.5"),
        ("SERVICEGROUP_WATCH_INTERVAL", "50ms"),
        ("PATH", "/usr/bin"),
    ];
    let loaded = ConfigLoader::new().env_from(vars).load().unwrap();
    let c = &loaded.config;
    assert_eq!(c.driver, "inproc");
    assert_eq!(c.report_interval, Duration::from_millis(200));
    assert_eq!(c.service_down_time, Duration::from_secs(1));
    assert_eq!(c.call_timeout, Duration::from_millis(500));
    assert_eq!(c.watch_interval, Some(Duration::from_millis(50)));
    for (var, _) in vars.iter().filter(|(v, _)| v.starts_with("SERVICEGROUP_")) {
        let key = var.trim_start_matches("SERVICEGROUP_").to_lowercase();
        assert_eq!(
            loaded.origin(&key),
            Some(&Origin::Env((*var).to_owned())),
            "{key}"
        );
    }
    // Text stays text.
    let c = ConfigLoader::new()
        .env_from([("SERVICEGROUP_DRIVER", "[inproc]")])
        .load()
        .unwrap()
        .config;
    assert_eq!(c.driver, "[inproc]");
}

#[test]
fn other_servicegroup_variables_are_ignored() {
    let c = ConfigLoader::new()
        .env_from([
            ("SERVICEGROUP_TEST_PG_URL", "postgres://x"),
            ("SERVICEGROUP_CONFIG", "/etc/servicegroup.toml"),
            ("servicegroup_driver", "mc"),
            // No linked driver declares [db]: not a table prefix here, so not a typo.
            ("SERVICEGROUP_DB__URI", "sqlite://x"),
        ])
        .load()
        .unwrap()
        .config;
    assert_eq!(c, Config::default());
}

#[test]
fn env_errors_name_key_and_variable() {
    for (var, value, key, why) in [
        (
            "SERVICEGROUP_REPORT_INTERVAL",
            "0",
            "report_interval",
            "greater than zero",
        ),
        (
            "SERVICEGROUP_SERVICE_DOWN_TIME",
            "-3",
            "service_down_time",
            "greater than zero",
        ),
        ("SERVICEGROUP_CALL_TIMEOUT", "inf", "call_timeout", "finite"),
        (
            "SERVICEGROUP_WATCH_INTERVAL",
            "often",
            "watch_interval",
            "\"often\"",
        ),
        ("SERVICEGROUP_DRIVER", " ", "driver", "must not be empty"),
    ] {
        let err = env_error(&[(var, value)]);
        assert!(
            err.contains(&format!(
                "invalid value for `{key}` in environment variable {var}: "
            )),
            "{var}={value:?}: {err}"
        );
        assert!(err.contains(why), "{var}={value:?}: {err}");
    }
    let err = env_error(&[("SERVICEGROUP_OPTIONS__MINE", "x")]);
    assert!(err.contains("SERVICEGROUP_OPTIONS__MINE"), "{err}");
}

/// nova.conf the way deployments write it; core reads only its own three options.
const NOVA_CONF: &str = r#"# nova.conf written by a deployment tool
servicegroup_driver = "db"
; keys above belong to [DEFAULT]

[DEFAULT]
debug = True
transport_url = rabbit://openstack:RABBIT_PASS@controller
#service_down_time = 60
report_interval = 5
report_interval = 7
service_down_time = '30'
servicegroup_driver = mc
memcached_servers = 10.0.0.1:11211
instances_path = C:\OpenStack\Instances

[database]
connection = mysql+pymysql://nova:Sup3rS3cret@controller/nova?charset=utf8

[libvirt]
virt_type = kvm
"#;

#[test]
fn nova_conf_core_options_are_read_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "nova.conf", NOVA_CONF);
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    let c = &loaded.config;
    assert_eq!(c.driver, "mc");
    assert_eq!(c.report_interval, Duration::from_secs(7));
    assert_eq!(c.service_down_time, Duration::from_secs(30));
    assert_eq!(c.call_timeout, Duration::from_secs(10));
    let file = Origin::File(path);
    for key in ["driver", "report_interval", "service_down_time"] {
        assert_eq!(loaded.origin(key), Some(&file), "{key}");
    }
    for key in ["call_timeout", "watch_interval"] {
        assert_eq!(loaded.origin(key), Some(&Origin::Default), "{key}");
    }
}

#[test]
fn nova_conf_forms() {
    let dir = tempfile::tempdir().unwrap();
    // Keys before any section are [DEFAULT].
    let path = write(&dir, "a.conf", "[DEFAULT]\n");
    std::fs::write(
        &path,
        "servicegroup_driver = inproc\nreport_interval = 3\n[DEFAULT]\n",
    )
    .unwrap();
    let c = ConfigLoader::new().file(&path).load().unwrap().config;
    assert_eq!(
        (c.driver.as_str(), c.report_interval),
        ("inproc", Duration::from_secs(3))
    );

    // No section at all, and not TOML: a nova.conf fragment.
    let path = write(
        &dir,
        "sg.conf",
        "servicegroup_driver = mc\nservice_down_time = 90\n",
    );
    let c = ConfigLoader::new().file(&path).load().unwrap().config;
    assert_eq!(
        (c.driver.as_str(), c.service_down_time),
        ("mc", Duration::from_secs(90))
    );

    // `<None>` is unset; the last value wins.
    let path = write(
        &dir,
        "n.conf",
        "[DEFAULT]\nservicegroup_driver = <None>\nreport_interval = 4\nreport_interval = <None>\n",
    );
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    assert_eq!(loaded.config.driver, "db");
    assert_eq!(loaded.origin("driver"), Some(&Origin::Default));
    assert_eq!(loaded.config.report_interval, Duration::from_secs(10));

    // `[default]` is not `[DEFAULT]`.
    let path = write(
        &dir,
        "d.conf",
        "[DEFAULT]\n[default]\nreport_interval = 1\n",
    );
    let c = ConfigLoader::new().file(&path).load().unwrap().config;
    assert_eq!(c.report_interval, Duration::from_secs(10));

    // Nova's integers and our duration forms.
    let path = write(
        &dir,
        "i.conf",
        "[DEFAULT]\nreport_interval = 0.25\nservice_down_time = 2m\n",
    );
    let c = ConfigLoader::new().file(&path).load().unwrap().config;
    assert_eq!(c.report_interval, Duration::from_millis(250));
    assert_eq!(c.service_down_time, Duration::from_secs(120));
}

#[test]
fn nova_conf_errors_name_key_and_file_without_the_password() {
    for (value, why) in [
        ("0", "duration must be greater than zero, found 0"),
        ("-10", "greater than zero, found -10"),
        ("ten", "\"ten\""),
        ("", "empty"),
        ("NaN", "finite"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "nova.conf",
            &format!(
                "[DEFAULT]\nreport_interval = {value}\ntransport_url = rabbit://nova:Sup3rS3cret@mq\n"
            ),
        );
        let err = ConfigLoader::new()
            .file(&path)
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "invalid value for `report_interval` in {}: ",
                path.display()
            )),
            "{value:?}: {err}"
        );
        assert!(err.contains(why), "{value:?}: {err}");
        assert!(!err.contains("Sup3rS3cret"), "{err}");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "nova.conf", "[DEFAULT]\nreport_interval = 0\n");
    let err = ConfigLoader::new().file(&path).load().unwrap_err();
    assert_eq!(
        err.message(),
        format!(
            "invalid value for `report_interval` in {}: duration must be greater than zero, found 0",
            path.display()
        )
    );

    let path = write(&dir, "bad.conf", "[DEFAULT]\nreport_interval\n");
    let err = ConfigLoader::new().file(&path).load().unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn file_then_env_then_override() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "servicegroup.toml",
        "driver = \"db\"\nreport_interval = 5\nservice_down_time = 50\ncall_timeout = 4\n",
    );
    let loaded = ConfigLoader::new()
        .set_from("--driver", "driver", "inproc")
        .env_from([
            ("SERVICEGROUP_DRIVER", "mc"),
            ("SERVICEGROUP_REPORT_INTERVAL", "6"),
        ])
        .file(&path)
        .set("call_timeout", Duration::from_secs(3))
        .load()
        .unwrap();
    let c = &loaded.config;
    assert_eq!(c.driver, "inproc");
    assert_eq!(c.report_interval, Duration::from_secs(6));
    assert_eq!(c.service_down_time, Duration::from_secs(50));
    assert_eq!(c.call_timeout, Duration::from_secs(3));
    let o = |k: &str| loaded.origin(k).cloned().unwrap();
    assert_eq!(o("driver"), Origin::Override("--driver".into()));
    assert_eq!(
        o("report_interval"),
        Origin::Env("SERVICEGROUP_REPORT_INTERVAL".into())
    );
    assert_eq!(o("service_down_time"), Origin::File(path));
    assert_eq!(o("call_timeout"), Origin::Override("code".into()));
    assert_eq!(o("watch_interval"), Origin::Default);
    assert_eq!(o("driver").to_string(), "override --driver");
    assert_eq!(o("report_interval").label(), "env");
}

#[test]
fn later_overrides_win_and_override_with_skips_none() {
    #[derive(Serialize)]
    struct Flags {
        driver: Option<String>,
        report_interval: Option<&'static str>,
        service_down_time: Option<f64>,
    }
    let flags = Flags {
        driver: None,
        report_interval: Some("1s"),
        service_down_time: Some(4.5),
    };
    let loaded = ConfigLoader::new()
        .driver("inproc")
        .set("report_interval", "3s")
        .override_with("flags", &flags)
        .load()
        .unwrap();
    assert_eq!(loaded.config.driver, "inproc");
    assert_eq!(loaded.config.report_interval, Duration::from_secs(1));
    assert_eq!(loaded.config.service_down_time, Duration::from_millis(4500));
    assert_eq!(
        loaded.origin("driver"),
        Some(&Origin::Override("code".into()))
    );
    assert_eq!(
        loaded.origin("report_interval"),
        Some(&Origin::Override("flags".into()))
    );
}

#[test]
fn override_errors_name_key_and_override() {
    let err = ConfigLoader::new()
        .set_from("--report-interval", "report_interval", "0s")
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid value for `report_interval` in override (--report-interval): "),
        "{err}"
    );
    let err = ConfigLoader::new()
        .set("report.interval", "x")
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown key `report` in override (code)"),
        "{err}"
    );
    let err = ConfigLoader::new()
        .override_with("flags", &42)
        .load()
        .unwrap_err()
        .to_string();
    assert!(err.contains("override (flags)"), "{err}");
}

#[test]
fn password_from_any_source_never_in_errors() {
    let secret = "Xy7pass/w@rd";
    let url = format!("postgresql://nova:{secret}@db.example/nova");
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "p.toml",
        &format!("driver = \"{url}\"\ncall_timeout = \"{url}\"\n"),
    );
    let errors = [
        ConfigLoader::new().file(&path).load().unwrap_err(),
        ConfigLoader::new()
            .set("driver", url.as_str())
            .set("report_interval", url.as_str())
            .load()
            .unwrap_err(),
        ConfigLoader::new()
            .env_from([("SERVICEGROUP_WATCH_INTERVAL", url.as_str())])
            .load()
            .unwrap_err(),
        ConfigLoader::new()
            .set("options.x", url.as_str())
            .load()
            .unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.kind(), ErrorKind::Config);
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains("w@rd"), "{shown}");
        }
    }
}

/// A `tracing` writer that keeps everything written, to check the WARN.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn down_time_not_above_report_interval_uses_two_and_a_half_times_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "nova.conf",
        "[DEFAULT]\nreport_interval = 10\nservice_down_time = 10\n",
    );
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let loaded = tracing::subscriber::with_default(subscriber, || {
        ConfigLoader::new().file(&path).load().unwrap()
    });
    assert_eq!(loaded.config.service_down_time, Duration::from_secs(25));
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("service_down_time (10s)"), "{log}");
    assert!(log.contains("report_interval (10s)"), "{log}");
    assert!(log.contains("25s"), "{log}");

    let c = ConfigLoader::new()
        .set("report_interval", 10)
        .set("service_down_time", 10.5)
        .load()
        .unwrap()
        .config;
    assert_eq!(c.service_down_time, Duration::from_millis(10_500));
}

#[test]
fn coalesce_window_defaults_to_5ms_reads_from_env_and_refuses_zero() {
    let c = ConfigLoader::new()
        .env_from(std::iter::empty::<(&str, &str)>())
        .load()
        .unwrap()
        .config;
    assert_eq!(c.coalesce_window, Duration::from_millis(5));
    let c = ConfigLoader::new()
        .env_from([("SERVICEGROUP_COALESCE_WINDOW", "20ms")])
        .load()
        .unwrap()
        .config;
    assert_eq!(c.coalesce_window, Duration::from_millis(20));
    let text = env_error(&[("SERVICEGROUP_COALESCE_WINDOW", "0")]);
    assert!(text.contains("coalesce_window"), "{text}");
    let mut c = Config::default();
    c.coalesce_window = Duration::ZERO;
    let err = c.validated().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("`coalesce_window`"), "{err}");
}
