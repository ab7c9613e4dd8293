//! `SERVICEGROUP_*` environment variables, injected with `env_from` (the process
//! environment is never touched).
// The keys of every bundled driver: needs all of them linked.
#![cfg(all(feature = "db", feature = "mc", feature = "inproc"))]

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

#[test]
fn every_variable_maps_to_its_key() {
    let vars = [
        ("SERVICEGROUP_DRIVER", "inproc"),
        ("SERVICEGROUP_REPORT_INTERVAL", "200ms"),
        ("SERVICEGROUP_SERVICE_DOWN_TIME", "1"),
        ("SERVICEGROUP_CALL_TIMEOUT", "0.5"),
        ("SERVICEGROUP_WATCH_INTERVAL", "50ms"),
        ("SERVICEGROUP_DB__URL", "postgres://nova:pw123456@db/nova"),
        ("SERVICEGROUP_DB__POOL_SIZE", "4"),
        ("SERVICEGROUP_DB__TIMEOUT", "2s"),
        ("SERVICEGROUP_MC__SERVERS", "a:11211, b:11211,"),
        ("SERVICEGROUP_MC__TIMEOUT", "300ms"),
        ("SERVICEGROUP_INPROC__NAME", "10"),
        ("PATH", "/usr/bin"),
    ];
    let loaded = ConfigLoader::new().env_from(vars).load().unwrap();
    let c = &loaded.config;
    assert_eq!(c.driver, "inproc");
    assert_eq!(c.report_interval, Duration::from_millis(200));
    assert_eq!(c.service_down_time, Duration::from_secs(1));
    assert_eq!(c.call_timeout, Duration::from_millis(500));
    assert_eq!(c.watch_interval, Some(Duration::from_millis(50)));
    assert_eq!(
        db(c).url.unwrap().expose(),
        "postgres://nova:pw123456@db/nova"
    );
    assert_eq!(db(c).pool_size, 4);
    assert_eq!(db(c).timeout, Duration::from_secs(2));
    assert_eq!(mc(c).servers, ["a:11211", "b:11211"]);
    assert_eq!(mc(c).timeout, Duration::from_millis(300));
    // A name that looks like a number stays a string.
    assert_eq!(inproc(c).name, "10");

    for (var, _) in vars.iter().filter(|(v, _)| v.starts_with("SERVICEGROUP_")) {
        let key = var
            .trim_start_matches("SERVICEGROUP_")
            .to_lowercase()
            .replace("__", ".");
        assert_eq!(
            loaded.origin(&key),
            Some(&Origin::Env((*var).to_owned())),
            "{key}"
        );
    }
}

#[test]
fn values_that_look_like_other_types_stay_strings() {
    let loaded = ConfigLoader::new()
        .env_from([
            ("SERVICEGROUP_DB__URL", "123"),
            ("SERVICEGROUP_INPROC__NAME", "true"),
            ("SERVICEGROUP_DRIVER", "[inproc]"),
        ])
        .load()
        .unwrap();
    assert_eq!(db(&loaded.config).url.unwrap().expose(), "123");
    assert_eq!(inproc(&loaded.config).name, "true");
    assert_eq!(loaded.config.driver, "[inproc]");
}

#[test]
fn windows_path_survives() {
    let c = ConfigLoader::new()
        .env_from([("SERVICEGROUP_DB__URL", r"sqlite:///C:\Users\nova\sg.db")])
        .load()
        .unwrap()
        .config;
    assert_eq!(
        db(&c).url.unwrap().expose(),
        r"sqlite:///C:\Users\nova\sg.db"
    );
}

#[test]
fn other_servicegroup_variables_are_ignored() {
    let c = ConfigLoader::new()
        .env_from([
            ("SERVICEGROUP_TEST_PG_URL", "postgres://x"),
            ("SERVICEGROUP_CONFIG", "/etc/servicegroup.toml"),
            ("servicegroup_driver", "mc"),
        ])
        .load()
        .unwrap()
        .config;
    assert_eq!(c, Config::default());
}

#[test]
fn third_party_options() {
    let c = ConfigLoader::new()
        .env_from([
            ("SERVICEGROUP_OPTIONS__MINE__RETRIES", "3"),
            ("SERVICEGROUP_OPTIONS__MINE__ENDPOINT", "http://x"),
        ])
        .load()
        .unwrap()
        .config;
    assert_eq!(
        c.options("mine")
            .unwrap()
            .get("retries")
            .and_then(Value::as_u64),
        Some(3)
    );
    assert_eq!(
        c.options("mine")
            .unwrap()
            .get("endpoint")
            .and_then(Value::as_str),
        Some("http://x")
    );
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
fn errors_name_key_and_variable() {
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
        ("SERVICEGROUP_DB__TIMEOUT", "", "db.timeout", "empty"),
        (
            "SERVICEGROUP_DB__POOL_SIZE",
            "lots",
            "db.pool_size",
            "expected u32",
        ),
        ("SERVICEGROUP_DB__POOL_SIZE", "-1", "db.pool_size", "-1"),
        ("SERVICEGROUP_MC__TIMEOUT", "1x", "mc.timeout", "\"1x\""),
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
}

#[test]
fn unknown_table_variables_are_errors() {
    let err = env_error(&[("SERVICEGROUP_DB__URI", "sqlite://x")]);
    assert!(err.contains("SERVICEGROUP_DB__URI"), "{err}");
    assert!(err.contains("SERVICEGROUP_DB__URL"), "{err}");
    let err = env_error(&[("SERVICEGROUP_OPTIONS__MINE", "x")]);
    assert!(err.contains("SERVICEGROUP_OPTIONS__MINE"), "{err}");
}

#[test]
fn password_never_in_errors() {
    let err = env_error(&[
        ("SERVICEGROUP_DB__URL", "postgres://nova:Pa55word99@db/nova"),
        (
            "SERVICEGROUP_DB__POOL_SIZE",
            "postgres://nova:Pa55word99@db/nova",
        ),
    ]);
    assert!(err.contains("SERVICEGROUP_DB__POOL_SIZE"), "{err}");
    assert!(!err.contains("Pa55word99"), "{err}");
}
