//! Errors: [`RelayError`] (the relay could not start) and the JSON error answers of
//! the API (`{"error": {"kind", "message"}}`), with the status that fits each kind.

use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use servicegroup_core::json::{kind_name, ErrorBody, ErrorDetail, HolderBody};
use servicegroup_core::{Error, ErrorKind, Holder};

/// Why the relay cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The options break a rule (no token without `--insecure`, TLS half given, ...).
    #[error("relay options: {0}")]
    Options(String),
    /// A file named by an option cannot be read or is not what it should be.
    #[error("cannot read {what} {}: {message}", path.display())]
    File {
        /// What the file is (`--token-file`, `--tls-cert`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The driver could not be built from the configuration.
    #[error(transparent)]
    Driver(#[from] Error),
}

/// An error answer of the API.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
}

impl ApiError {
    /// An answer with `status` and a relay-level kind (`bad_request`, `unauthorized`, ...).
    pub(crate) fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            detail: ErrorDetail {
                kind: kind.to_owned(),
                message: message.into(),
                found: None,
            },
        }
    }

    /// 400 `bad_request`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// The error object (tests).
    #[cfg(test)]
    pub(crate) fn detail(&self) -> &ErrorDetail {
        &self.detail
    }

    /// 409 `conflict` for a refused conditional write, naming the holder found.
    pub(crate) fn refused(message: impl Into<String>, found: Option<Holder>) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            kind_name(ErrorKind::Conflict),
            message,
        );
        e.detail.found = Some(found.map(HolderBody::from));
        e
    }
}

/// The status of a library error kind.
pub(crate) fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidId | ErrorKind::InvalidMetadata => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict | ErrorKind::AlreadyJoined => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Backend => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = status_of(e.kind());
        if status.is_server_error() {
            tracing::warn!(kind = %e.kind(), status = status.as_u16(), "backend call failed: {e}");
        }
        Self::new(status, kind_name(e.kind()), e.message().to_owned())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.detail })).into_response()
    }
}
