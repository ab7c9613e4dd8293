//! The HTTP API: the router and one handler per path of the contract
//! (`docs/relay.md`). Reads and operator calls go through the relay's
//! [`ServiceGroup`] handle (which never joins anything, so it never heartbeats);
//! writes on behalf of a client's instance (join, heartbeat, leave, metadata) call
//! the driver directly under core's `call_timeout`, because the client's core owns
//! those memberships, not the relay.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::stream::Stream;
use servicegroup_core::claim::{claim_exclusively, timed};
use servicegroup_core::json::{
    kind_name, ErrorDetail, ForcedDownBody, HealthBody, HeartbeatAnswer, HeartbeatBody, JoinBody,
    MemberRow, OutcomeBody, RegisterAnswer, RegisterBody, RevisionRow, SummaryRow, SupersededBody,
    LIVENESS_EXPIRY, LIVENESS_HEADER,
};
use servicegroup_core::{
    Beats, Condition, Driver, Error, Freshness, GroupId, GroupSummary, HolderUpdate, InstanceId,
    MemberId, MemberKey, MemberRecord, MemberStatus, Metadata, Registered, Registration,
    ServiceGroup, Summary,
};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{require_token, TokenCheck};
use crate::body::{bounded_body, GroupPath, InstanceQuery, JsonBody, KeyPath, ListQuery};
use crate::error::ApiError;
use crate::watch::Hub;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The relay's handle: reads, operator calls, watches.
    pub(crate) sg: ServiceGroup,
    /// The driver itself, for writes on behalf of a client's instance.
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) hub: Hub,
    pub(crate) max_batch: usize,
}

type AppState = Arc<Shared>;

impl Shared {
    async fn call<T>(
        &self,
        what: &'static str,
        fut: impl std::future::Future<Output = servicegroup_core::Result<T>>,
    ) -> Result<T, ApiError> {
        Ok(timed(self.driver.name(), self.sg.config().call_timeout, what, fut).await?)
    }

    /// The caller's `service_down_time` (`?down_after=`, default the relay's own),
    /// and whether it is the relay's own, the one its driver was built with.
    fn down_after(&self, asked: Option<Duration>) -> (Duration, bool) {
        let own = self.sg.config().service_down_time;
        match asked {
            Some(d) if d != own => (d, false),
            _ => (own, true),
        }
    }

    async fn row(&self, key: &MemberKey) -> Result<Json<MemberRow>, ApiError> {
        let status = self.sg.member(&key.group, &key.member).await?;
        Ok(Json(MemberRow::from(&status)))
    }
}

/// The router: `/healthz` open, everything under `/v1` behind the token, every
/// request bounded by `request_timeout` and `body_limit`.
pub(crate) fn router(
    shared: AppState,
    token: TokenCheck,
    body_limit: usize,
    request_timeout: Duration,
) -> Router {
    let v1 = Router::new()
        .route("/groups", get(groups))
        .route("/groups/{group}/members", get(members))
        .route("/groups/{group}/summary", get(summary))
        .route("/groups/{group}/revision", get(revision))
        .route(
            "/groups/{group}/members/{member}",
            get(member).put(join).delete(leave),
        )
        .route(
            "/groups/{group}/members/{member}/forced_down",
            put(forced_down),
        )
        .route("/groups/{group}/members/{member}/metadata", put(metadata))
        .route("/groups/{group}/watch", get(watch))
        .route("/heartbeat", post(heartbeat))
        .route("/register", post(register))
        // Route layers run last-added first: the token, then the body's size.
        .route_layer(middleware::from_fn_with_state(body_limit, bounded_body))
        .route_layer(middleware::from_fn_with_state(token, require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/v1", v1)
        .fallback(no_such_path)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(request_timeout, bounded))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .with_state(shared)
}

/// 408 when a request (body upload included) takes longer than `request_timeout`.
async fn bounded(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request did not complete within {limit:?}"),
        )
        .into_response(),
    }
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
    .into_response()
}

async fn no_such_path() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path (see docs/relay.md)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this path",
    )
}

async fn healthz(State(s): State<AppState>) -> Response {
    let driver = s.driver.name().to_owned();
    let resolution = s.driver.capabilities().liveness_resolution;
    let liveness_resolution_ms = u64::try_from(resolution.as_millis()).unwrap_or(u64::MAX);
    let call_timeout = s.sg.config().call_timeout;
    match timed(s.driver.name(), call_timeout, "groups", s.driver.groups()).await {
        Ok(_) => Json(HealthBody {
            status: "ok".to_owned(),
            driver,
            liveness_resolution_ms,
            error: None,
        })
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthBody {
                status: "unavailable".to_owned(),
                driver,
                liveness_resolution_ms,
                error: Some(ErrorDetail {
                    kind: kind_name(e.kind()).to_owned(),
                    message: e.message().to_owned(),
                    found: None,
                }),
            }),
        )
            .into_response(),
    }
}

async fn groups(State(s): State<AppState>) -> Result<Json<Vec<String>>, ApiError> {
    let groups = s.sg.groups().await?;
    Ok(Json(groups.iter().map(|g| g.to_string()).collect()))
}

/// The group's records; with `?state=` only those in that state, judged with
/// `?down_after=` (the caller's `service_down_time`) by the driver, which ships only
/// the matching rows where it can (a database judges in the query). Sorted by member.
async fn members(
    State(s): State<AppState>,
    GroupPath(group): GroupPath,
    query: ListQuery,
) -> Result<Response, ApiError> {
    let (down_after, own_rule) = s.down_after(query.down_after);
    let records = match query.state {
        // A driver may judge with its own rule whatever it is given (memcached: a
        // liveness key that expires after the relay's service_down_time), so a
        // caller with another down time gets the listing filtered by its own rule,
        // exactly what its own core would compute from the records.
        Some(state) if own_rule => {
            s.call("list_in", s.driver.list_in(&group, state, down_after))
                .await?
        }
        _ => s.call("list", s.driver.list(&group)).await?,
    };
    let verdict = Verdict::of(&records);
    let mut rows: Vec<MemberRow> = records
        .into_iter()
        .map(|r| MemberStatus::from_record(r, down_after))
        .filter(|m| query.state.is_none_or(|state| m.state == state))
        .map(|m| MemberRow::from(&m))
        .collect();
    rows.sort_unstable_by(|a, b| a.member.cmp(&b.member));
    Ok(verdict.answer(Json(rows)))
}

/// The group's counts by state (`summary --json`'s object), judged with
/// `?down_after=` (default: the relay's `service_down_time`); `?state=` is refused.
async fn summary(
    State(s): State<AppState>,
    GroupPath(group): GroupPath,
    query: ListQuery,
) -> Result<Json<SummaryRow>, ApiError> {
    if query.state.is_some() {
        return Err(ApiError::bad_request(
            "`state` does not apply to a summary (it counts every state)",
        ));
    }
    let (down_after, own_rule) = s.down_after(query.down_after);
    let counts = if own_rule {
        s.call("summary", s.driver.summary(&group, down_after))
            .await?
    } else {
        // As for `members`: the caller's rule applied to the records.
        let mut counts = Summary::default();
        for record in s.call("list", s.driver.list(&group)).await? {
            counts.add(&record, down_after);
        }
        counts
    };
    Ok(Json(SummaryRow::from(&GroupSummary {
        group,
        up: counts.up,
        down: counts.down,
        forced_down: counts.forced_down,
    })))
}

/// The group's membership revision (the driver's, null when it keeps none): a client's
/// watch compares it around its down-set query and lists the group only when it moved.
async fn revision(
    State(s): State<AppState>,
    GroupPath(group): GroupPath,
) -> Result<Json<RevisionRow>, ApiError> {
    let revision = s.call("revision", s.driver.revision(&group)).await?;
    Ok(Json(RevisionRow {
        group: group.to_string(),
        revision,
    }))
}

async fn member(State(s): State<AppState>, KeyPath(key): KeyPath) -> Result<Response, ApiError> {
    let Some(record) = s.call("get", s.driver.get(&key)).await? else {
        return Err(
            Error::not_found(format!("no member {} in group {}", key.member, key.group)).into(),
        );
    };
    let verdict = Verdict::of(std::slice::from_ref(&record));
    let status = MemberStatus::from_record(record, s.sg.config().service_down_time);
    Ok(verdict.answer(Json(MemberRow::from(&status))))
}

/// How the records of an answer were judged, told to the relay driver in the
/// [`LIVENESS_HEADER`] so it judges them the same way: by the age the backend
/// measured (a database: the driver applies its caller's `service_down_time`), or by
/// the backend's own expiry (memcached's TTLs: the `state` the relay sent is the
/// verdict, and `age_seconds` only this host's estimate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Every record carries the backend's age of its heartbeat.
    Age,
    /// Some record's freshness is the backend's own expiry.
    Expiry,
}

impl Verdict {
    fn of(records: &[MemberRecord]) -> Self {
        if records
            .iter()
            .any(|r| !matches!(r.freshness, Freshness::Age(_)))
        {
            Verdict::Expiry
        } else {
            Verdict::Age
        }
    }

    fn answer(self, body: impl IntoResponse) -> Response {
        let mut response = body.into_response();
        if self == Verdict::Expiry {
            response.headers_mut().insert(
                LIVENESS_HEADER,
                axum::http::HeaderValue::from_static(LIVENESS_EXPIRY),
            );
        }
        response
    }
}

fn check_instance(instance: InstanceId) -> Result<InstanceId, ApiError> {
    if instance == InstanceId::NIL {
        return Err(
            Error::invalid_id("instance must not be all zeros (the unknown holder)").into(),
        );
    }
    Ok(instance)
}

fn condition_of(
    if_absent: bool,
    if_held_by: Option<servicegroup_core::json::HolderBody>,
) -> Result<Condition, ApiError> {
    match (if_absent, if_held_by) {
        (false, None) => Ok(Condition::Always),
        (true, None) => Ok(Condition::Absent),
        (false, Some(h)) => Ok(Condition::HeldAs(h.into())),
        (true, Some(_)) => Err(ApiError::bad_request(
            "`if_absent` and `if_held_by` exclude each other",
        )),
    }
}

async fn join(
    State(s): State<AppState>,
    KeyPath(key): KeyPath,
    JsonBody(body): JsonBody<JoinBody>,
) -> Result<Json<MemberRow>, ApiError> {
    let instance = check_instance(body.instance)?;
    let condition = condition_of(body.if_absent, body.if_held_by)?;
    if body.exclusive {
        if condition != Condition::Always {
            return Err(ApiError::bad_request(
                "`exclusive` excludes `if_absent` and `if_held_by`",
            ));
        }
        let config = s.sg.config();
        claim_exclusively(
            s.driver.as_ref(),
            config.call_timeout,
            config.service_down_time,
            &key,
            instance,
            &body.metadata,
        )
        .await?;
    } else {
        let registration = Registration {
            key: key.clone(),
            instance,
            metadata: body.metadata,
            condition,
        };
        if let Registered::Refused { found } =
            s.call("register", s.driver.register(&registration)).await?
        {
            return Err(ApiError::refused(
                format!(
                    "group {} member {}: the join's condition does not hold",
                    key.group, key.member
                ),
                found,
            ));
        }
    }
    s.row(&key).await
}

async fn leave(
    State(s): State<AppState>,
    KeyPath(key): KeyPath,
    InstanceQuery(instance): InstanceQuery,
) -> Result<StatusCode, ApiError> {
    let removed = s.call("remove", s.driver.remove(&key, instance)).await?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&key, instance))
    }
}

fn not_found(key: &MemberKey, instance: Option<InstanceId>) -> ApiError {
    let held = instance
        .map(|i| format!(" held by instance {i}"))
        .unwrap_or_default();
    Error::not_found(format!(
        "no member {} in group {}{held}",
        key.member, key.group
    ))
    .into()
}

async fn forced_down(
    State(s): State<AppState>,
    KeyPath(key): KeyPath,
    JsonBody(body): JsonBody<ForcedDownBody>,
) -> Result<Json<MemberRow>, ApiError> {
    s.sg.set_forced_down(&key.group, &key.member, body.forced_down)
        .await?;
    s.row(&key).await
}

async fn metadata(
    State(s): State<AppState>,
    KeyPath(key): KeyPath,
    InstanceQuery(instance): InstanceQuery,
    JsonBody(metadata): JsonBody<Metadata>,
) -> Result<Json<MemberRow>, ApiError> {
    let instance = match instance {
        Some(instance) => instance,
        None => match s.call("get", s.driver.get(&key)).await? {
            Some(record) => record.holder.instance,
            None => return Err(not_found(&key, None)),
        },
    };
    match s
        .call(
            "set_metadata",
            s.driver.set_metadata(&key, instance, &metadata),
        )
        .await?
    {
        HolderUpdate::Stored => s.row(&key).await,
        HolderUpdate::NotHeld(holder) => Err(ApiError::refused(
            format!(
                "group {} member {} is held by {holder}, not instance {instance}",
                key.group, key.member
            ),
            Some(holder),
        )),
        HolderUpdate::Missing => Err(not_found(&key, None)),
    }
}

fn key_of(group: String, member: String) -> Result<MemberKey, ApiError> {
    Ok(MemberKey::new(GroupId::new(group)?, MemberId::new(member)?))
}

fn check_batch(s: &Shared, n: usize) -> Result<(), ApiError> {
    if n > s.max_batch {
        return Err(ApiError::bad_request(format!(
            "{n} members in one request; the relay takes at most {}",
            s.max_batch
        )));
    }
    Ok(())
}

async fn heartbeat(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<HeartbeatBody>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    let instance = check_instance(body.instance)?;
    check_batch(&s, body.members.len())?;
    let mut keys = body
        .members
        .into_iter()
        .map(|(g, m)| key_of(g, m))
        .collect::<Result<Vec<_>, _>>()?;
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(Json(HeartbeatAnswer::default()));
    }
    let report = s
        .call(
            "heartbeat",
            s.driver.heartbeat(&[Beats {
                instance,
                keys: &keys,
            }]),
        )
        .await?;
    Ok(Json(HeartbeatAnswer {
        missing: report
            .missing
            .into_iter()
            .map(|(_, k)| (k.group.to_string(), k.member.to_string()))
            .collect(),
        superseded: report
            .superseded
            .into_iter()
            .map(|x| SupersededBody {
                group: x.key.group.to_string(),
                member: x.key.member.to_string(),
                instance: x.holder.instance,
                epoch: x.holder.epoch,
            })
            .collect(),
    }))
}

async fn register(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<Json<RegisterAnswer>, ApiError> {
    check_batch(&s, body.registrations.len())?;
    let mut registrations = Vec::with_capacity(body.registrations.len());
    for r in body.registrations {
        registrations.push(Registration {
            key: key_of(r.group, r.member)?,
            instance: check_instance(r.instance)?,
            metadata: r.metadata,
            condition: condition_of(r.if_absent, r.if_held_by)?,
        });
    }
    // The driver takes them sorted by key with unique keys; answer in the order given.
    let mut order: Vec<usize> = (0..registrations.len()).collect();
    order.sort_unstable_by(|&a, &b| registrations[a].key.cmp(&registrations[b].key));
    if let Some(w) = order
        .windows(2)
        .find(|w| registrations[w[0]].key == registrations[w[1]].key)
    {
        return Err(ApiError::bad_request(format!(
            "member {} appears twice in one registration request",
            registrations[w[0]].key
        )));
    }
    let sorted: Vec<Registration> = order.iter().map(|&i| registrations[i].clone()).collect();
    let outcomes = if sorted.is_empty() {
        Vec::new()
    } else {
        s.call("register_many", s.driver.register_many(&sorted))
            .await?
    };
    if outcomes.len() != sorted.len() {
        return Err(Error::backend(format!(
            "the driver answered {} outcomes for {} registrations",
            outcomes.len(),
            sorted.len()
        ))
        .into());
    }
    let mut answer = vec![
        OutcomeBody {
            stored: false,
            epoch: None,
            found: None
        };
        sorted.len()
    ];
    for (&i, outcome) in order.iter().zip(outcomes) {
        answer[i] = match outcome {
            Registered::Stored { epoch } => OutcomeBody {
                stored: true,
                epoch: Some(epoch),
                found: None,
            },
            Registered::Refused { found } => OutcomeBody {
                stored: false,
                epoch: None,
                found: found.map(Into::into),
            },
        };
    }
    Ok(Json(RegisterAnswer { outcomes: answer }))
}

async fn watch(
    State(s): State<AppState>,
    GroupPath(group): GroupPath,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let subscription = s.hub.subscribe(&group).await?;
    let stream = futures_util::stream::unfold(subscription, |mut sub| async move {
        let event = match sub.events.recv().await {
            Ok(text) => SseEvent::default().data(&*text),
            Err(RecvError::Lagged(n)) => {
                let data = serde_json::json!({"error": {
                    "kind": "lagged",
                    "message": format!("this watcher fell behind and missed {n} events; list the group again"),
                }});
                SseEvent::default().event("error").data(data.to_string())
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), sub))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
