//! Backend failures and how they become [`servicegroup_core::Error`]s.
//!
//! - connection refused / closed / lost, the pool out of connections or unable to
//!   connect in time: [`ErrorKind::Unavailable`];
//! - a statement cancelled by `statement_timeout` (MariaDB `max_statement_time`,
//!   MySQL `max_execution_time`, InnoDB lock wait timeout), SQLite busy past its busy
//!   timeout, or a call exceeding `[db] timeout`: [`ErrorKind::Timeout`];
//! - TLS that cannot be set up (a CA file that cannot be read) or a server
//!   certificate that is refused, when connecting first: [`ErrorKind::Config`] (the
//!   message names the TLS options); later, from the pool, the database is
//!   [`ErrorKind::Unavailable`] with the same message;
//! - anything else the database answered: [`ErrorKind::Backend`].
//!
//! Every message goes through a [`Redactor`], so a password that a client library
//! might echo never reaches an error, a log line or `Debug`.

use std::time::Duration;

use diesel::result::{ConnectionError, DatabaseErrorKind, Error as QueryError};
use diesel_async::pooled_connection::deadpool::PoolError;
use diesel_async::pooled_connection::PoolError as ManagerError;
use servicegroup_core::{Error, ErrorKind};

/// What went wrong talking to the database, before it is classified.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    /// A statement failed.
    #[error("{0}")]
    Query(#[from] QueryError),
    /// Connecting failed (outside the pool: migrations).
    #[error("{0}")]
    Connect(#[from] ConnectionError),
    /// The pool could not hand out a connection.
    #[error("{0}")]
    Pool(#[from] PoolError),
    /// TLS could not be set up or the server's certificate was refused; the message
    /// names the TLS options in force (`sslmode=verify-full, sslrootcert=…`). A
    /// configuration error: retrying does not help.
    #[error("{0}")]
    Tls(String),
    /// The call did not finish within `[db] timeout`.
    #[error("no answer within {0:?} (`db.timeout`)")]
    TimedOut(Duration),
    /// Something else (a blocking task that died, a migration that failed).
    #[error("{0}")]
    Other(String),
}

impl DbError {
    /// The kind this failure is.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            DbError::Query(e) => query_kind(e),
            DbError::Connect(e) => connect_kind(e),
            DbError::Pool(e) => match e {
                PoolError::Timeout(_) | PoolError::Closed | PoolError::PostCreateHook(_) => {
                    ErrorKind::Unavailable
                }
                PoolError::Backend(ManagerError::ConnectionError(c)) => connect_kind(c),
                PoolError::Backend(ManagerError::QueryError(q)) => match query_kind(q) {
                    // A failed liveness check of a pooled connection means it is gone.
                    ErrorKind::Backend => ErrorKind::Unavailable,
                    other => other,
                },
                PoolError::NoRuntimeSpecified => ErrorKind::Backend,
            },
            DbError::TimedOut(_) => ErrorKind::Timeout,
            DbError::Tls(_) => ErrorKind::Config,
            DbError::Other(_) => ErrorKind::Backend,
        }
    }

    /// A readable description (not yet redacted).
    pub(crate) fn describe(&self) -> String {
        match self {
            DbError::Pool(PoolError::Timeout(t)) => {
                let what = match t {
                    deadpool::managed::TimeoutType::Wait => {
                        "no pooled connection became free in time (pool exhausted)"
                    }
                    deadpool::managed::TimeoutType::Create => {
                        "connecting to the database did not finish in time"
                    }
                    deadpool::managed::TimeoutType::Recycle => {
                        "checking a pooled connection did not finish in time"
                    }
                };
                format!("{what} (`db.timeout`)")
            }
            DbError::Pool(PoolError::Backend(ManagerError::ConnectionError(c))) => {
                format!("cannot connect: {}", connect_message(c))
            }
            DbError::Connect(c) => format!("cannot connect: {}", connect_message(c)),
            DbError::Pool(PoolError::Closed) => "the connection pool is closed".to_owned(),
            other => other.to_string(),
        }
    }
}

fn connect_message(e: &ConnectionError) -> String {
    match e {
        ConnectionError::CouldntSetupConfiguration(q) => q.to_string(),
        other => other.to_string(),
    }
}

fn connect_kind(e: &ConnectionError) -> ErrorKind {
    match e {
        ConnectionError::InvalidConnectionUrl(_) => ErrorKind::Config,
        ConnectionError::CouldntSetupConfiguration(q) => match query_kind(q) {
            ErrorKind::Timeout => ErrorKind::Timeout,
            _ => ErrorKind::Unavailable,
        },
        _ => ErrorKind::Unavailable,
    }
}

/// Message fragments (lowercase) that mean "took too long".
const TIMEOUT_MARKERS: &[&str] = &[
    "statement timeout",
    "canceling statement",
    "lock timeout",
    "database is locked",
    "database table is locked",
    "timed out",
    "timeout",
    // MariaDB's max_statement_time, MySQL's max_execution_time.
    "max_statement_time exceeded",
    "execution time exceeded",
];

/// Message fragments (lowercase) that mean "the server or the connection is gone".
const UNAVAILABLE_MARKERS: &[&str] = &[
    "connection closed",
    "connection refused",
    "connection reset",
    "terminating connection",
    "server closed the connection",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "broken pipe",
    "unable to open database file",
    "error connecting",
    "error communicating",
    "no such host",
    "too many clients",
    "remaining connection slots",
    // MySQL / MariaDB (mysql_async's I/O and driver errors, server shutdown).
    "input/output error",
    "connection to the server is closed",
    "server shutdown in progress",
    "server has gone away",
    "lost connection",
    "connection was killed",
    "too many connections",
    "pool was disconnected",
    "unexpected end of file",
];

fn query_kind(e: &QueryError) -> ErrorKind {
    match e {
        QueryError::DatabaseError(kind, info) => {
            if matches!(
                kind,
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand
            ) {
                // UnableToSendCommand carries both "connection closed" and timeouts.
                return by_message(info.message()).unwrap_or(ErrorKind::Unavailable);
            }
            by_message(info.message()).unwrap_or(ErrorKind::Backend)
        }
        QueryError::BrokenTransactionManager => ErrorKind::Unavailable,
        other => by_message(&other.to_string()).unwrap_or(ErrorKind::Backend),
    }
}

fn by_message(message: &str) -> Option<ErrorKind> {
    let m = message.to_ascii_lowercase();
    if TIMEOUT_MARKERS.iter().any(|t| m.contains(t)) {
        Some(ErrorKind::Timeout)
    } else if UNAVAILABLE_MARKERS.iter().any(|t| m.contains(t)) {
        Some(ErrorKind::Unavailable)
    } else {
        None
    }
}

/// Removes secrets (passwords) from any text before it leaves the driver.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// A redactor for these secrets (empty ones are ignored).
    pub(crate) fn new(secrets: Vec<String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets }
    }

    /// `text` with every secret replaced by `***`.
    pub(crate) fn clean(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }

    /// Turns a backend failure during `what` on `location` (already redacted) into
    /// a servicegroup error whose message names both and holds no secret.
    pub(crate) fn error(&self, location: &str, what: &str, e: &DbError) -> Error {
        let message = self.clean(&format!("{what} on {location}: {}", e.describe()));
        Error::new(e.kind(), message).with_driver(crate::NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            DbError::TimedOut(Duration::from_secs(1)).kind(),
            ErrorKind::Timeout
        );
        let closed = QueryError::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("connection closed".to_owned()),
        );
        assert_eq!(DbError::Query(closed).kind(), ErrorKind::Unavailable);
        let cancelled = QueryError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("canceling statement due to statement timeout".to_owned()),
        );
        assert_eq!(DbError::Query(cancelled).kind(), ErrorKind::Timeout);
        let busy = QueryError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("database is locked".to_owned()),
        );
        assert_eq!(DbError::Query(busy).kind(), ErrorKind::Timeout);
        let syntax = QueryError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("syntax error at or near".to_owned()),
        );
        assert_eq!(DbError::Query(syntax).kind(), ErrorKind::Backend);
        assert_eq!(
            DbError::Connect(ConnectionError::BadConnection("refused".into())).kind(),
            ErrorKind::Unavailable
        );
        // MySQL / MariaDB (mysql_async) messages.
        for (message, kind) in [
            (
                "Query execution was interrupted (max_statement_time exceeded)",
                ErrorKind::Timeout,
            ),
            (
                "Lock wait timeout exceeded; try restarting transaction",
                ErrorKind::Timeout,
            ),
            (
                "Input/output error: Connection refused (os error 111)",
                ErrorKind::Unavailable,
            ),
            (
                "Driver error: `Connection to the server is closed.'",
                ErrorKind::Unavailable,
            ),
            ("Server shutdown in progress", ErrorKind::Unavailable),
            ("Duplicate entry 'x' for key 'PRIMARY'", ErrorKind::Backend),
        ] {
            let e =
                QueryError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(message.to_owned()));
            assert_eq!(DbError::Query(e).kind(), kind, "{message}");
        }
    }

    #[test]
    fn redactor_hides_secrets() {
        let r = Redactor::new(vec!["s3cr%3At".into(), "s3cr:t".into(), String::new()]);
        let e = r.error(
            "postgresql://u:***@h/db",
            "heartbeat",
            &DbError::Other("password s3cr:t rejected (raw s3cr%3At)".into()),
        );
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(
            shown.contains("heartbeat on postgresql://u:***@h/db"),
            "{shown}"
        );
    }
}
