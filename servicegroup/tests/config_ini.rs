//! Reading nova.conf-style INI files as-is.
// The keys of every bundled driver: needs all of them linked.
#![cfg(all(feature = "db", feature = "mc", feature = "inproc"))]

use std::path::PathBuf;
use std::time::Duration;

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

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A nova.conf the way deployments write them: keys before the first section,
/// comments, quotes, `<None>`, repeated keys, a multi-line list, a database password,
/// and plenty of options of other services.
const NOVA_CONF: &str = r#"# nova.conf written by a deployment tool
servicegroup_driver = "db"
; keys above belong to [DEFAULT]

[DEFAULT]
debug = True
my_ip = 10.0.0.5
transport_url = rabbit://openstack:RABBIT_PASS@controller
#service_down_time = 60
report_interval = 5
report_interval = 7
service_down_time = '30'
servicegroup_driver = mc
memcached_servers = 10.0.0.1:11211,
    10.0.0.2:11211,
    '10.0.0.3:11211'
instances_path = C:\OpenStack\Instances

[api]
auth_strategy = keystone

[database]
connection = mysql+pymysql://nova:Sup3rS3cret@controller/nova?charset=utf8
max_pool_size = <None>

[cache]
memcache_servers = 10.9.9.9:11211

[libvirt]
virt_type = kvm
images_type = "rbd"
"#;

#[test]
fn nova_conf_is_read_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "nova.conf", NOVA_CONF);
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    let c = &loaded.config;
    // [DEFAULT] after the section-less keys: the last value wins, quotes stripped.
    assert_eq!(c.driver, "mc");
    assert_eq!(c.report_interval, Duration::from_secs(7));
    assert_eq!(c.service_down_time, Duration::from_secs(30));
    // DEFAULT memcached_servers (multi-line list) wins over [cache] memcache_servers.
    assert_eq!(
        mc(c).servers,
        ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]
    );
    assert_eq!(
        db(c).url.unwrap().expose(),
        "mysql+pymysql://nova:Sup3rS3cret@controller/nova?charset=utf8"
    );
    // Not mapped: defaults.
    assert_eq!(c.call_timeout, Duration::from_secs(10));
    assert_eq!(db(c).pool_size, 8);

    let file = Origin::File(path.clone());
    for key in [
        "driver",
        "report_interval",
        "service_down_time",
        "mc.servers",
        "db.url",
    ] {
        assert_eq!(loaded.origin(key), Some(&file), "{key}");
    }
    for key in [
        "call_timeout",
        "db.pool_size",
        "db.timeout",
        "mc.timeout",
        "inproc.name",
    ] {
        assert_eq!(loaded.origin(key), Some(&Origin::Default), "{key}");
    }
}

#[test]
fn keys_before_any_section_are_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "nova.conf",
        "servicegroup_driver = inproc\nreport_interval = 3\n[database]\nconnection = sqlite:////var/lib/nova/nova.sqlite\n",
    );
    let c = ConfigLoader::new().file(&path).load().unwrap().config;
    assert_eq!(c.driver, "inproc");
    assert_eq!(c.report_interval, Duration::from_secs(3));
    assert_eq!(
        db(&c).url.unwrap().expose(),
        "sqlite:////var/lib/nova/nova.sqlite"
    );
}

#[test]
fn a_file_of_default_keys_only_is_read_as_ini() {
    // No section at all, and not TOML (`mc` is not quoted): a nova.conf fragment.
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "sg.conf",
        "servicegroup_driver = mc\nservice_down_time = 90\n",
    );
    let c = ConfigLoader::new().file(&path).load().unwrap().config;
    assert_eq!(c.driver, "mc");
    assert_eq!(c.service_down_time, Duration::from_secs(90));
}

#[test]
fn none_means_unset_and_cache_servers_are_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "nova.conf",
        "[DEFAULT]\nservicegroup_driver = <None>\nmemcached_servers = <None>\nreport_interval = 4\nreport_interval = <None>\n\n[cache]\nenabled = true\nmemcache_servers = a:11211,b:11211\n",
    );
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    assert_eq!(loaded.config.driver, "db");
    assert_eq!(loaded.origin("driver"), Some(&Origin::Default));
    // The last value is `<None>`: unset, so the default.
    assert_eq!(loaded.config.report_interval, Duration::from_secs(10));
    assert_eq!(mc(&loaded.config).servers, ["a:11211", "b:11211"]);
    assert_eq!(loaded.origin("mc.servers"), Some(&Origin::File(path)));
}

#[test]
fn section_names_are_case_insensitive_except_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "nova.conf",
        "[DEFAULT]\n[Database]\nconnection = sqlite:///x.db\n[default]\nreport_interval = 1\n",
    );
    let c = ConfigLoader::new().file(&path).load().unwrap().config;
    assert_eq!(db(&c).url.unwrap().expose(), "sqlite:///x.db");
    // `[default]` is not `[DEFAULT]` (oslo.config: another, unknown section).
    assert_eq!(c.report_interval, Duration::from_secs(10));
}

#[test]
fn nova_integers_and_our_duration_forms() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "nova.conf",
        "[DEFAULT]\nreport_interval = 0.25\nservice_down_time = 2m\n",
    );
    let c = ConfigLoader::new().file(&path).load().unwrap().config;
    assert_eq!(c.report_interval, Duration::from_millis(250));
    assert_eq!(c.service_down_time, Duration::from_secs(120));
}

#[test]
fn bad_values_name_key_and_file_without_the_password() {
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
                "[DEFAULT]\nreport_interval = {value}\n[database]\nconnection = postgresql://nova:Sup3rS3cret@db/nova\n"
            ),
        );
        let err = ConfigLoader::new().file(&path).load().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let err = err.to_string();
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
}

#[test]
fn the_example_message_shape() {
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
}

#[test]
fn windows_paths_and_odd_passwords_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "nova.conf",
        "[DEFAULT]\nservicegroup_driver = db\n[database]\nconnection = sqlite:///C:\\nova\\x41\\nova.sqlite\n",
    );
    let c = ConfigLoader::new().file(&path).load().unwrap().config;
    assert_eq!(
        db(&c).url.unwrap().expose(),
        r"sqlite:///C:\nova\x41\nova.sqlite"
    );

    let path = write(
        &dir,
        "nova2.conf",
        "[database]\nconnection = \"mysql://nova:p#ss;w'rd@db/nova\"\n",
    );
    let c = ConfigLoader::new().file(&path).load().unwrap().config;
    assert_eq!(
        db(&c).url.unwrap().expose(),
        "mysql://nova:p#ss;w'rd@db/nova"
    );
}

#[test]
fn unparsable_ini_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "nova.conf", "[DEFAULT]\nreport_interval\n");
    let err = ConfigLoader::new().file(&path).load().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}
