//! The db driver's own table, `[db]`: its declaration (nova.conf's `[database]
//! connection`, `url` secret), its rules (an empty `url`, a zero `pool_size`) reported
//! with key and source, and the factory connecting where `db.url` says. The keys in
//! every source are tested with the other drivers' in the `servicegroup` facade's
//! `tests/config_*.rs`.

use std::path::PathBuf;

use servicegroup_core::{Config, ConfigLoader, ErrorKind, Origin, ServiceGroup, Value};
use servicegroup_driver_db::DbConfig;

fn write(dir: &tempfile::TempDir, file: &str, text: &str) -> PathBuf {
    let path = dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn nova_conf_database_connection_is_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "nova.conf",
        "[database]\nconnection = mysql+pymysql://nova:Sup3rS3cret@controller/nova\nmax_pool_size = 30\n",
    );
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    let db: DbConfig = loaded.config.driver_config("db").unwrap();
    assert_eq!(
        db.url.unwrap().expose(),
        "mysql+pymysql://nova:Sup3rS3cret@controller/nova"
    );
    // Only the declared option is read.
    assert_eq!(db.pool_size, 8);
    assert_eq!(loaded.origin("db.url"), Some(&Origin::File(path)));
    assert_eq!(loaded.origin("db.pool_size"), Some(&Origin::Default));
}

#[test]
fn the_url_is_secret_everywhere_it_could_show() {
    let mut config = Config::with_driver("db");
    config
        .set("db.url", "postgres://nova:Sup3rS3cret@db.example:5432/nova")
        .unwrap();
    let url = config
        .entries()
        .into_iter()
        .find(|e| e.key == "db.url")
        .unwrap();
    assert!(url.secret);
    assert_eq!(
        url.value,
        Some(Value::from("postgres://nova:***@db.example:5432/nova"))
    );
    assert!(!format!("{config:?}").contains("Sup3rS3cret"));
    let err = config
        .set(
            "db.pool_size",
            "postgres://nova:Sup3rS3cret@db.example:5432/nova",
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`db.pool_size`") && !err.contains("Sup3rS3cret"),
        "{err}"
    );
    // A wrongly typed url is not echoed.
    let err = ConfigLoader::new()
        .set("db.url", vec!["postgres://nova:Sup3rS3cret@db/nova"])
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid value for `db.url` in override (code)"),
        "{err}"
    );
    assert!(!err.contains("Sup3rS3cret"), "{err}");
}

#[test]
fn the_drivers_rules_name_key_and_source() {
    for (text, key, why) in [
        (
            "[db]\npool_size = 0\n",
            "db.pool_size",
            "must be at least 1",
        ),
        ("[db]\nurl = \" \"\n", "db.url", "must not be empty"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "sg.toml", text);
        let err = ConfigLoader::new().file(&path).load().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(
            err.message(),
            format!("invalid value for `{key}` in {}: {why}", path.display())
        );
        // Another driver selected: the db driver's rules wait.
        let loaded = ConfigLoader::new()
            .file(&path)
            .set("driver", "mc-or-anything")
            .load();
        assert!(loaded.is_ok(), "{text:?}: {loaded:?}");
    }
    let err = ConfigLoader::new()
        .env_from([("SERVICEGROUP_DB__POOL_SIZE", "0")])
        .load()
        .unwrap_err();
    assert_eq!(
        err.message(),
        "invalid value for `db.pool_size` in environment variable SERVICEGROUP_DB__POOL_SIZE: must be at least 1"
    );
}

#[tokio::test]
async fn the_factory_connects_where_the_url_says() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("members.db");
    let mut config = Config::with_driver("db");
    config
        .set("db.url", format!("sqlite://{}", file.display()))
        .unwrap();
    let sg = ServiceGroup::connect(config).await.unwrap();
    let _m = sg.join("g", "m").await.unwrap();
    assert!(sg.is_up("g", "m").await.unwrap());
    assert!(file.exists());
}
