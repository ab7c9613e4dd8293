//! The one error type of servicegroup.
//!
//! Every failure carries an [`ErrorKind`] (what kind of failure, the thing callers
//! branch on), the name of the driver it came from when there is one, a message that
//! names what was wrong, and the underlying source. "Cannot reach the backend" is
//! [`ErrorKind::Unavailable`] or [`ErrorKind::Timeout`], never a verdict of "down".

use std::borrow::Cow;
use std::fmt;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error source type carried by [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A group or member id broke the id rules (empty, too long, whitespace, control characters, not UTF-8).
    InvalidId,
    /// Configuration is missing, malformed or inconsistent.
    Config,
    /// The backend cannot be reached (connection refused, lost, pool exhausted).
    Unavailable,
    /// A backend call did not finish in time.
    Timeout,
    /// The member (or group) does not exist.
    NotFound,
    /// The member is already joined on this handle.
    AlreadyJoined,
    /// The backend answered with an error that is none of the above.
    Backend,
    /// Another instance holds the member: an exclusive join of a live member, or an
    /// update by a membership that was taken over (superseded).
    Conflict,
    /// Member metadata broke the metadata rules (too many entries, a bad key, a value
    /// or the whole too long); the message names the key and the rule.
    InvalidMetadata,
}

impl ErrorKind {
    /// A short lowercase name of the kind, as used in messages and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidId => "invalid id",
            ErrorKind::Config => "configuration error",
            ErrorKind::Unavailable => "backend unavailable",
            ErrorKind::Timeout => "backend timeout",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyJoined => "already joined",
            ErrorKind::Backend => "backend error",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidMetadata => "invalid metadata",
        }
    }

    /// The kind as a stable snake_case code (`invalid_id`, `config`, `unavailable`,
    /// `timeout`, `not_found`, `already_joined`, `backend`, `conflict`,
    /// `invalid_metadata`): the form machines read, in metric labels and JSON.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidId => "invalid_id",
            ErrorKind::Config => "config",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyJoined => "already_joined",
            ErrorKind::Backend => "backend",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidMetadata => "invalid_metadata",
        }
    }

    /// The kind named by its [`ErrorKind::code`], `None` for any other text.
    pub fn from_code(code: &str) -> Option<ErrorKind> {
        Some(match code {
            "invalid_id" => ErrorKind::InvalidId,
            "config" => ErrorKind::Config,
            "unavailable" => ErrorKind::Unavailable,
            "timeout" => ErrorKind::Timeout,
            "not_found" => ErrorKind::NotFound,
            "already_joined" => ErrorKind::AlreadyJoined,
            "backend" => ErrorKind::Backend,
            "conflict" => ErrorKind::Conflict,
            "invalid_metadata" => ErrorKind::InvalidMetadata,
            _ => return None,
        })
    }

    /// True for the kinds that mean "the backend could not give an answer"
    /// ([`ErrorKind::Unavailable`], [`ErrorKind::Timeout`]).
    pub fn is_unreachable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A servicegroup error: a kind, an optional driver name, a message and an optional source.
///
/// Messages never contain secrets: drivers redact passwords before building errors.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub struct Error {
    kind: ErrorKind,
    driver: Option<Cow<'static, str>>,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            driver: None,
            message: message.into(),
            source: None,
        }
    }

    /// An [`ErrorKind::InvalidId`] error.
    pub fn invalid_id(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidId, message)
    }

    /// An [`ErrorKind::Config`] error.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// An [`ErrorKind::Unavailable`] error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// An [`ErrorKind::Timeout`] error.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    /// An [`ErrorKind::NotFound`] error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// An [`ErrorKind::Backend`] error.
    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Backend, message)
    }

    /// An [`ErrorKind::Conflict`] error.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// Attaches the driver name the error came from (kept if already set).
    pub fn with_driver(mut self, driver: impl Into<Cow<'static, str>>) -> Self {
        if self.driver.is_none() {
            self.driver = Some(driver.into());
        }
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The driver the error came from, if any.
    pub fn driver(&self) -> Option<&str> {
        self.driver.as_deref()
    }

    /// The message, without kind or driver prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.driver {
            Some(driver) => write!(f, "{} ({driver} driver): {}", self.kind, self.message),
            None => write!(f, "{}: {}", self.kind, self.message),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind);
        if let Some(driver) = &self.driver {
            d.field("driver", driver);
        }
        d.field("message", &self.message);
        if let Some(source) = &self.source {
            // Display, not Debug: a source's Debug could show connection parameters.
            d.field("source", &source.to_string());
        }
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_kind_driver_and_message() {
        let e = Error::unavailable("connect to 127.0.0.1:5432 refused").with_driver("db");
        assert_eq!(
            e.to_string(),
            "backend unavailable (db driver): connect to 127.0.0.1:5432 refused"
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.kind().is_unreachable());
        assert!(!ErrorKind::NotFound.is_unreachable());
    }

    #[test]
    fn source_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::unavailable("x").with_source(io);
        assert!(std::error::Error::source(&e).is_some());
    }
}
