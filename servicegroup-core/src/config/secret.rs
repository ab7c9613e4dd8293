//! [`DatabaseUrl`]: a connection URL whose password never reaches a log, an error or `Debug`;
//! [`Secret`]: a whole value (a token) that never does.
//!
//! A driver whose options hold such a URL uses it as the type of that key (the db
//! driver's `url`) and declares the key secret as well, so core masks it too.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A database URL that keeps its password out of `Debug`, `Display` and serialization.
///
/// Use [`DatabaseUrl::expose`] only where the URL is handed to the database client.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***` (in the userinfo part and in
    /// `password=` query parameters).
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

/// Replaces the password of a URL-like string by `***` (the rule of
/// [`redact::redact_url`](crate::config::redact::redact_url)).
pub fn redact(url: &str) -> String {
    crate::config::redact::redact_url(url)
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

/// A secret value (a bearer token): `Debug`, `Display` and serialization show `***`.
///
/// Use [`Secret::expose`] only where the value is compared or sent.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::config::redact::MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(crate::config::redact::MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_hidden_everywhere() {
        let u = DatabaseUrl::new(
            "postgresql+psycopg2://nova:s3cr3t@db:5432/nova?sslmode=require&password=s3cr3t",
        );
        for shown in [format!("{u}"), format!("{u:?}"), u.redacted()] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("nova:***@db:5432"), "{shown}");
        }
        assert!(u.expose().contains("s3cr3t"));
        assert_eq!(redact("sqlite:///var/lib/x.db"), "sqlite:///var/lib/x.db");
        assert_eq!(redact("postgres://user@h/db"), "postgres://user@h/db");
        assert_eq!(redact("mysql://u:p@ss@h/db"), "mysql://u:***@h/db");
    }

    #[test]
    fn secret_is_hidden_everywhere() {
        let t = Secret::new("t0ken-value");
        for shown in [
            format!("{t}"),
            format!("{t:?}"),
            serde_json::to_string(&t).unwrap(),
        ] {
            assert!(!shown.contains("t0ken"), "{shown}");
        }
        assert_eq!(t.expose(), "t0ken-value");
    }
}
