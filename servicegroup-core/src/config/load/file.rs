//! Reading the configuration file and telling our TOML from a nova.conf-style INI.
//!
//! Detection, by content first (the extension alone decides only for `.toml`):
//!
//! 1. A file named `*.toml` is TOML.
//! 2. A file with a `[DEFAULT]` section header, or a header of a section some linked
//!    driver reads from nova.conf (`[database]` for db, `[cache]` for mc; our TOML has
//!    no such tables), is a nova.conf INI.
//! 3. Otherwise a file that parses as TOML is TOML.
//! 4. A file that does not parse as TOML is read as a nova.conf INI fragment only when
//!    it uses none of our tables (every linked driver's, such as `[db]`, `[mc]`,
//!    `[inproc]`, and `[options.*]`) and none of our TOML-only keys (`driver`,
//!    `call_timeout`, `watch_interval`, `coalesce_window`) before its first section; then it is plainly
//!    not our TOML. Every other file gets the TOML parse error, with line and column,
//!    so a broken TOML file is reported as such.

use std::path::Path;

use figment::providers::{Format, Toml};
use figment::value::Dict;

use super::ini;
use crate::config::redact;
use crate::config::schema::{Schema, OPTIONS};
use crate::error::{Error, Result};

/// The format a configuration file was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileFormat {
    /// servicegroup's own TOML.
    Toml,
    /// A nova.conf-style INI file, read as-is.
    NovaIni,
}

/// nova.conf's section of general options; its presence marks a nova.conf (so do
/// the sections the linked drivers declare nova.conf options in).
const DEFAULT_SECTION: &str = "DEFAULT";
/// Top-level keys of our TOML that Nova does not have.
const OUR_TOML_ONLY_KEYS: &[&str] = &[
    "driver",
    "call_timeout",
    "watch_interval",
    "coalesce_window",
];

/// Reads and parses the file at `path` into a dictionary shaped like [`crate::Config`].
pub(super) fn read(path: &Path, schema: &Schema) -> Result<(FileFormat, Dict)> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::config(format!(
            "cannot read configuration file {}: {e}",
            path.display()
        ))
        .with_source(e)
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::config(format!(
            "configuration file {} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    parse(path, text, schema)
}

fn parse(path: &Path, text: &str, schema: &Schema) -> Result<(FileFormat, Dict)> {
    let toml_by_name = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let headers = section_headers(text);
    let nova_sections = schema.nova_sections();
    if !toml_by_name && headers.iter().any(|h| is_nova_section(h, &nova_sections)) {
        return Ok((FileFormat::NovaIni, ini::read(path, text, schema)?));
    }
    match Toml::from_str::<Dict>(text) {
        Ok(dict) => Ok((FileFormat::Toml, dict)),
        Err(toml_error) => {
            if !toml_by_name && is_nova_fragment(text, &headers, schema) {
                if let Ok(dict) = ini::read(path, text, schema) {
                    tracing::debug!(
                        path = %path.display(),
                        "not TOML and none of our tables or keys: read as a nova.conf-style INI file"
                    );
                    return Ok((FileFormat::NovaIni, dict));
                }
            }
            Err(describe_toml_error(path, text, &toml_error, &nova_sections))
        }
    }
}

fn is_nova_section(name: &str, nova_sections: &[String]) -> bool {
    // oslo.config lowercases section names, except DEFAULT, which is exact.
    name == DEFAULT_SECTION || nova_sections.iter().any(|s| name.eq_ignore_ascii_case(s))
}

/// The names of the `[section]` headers (not `[[array]]` headers), trimmed.
fn section_headers(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start().strip_prefix('[')?;
            if line.starts_with('[') {
                return None;
            }
            Some(line.split(']').next().unwrap_or(line).trim())
        })
        .collect()
}

fn is_nova_fragment(text: &str, headers: &[&str], schema: &Schema) -> bool {
    let our_table = headers.iter().any(|h| {
        let table = h.split('.').next().unwrap_or(h).trim().trim_matches('"');
        table == OPTIONS || schema.table(table).is_some()
    });
    let our_key = text
        .lines()
        .take_while(|line| !line.trim_start().starts_with('['))
        .filter_map(|line| line.split(['=', ':']).next())
        .any(|key| OUR_TOML_ONLY_KEYS.contains(&key.trim()));
    !our_table && !our_key
}

fn describe_toml_error(
    path: &Path,
    text: &str,
    error: &<Toml as Format>::Error,
    nova_sections: &[String],
) -> Error {
    let position = error
        .span()
        .map(|span| {
            let start = span.start.min(text.len());
            let before = text.get(..start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!(" at line {line}, column {column}")
        })
        .unwrap_or_default();
    // The message, never toml's rendering: that quotes the line, which may hold a password.
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let message = redact::redact_text(&message);
    let mut sections = vec![format!("[{DEFAULT_SECTION}]")];
    sections.extend(nova_sections.iter().map(|s| format!("[{s}]")));
    let sections = match sections.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => sections.join(""),
    };
    Error::config(format!(
        "configuration file {} is not valid TOML{position}: {message} \
         (a nova.conf-style INI file is recognised by a {sections} section)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{DriverConfig, DriverTable, NovaOption};

    #[derive(Default, serde::Serialize, serde::Deserialize)]
    #[serde(default)]
    struct Db {
        url: Option<String>,
    }
    impl DriverTable for Db {}

    #[derive(Default, serde::Serialize, serde::Deserialize)]
    #[serde(default)]
    struct Mc {
        servers: Vec<String>,
    }
    impl DriverTable for Mc {}

    const DB: DriverConfig =
        DriverConfig::new::<Db>("db").nova(&[NovaOption::new("database", "connection", "url")]);
    const MC: DriverConfig = DriverConfig::new::<Mc>("mc").nova(&[NovaOption::new(
        "cache",
        "memcache_servers",
        "servers",
    )]);

    /// Core with two drivers declaring what db and mc declare.
    fn schema() -> Schema {
        Schema::build([("db", DB), ("mc", MC)])
    }

    fn format_of(name: &str, text: &str) -> Result<FileFormat> {
        parse(Path::new(name), text, &schema()).map(|(f, _)| f)
    }

    #[test]
    fn detection() {
        use FileFormat::*;
        let cases = [
            ("a.conf", "[DEFAULT]\nreport_interval = 10\n", NovaIni),
            ("a.conf", "[database]\nconnection = sqlite://\n", NovaIni),
            ("a.conf", "[Cache]\nmemcache_servers = a:1\n", NovaIni),
            ("a", "report_interval = 10\n[db]\nurl = \"x\"\n", Toml),
            ("a.conf", "driver = \"inproc\"\n", Toml),
            ("a", "servicegroup_driver = mc\n", NovaIni),
            ("a", "[api]\nauth_strategy = keystone\n", NovaIni),
        ];
        for (name, text, want) in cases {
            assert_eq!(format_of(name, text).unwrap(), want, "{name}: {text:?}");
        }
        for (name, text) in [
            ("a.toml", "[DEFAULT]\nservicegroup_driver = mc\n"),
            ("a.conf", "driver = inproc\n"),
            ("a.conf", "[db]\nurl = postgres://x\n"),
        ] {
            let err = format_of(name, text).unwrap_err().to_string();
            assert!(err.contains("not valid TOML at line"), "{name}: {err}");
            assert!(
                err.contains("recognised by a [DEFAULT], [cache] or [database] section"),
                "{err}"
            );
        }
        // Core alone knows only [DEFAULT].
        let err = parse(Path::new("a.toml"), "x = [", &Schema::build([]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("recognised by a [DEFAULT] section"), "{err}");
    }
}
