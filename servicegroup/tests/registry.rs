//! The facade links exactly the drivers its enabled features name.

use servicegroup::Registry;

#[test]
fn registry_lists_exactly_the_enabled_drivers() {
    let mut expected: Vec<&str> = Vec::new();
    if cfg!(feature = "db") {
        expected.push("db");
    }
    if cfg!(feature = "inproc") {
        expected.push("inproc");
    }
    if cfg!(feature = "mc") {
        expected.push("mc");
    }
    if cfg!(feature = "etcd") {
        expected.push("etcd");
    }
    if cfg!(feature = "relay") {
        expected.push("relay");
    }
    expected.sort();
    assert_eq!(Registry::names(), expected);
}

#[test]
fn unknown_driver_is_a_config_error_listing_the_registered_ones() {
    let err = Registry::get("zookeeper").unwrap_err();
    assert_eq!(err.kind(), servicegroup::ErrorKind::Config);
    let msg = err.to_string();
    assert!(msg.contains("\"zookeeper\""), "{msg}");
    for name in Registry::names() {
        assert!(msg.contains(name), "{msg}");
    }
}
