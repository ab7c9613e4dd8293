//! [`RelayDriver`]: the [`Driver`] methods as calls of the relay's HTTP API.

use std::time::Duration;

use http::{Method, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use servicegroup_core::json::{
    ForcedDownBody, HeartbeatAnswer, HeartbeatBody, HolderBody, MemberRow, RegisterAnswer,
    RegisterBody, RegistrationBody, RevisionRow, SummaryRow,
};
use servicegroup_core::{
    async_trait, Beats, Capabilities, Condition, Driver, Error, GroupId, HeartbeatReport,
    HolderUpdate, InstanceId, MemberKey, MemberRecord, Metadata, Registered, Registration, Result,
    State, Summary, Superseded,
};

use crate::client::{Answer, Relays};
use crate::config::RelayConfig;
use crate::record::from_row;
use crate::NAME;

/// Path segments: everything but RFC 3986's unreserved characters is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The liveness resolution reported when no relay said the backend's at build time.
const UNKNOWN_RESOLUTION: Duration = Duration::from_secs(1);

fn seg(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

fn member_path(key: &MemberKey) -> String {
    format!(
        "/v1/groups/{}/members/{}",
        seg(key.group.as_str()),
        seg(key.member.as_str())
    )
}

fn encode<T: serde::Serialize>(body: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| Error::backend(format!("cannot encode a request: {e}")))
}

/// The relay driver: calls `servicegroup relay` servers.
#[derive(Debug)]
pub struct RelayDriver {
    relays: Relays,
    capabilities: Capabilities,
}

impl RelayDriver {
    /// A driver on the relays of `options`, sharing their connection pools with every
    /// other relay driver of the process. Asks one relay for its backend's liveness
    /// resolution (`/healthz`); with none reachable it assumes 1 s and still builds
    /// (calls then fail with `Unavailable` until one answers).
    pub async fn connect(options: RelayConfig) -> Result<Self> {
        let relays = Relays::new(&options)?;
        let resolution = match relays.health().await {
            // The relay's ages are rounded to the millisecond.
            Some(h) => Duration::from_millis(h.liveness_resolution_ms) + Duration::from_millis(1),
            None => {
                tracing::debug!(
                    driver = NAME,
                    "no relay answered /healthz; assuming a liveness resolution of 1 s"
                );
                UNKNOWN_RESOLUTION
            }
        };
        Ok(Self {
            relays,
            capabilities: Capabilities::new(resolution),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<Answer> {
        self.relays.send(method, path, body, what).await
    }
}

fn registration_body(r: &Registration) -> RegistrationBody {
    let (if_absent, if_held_by) = match r.condition {
        Condition::Always => (false, None),
        Condition::Absent => (true, None),
        Condition::HeldAs(h) => (false, Some(HolderBody::from(h))),
    };
    RegistrationBody {
        group: r.key.group.to_string(),
        member: r.key.member.to_string(),
        instance: r.instance,
        metadata: r.metadata.clone(),
        if_absent,
        if_held_by,
    }
}

#[async_trait]
impl Driver for RelayDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    async fn register(&self, registration: &Registration) -> Result<Registered> {
        let mut out = self
            .register_many(std::slice::from_ref(registration))
            .await?;
        out.pop()
            .ok_or_else(|| Error::backend("the relay answered no outcome for a registration"))
    }

    async fn register_many(&self, registrations: &[Registration]) -> Result<Vec<Registered>> {
        let body = RegisterBody {
            registrations: registrations.iter().map(registration_body).collect(),
        };
        let answer = self
            .call(
                Method::POST,
                "/v1/register",
                Some(encode(&body)?),
                "register",
            )
            .await?;
        if answer.status != StatusCode::OK {
            return Err(answer.error("register"));
        }
        let answer: RegisterAnswer = answer.json("register")?;
        if answer.outcomes.len() != registrations.len() {
            return Err(Error::backend(format!(
                "the relay answered {} outcomes for {} registrations",
                answer.outcomes.len(),
                registrations.len()
            ))
            .with_driver(NAME));
        }
        Ok(answer
            .outcomes
            .into_iter()
            .map(|o| match (o.stored, o.epoch) {
                (true, Some(epoch)) => Registered::Stored { epoch },
                _ => Registered::Refused {
                    found: o.found.map(Into::into),
                },
            })
            .collect())
    }

    async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        let mut report = HeartbeatReport::default();
        for part in batch.iter().filter(|p| !p.keys.is_empty()) {
            let body = HeartbeatBody {
                instance: part.instance,
                members: part
                    .keys
                    .iter()
                    .map(|k| (k.group.to_string(), k.member.to_string()))
                    .collect(),
            };
            let answer = self
                .call(
                    Method::POST,
                    "/v1/heartbeat",
                    Some(encode(&body)?),
                    "heartbeat",
                )
                .await?;
            if answer.status != StatusCode::OK {
                return Err(answer.error("heartbeat"));
            }
            let answer: HeartbeatAnswer = answer.json("heartbeat")?;
            let key = |g: String, m: String| -> Result<MemberKey> {
                Ok(MemberKey::new(
                    GroupId::new(g)?,
                    servicegroup_core::MemberId::new(m)?,
                ))
            };
            for (g, m) in answer.missing {
                report.missing.push((part.instance, key(g, m)?));
            }
            for s in answer.superseded {
                report.superseded.push(Superseded {
                    key: key(s.group, s.member)?,
                    instance: part.instance,
                    holder: servicegroup_core::Holder::new(s.instance, s.epoch),
                });
            }
        }
        Ok(report)
    }

    async fn remove(&self, key: &MemberKey, holder: Option<InstanceId>) -> Result<bool> {
        let mut path = member_path(key);
        if let Some(instance) = holder {
            path.push_str(&format!("?instance={instance}"));
        }
        let answer = self.call(Method::DELETE, &path, None, "remove").await?;
        match answer.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(answer.error("remove")),
        }
    }

    async fn set_metadata(
        &self,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        let path = format!("{}/metadata?instance={instance}", member_path(key));
        let answer = self
            .call(Method::PUT, &path, Some(encode(metadata)?), "set_metadata")
            .await?;
        match answer.status {
            StatusCode::OK => Ok(HolderUpdate::Stored),
            StatusCode::NOT_FOUND => Ok(HolderUpdate::Missing),
            StatusCode::CONFLICT => match answer.found() {
                Some(Some(holder)) => Ok(HolderUpdate::NotHeld(holder)),
                Some(None) => Ok(HolderUpdate::Missing),
                None => Err(answer.error("set_metadata")),
            },
            _ => Err(answer.error("set_metadata")),
        }
    }

    async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool> {
        let path = format!("{}/forced_down", member_path(key));
        let body = encode(&ForcedDownBody { forced_down })?;
        let answer = self
            .call(Method::PUT, &path, Some(body), "set_forced_down")
            .await?;
        match answer.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(answer.error("set_forced_down")),
        }
    }

    async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>> {
        let answer = self
            .call(Method::GET, &member_path(key), None, "get")
            .await?;
        match answer.status {
            StatusCode::OK => Ok(Some(from_row(
                answer.json::<MemberRow>("get")?,
                answer.expiry,
            )?)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(answer.error("get")),
        }
    }

    async fn list(&self, group: &GroupId) -> Result<Vec<MemberRecord>> {
        let path = format!("/v1/groups/{}/members", seg(group.as_str()));
        let answer = self.call(Method::GET, &path, None, "list").await?;
        if answer.status != StatusCode::OK {
            return Err(answer.error("list"));
        }
        answer
            .json::<Vec<MemberRow>>("list")?
            .into_iter()
            .map(|row| from_row(row, answer.expiry))
            .collect()
    }

    /// Asks the relay for only the members in `state` (`?state=`), judged with this
    /// caller's `service_down_time` (`?down_after=`), so a down-set check ships the
    /// down members, not the group.
    async fn list_in(
        &self,
        group: &GroupId,
        state: State,
        service_down_time: Duration,
    ) -> Result<Vec<MemberRecord>> {
        let path = format!(
            "/v1/groups/{}/members?state={}&down_after={}",
            seg(group.as_str()),
            match state {
                State::Up => "up",
                State::Down => "down",
            },
            service_down_time.as_secs_f64()
        );
        let answer = self.call(Method::GET, &path, None, "list_in").await?;
        if answer.status != StatusCode::OK {
            return Err(answer.error("list_in"));
        }
        answer
            .json::<Vec<MemberRow>>("list_in")?
            .into_iter()
            .map(|row| from_row(row, answer.expiry))
            .collect()
    }

    /// The relay's counts (`/summary`), judged with this caller's `service_down_time`.
    async fn summary(&self, group: &GroupId, service_down_time: Duration) -> Result<Summary> {
        let path = format!(
            "/v1/groups/{}/summary?down_after={}",
            seg(group.as_str()),
            service_down_time.as_secs_f64()
        );
        let answer = self.call(Method::GET, &path, None, "summary").await?;
        if answer.status != StatusCode::OK {
            return Err(answer.error("summary"));
        }
        let row = answer.json::<SummaryRow>("summary")?;
        if row.group != group.as_str() || row.total != row.up + row.down + row.forced_down {
            return Err(Error::backend(format!(
                "the relay's summary of group {group} is not what it should be (group {:?}, \
                 total {} for {} up, {} down, {} forced down)",
                row.group, row.total, row.up, row.down, row.forced_down
            ))
            .with_driver(NAME));
        }
        Ok(Summary {
            up: row.up,
            down: row.down,
            forced_down: row.forced_down,
        })
    }

    /// The relay's revision of the group (`/revision`: its driver's, shared by every
    /// relay on that backend), so a watch through the relay ships the down set between
    /// membership changes instead of the group.
    async fn revision(&self, group: &GroupId) -> Result<Option<u64>> {
        let path = format!("/v1/groups/{}/revision", seg(group.as_str()));
        let answer = self.call(Method::GET, &path, None, "revision").await?;
        if answer.status != StatusCode::OK {
            return Err(answer.error("revision"));
        }
        let row = answer.json::<RevisionRow>("revision")?;
        if row.group != group.as_str() {
            return Err(Error::backend(format!(
                "the relay answered the revision of group {:?} when asked for {group}",
                row.group
            ))
            .with_driver(NAME));
        }
        Ok(row.revision)
    }

    async fn groups(&self) -> Result<Vec<GroupId>> {
        let answer = self.call(Method::GET, "/v1/groups", None, "groups").await?;
        if answer.status != StatusCode::OK {
            return Err(answer.error("groups"));
        }
        answer
            .json::<Vec<String>>("groups")?
            .into_iter()
            .map(|g| {
                GroupId::new(g).map_err(|e| {
                    Error::backend(format!("the relay sent a group with {}", e.message()))
                })
            })
            .collect()
    }
}
