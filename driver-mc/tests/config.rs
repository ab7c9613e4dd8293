//! The mc driver's own table, `[mc]`: its nova.conf options, its rules (server entries,
//! the key prefix) reported with key and source at load, and the in-process fallback
//! reading `[inproc] name`. The keys in every source are tested with the other drivers'
//! in the `servicegroup` facade's `tests/config_*.rs`. No memcached server is needed.

use std::path::PathBuf;

use servicegroup_core::{Config, ConfigLoader, Origin};
use servicegroup_driver_mc::{McConfig, McDriver};

fn write(dir: &tempfile::TempDir, file: &str, text: &str) -> PathBuf {
    let path = dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    path
}

fn mc(config: &Config) -> McConfig {
    config.driver_config("mc").unwrap()
}

#[test]
fn nova_conf_servers_default_then_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "nova.conf",
        "[DEFAULT]\nmemcached_servers = a:1,\n    'b:2'\n[cache]\nmemcache_servers = c:3\n",
    );
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    assert_eq!(mc(&loaded.config).servers, ["a:1", "b:2"]);
    assert_eq!(loaded.origin("mc.servers"), Some(&Origin::File(path)));

    let path = write(&dir, "cache.conf", "[cache]\nmemcache_servers = c:3, d:4\n");
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    assert_eq!(mc(&loaded.config).servers, ["c:3", "d:4"]);
}

#[test]
fn server_entries_and_the_prefix_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key, why) in [
        (
            "driver = \"mc\"\n[mc]\nservers = [\"10.0.0.1\"]\n",
            "mc.servers",
            "entry \"10.0.0.1\" has no port",
        ),
        (
            "driver = \"mc\"\n[mc]\nservers = [\"memcache://a:1\"]\n",
            "mc.servers",
            "has a URL scheme",
        ),
        (
            "driver = \"mc\"\n[mc]\nservers = [\"a:1\"]\nprefix = \"a b\"\n",
            "mc.prefix",
            "only A-Z a-z 0-9 . _ - are allowed",
        ),
    ] {
        let path = write(&dir, "sg.toml", text);
        let err = ConfigLoader::new()
            .file(&path)
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "invalid value for `{key}` in {}: ",
                path.display()
            )),
            "{text:?}: {err}"
        );
        assert!(err.contains(why), "{text:?}: {err}");
    }
    let err = ConfigLoader::new()
        .env_from([
            ("SERVICEGROUP_DRIVER", "mc"),
            ("SERVICEGROUP_MC__SERVERS", "a:1,b"),
        ])
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "invalid value for `mc.servers` in environment variable SERVICEGROUP_MC__SERVERS: entry \"b\" has no port"
        ),
        "{err}"
    );
    // No servers: nothing is sent to memcached, so the prefix is not checked (as before).
    let path = write(&dir, "p.toml", "driver = \"mc\"\n[mc]\nprefix = \"a b\"\n");
    ConfigLoader::new().file(&path).load().unwrap();
}

#[tokio::test]
async fn without_servers_the_store_is_the_inproc_one() {
    let mut config = Config::with_driver("mc");
    config
        .set("mc.servers", ["<None>"])
        .unwrap()
        .set("inproc.name", "mc-config-test")
        .unwrap();
    let driver = McDriver::connect(&config).await.unwrap();
    assert!(driver.backend().is_none());
}
