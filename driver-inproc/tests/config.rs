//! The inproc driver's own table, `[inproc]`: every source reads `inproc.name`, errors
//! name the key and the source, and the factory builds the store it names.

use std::path::PathBuf;

use servicegroup_core::{Config, ConfigLoader, ErrorKind, Origin, ServiceGroup};
use servicegroup_driver_inproc::InprocConfig;

fn name(config: &Config) -> String {
    config.driver_config::<InprocConfig>("inproc").unwrap().name
}

fn write(dir: &tempfile::TempDir, file: &str, text: &str) -> PathBuf {
    let path = dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn name_from_every_source() {
    assert_eq!(name(&Config::default()), "default");

    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "a.toml", "[inproc]\nname = \"C:\\\\x\\\\y\"\n");
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    assert_eq!(name(&loaded.config), r"C:\x\y");
    assert_eq!(loaded.origin("inproc.name"), Some(&Origin::File(path)));

    // A name that looks like a number or a flag stays text.
    for text in ["10", "true"] {
        let loaded = ConfigLoader::new()
            .env_from([("SERVICEGROUP_INPROC__NAME", text)])
            .load()
            .unwrap();
        assert_eq!(name(&loaded.config), text);
        assert_eq!(
            loaded.origin("inproc.name"),
            Some(&Origin::Env("SERVICEGROUP_INPROC__NAME".into()))
        );
    }

    // `[options.inproc]` and its variables are the same table.
    let path = write(&dir, "o.toml", "[options.inproc]\nname = \"opt\"\n");
    assert_eq!(
        name(&ConfigLoader::new().file(&path).load().unwrap().config),
        "opt"
    );
    let c = ConfigLoader::new()
        .env_from([("SERVICEGROUP_OPTIONS__INPROC__NAME", "12")])
        .load()
        .unwrap()
        .config;
    assert_eq!(name(&c), "12");

    let mut config = Config::with_driver("inproc");
    config.set("inproc.name", "code").unwrap();
    assert_eq!(name(&config), "code");
}

#[test]
fn errors_name_the_key_and_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "u.toml", "[inproc]\nnames = \"x\"\n");
    let err = ConfigLoader::new().file(&path).load().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(
        err.message(),
        format!(
            "unknown key `inproc.names` in {} (known keys: name)",
            path.display()
        )
    );
    let path = write(&dir, "t.toml", "[inproc]\nname = 5\n");
    let err = ConfigLoader::new()
        .file(&path)
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "invalid value for `inproc.name` in {}",
            path.display()
        )),
        "{err}"
    );
    let err = ConfigLoader::new()
        .env_from([("SERVICEGROUP_INPROC__NAMES", "x")])
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SERVICEGROUP_INPROC__NAMES") && err.contains("SERVICEGROUP_INPROC__NAME,"),
        "{err}"
    );
    let err = Config::with_driver("inproc")
        .set("inproc.name", vec!["a"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid value for `inproc.name` in override (code)"),
        "{err}"
    );
}

#[tokio::test]
async fn the_factory_builds_the_store_the_name_names() {
    let store = format!("config-test-{}", std::process::id());
    let mut shared = Config::with_driver("inproc");
    shared.set("inproc.name", store.as_str()).unwrap();
    let mut other = Config::with_driver("inproc");
    other.set("inproc.name", format!("{store}-other")).unwrap();

    let a = ServiceGroup::connect(shared.clone()).await.unwrap();
    let b = ServiceGroup::connect(shared).await.unwrap();
    let c = ServiceGroup::connect(other).await.unwrap();
    let _member = a.join("g", "m").await.unwrap();
    assert!(b.is_up("g", "m").await.unwrap());
    assert!(c.members("g").await.unwrap().is_empty());
}

#[test]
fn the_view_lists_inproc_name() {
    let mut config = Config::with_driver("inproc");
    config.set("inproc.name", "shown").unwrap();
    let entry = config
        .entries()
        .into_iter()
        .find(|e| e.key == "inproc.name")
        .unwrap();
    assert_eq!(entry.value.unwrap().to_string(), "\"shown\"");
    assert!(!entry.secret);
}
