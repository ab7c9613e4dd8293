//! Configuration durations on arbitrary input: any text, number or other value either
//! reads as a duration greater than zero or is refused with a message saying what was
//! expected, never a panic; what is rendered reads back exactly; and through the
//! loader, a bad duration of any core key is a `Config` error naming the key and the
//! source.

use std::time::Duration;

use proptest::prelude::*;
use servicegroup_core::config::duration;
use servicegroup_core::{ConfigLoader, ErrorKind};

/// The core keys that hold a duration.
const KEYS: &[&str] = &[
    "report_interval",
    "service_down_time",
    "call_timeout",
    "watch_interval",
    "coalesce_window",
];

/// Text shaped like durations, good and bad.
fn duration_text() -> impl Strategy<Value = String> {
    let unit = prop_oneof![
        Just(""),
        Just("ns"),
        Just("us"),
        Just("ms"),
        Just("s"),
        Just("m"),
        Just("h"),
        Just("d"),
        Just("w"),
        Just("M"),
        Just("y"),
        Just("years"),
        Just("sec"),
        Just("x"),
    ];
    let number = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "[0-9]{15,40}",
        "-?[0-9]{0,3}\\.[0-9]{0,12}",
        "[0-9]e[+-]?[0-9]{1,4}",
        prop_oneof![
            Just("NaN"),
            Just("inf"),
            Just("-inf"),
            Just("+0"),
            Just("-0.0")
        ]
        .prop_map(str::to_owned),
    ];
    prop_oneof![
        any::<String>(),
        (number.clone(), unit.clone()).prop_map(|(n, u)| format!("{n}{u}")),
        proptest::collection::vec((number, unit), 1..4).prop_map(|parts| {
            parts
                .into_iter()
                .map(|(n, u)| format!("{n}{u}"))
                .collect::<Vec<_>>()
                .join(" ")
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_text_is_a_positive_duration_or_an_error(text in duration_text()) {
        match duration::parse(&text) {
            Ok(d) => {
                prop_assert!(!d.is_zero(), "{text:?} read as zero");
                // Plain seconds read as exactly that many seconds.
                if let Ok(secs) = text.trim().parse::<f64>() {
                    prop_assert_eq!(Some(d), Duration::try_from_secs_f64(secs).ok());
                }
            }
            Err(message) => {
                prop_assert!(
                    message.contains("duration") || message.contains("expected"),
                    "{text:?}: {message}"
                );
                prop_assert!(message.len() <= text.len() * 2 + 300, "{} bytes", message.len());
            }
        }
    }

    #[test]
    fn seconds_as_numbers_follow_the_same_rules(secs in any::<f64>()) {
        let as_number = duration::from_secs_f64(secs);
        let model = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| secs > 0.0 && !d.is_zero() && *d <= duration::MAX);
        prop_assert_eq!(as_number.clone().ok(), model, "{:?}", as_number);
    }

    #[test]
    fn what_is_rendered_reads_back_exactly(secs in 0u64..=duration::MAX.as_secs(), nanos in 0u32..1_000_000_000) {
        let d = Duration::new(secs, nanos).min(duration::MAX);
        prop_assume!(!d.is_zero());
        let text = duration::render(d);
        prop_assert_eq!(duration::parse(&text), Ok(d), "{}", text);
    }

    #[test]
    fn a_bad_duration_of_any_key_names_the_key_and_the_source(
        key in proptest::sample::select(KEYS),
        text in duration_text(),
    ) {
        let var = format!("SERVICEGROUP_{}", key.to_uppercase());
        let loaded = ConfigLoader::new()
            .env_from([(var.as_str(), text.as_str())])
            .set("driver", "none")
            .load();
        let direct = duration::parse(&text);
        match loaded {
            Ok(_) => prop_assert!(direct.is_ok(), "{text:?} loaded, parse said {direct:?}"),
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::Config);
                let message = e.message();
                if direct.is_err() {
                    prop_assert!(message.contains(&format!("`{key}`")), "{message}");
                    prop_assert!(message.contains(&var), "{message}");
                }
            }
        }
    }
}

/// Found by `seconds_as_numbers_follow_the_same_rules`: `Duration::try_from_secs_f64`
/// rounds below a nanosecond to zero, so `1e-10` passed the "greater than zero" check
/// and read as a zero duration.
#[test]
fn below_a_nanosecond_is_not_read_as_zero() {
    for text in ["1e-10", "0.0000000001"] {
        let e = duration::parse(text).unwrap_err();
        assert!(e.contains("greater than zero"), "{text}: {e}");
    }
    let e = ConfigLoader::new()
        .set("driver", "none")
        .set("call_timeout", 1e-10)
        .load()
        .unwrap_err();
    assert!(e.message().contains("`call_timeout`"), "{e}");
}

/// Found by `a_bad_duration_of_any_key_names_the_key_and_the_source`: a huge
/// `report_interval` (`1e19` s) loaded, then Nova's 2.5x rule (`Duration::mul_f64`)
/// panicked on the overflow. Durations above 100 years are refused, naming the key and
/// the source, and a configuration built in code with one is refused by `validated`.
#[test]
fn a_huge_report_interval_is_an_error_not_a_panic() {
    let e = ConfigLoader::new()
        .env_from([("SERVICEGROUP_REPORT_INTERVAL", "1e19")])
        .set("driver", "none")
        .load()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.message().contains("`report_interval`"), "{e}");
    assert!(e.message().contains("SERVICEGROUP_REPORT_INTERVAL"), "{e}");
    assert!(e.message().contains("at most 100years"), "{e}");

    let mut config = servicegroup_core::Config::with_driver("none");
    config.report_interval = Duration::MAX;
    assert!(config.effective_service_down_time() >= duration::MAX);
    let e = config.validated().unwrap_err();
    assert!(
        e.message().contains("`report_interval` must be at most"),
        "{e}"
    );
    assert_eq!(duration::parse("100y"), Ok(duration::MAX));
}

/// Found by `any_text_is_a_positive_duration_or_an_error` (once the range was
/// checked): `1e254` was shown as its 255 digits.
#[test]
fn huge_numbers_are_shown_in_scientific_notation() {
    let e = duration::parse("1e254").unwrap_err();
    assert!(e.contains("found 1e254"), "{e}");
    let e = duration::parse("-1e-300").unwrap_err();
    assert!(e.contains("found -1e-300"), "{e}");
}
