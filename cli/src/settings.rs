//! Loading the configuration for a command (file, environment, flags) and
//! rendering it for `servicegroup config`.

use servicegroup::config::duration;
use servicegroup::{Config, ConfigLoader, LoadedConfig, Origin, Value};

/// The environment variable naming a configuration file when `--config` is not given.
pub const CONFIG_VAR: &str = "SERVICEGROUP_CONFIG";

use crate::args::GlobalArgs;
use crate::failure::Failure;

/// Loads defaults < `--config FILE` (or `SERVICEGROUP_CONFIG`) < `SERVICEGROUP_*`
/// environment < `--driver`.
pub fn load(global: &GlobalArgs) -> Result<LoadedConfig, Failure> {
    let mut loader = ConfigLoader::new().env();
    let file = global.config.clone().or_else(|| {
        std::env::var_os(CONFIG_VAR)
            .filter(|v| !v.is_empty())
            .map(Into::into)
    });
    if let Some(path) = file {
        loader = loader.file(path);
    }
    if let Some(driver) = &global.driver {
        loader = loader.set_from("--driver", "driver", driver.as_str());
    }
    Ok(loader.load()?)
}

/// Where a value came from, in words.
pub fn origin_text(origin: Option<&Origin>) -> String {
    match origin {
        None | Some(Origin::Default) => "default".to_owned(),
        Some(Origin::File(path)) => format!("file {}", path.display()),
        Some(Origin::Env(var)) => format!("env {var}"),
        Some(Origin::Override(by)) if by.starts_with("--") => format!("flag {by}"),
        Some(Origin::Override(by)) => format!("override {by}"),
        #[allow(unreachable_patterns)]
        Some(other) => format!("{other:?}"),
    }
}

/// Whether `key` was left at its built-in default.
pub fn is_default(loaded: &LoadedConfig, key: &str) -> bool {
    matches!(loaded.origins.get(key), None | Some(Origin::Default))
}

/// One line of `servicegroup config`: key, value as TOML-ish text, origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Dotted key.
    pub key: String,
    /// The value, rendered (secrets already masked by serialization).
    pub value: String,
    /// Where it came from.
    pub origin: String,
}

/// The effective configuration as key/value/origin lines: core's keys and every key of
/// every linked driver's table (third-party drivers' included), from the configuration's
/// masked view, so secrets are already masked (a declared secret as `***`, a URL's
/// password as `***`). Values are JSON, as `serde_json` writes them.
pub fn lines(loaded: &LoadedConfig) -> Result<Vec<Line>, Failure> {
    let out = loaded
        .config
        .entries()
        .into_iter()
        .map(|entry| Line {
            value: render(&entry.key, entry.value.as_ref(), &loaded.config),
            origin: origin_text(lookup_origin(loaded, &entry.key)),
            key: entry.key,
        })
        .collect();
    Ok(out)
}

/// The origin of a key, trying its parents (`options.x.y` → `options.x`).
fn lookup_origin<'a>(loaded: &'a LoadedConfig, key: &str) -> Option<&'a Origin> {
    let mut k = key;
    loop {
        if let Some(o) = loaded.origins.get(k) {
            return Some(o);
        }
        k = &k[..k.rfind('.')?];
    }
}

fn render(key: &str, value: Option<&Value>, config: &Config) -> String {
    match (key, value) {
        ("db.url", None) => match default_db_location() {
            Some(location) => format!("<none> (embedded default: {location})"),
            None => "<none>".to_owned(),
        },
        ("service_down_time", Some(value)) => {
            let effective = config.effective_service_down_time();
            let shown = value.to_string();
            if effective != config.service_down_time {
                format!(
                    "{shown} (not above report_interval: {} is used, report_interval * 2.5)",
                    duration::render(effective)
                )
            } else {
                shown
            }
        }
        (_, None) => "<none>".to_owned(),
        (_, Some(v)) => v.to_string(),
    }
}

/// Where the db driver keeps its data when no URL is configured.
fn default_db_location() -> Option<String> {
    crate::drivers_linked::default_sqlite_location()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn loaded(config: Config) -> LoadedConfig {
        LoadedConfig {
            config,
            origins: BTreeMap::new(),
        }
    }

    #[test]
    fn secrets_are_masked_and_origins_shown() {
        let mut config = Config::with_driver("db");
        config
            .set("db.url", "postgres://nova:s3cret@db:5432/nova")
            .unwrap();
        let mut l = loaded(config);
        l.origins
            .insert("db.url".into(), Origin::Env("SERVICEGROUP_DB__URL".into()));
        l.origins
            .insert("driver".into(), Origin::Override("--driver".into()));
        let lines = lines(&l).unwrap();
        let url = lines.iter().find(|l| l.key == "db.url").unwrap();
        assert!(!url.value.contains("s3cret"), "{url:?}");
        assert!(url.value.contains("nova:***@db:5432"), "{url:?}");
        assert_eq!(url.origin, "env SERVICEGROUP_DB__URL");
        let driver = lines.iter().find(|l| l.key == "driver").unwrap();
        assert_eq!(driver.origin, "flag --driver");
        let ri = lines.iter().find(|l| l.key == "report_interval").unwrap();
        assert_eq!(ri.origin, "default");
        assert_eq!(ri.value, "\"10s\"");
        // Every linked driver's keys are listed.
        for key in [
            "db.pool_size",
            "db.timeout",
            "mc.servers",
            "mc.timeout",
            "mc.prefix",
            "inproc.name",
        ] {
            assert!(lines.iter().any(|l| l.key == key), "{key} missing");
        }
    }

    /// A third party's driver linked into the binary: its table shows like the
    /// bundled ones, with origins and its secret masked.
    #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct ThirdParty {
        endpoint: String,
        api_key: Option<String>,
    }

    impl servicegroup::DriverTable for ThirdParty {}

    servicegroup::register_driver! {
        name: "thirdparty",
        description: "test driver declaring [thirdparty]",
        config: servicegroup::DriverConfig::new::<ThirdParty>("thirdparty").secrets(&["api_key"]),
        build: |_config: Config| Box::pin(async move {
            Err(servicegroup::Error::unavailable("never built"))
        }),
    }

    #[test]
    fn third_party_tables_show_with_origins_and_masked_secrets() {
        let loaded = ConfigLoader::new()
            .env_from([
                ("SERVICEGROUP_THIRDPARTY__ENDPOINT", "https://tp.example"),
                ("SERVICEGROUP_THIRDPARTY__API_KEY", "k-Very-Secret-1"),
            ])
            .load()
            .unwrap();
        let lines = lines(&loaded).unwrap();
        let line = |key: &str| lines.iter().find(|l| l.key == key).unwrap().clone();
        let endpoint = line("thirdparty.endpoint");
        assert_eq!(endpoint.value, "\"https://tp.example\"");
        assert_eq!(endpoint.origin, "env SERVICEGROUP_THIRDPARTY__ENDPOINT");
        let key = line("thirdparty.api_key");
        assert_eq!(key.value, "\"***\"");
        assert_eq!(key.origin, "env SERVICEGROUP_THIRDPARTY__API_KEY");
        assert!(lines.iter().all(|l| !l.value.contains("k-Very-Secret-1")));
    }

    #[test]
    fn overridden_down_time_is_explained() {
        let mut config = Config::with_driver("inproc");
        config.service_down_time = Duration::from_secs(5);
        let lines = lines(&loaded(config)).unwrap();
        let sdt = lines.iter().find(|l| l.key == "service_down_time").unwrap();
        assert!(sdt.value.contains("25s is used"), "{sdt:?}");
    }
}
