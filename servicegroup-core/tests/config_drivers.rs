//! A driver's own configuration table, as a third party declares it: `[filestore]` at
//! the top level, read from TOML, nova.conf, the environment, `[options.filestore]`
//! and code; errors naming key and source; secrets masked everywhere; the table
//! handed to the driver's factory; `servicegroup config`'s view of it. Also the
//! `[options.<driver>]` tables of a driver that declares no table.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use servicegroup_core::config::{DriverConfig, DriverTable, InvalidKey, NovaOption};
use servicegroup_core::{
    async_trait, Beats, Capabilities, Config, ConfigLoader, Driver, Error, ErrorKind, GroupId,
    HeartbeatReport, HolderUpdate, InstanceId, MemberKey, MemberRecord, Metadata, Origin,
    Registered, Registration, Registry, Result, Value,
};

/// `[filestore]`: the options of a third party's driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FilestoreConfig {
    /// Directory of the member files; must be absolute.
    root: String,
    /// Token of the lock service: secret.
    token: Option<String>,
    /// Peer `host:port` list.
    peers: Vec<String>,
    /// I/O timeout.
    #[serde(with = "servicegroup_core::config::duration")]
    timeout: Duration,
    /// Retries per call.
    retries: u32,
    /// Whether to fsync each write.
    fsync: bool,
    /// Where a copy goes (a URL, not secret as a whole: only its password is).
    mirror: Option<String>,
}

impl Default for FilestoreConfig {
    fn default() -> Self {
        Self {
            root: "/var/lib/filestore".into(),
            token: None,
            peers: Vec::new(),
            timeout: Duration::from_secs(5),
            retries: 2,
            fsync: true,
            mirror: None,
        }
    }
}

impl DriverTable for FilestoreConfig {
    fn check(&self) -> std::result::Result<(), InvalidKey> {
        if !self.root.starts_with('/') {
            return Err(InvalidKey::new("root", "must be an absolute path"));
        }
        Ok(())
    }
}

const FILESTORE: DriverConfig = DriverConfig::new::<FilestoreConfig>("filestore")
    .secrets(&["token"])
    .nova(&[
        NovaOption::new("filestore", "root_dir", "root"),
        NovaOption::new("DEFAULT", "filestore_peers", "peers"),
        NovaOption::new("cache", "filestore_peers", "peers"),
    ]);

/// What the factory was given, for the test that builds it.
static BUILT: Mutex<Option<FilestoreConfig>> = Mutex::new(None);

servicegroup_core::register_driver! {
    name: "filestore",
    description: "test driver declaring [filestore]",
    config: FILESTORE,
    build: |config: Config| Box::pin(async move {
        let options: FilestoreConfig = config.driver_config("filestore")?;
        *BUILT.lock().unwrap() = Some(options);
        Ok(Arc::new(Stub("filestore")) as Arc<dyn Driver>)
    }),
}

/// A driver that answers nothing: only building it matters here.
#[derive(Debug)]
struct Stub(&'static str);

#[async_trait]
impl Driver for Stub {
    fn name(&self) -> &str {
        self.0
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Duration::from_millis(1))
    }
    async fn register(&self, _: &Registration) -> Result<Registered> {
        Err(Error::unavailable("stub"))
    }
    async fn heartbeat(&self, _: &[Beats<'_>]) -> Result<HeartbeatReport> {
        Err(Error::unavailable("stub"))
    }
    async fn remove(&self, _: &MemberKey, _: Option<InstanceId>) -> Result<bool> {
        Err(Error::unavailable("stub"))
    }
    async fn set_metadata(
        &self,
        _: &MemberKey,
        _: InstanceId,
        _: &Metadata,
    ) -> Result<HolderUpdate> {
        Err(Error::unavailable("stub"))
    }
    async fn set_forced_down(&self, _: &MemberKey, _: bool) -> Result<bool> {
        Err(Error::unavailable("stub"))
    }
    async fn get(&self, _: &MemberKey) -> Result<Option<MemberRecord>> {
        Err(Error::unavailable("stub"))
    }
    async fn list(&self, _: &GroupId) -> Result<Vec<MemberRecord>> {
        Err(Error::unavailable("stub"))
    }
    async fn groups(&self) -> Result<Vec<GroupId>> {
        Err(Error::unavailable("stub"))
    }
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn filestore(config: &Config) -> FilestoreConfig {
    config.driver_config("filestore").unwrap()
}

fn load_file(name: &str, text: &str) -> (PathBuf, Result<servicegroup_core::LoadedConfig>) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, name, text);
    let result = ConfigLoader::new().file(&path).load();
    (path, result)
}

fn file_error(name: &str, text: &str) -> (PathBuf, String) {
    let (path, result) = load_file(name, text);
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    (path, err.to_string())
}

const KEYS: [&str; 7] = [
    "filestore.fsync",
    "filestore.mirror",
    "filestore.peers",
    "filestore.retries",
    "filestore.root",
    "filestore.timeout",
    "filestore.token",
];

#[test]
fn a_third_party_table_at_the_top_level() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "sg.toml",
        r#"
driver = "filestore"
[filestore]
root = "/srv/members"
token = "tok-Secret99"
peers = ["a:1", "b:2"]
timeout = 0.5
retries = 7
fsync = false
mirror = "https://copy:Mirr0rPw@mirror.example/x"
"#,
    );
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    let f = filestore(&loaded.config);
    assert_eq!(
        f,
        FilestoreConfig {
            root: "/srv/members".into(),
            token: Some("tok-Secret99".into()),
            peers: vec!["a:1".into(), "b:2".into()],
            timeout: Duration::from_millis(500),
            retries: 7,
            fsync: false,
            mirror: Some("https://copy:Mirr0rPw@mirror.example/x".into()),
        }
    );
    for key in KEYS {
        assert_eq!(
            loaded.origin(key),
            Some(&Origin::File(path.clone())),
            "{key}"
        );
    }
    for shown in [format!("{loaded:?}"), format!("{:?}", loaded.config)] {
        assert!(!shown.contains("tok-Secret99"), "{shown}");
        assert!(!shown.contains("Mirr0rPw"), "{shown}");
    }
}

#[test]
fn defaults_when_nothing_sets_the_table() {
    let loaded = ConfigLoader::new().load().unwrap();
    assert_eq!(loaded.config, Config::default());
    assert_eq!(filestore(&loaded.config), FilestoreConfig::default());
    assert_eq!(filestore(&Config::default()), FilestoreConfig::default());
    for key in KEYS {
        assert_eq!(loaded.origin(key), Some(&Origin::Default), "{key}");
    }
}

#[test]
fn every_key_has_its_variable_read_by_type() {
    let vars = [
        ("SERVICEGROUP_FILESTORE__ROOT", "/from/env"),
        ("SERVICEGROUP_FILESTORE__TOKEN", "12345"),
        ("SERVICEGROUP_FILESTORE__PEERS", "a:1, b:2,"),
        ("SERVICEGROUP_FILESTORE__TIMEOUT", "300ms"),
        ("SERVICEGROUP_FILESTORE__RETRIES", "4"),
        ("SERVICEGROUP_FILESTORE__FSYNC", "off"),
        ("SERVICEGROUP_FILESTORE__MIRROR", "10"),
    ];
    let loaded = ConfigLoader::new().env_from(vars).load().unwrap();
    let f = filestore(&loaded.config);
    assert_eq!(f.root, "/from/env");
    // Text stays text, even when it looks like a number.
    assert_eq!(f.token.as_deref(), Some("12345"));
    assert_eq!(f.mirror.as_deref(), Some("10"));
    assert_eq!(f.peers, ["a:1", "b:2"]);
    assert_eq!(f.timeout, Duration::from_millis(300));
    assert_eq!(f.retries, 4);
    assert!(!f.fsync);
    for (var, _) in vars {
        let key = var
            .trim_start_matches("SERVICEGROUP_")
            .to_lowercase()
            .replace("__", ".");
        assert_eq!(
            loaded.origin(&key),
            Some(&Origin::Env(var.to_owned())),
            "{key}"
        );
    }

    let err = ConfigLoader::new()
        .env_from([("SERVICEGROUP_FILESTORE__ROOTS", "/x")])
        .load()
        .unwrap_err()
        .to_string();
    assert!(err.contains("SERVICEGROUP_FILESTORE__ROOTS"), "{err}");
    assert!(err.contains("SERVICEGROUP_FILESTORE__ROOT,"), "{err}");
}

#[test]
fn options_tables_are_read_as_the_declared_table() {
    let (path, loaded) = load_file(
        "o.toml",
        "[options.filestore]\nroot = \"/opt/fs\"\nretries = 9\n",
    );
    let loaded = loaded.unwrap();
    let f = filestore(&loaded.config);
    assert_eq!((f.root.as_str(), f.retries), ("/opt/fs", 9));
    assert_eq!(loaded.origin("filestore.root"), Some(&Origin::File(path)));
    assert!(!loaded.origins.keys().any(|k| k.starts_with("options.")));

    // Read by the key's type, like SERVICEGROUP_FILESTORE__*.
    let loaded = ConfigLoader::new()
        .env_from([
            ("SERVICEGROUP_OPTIONS__FILESTORE__RETRIES", "5"),
            ("SERVICEGROUP_OPTIONS__FILESTORE__TOKEN", "777"),
        ])
        .load()
        .unwrap();
    let f = filestore(&loaded.config);
    assert_eq!((f.retries, f.token.as_deref()), (5, Some("777")));
    assert_eq!(
        loaded.origin("filestore.retries"),
        Some(&Origin::Env(
            "SERVICEGROUP_OPTIONS__FILESTORE__RETRIES".into()
        ))
    );

    let (path, err) = file_error(
        "both.toml",
        "[filestore]\nroot = \"/a\"\n[options.filestore]\nroot = \"/b\"\n",
    );
    assert!(
        err.contains("both [filestore] and [options.filestore]"),
        "{err}"
    );
    assert!(err.contains(&path.display().to_string()), "{err}");

    // In different sources they layer like any key.
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "l.toml", "[options.filestore]\nroot = \"/file\"\n");
    let c = ConfigLoader::new()
        .file(&path)
        .env_from([("SERVICEGROUP_FILESTORE__ROOT", "/env")])
        .load()
        .unwrap()
        .config;
    assert_eq!(filestore(&c).root, "/env");
}

#[test]
fn nova_conf_options_come_from_the_declaration() {
    let (path, loaded) = load_file(
        "nova.conf",
        "[DEFAULT]\nfilestore_peers = a:1,\n    'b:2'\n[filestore]\nroot_dir = \"/nova/fs\"\n[cache]\nfilestore_peers = c:3\n",
    );
    let loaded = loaded.unwrap();
    let f = filestore(&loaded.config);
    assert_eq!(f.root, "/nova/fs");
    // The first declared option that is set wins: [DEFAULT] before [cache].
    assert_eq!(f.peers, ["a:1", "b:2"]);
    assert_eq!(loaded.origin("filestore.peers"), Some(&Origin::File(path)));
    assert_eq!(loaded.origin("filestore.retries"), Some(&Origin::Default));

    let (_, loaded) = load_file(
        "nova.conf",
        "[DEFAULT]\nfilestore_peers = <None>\n[CACHE]\nfilestore_peers = c:3, d:4\n",
    );
    assert_eq!(filestore(&loaded.unwrap().config).peers, ["c:3", "d:4"]);

    // A section a linked driver declares marks the file as a nova.conf.
    let (_, loaded) = load_file("fs.conf", "[filestore]\nroot_dir = /only/this\n");
    assert_eq!(filestore(&loaded.unwrap().config).root, "/only/this");
}

#[test]
fn errors_in_the_table_name_key_and_source() {
    let (path, err) = file_error("u.toml", "[filestore]\nroots = \"/x\"\n");
    assert!(err.contains("unknown key `filestore.roots`"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("known keys: fsync, mirror, peers, retries, root, timeout, token"),
        "{err}"
    );

    for (text, key, why) in [
        (
            "[filestore]\nretries = \"many\"\n",
            "filestore.retries",
            "expected u32",
        ),
        ("[filestore]\nretries = -1\n", "filestore.retries", "-1"),
        (
            "[filestore]\ntimeout = 0\n",
            "filestore.timeout",
            "greater than zero",
        ),
        (
            "[filestore]\ntimeout = \"soon\"\n",
            "filestore.timeout",
            "\"soon\"",
        ),
        (
            "[filestore]\npeers = \"a:1\"\n",
            "filestore.peers",
            "sequence",
        ),
        ("filestore = 5\n", "filestore", "found"),
    ] {
        let (path, err) = file_error("t.toml", text);
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
        .env_from([("SERVICEGROUP_FILESTORE__RETRIES", "lots")])
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "invalid value for `filestore.retries` in environment variable SERVICEGROUP_FILESTORE__RETRIES: "
        ),
        "{err}"
    );
    let err = ConfigLoader::new()
        .set_from("--fs-timeout", "filestore.timeout", "-1s")
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid value for `filestore.timeout` in override (--fs-timeout): "),
        "{err}"
    );
}

#[test]
fn the_drivers_own_rules_apply_when_it_is_selected() {
    // Not selected: its rules wait (another driver is being used).
    let (_, loaded) = load_file("r.toml", "[filestore]\nroot = \"relative\"\n");
    assert_eq!(filestore_unchecked(&loaded.unwrap().config), "relative");

    let (path, err) = file_error(
        "r.toml",
        "driver = \"filestore\"\n[filestore]\nroot = \"relative\"\n",
    );
    assert_eq!(
        err,
        format!(
            "configuration error: invalid value for `filestore.root` in {}: must be an absolute path",
            path.display()
        )
    );
    let err = ConfigLoader::new()
        .env_from([
            ("SERVICEGROUP_DRIVER", "filestore"),
            ("SERVICEGROUP_FILESTORE__ROOT", "x"),
        ])
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`filestore.root` in environment variable SERVICEGROUP_FILESTORE__ROOT: must be an absolute path"),
        "{err}"
    );

    // Built in code: set() applies them when the driver is selected...
    let mut config = Config::with_driver("filestore");
    let err = config.set("filestore.root", "rel").unwrap_err().to_string();
    assert!(
        err.contains("`filestore.root` in override (code): must be an absolute path"),
        "{err}"
    );
    // ... validated() and the factory's driver_config() when it is selected later.
    let mut config = Config::with_driver("inproc");
    config.set("filestore.root", "rel").unwrap();
    config.driver = "filestore".into();
    let err = config.clone().validated().unwrap_err().to_string();
    assert!(
        err.contains("`filestore.root`: must be an absolute path"),
        "{err}"
    );
    let err = config
        .driver_config::<FilestoreConfig>("filestore")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`filestore.root`: must be an absolute path"),
        "{err}"
    );
}

fn filestore_unchecked(config: &Config) -> String {
    config
        .get("filestore.root")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap()
}

#[test]
fn secrets_never_appear_in_errors_debug_or_the_view() {
    let secret = "tok-Xy7pass/w@rd";
    // The secret key's own bad value is not echoed...
    let (_, err) = file_error("s.toml", "[filestore]\ntoken = [\"tok-Xy7pass/w@rd\"]\n");
    assert!(err.contains("`filestore.token`"), "{err}");
    assert!(!err.contains(secret) && !err.contains("w@rd"), "{err}");
    // ... nor where it is echoed as another key's value.
    let (_, err) = file_error(
        "s.toml",
        &format!("[filestore]\ntoken = \"{secret}\"\nretries = \"{secret}\"\n"),
    );
    assert!(err.contains("`filestore.retries`"), "{err}");
    assert!(!err.contains(secret) && !err.contains("w@rd"), "{err}");
    let err = ConfigLoader::new()
        .env_from([("SERVICEGROUP_FILESTORE__TOKEN", secret)])
        .set("filestore.fsync", secret)
        .load()
        .unwrap_err()
        .to_string();
    assert!(err.contains("`filestore.fsync`"), "{err}");
    assert!(!err.contains(secret) && !err.contains("w@rd"), "{err}");

    let mut config = Config::with_driver("filestore");
    config
        .set("filestore.token", secret)
        .unwrap()
        .set("filestore.mirror", "https://u:Mirr0rPw@m.example/x")
        .unwrap();
    let err = config
        .set("filestore.retries", secret)
        .unwrap_err()
        .to_string();
    assert!(!err.contains(secret), "{err}");
    let shown = format!("{config:?}");
    assert!(
        !shown.contains(secret) && !shown.contains("Mirr0rPw"),
        "{shown}"
    );

    let entries = config.entries();
    let entry = |key: &str| entries.iter().find(|e| e.key == key).unwrap().clone();
    let token = entry("filestore.token");
    assert!(token.secret);
    assert_eq!(token.value, Some(Value::from("***")));
    let mirror = entry("filestore.mirror");
    assert!(!mirror.secret);
    assert_eq!(mirror.value, Some(Value::from("https://u:***@m.example/x")));
    // The driver still gets the real values.
    let f = filestore(&config);
    assert_eq!(f.token.as_deref(), Some(secret));
    assert_eq!(f.mirror.as_deref(), Some("https://u:Mirr0rPw@m.example/x"));
}

#[test]
fn the_view_has_every_key_normalized_and_sorted() {
    let mut config = Config::with_driver("filestore");
    config.set("filestore.timeout", 3).unwrap();
    let entries = config.entries();
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    for key in KEYS.iter().chain(&[
        "driver",
        "report_interval",
        "service_down_time",
        "call_timeout",
        "watch_interval",
    ]) {
        assert!(keys.contains(key), "{key} missing: {keys:?}");
    }
    let value = |key: &str| {
        entries
            .iter()
            .find(|e| e.key == key)
            .unwrap()
            .value
            .as_ref()
            .map(ToString::to_string)
    };
    assert_eq!(value("filestore.timeout").as_deref(), Some("\"3s\""));
    assert_eq!(value("filestore.retries").as_deref(), Some("2"));
    assert_eq!(value("filestore.peers").as_deref(), Some("[]"));
    assert_eq!(value("filestore.token"), None);
    assert_eq!(value("report_interval").as_deref(), Some("\"10s\""));
    assert_eq!(value("service_down_time").as_deref(), Some("\"1m\""));
    assert_eq!(value("watch_interval"), None);
    assert_eq!(value("driver").as_deref(), Some("\"filestore\""));
}

#[test]
fn set_from_code_checks_at_once() {
    let mut config = Config::with_driver("filestore");
    config
        .set("filestore.root", "/code")
        .unwrap()
        .set("filestore.timeout", Duration::from_millis(250))
        .unwrap()
        .set("filestore.peers", ["x:1", "y:2"])
        .unwrap()
        .set("options.filestore.retries", 11u32)
        .unwrap();
    let f = filestore(&config);
    assert_eq!(f.root, "/code");
    assert_eq!(f.timeout, Duration::from_millis(250));
    assert_eq!(f.peers, ["x:1", "y:2"]);
    assert_eq!(f.retries, 11);
    assert_eq!(
        config
            .options("filestore")
            .unwrap()
            .get("retries")
            .and_then(Value::as_u64),
        Some(11)
    );

    for (key, value, needle) in [
        (
            "filestore.timeout",
            Value::from(Duration::ZERO),
            "greater than zero",
        ),
        ("filestore.retries", Value::from("x"), "expected u32"),
        (
            "filestore.rootdir",
            Value::from("/x"),
            "unknown key `filestore.rootdir`",
        ),
    ] {
        let before = config.clone();
        let err = config.set(key, value).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains(needle), "{key}: {err}");
        assert_eq!(config, before, "a failed set changed the config");
    }
}

#[tokio::test]
async fn the_factory_gets_its_table() {
    let mut config = Config::with_driver("filestore");
    config.set("filestore.root", "/built").unwrap();
    let driver = Registry::build(&config).await.unwrap();
    assert_eq!(driver.name(), "filestore");
    assert_eq!(BUILT.lock().unwrap().as_ref().unwrap().root, "/built");
}

#[test]
fn undeclared_options_pass_through_with_origins_and_masked_secrets() {
    let (path, loaded) = load_file(
        "m.toml",
        "[options.mine]\nendpoint = \"http://x\"\nretries = 3\napi_token = \"Tok3nValue\"\n",
    );
    let loaded = loaded.unwrap();
    let mine = loaded.config.options("mine").unwrap();
    assert_eq!(
        mine.get("endpoint").and_then(Value::as_str),
        Some("http://x")
    );
    assert_eq!(mine.get("retries").and_then(Value::as_u64), Some(3));
    assert_eq!(
        loaded.origin("options.mine.endpoint"),
        Some(&Origin::File(path))
    );
    let entries = loaded.config.entries();
    let token = entries
        .iter()
        .find(|e| e.key == "options.mine.api_token")
        .unwrap();
    assert!(token.secret);
    assert_eq!(token.value, Some(Value::from("***")));
    assert!(!format!("{loaded:?}").contains("Tok3nValue"));

    // Environment values of undeclared options are guessed, as figment's Env does.
    let c = ConfigLoader::new()
        .env_from([
            ("SERVICEGROUP_OPTIONS__MINE__RETRIES", "3"),
            ("SERVICEGROUP_OPTIONS__MINE__ENDPOINT", "http://x"),
        ])
        .load()
        .unwrap()
        .config;
    let mine = c.options("mine").unwrap();
    assert_eq!(mine.get("retries").and_then(Value::as_u64), Some(3));
    assert_eq!(
        mine.get("endpoint").and_then(Value::as_str),
        Some("http://x")
    );

    // Read typed through the `Table`.
    #[derive(Deserialize)]
    struct Mine {
        retries: u32,
    }
    let mine: Mine = c.options("mine").unwrap().deserialize().unwrap();
    assert_eq!(mine.retries, 3);
    // Or with `driver_config`, when the type implements `DriverTable`.
    #[derive(Default, Serialize, Deserialize)]
    #[serde(default)]
    struct MineTyped {
        retries: u32,
        endpoint: String,
    }
    impl DriverTable for MineTyped {}
    let typed: MineTyped = c.driver_config("mine").unwrap();
    assert_eq!((typed.retries, typed.endpoint.as_str()), (3, "http://x"));
}

#[test]
fn a_table_no_linked_driver_declares_is_an_unknown_key_with_a_hint() {
    let (path, err) = file_error("n.toml", "[nosuch]\nx = 1\n");
    assert!(err.contains("unknown key `nosuch`"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("[filestore]"), "{err}");
    assert!(err.contains("linked"), "{err}");
}

/// A `tracing` writer that keeps everything written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn secrets_never_reach_the_logs() {
    let secret = "tok-LogSecret77";
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "l.toml",
        &format!(
            "driver = \"filestore\"\nreport_interval = 1\nservice_down_time = 1\n[filestore]\nroot = \"/logs\"\ntoken = \"{secret}\"\nmirror = \"https://u:{secret}@m/x\"\n"
        ),
    );
    // Loading (with the 2.5x WARN), a bad value, the masked view and building the driver.
    let loaded = ConfigLoader::new().file(&path).load().unwrap();
    let _ = ConfigLoader::new()
        .file(&path)
        .set("filestore.retries", secret)
        .load()
        .unwrap_err();
    let _ = loaded.config.entries();
    tracing::info!(config = ?loaded.config, "the whole configuration, as a caller might log it");
    Registry::build(&loaded.config).await.unwrap();

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("service_down_time"), "nothing captured: {log}");
    assert!(log.contains("\"filestore.token\": Some(\"***\")"), "{log}");
    assert!(!log.contains(secret), "{log}");
}
