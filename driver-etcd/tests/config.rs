//! The etcd driver's own table, `[etcd]`: endpoints from TOML and the environment
//! (comma-separated), its rules reported with key and source, the password masked
//! everywhere it could show, the mirror keys, and authentication against a real
//! cluster with authentication enabled (a read-only user's listings too).

mod common;

use std::path::PathBuf;
use std::process::Command;

use servicegroup_core::{Config, ConfigLoader, ErrorKind, ServiceGroup, Value};
use servicegroup_driver_etcd::EtcdConfig;

const PASSWORD: &str = "Sup3rS3cret-etcd";

fn write(dir: &tempfile::TempDir, file: &str, text: &str) -> PathBuf {
    let path = dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn endpoints_from_toml_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "sg.toml",
        "driver = \"etcd\"\n[etcd]\nendpoints = [\"http://10.0.0.1:2379\"]\nprefix = \"nova\"\ntimeout = 3\n",
    );
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    let etcd: EtcdConfig = loaded.config.driver_config("etcd").unwrap();
    assert_eq!(etcd.endpoint_list(), vec!["http://10.0.0.1:2379"]);
    assert_eq!(etcd.prefix, "nova");
    assert_eq!(etcd.timeout, std::time::Duration::from_secs(3));

    let loaded = ConfigLoader::new()
        .env_from([
            ("SERVICEGROUP_DRIVER", "etcd"),
            (
                "SERVICEGROUP_ETCD__ENDPOINTS",
                "http://10.0.0.1:2379,http://10.0.0.2:2379,http://10.0.0.3:2379",
            ),
            ("SERVICEGROUP_ETCD__USERNAME", "nova"),
            ("SERVICEGROUP_ETCD__PASSWORD", PASSWORD),
        ])
        .load()
        .unwrap();
    let etcd: EtcdConfig = loaded.config.driver_config("etcd").unwrap();
    assert_eq!(etcd.endpoint_list().len(), 3, "{:?}", etcd.endpoints);
    assert_eq!(etcd.password.unwrap().expose(), PASSWORD);
    assert!(etcd.mirror, "mirrors are on by default");
    assert_eq!(etcd.mirror_idle, std::time::Duration::from_secs(300));

    let loaded = ConfigLoader::new()
        .env_from([
            ("SERVICEGROUP_DRIVER", "etcd"),
            ("SERVICEGROUP_ETCD__MIRROR", "false"),
            ("SERVICEGROUP_ETCD__MIRROR_IDLE", "30s"),
        ])
        .load()
        .unwrap();
    let etcd: EtcdConfig = loaded.config.driver_config("etcd").unwrap();
    assert!(!etcd.mirror);
    assert_eq!(etcd.mirror_idle, std::time::Duration::from_secs(30));
    let err = ConfigLoader::new()
        .env_from([
            ("SERVICEGROUP_DRIVER", "etcd"),
            ("SERVICEGROUP_ETCD__MIRROR_IDLE", "0s"),
        ])
        .load()
        .unwrap_err();
    assert!(
        err.message()
            .contains("`etcd.mirror_idle` in environment variable SERVICEGROUP_ETCD__MIRROR_IDLE"),
        "{err}"
    );
}

#[test]
fn the_drivers_rules_name_key_and_source() {
    let err = ConfigLoader::new()
        .env_from([
            ("SERVICEGROUP_DRIVER", "etcd"),
            ("SERVICEGROUP_ETCD__ENDPOINTS", "10.0.0.1:2379"),
        ])
        .load()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.message().starts_with(
            "invalid value for `etcd.endpoints` in environment variable SERVICEGROUP_ETCD__ENDPOINTS: entry \"10.0.0.1:2379\" has no http:// or https:// scheme"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_password_without_user_is_refused_when_the_driver_is_built() {
    let loaded = ConfigLoader::new()
        .env_from([
            ("SERVICEGROUP_DRIVER", "etcd"),
            ("SERVICEGROUP_ETCD__PASSWORD", PASSWORD),
        ])
        .load()
        .unwrap();
    let err = ServiceGroup::connect(loaded.config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("`etcd.username`"), "{err}");
    assert!(!err.to_string().contains(PASSWORD), "{err}");
}

#[test]
fn the_password_is_secret_everywhere_it_could_show() {
    let mut config = Config::with_driver("etcd");
    config.set("etcd.username", "nova").unwrap();
    config.set("etcd.password", PASSWORD).unwrap();
    let entry = config
        .entries()
        .into_iter()
        .find(|e| e.key == "etcd.password")
        .unwrap();
    assert!(entry.secret);
    assert_eq!(entry.value, Some(Value::from("***")));
    assert!(!format!("{config:?}").contains(PASSWORD));
    let etcd: EtcdConfig = config.driver_config("etcd").unwrap();
    assert!(!format!("{etcd:?}").contains(PASSWORD));
    // A wrongly typed password is not echoed.
    let err = ConfigLoader::new()
        .set("etcd.password", vec![PASSWORD])
        .load()
        .unwrap_err()
        .to_string();
    assert!(err.contains("`etcd.password`"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}

fn etcdctl(endpoint: &str, args: &[&str]) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .output()
        .expect("etcdctl (Debian's etcd-client, installed by scripts/lib/etcd.sh)");
    assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_works_and_a_wrong_password_never_shows() {
    let cluster = tokio::task::spawn_blocking(common::Cluster::start)
        .await
        .unwrap();
    let endpoint = cluster.endpoints[0].clone();
    let root_password = format!("root-{PASSWORD}");
    tokio::task::spawn_blocking({
        let endpoint = endpoint.clone();
        let root = format!("root:{root_password}");
        let user = format!("nova:{PASSWORD}");
        let viewer = format!("viewer:{PASSWORD}");
        move || {
            etcdctl(&endpoint, &["user", "add", &root]);
            etcdctl(&endpoint, &["user", "grant-role", "root", "root"]);
            etcdctl(&endpoint, &["user", "add", &user]);
            etcdctl(&endpoint, &["role", "add", "sg"]);
            etcdctl(
                &endpoint,
                &[
                    "role",
                    "grant-permission",
                    "sg",
                    "--prefix=true",
                    "readwrite",
                    "auth-",
                ],
            );
            etcdctl(&endpoint, &["user", "grant-role", "nova", "sg"]);
            etcdctl(&endpoint, &["user", "add", &viewer]);
            etcdctl(&endpoint, &["role", "add", "sg-read"]);
            etcdctl(
                &endpoint,
                &[
                    "role",
                    "grant-permission",
                    "sg-read",
                    "--prefix=true",
                    "read",
                    "auth-",
                ],
            );
            etcdctl(&endpoint, &["user", "grant-role", "viewer", "sg-read"]);
            etcdctl(&endpoint, &["auth", "enable"]);
        }
    })
    .await
    .unwrap();

    let mut config = common::config(&cluster.endpoints, "auth");
    config.set("etcd.username", "nova").unwrap();
    config.set("etcd.password", PASSWORD).unwrap();
    let sg = ServiceGroup::connect(config.clone()).await.unwrap();
    let m = sg.join("compute", "host-1").await.unwrap();
    assert!(sg.is_up("compute", "host-1").await.unwrap());

    // A read-only user may not write a mirror's sync keys: its listings read the
    // whole group each time, and still see every change.
    let mut read_only = config.clone();
    read_only.set("etcd.username", "viewer").unwrap();
    let viewer = ServiceGroup::connect(read_only).await.unwrap();
    assert_eq!(viewer.members("compute").await.unwrap().len(), 1);
    let m3 = sg.join("compute", "host-3").await.unwrap();
    for _ in 0..2 {
        let listed = viewer.members("compute").await.unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
    }
    let refused = viewer.join("compute", "host-4").await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Config, "{refused}");
    m3.leave().await.unwrap();
    m.leave().await.unwrap();

    let wrong = format!("{PASSWORD}-wrong");
    config.set("etcd.password", wrong.as_str()).unwrap();
    let sg = ServiceGroup::connect(config).await.unwrap();
    let err = sg.join("compute", "host-2").await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert_eq!(err.kind(), ErrorKind::Config, "{shown}");
    assert!(
        shown.contains("nova") && shown.contains("authentication"),
        "{shown}"
    );
    assert!(!shown.contains(PASSWORD), "{shown}");
}
