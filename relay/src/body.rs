//! Extractors that answer bad input with the relay's JSON errors instead of axum's
//! plain-text 4xx: bodies ([`JsonBody`]: malformed JSON is 400 naming the field, too
//! large is 413), ids in paths ([`GroupPath`], [`KeyPath`]: validated by core's id
//! rules), the `instance` query parameter ([`InstanceQuery`]) and a listing's
//! `state` / `down_after` parameters ([`ListQuery`]).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use servicegroup_core::config::duration;
use servicegroup_core::json::{ForcedDownBody, HeartbeatBody, JoinBody, RegisterBody};
use servicegroup_core::{GroupId, InstanceId, MemberId, MemberKey, Metadata, State};

use crate::error::ApiError;

/// A request body type, and which error kind a bad value of it is.
pub(crate) trait WireBody: DeserializeOwned {
    /// The body is member metadata itself (`PUT .../metadata`).
    const IS_METADATA: bool = false;
}

impl WireBody for JoinBody {}
impl WireBody for ForcedDownBody {}
impl WireBody for HeartbeatBody {}
impl WireBody for RegisterBody {}
impl WireBody for Metadata {
    const IS_METADATA: bool = true;
}

/// A JSON body; any content type is accepted.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: WireBody> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read(req, state).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// The whole body, within the limit `DefaultBodyLimit` set: 413 `payload_too_large`
/// over it.
async fn read<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than the relay's limit",
    )
}

/// Middleware: reads the body, within `limit`, before any extractor runs, so a body
/// over the limit is a 413 whatever else is wrong with the request (a bad query, a
/// bad id), on every framing (a `Content-Length` or chunks). The body goes on as
/// bytes, which [`JsonBody`] takes without reading the connection again.
pub(crate) async fn bounded_body(
    axum::extract::State(limit): axum::extract::State<usize>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|inner| inner.is::<http_body_util::LengthLimitError>());
            if over {
                too_large().into_response()
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}")).into_response()
            }
        }
    }
}

/// Parses a body, naming the field of the first error.
pub(crate) fn parse<T: WireBody>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_json reports a sequence too long for a tuple (`["g", "m", "x"]` for a
        // `[group, member]` pair) as a syntax error, "trailing characters": the body
        // is well-formed JSON of the wrong shape, so it names the field like any other.
        let well_formed = || serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
        if (inner.is_syntax() || inner.is_eof()) && !well_formed() {
            return ApiError::bad_request(format!("malformed JSON body: {}", shortened(&inner)));
        }
        let inner = if inner.is_syntax() {
            shortened(&inner).replacen("trailing characters", "too many elements", 1)
        } else {
            shortened(&inner)
        };
        let first = path.split(['.', '[']).next().unwrap_or_default();
        let kind = if T::IS_METADATA || first == "metadata" {
            "invalid_metadata"
        } else if path.ends_with("instance") {
            "invalid_id"
        } else {
            "bad_request"
        };
        let message = if path == "." || path.is_empty() {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid JSON body: field `{path}`: {inner}")
        };
        ApiError::new(StatusCode::BAD_REQUEST, kind, message)
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    Ok(value)
}

/// Most characters of serde_json's message shown in an answer.
const SHOWN: usize = 200;

/// serde_json's message, which quotes the refused value (a string may be as long as
/// the body limit), cut to [`SHOWN`] characters, with the position kept.
fn shortened(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let (what, position) = match text.rfind(" at line ") {
        Some(at) => text.split_at(at),
        None => (text.as_str(), ""),
    };
    if what.chars().count() > SHOWN {
        let head: String = what.chars().take(SHOWN).collect();
        format!("{head}…{position}")
    } else {
        text
    }
}

fn path_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_id",
        format!("invalid path: {e}"),
    )
}

/// `{group}` of the path, validated.
#[derive(Debug)]
pub(crate) struct GroupPath(pub GroupId);

impl<S: Send + Sync> FromRequestParts<S> for GroupPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(group) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(path_error)?;
        Ok(Self(GroupId::new(group)?))
    }
}

/// `{group}/members/{member}` of the path, validated.
#[derive(Debug)]
pub(crate) struct KeyPath(pub MemberKey);

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((group, member)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(path_error)?;
        Ok(Self(MemberKey::new(
            GroupId::new(group)?,
            MemberId::new(member)?,
        )))
    }
}

#[derive(Debug, Deserialize)]
struct InstanceParam {
    instance: Option<String>,
}

/// The optional `?instance=HEX` parameter, validated.
#[derive(Debug)]
pub(crate) struct InstanceQuery(pub Option<InstanceId>);

impl<S: Send + Sync> FromRequestParts<S> for InstanceQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(param) = Query::<InstanceParam>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        Ok(Self(
            param
                .instance
                .as_deref()
                .map(InstanceId::parse)
                .transpose()?,
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParam {
    state: Option<String>,
    down_after: Option<String>,
}

/// A listing's or summary's parameters: `?state=up|down` (only the members in that
/// state; absent: every member) and `?down_after=SECONDS` (the caller's
/// `service_down_time`, so the verdict is the caller's rule on the backend's clock;
/// absent: the relay's own).
#[derive(Debug)]
pub(crate) struct ListQuery {
    /// The state asked for, if any.
    pub state: Option<State>,
    /// The caller's `service_down_time`, if given.
    pub down_after: Option<Duration>,
}

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(param) = Query::<ListParam>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        let state = match param.state.as_deref() {
            None => None,
            Some("up") => Some(State::Up),
            Some("down") => Some(State::Down),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "`state` must be `up` or `down`, not {:?}",
                    shorten(other)
                )))
            }
        };
        let down_after = param
            .down_after
            .as_deref()
            .map(|text| {
                text.parse::<f64>()
                    .ok()
                    .filter(|secs| secs.is_finite() && *secs > 0.0)
                    .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                    .filter(|d| !d.is_zero() && *d <= duration::MAX)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "`down_after` must be a number of seconds above zero and at most \
                             100 years, not {:?}",
                            shorten(text)
                        ))
                    })
            })
            .transpose()?;
        Ok(Self { state, down_after })
    }
}

/// At most 64 characters of a refused query value (never echo a huge one).
fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_and_message<T: WireBody + std::fmt::Debug>(text: &str) -> (String, String) {
        let e = parse::<T>(text.as_bytes()).unwrap_err();
        let body = serde_json::to_value(servicegroup_core::json::ErrorBody {
            error: e.detail().clone(),
        })
        .unwrap();
        (
            body["error"]["kind"].as_str().unwrap().to_owned(),
            body["error"]["message"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn errors_name_the_field() {
        let hex = "a".repeat(32);
        let (kind, msg) = kind_and_message::<JoinBody>("{\"instance\":");
        assert_eq!(kind, "bad_request");
        assert!(msg.contains("malformed JSON"), "{msg}");
        let (kind, msg) = kind_and_message::<JoinBody>(&format!(
            "{{\"instance\":\"{hex}\",\"exclusive\":\"yes\"}}"
        ));
        assert_eq!(kind, "bad_request");
        assert!(msg.contains("`exclusive`"), "{msg}");
        let (kind, msg) = kind_and_message::<JoinBody>("{\"instance\":\"xyz\"}");
        assert_eq!(kind, "invalid_id");
        assert!(
            msg.contains("`instance`") && msg.contains("32 hex digits"),
            "{msg}"
        );
        let (kind, msg) = kind_and_message::<JoinBody>(&format!(
            "{{\"instance\":\"{hex}\",\"metadata\":{{\"bad key\":\"v\"}}}}"
        ));
        assert_eq!(kind, "invalid_metadata");
        assert!(msg.contains("`metadata`"), "{msg}");
        let (kind, _) = kind_and_message::<Metadata>("{\"k\":1}");
        assert_eq!(kind, "invalid_metadata");
        let (_, msg) = kind_and_message::<JoinBody>("{}");
        assert!(msg.contains("missing field `instance`"), "{msg}");
        let (kind, msg) = kind_and_message::<HeartbeatBody>(&format!(
            "{{\"instance\":\"{hex}\",\"members\":[[\"g\",\"m\",\"x\"]]}}"
        ));
        assert_eq!(kind, "bad_request");
        assert!(
            msg.contains("`members[0]`") && msg.contains("too many elements"),
            "{msg}"
        );
        let (_, msg) = kind_and_message::<ForcedDownBody>("{\"forced_down\":true} x");
        assert!(
            msg.contains("malformed") || msg.contains("trailing"),
            "{msg}"
        );
    }
}
