//! Configuration files on arbitrary input, through the real loader
//! (`ConfigLoader::file`): random bytes, invalid UTF-8, deep nesting, huge lines and a
//! value of every wrong type for every core key, in our TOML and in nova.conf INI.
//! Every outcome is a loaded configuration or a `Config` error naming the file (and
//! the line for a syntax error, the key for a bad value), never a panic or a crash.
//!
//! Only core's keys here (no driver is linked into this test); the tables of the
//! bundled drivers are fuzzed the same way in `servicegroup/tests/config_tables_properties.rs`.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use servicegroup_core::{ConfigLoader, ErrorKind, LoadedConfig, Result};

/// Core's keys as TOML writes them.
const KEYS: &[&str] = &[
    "driver",
    "report_interval",
    "service_down_time",
    "call_timeout",
    "watch_interval",
    "coalesce_window",
];

/// Core's nova.conf options (`[DEFAULT]`) and the key each sets.
const NOVA: &[(&str, &str)] = &[
    ("servicegroup_driver", "driver"),
    ("report_interval", "report_interval"),
    ("service_down_time", "service_down_time"),
];

/// Longest error message accepted for a file at `path`: errors show what was wrong,
/// shortened, not the whole input.
fn max_message(path: &Path) -> usize {
    path.display().to_string().len() * 2 + 1_500
}

fn load(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> (PathBuf, Result<LoadedConfig>) {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let loaded = ConfigLoader::new().file(&path).load();
    (path, loaded)
}

/// An error must be a `Config` error naming the file, of bounded size; a syntax
/// error names the line.
fn check_error(
    path: &Path,
    e: &servicegroup_core::Error,
) -> std::result::Result<(), TestCaseError> {
    prop_assert_eq!(e.kind(), ErrorKind::Config, "{}", e);
    let message = e.message();
    let shown: String = message.chars().take(300).collect();
    prop_assert!(
        message.contains(&path.display().to_string()),
        "no path in {shown}"
    );
    prop_assert!(
        message.len() <= max_message(path),
        "{} bytes: {shown}",
        message.len()
    );
    if message.contains("not valid TOML") || message.contains("as a nova.conf-style INI") {
        prop_assert!(message.contains("line"), "no line in {shown}");
    }
    Ok(())
}

fn file_name() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&["sg.toml", "nova.conf", "sg"][..])
}

/// A TOML value of any type, rendered.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| {
            if f.is_nan() {
                "nan".to_owned()
            } else if f.is_infinite() {
                if f > 0.0 { "inf" } else { "-inf" }.to_owned()
            } else {
                format!("{f:e}")
            }
        }),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<String>().prop_map(|s| toml_string(&s)),
        "[0-9]{1,4}(ms|s|m|h|d|y|x)?".prop_map(|s| toml_string(&s)),
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just("[]".to_owned()),
        Just("[1, \"a\"]".to_owned()),
        Just("{}".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("18446744073709551616".to_owned()),
    ]
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32 & 0xffff)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text made of the pieces configuration files are made of, in random order.
fn config_like_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("[DEFAULT]\n".to_owned()),
        Just("[db]\n".to_owned()),
        Just("[options.x]\n".to_owned()),
        Just("[[a]]\n".to_owned()),
        Just("report_interval = 10\n".to_owned()),
        Just("driver = \"inproc\"\n".to_owned()),
        Just("servicegroup_driver = mc\n".to_owned()),
        Just("  continued\n".to_owned()),
        Just("# comment\n".to_owned()),
        Just("=\n".to_owned()),
        Just("[\n".to_owned()),
        Just("\"\n".to_owned()),
        Just("a.b.c = 1\n".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("<None>\n".to_owned()),
        (proptest::sample::select(KEYS), toml_value()).prop_map(|(k, v)| format!("{k} = {v}\n")),
        any::<String>(),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_load_or_name_the_file(name in file_name(), bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let dir = tempfile::tempdir().unwrap();
        let (path, loaded) = load(&dir, name, &bytes);
        if let Err(e) = loaded {
            check_error(&path, &e)?;
            if std::str::from_utf8(&bytes).is_err() {
                prop_assert!(e.message().contains("not UTF-8"), "{}", e);
            }
        }
    }

    #[test]
    fn config_like_text_loads_or_names_the_file(name in file_name(), text in config_like_text()) {
        let dir = tempfile::tempdir().unwrap();
        let (path, loaded) = load(&dir, name, text.as_bytes());
        if let Err(e) = loaded {
            check_error(&path, &e)?;
        }
    }

    #[test]
    fn invalid_utf8_anywhere_names_the_file_and_the_offset(
        name in file_name(),
        text in config_like_text(),
        at in any::<prop::sample::Index>(),
        byte in 0x80u8..=0xff,
    ) {
        let mut bytes = text.into_bytes();
        let at = at.index(bytes.len() + 1);
        // A lone byte >= 0x80 where a character starts is never valid UTF-8...
        let at = (0..=at).rev().find(|&i| i == bytes.len() || (bytes[i] & 0xc0) != 0x80).unwrap_or(0);
        bytes.insert(at, byte);
        // ...unless it completes a sequence with what follows: make sure it does not.
        prop_assume!(std::str::from_utf8(&bytes).is_err());
        let dir = tempfile::tempdir().unwrap();
        let (path, loaded) = load(&dir, name, &bytes);
        let e = loaded.unwrap_err();
        check_error(&path, &e)?;
        prop_assert!(e.message().contains("not UTF-8"), "{}", e);
        let offset = std::str::from_utf8(&bytes).unwrap_err().valid_up_to();
        prop_assert!(e.message().contains(&format!("offset {offset}")), "{}", e);
    }

    #[test]
    fn every_core_key_with_a_value_of_any_type_loads_or_names_key_and_file(
        key in proptest::sample::select(KEYS),
        value in toml_value(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{key} = {value}\n");
        let (path, loaded) = load(&dir, "sg.toml", text.as_bytes());
        match loaded {
            Ok(loaded) => {
                // Only a string may be a driver name; only numbers and strings durations.
                if key == "driver" {
                    prop_assert!(value.starts_with('"'), "{text:?} loaded");
                    prop_assert_eq!(loaded.config.driver.trim().is_empty(), false);
                } else {
                    prop_assert!(
                        value.starts_with('"')
                            || value.parse::<f64>().is_ok_and(|f| f.is_finite() && f > 0.0),
                        "{text:?} loaded"
                    );
                }
            }
            Err(e) => {
                check_error(&path, &e)?;
                // A bad value names the key; a value TOML itself refuses (a number too
                // large) is a syntax error, which names the line.
                prop_assert!(
                    e.message().contains(&format!("`{key}`"))
                        || e.message().contains("not valid TOML at line 1"),
                    "{text:?}: {e}"
                );
            }
        }
    }

    #[test]
    fn every_nova_option_with_any_value_loads_or_names_key_and_file(
        option in proptest::sample::select(NOVA),
        value in "[^\r\n]{0,300}",
        header in any::<bool>(),
    ) {
        let (option, key) = option;
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{}{option} = {value}\n", if header { "[DEFAULT]\n" } else { "" });
        let (path, loaded) = load(&dir, "nova.conf", text.as_bytes());
        if let Err(e) = loaded {
            check_error(&path, &e)?;
            // Read as nova.conf, a bad value names our key; a line that is not INI at
            // all is a syntax error with its line.
            prop_assert!(
                e.message().contains(&format!("`{key}`")) || e.message().contains("line"),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn deep_nesting_loads_or_names_the_file(
        depth in 1usize..3_000,
        form in 0usize..4,
        name in file_name(),
    ) {
        let text = match form {
            0 => format!("x = {}1{}\n", "[".repeat(depth), "]".repeat(depth)),
            1 => format!("x = {}1{}\n", "{ a = ".repeat(depth), " }".repeat(depth)),
            2 => format!("[options.{}]\nb = 1\n", vec!["a"; depth].join(".")),
            _ => format!("options.x.{} = 1\n", vec!["a"; depth].join(".")),
        };
        let dir = tempfile::tempdir().unwrap();
        let (path, loaded) = load(&dir, name, text.as_bytes());
        if let Err(e) = loaded {
            check_error(&path, &e)?;
        }
    }

    #[test]
    fn huge_lines_load_or_name_the_file(
        len in 10_000usize..300_000,
        form in 0usize..5,
        name in file_name(),
    ) {
        let long = "x".repeat(len);
        let text = match form {
            0 => format!("driver = \"{long}\"\n"),
            1 => format!("report_interval = \"{long}\"\n"),
            2 => format!("{long} = 1\n"),
            3 => format!("[DEFAULT]\nreport_interval = {long}\n"),
            _ => format!("# {long}\n[{long}\n"),
        };
        let dir = tempfile::tempdir().unwrap();
        let (path, loaded) = load(&dir, name, text.as_bytes());
        if let Err(e) = loaded {
            check_error(&path, &e)?;
        }
    }
}

/// Found by `huge_lines_load_or_name_the_file`: a bad duration was quoted whole, so a
/// 10 kB line made a 10 kB error (and humantime's own message quoted it again); so
/// was an unknown key.
#[test]
fn a_huge_bad_duration_or_unknown_key_is_shown_shortened() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(100_000);
    for text in [
        format!("report_interval = \"{long}\"\n"),
        format!("report_interval = \"1{long}\"\n"),
        format!("{long} = 1\n"),
    ] {
        let (path, loaded) = load(&dir, "sg.toml", text.as_bytes());
        let e = loaded.unwrap_err();
        let key = if text.starts_with('x') {
            "`xxxx"
        } else {
            "`report_interval`"
        };
        assert!(e.message().contains(key), "{e}");
        assert!(e.message().contains(&path.display().to_string()), "{e}");
        assert!(e.message().len() < 1_000, "{} bytes", e.message().len());
    }
}
