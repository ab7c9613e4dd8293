//! Exit codes and the one-line `error: …` report.

use std::process::ExitCode;

use servicegroup::{Error, ErrorKind};

/// Exit code: success (for `status`: the member is up).
pub const EXIT_OK: u8 = 0;
/// Exit code of `status` when the member is down (forced down included), and of
/// `simulate` when it saw a false down or a killed member never judged down.
pub const EXIT_DOWN: u8 = 1;
/// Exit code for every error: bad id, bad configuration, backend unreachable, timeout, ...
pub const EXIT_ERROR: u8 = 2;
/// Exit code when the member does not exist (`status`, `force-down`, `remove`).
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code of `join` when another process took the member over (superseded): the
/// process stops heartbeating and exits without leaving (the record is the new
/// holder's).
pub const EXIT_SUPERSEDED: u8 = 4;

/// A command that could not do its job: the exit code and what went wrong.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub code: u8,
    /// What was wrong, printed as `error: {message}`.
    pub message: String,
}

impl Failure {
    /// A failure with exit code 2 and a message of our own.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_ERROR,
            message: message.into(),
        }
    }

    /// A failure with its own exit code and message.
    pub fn with_code(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Like `From<Error>`, but a `NotFound` error exits with 3.
    pub fn not_found_is_3(error: Error) -> Self {
        let code = if error.kind() == ErrorKind::NotFound {
            EXIT_NOT_FOUND
        } else {
            EXIT_ERROR
        };
        Self {
            code,
            message: describe(&error),
        }
    }

    /// Prints `error: …` on stderr as one line and returns the exit code.
    pub fn report(self) -> ExitCode {
        crate::console::err_line(format_args!("error: {}", one_line(&self.message)));
        ExitCode::from(self.code)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self {
            code: EXIT_ERROR,
            message: describe(&error),
        }
    }
}

/// The error and its chain of causes, each added only if it says something new.
pub fn describe(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Folds line breaks and other control characters so the report stays one line.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last_space = false;
    for c in text.trim().chars() {
        if c.is_control() || c == '\n' {
            if !last_space {
                out.push(' ');
                last_space = true;
            }
        } else {
            out.push(c);
            last_space = c == ' ';
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_maps_to_3_and_others_to_2() {
        let f = Failure::not_found_is_3(Error::not_found("no member x in group g"));
        assert_eq!(f.code, EXIT_NOT_FOUND);
        let f = Failure::not_found_is_3(Error::unavailable("refused"));
        assert_eq!(f.code, EXIT_ERROR);
        let f: Failure = Error::not_found("x").into();
        assert_eq!(f.code, EXIT_ERROR);
    }

    #[test]
    fn chain_is_folded_into_one_line() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused\nby peer");
        let e = Error::unavailable("connect to 127.0.0.1:1").with_source(io);
        let text = one_line(&describe(&e));
        assert_eq!(
            text,
            "backend unavailable: connect to 127.0.0.1:1: refused by peer"
        );
    }
}
