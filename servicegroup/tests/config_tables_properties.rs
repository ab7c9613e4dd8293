//! The bundled drivers' tables (`[db]`, `[mc]`, `[etcd]`, `[relay]`, `[inproc]`)
//! fuzzed through the real loader, as core's own keys are in
//! `servicegroup-core/tests/config_properties.rs`: every key of every table, found from
//! `Config::entries` (so a key added later is fuzzed too), given a value of every
//! type in a TOML file with its driver selected (so the driver's own rules run), and
//! the nova.conf options the drivers read given any text. Every outcome is a loaded
//! configuration or a `Config` error naming the dotted key and the file (or, for
//! what TOML itself refuses, the line), never echoing a secret, never a panic.
#![cfg(all(
    feature = "db",
    feature = "mc",
    feature = "inproc",
    feature = "etcd",
    feature = "relay"
))]

use proptest::prelude::*;
use servicegroup::{Config, ConfigLoader, ErrorKind};

/// Every key of every bundled driver's table, and whether it is secret.
fn table_keys() -> Vec<(String, bool)> {
    let keys: Vec<(String, bool)> = Config::default()
        .entries()
        .into_iter()
        .filter(|e| {
            ["db.", "mc.", "etcd.", "relay.", "inproc."]
                .iter()
                .any(|t| e.key.starts_with(t))
        })
        .map(|e| (e.key, e.secret))
        .collect();
    assert!(keys.len() >= 15, "too few keys: {keys:?}");
    keys
}

/// A TOML value of any type, rendered.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551615".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("nan".to_owned()),
        Just("1.5e300".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[ -~]{0,40}".prop_map(|s| format!("{s:?}")),
        Just("\"sekrit-value-xyz\"".to_owned()),
        Just("\"postgres://u:sekrit-value-xyz@h/db\"".to_owned()),
        Just("\"127.0.0.1:11211\"".to_owned()),
        Just("\"http://127.0.0.1:1\"".to_owned()),
        Just("\"1e-10\"".to_owned()),
        Just("\"1e19\"".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just("[]".to_owned()),
        Just("[1, 2]".to_owned()),
        Just("[\"a:1\", \"\"]".to_owned()),
        Just("{}".to_owned()),
        Just("{ a = 1 }".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 600,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_table_key_with_a_value_of_any_type_loads_or_names_key_and_file(
        key in proptest::sample::select(table_keys()),
        value in toml_value(),
    ) {
        let (key, secret) = key;
        let (table, leaf) = key.split_once('.').unwrap();
        let driver = table;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sg.toml");
        let text = format!("driver = \"{driver}\"\n[{table}]\n{leaf} = {value}\n");
        std::fs::write(&path, &text).unwrap();
        if let Err(e) = ConfigLoader::new().file(&path).load() {
            prop_assert_eq!(e.kind(), ErrorKind::Config);
            let message = e.message();
            prop_assert!(
                // `mc.servers.0` for an item of a list names the key too.
                message.contains(&format!("`{key}`"))
                    || message.contains(&format!("`{key}."))
                    || message.contains("not valid TOML at line"),
                "{text:?}: {message}"
            );
            prop_assert!(message.contains(&path.display().to_string()), "{text:?}: {message}");
            if secret {
                prop_assert!(!message.contains("sekrit-value-xyz"), "{text:?}: {message}");
            }
            prop_assert!(message.len() < 2_000, "{} bytes", message.len());
        }
    }

    #[test]
    fn nova_conf_options_of_the_drivers_load_or_name_key_and_file(
        option in proptest::sample::select(&[
            ("database", "connection", "db.url", "db"),
            ("DEFAULT", "memcached_servers", "mc.servers", "mc"),
            ("cache", "memcache_servers", "mc.servers", "mc"),
        ][..]),
        value in "[^\r\n]{0,200}",
    ) {
        let (section, name, key, driver) = option;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nova.conf");
        let text = format!("[DEFAULT]\nservicegroup_driver = {driver}\n[{section}]\n{name} = {value}\n");
        std::fs::write(&path, &text).unwrap();
        if let Err(e) = ConfigLoader::new().file(&path).load() {
            prop_assert_eq!(e.kind(), ErrorKind::Config);
            let message = e.message();
            prop_assert!(
                message.contains(&format!("`{key}`")) || message.contains("line"),
                "{text:?}: {message}"
            );
            prop_assert!(message.contains(&path.display().to_string()), "{text:?}: {message}");
            prop_assert!(message.len() < 2_000, "{} bytes", message.len());
        }
    }
}
