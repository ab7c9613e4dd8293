//! The bearer token check: `Authorization: Bearer TOKEN` on every call but
//! `/healthz`, compared in constant time (SHA-256 digests of the presented and the
//! expected token, compared with `subtle`, so neither content nor length leaks through
//! timing). Refusals are 401 and log nothing of what was presented.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use servicegroup_core::config::Secret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The expected token, kept only as its digest.
#[derive(Clone)]
pub struct TokenCheck {
    digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCheck")
            .field("required", &self.digest.is_some())
            .finish()
    }
}

impl TokenCheck {
    /// Checks for `token`; `None` lets every request through (`--insecure`).
    pub fn new(token: Option<&Secret>) -> Self {
        Self {
            digest: token.map(|t| Sha256::digest(t.expose().as_bytes()).into()),
        }
    }

    /// Whether an `Authorization` header value carries the token.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(expected) = &self.digest else {
            return true;
        };
        let Some(presented) = authorization.and_then(|v| v.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(presented).into();
        presented.ct_eq(expected).into()
    }
}

/// The middleware: 401 `unauthorized` unless the request carries the token.
pub(crate) async fn require_token(
    State(check): State<TokenCheck>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if check.allows(presented) {
        return next.run(request).await;
    }
    tracing::info!(path = %request.uri().path(), "request refused: missing or wrong bearer token");
    let mut answer = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong bearer token (Authorization: Bearer TOKEN)",
    )
    .into_response();
    answer.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        let check = TokenCheck::new(Some(&Secret::new("abc")));
        assert!(check.allows(Some(b"Bearer abc")));
        assert!(!check.allows(Some(b"Bearer abd")));
        assert!(!check.allows(Some(b"Bearer abcd")));
        assert!(!check.allows(Some(b"abc")));
        assert!(!check.allows(None));
        assert!(TokenCheck::new(None).allows(None));
        assert!(!format!("{check:?}").contains("abc"));
    }
}
