//! Precedence (defaults < file < environment < overrides), origins, overrides from
//! code and flags, and Nova's `service_down_time` rule.
// The keys of every bundled driver: needs all of them linked.
#![cfg(all(feature = "db", feature = "mc", feature = "inproc"))]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use servicegroup::db::DbConfig;
use servicegroup::inproc::InprocConfig;
use servicegroup::mc::McConfig;
use servicegroup::{Config, ConfigLoader, ErrorKind, Origin};

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

/// The leaf keys every origins map has (the list; `Config` may grow more).
const KEYS: [&str; 11] = [
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
];

fn toml_file(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("servicegroup.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn file_then_env_then_override() {
    let dir = tempfile::tempdir().unwrap();
    let path = toml_file(
        &dir,
        "driver = \"db\"\nreport_interval = 5\nservice_down_time = 50\ncall_timeout = 4\n[db]\npool_size = 2\n",
    );
    let loaded = ConfigLoader::new()
        // Builder order does not matter: overrides still win over env, env over the file.
        .set_from("--driver", "driver", "inproc")
        .env_from([
            ("SERVICEGROUP_DRIVER", "mc"),
            ("SERVICEGROUP_REPORT_INTERVAL", "6"),
        ])
        .file(&path)
        .set("db.pool_size", 3u32)
        .load()
        .unwrap();
    let c = &loaded.config;
    assert_eq!(c.driver, "inproc");
    assert_eq!(c.report_interval, Duration::from_secs(6));
    assert_eq!(c.service_down_time, Duration::from_secs(50));
    assert_eq!(c.call_timeout, Duration::from_secs(4));
    assert_eq!(db(c).pool_size, 3);
    assert_eq!(db(c).timeout, Duration::from_secs(5));

    let file = Origin::File(path);
    let o = |k: &str| loaded.origin(k).cloned().unwrap();
    assert_eq!(o("driver"), Origin::Override("--driver".into()));
    assert_eq!(
        o("report_interval"),
        Origin::Env("SERVICEGROUP_REPORT_INTERVAL".into())
    );
    assert_eq!(o("service_down_time"), file);
    assert_eq!(o("call_timeout"), file);
    assert_eq!(o("db.pool_size"), Origin::Override("code".into()));
    assert_eq!(o("db.timeout"), Origin::Default);
    assert_eq!(o("db.url"), Origin::Default);
    assert_eq!(o("watch_interval"), Origin::Default);
    for key in KEYS {
        assert!(
            loaded.origins.contains_key(key),
            "{key}: {:?}",
            loaded.origins
        );
    }

    assert_eq!(o("driver").to_string(), "override --driver");
    assert_eq!(o("report_interval").label(), "env");
}

#[test]
fn nova_alias_in_a_file_and_driver_in_env_do_not_clash() {
    let dir = tempfile::tempdir().unwrap();
    let path = toml_file(&dir, "servicegroup_driver = \"db\"\n");
    let c = ConfigLoader::new()
        .file(&path)
        .env_from([("SERVICEGROUP_DRIVER", "mc")])
        .load()
        .unwrap()
        .config;
    assert_eq!(c.driver, "mc");
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
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let err = err.to_string();
    assert!(
        err.contains("invalid value for `report_interval` in override (--report-interval): "),
        "{err}"
    );

    let err = ConfigLoader::new()
        .set("db.uri", "x")
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown key `db.uri` in override (code)"),
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
    let path = toml_file(
        &dir,
        &format!("[db]\nurl = \"{url}\"\npool_size = \"{url}\"\n"),
    );
    let errors = [
        ConfigLoader::new().file(&path).load().unwrap_err(),
        ConfigLoader::new()
            .set("db.url", url.as_str())
            .set("db.timeout", url.as_str())
            .load()
            .unwrap_err(),
        ConfigLoader::new()
            .set("inproc.name", 5)
            .set("driver", url.as_str())
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
    let path = dir.path().join("nova.conf");
    std::fs::write(
        &path,
        "[DEFAULT]\nreport_interval = 10\nservice_down_time = 10\n",
    )
    .unwrap();

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
    assert_eq!(loaded.config.report_interval, Duration::from_secs(10));
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("service_down_time (10s)"), "{log}");
    assert!(log.contains("report_interval (10s)"), "{log}");
    assert!(log.contains("25s"), "{log}");

    // Just above report_interval: kept as configured.
    let c = ConfigLoader::new()
        .set("report_interval", 10)
        .set("service_down_time", 10.5)
        .load()
        .unwrap()
        .config;
    assert_eq!(c.service_down_time, Duration::from_millis(10_500));
}
