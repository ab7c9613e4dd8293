//! Loading the configuration for a command (file, environment, flags) and
//! rendering it for `servicegroup config`.

use servicegroup::config::duration;
use servicegroup::{Config, ConfigLoader, LoadedConfig, Origin};
use std::collections::BTreeMap;

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

/// The effective configuration as key/value/origin lines. Values come from the
/// config's serialization, which masks secrets (`DatabaseUrl` serializes redacted).
pub fn lines(loaded: &LoadedConfig) -> Result<Vec<Line>, Failure> {
    let value = serde_json::to_value(&loaded.config)
        .map_err(|e| Failure::msg(format!("cannot render the configuration: {e}")))?;
    let mut flat = BTreeMap::new();
    flatten("", &value, &mut flat);
    // Keys without a value (unset options) still show, as `<none>`.
    for key in ["watch_interval", "db.url"] {
        flat.entry(key.to_owned())
            .or_insert(serde_json::Value::Null);
    }
    let mut out = Vec::new();
    for (key, value) in flat {
        let origin = origin_text(lookup_origin(loaded, &key));
        out.push(Line {
            value: render(&key, &value, &loaded.config),
            key,
            origin,
        });
    }
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

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

fn render(key: &str, value: &serde_json::Value, config: &Config) -> String {
    match (key, value) {
        ("db.url", serde_json::Value::Null) => match default_db_location() {
            Some(location) => format!("<none> (embedded default: {location})"),
            None => "<none>".to_owned(),
        },
        ("service_down_time", _) => {
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
        (_, serde_json::Value::Null) => "<none>".to_owned(),
        (_, v) => v.to_string(),
    }
}

/// Where the db driver keeps its data when no URL is configured.
fn default_db_location() -> Option<String> {
    crate::drivers_linked::default_sqlite_location()
}

#[cfg(test)]
mod tests {
    use super::*;
    use servicegroup::DatabaseUrl;
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
        config.db.url = Some(DatabaseUrl::new("postgres://nova:s3cret@db:5432/nova"));
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
