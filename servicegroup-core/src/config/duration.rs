//! Durations in configuration: seconds (integer or fractional, as a number or a
//! string) or humantime strings (`200ms`, `1m`, `1h 30m`).
//!
//! Zero, negative, non-finite and non-numeric values, values that would round to
//! zero (below a nanosecond) and values above [`MAX`] are rejected with a message
//! that the loader decorates with the key and the source it came from.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// The longest duration accepted: 100 years (of 365.25 days, as humantime counts
/// them). Far above any sensible interval or timeout, and low enough that what is
/// computed from one (Nova's 2.5x rule, a deadline from now, a doubled timeout) cannot
/// overflow.
pub const MAX: Duration = Duration::from_secs(100 * 31_557_600);

/// `d` itself, or why it is out of range (zero, above [`MAX`]); `found` is the value
/// as given, for the message.
fn in_range(d: Duration, found: &dyn fmt::Display) -> Result<Duration, String> {
    if d.is_zero() {
        return Err(format!("duration must be greater than zero, found {found}"));
    }
    if d > MAX {
        return Err(format!(
            "duration must be at most {} ({} s), found {found}",
            render(MAX),
            MAX.as_secs()
        ));
    }
    Ok(d)
}

/// Most characters of a refused value shown in a message.
const SHOWN: usize = 64;

/// `text` quoted and escaped, its first [`SHOWN`] characters (then `…`): a refused
/// value may be a megabyte-long line.
fn shown(text: &str) -> String {
    if text.chars().count() > SHOWN {
        let head: String = text.chars().take(SHOWN).collect();
        format!("{head:?}…")
    } else {
        format!("{text:?}")
    }
}

/// A parser's message (which may quote the value) cut to twice [`SHOWN`] characters.
fn shortened(message: &str) -> String {
    if message.chars().count() > 2 * SHOWN {
        let head: String = message.chars().take(2 * SHOWN).collect();
        format!("{head}…")
    } else {
        message.to_owned()
    }
}

/// Parses a duration from text: plain seconds (`10`, `0.2`) or humantime (`200ms`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("expected a duration, found an empty value".to_owned());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return from_secs_f64(secs);
    }
    match humantime::parse_duration(text) {
        Ok(d) => in_range(d, &shown(text)),
        Err(e) => Err(format!(
            "expected a duration such as `10`, `0.5`, `200ms` or `1m`, found {} ({})",
            shown(text),
            shortened(&e.to_string())
        )),
    }
}

/// Converts seconds to a duration, rejecting zero, negative and non-finite values.
pub fn from_secs_f64(secs: f64) -> Result<Duration, String> {
    // Very large and very small numbers in scientific notation (`1e254`, not 255 digits).
    let shown = if secs != 0.0 && !(1e-6..1e16).contains(&secs.abs()) {
        format!("{secs:e}")
    } else {
        secs.to_string()
    };
    if !secs.is_finite() {
        return Err(format!(
            "duration must be a finite number of seconds, found {shown}"
        ));
    }
    if secs <= 0.0 {
        return Err(format!("duration must be greater than zero, found {shown}"));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d.is_zero() => Err(format!(
            "duration must be greater than zero, found {shown} (less than 1ns)"
        )),
        Ok(d) => in_range(d, &shown),
        Err(_) => in_range(Duration::MAX, &shown),
    }
}

/// Renders a duration the way [`parse`] reads it back (`10s`, `200ms`).
pub fn render(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration: seconds (`10`, `0.5`) or a string such as `200ms` or `1m`")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        in_range(Duration::from_secs(v), &v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        if v <= 0 {
            return Err(E::custom(format!(
                "duration must be greater than zero, found {v}"
            )));
        }
        self.visit_u64(v as u64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        from_secs_f64(v).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
}

/// Serde `deserialize_with` for [`Duration`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// Serde `serialize_with` for [`Duration`]: a humantime string.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&render(*d))
}

/// The same for `Option<Duration>`.
pub mod option {
    use super::*;

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            DurationVisitor.expecting(f)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }

    /// Serde `deserialize_with` for `Option<Duration>`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_option(OptionVisitor)
    }

    /// Serde `serialize_with` for `Option<Duration>`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&render(*d)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seconds_and_humantime() {
        assert_eq!(parse("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("0.2").unwrap(), Duration::from_millis(200));
        assert_eq!(parse("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse("1m").unwrap(), Duration::from_secs(60));
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            "0", "-1", "abc", "", "NaN", "inf", "0ms", "-5s", "1e-10", "1e19", "101y",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse("100y").unwrap(), MAX);
        assert_eq!(parse(&render(MAX)).unwrap(), MAX);
    }
}
