//! The JSON contract in one place: the objects `servicegroup list --json`,
//! `summary --json` and `watch --json` print, which the relay serves and its driver
//! reads ([`MemberRow`], [`SummaryRow`], [`EventRow`]), and the bodies of the relay's
//! HTTP API (`docs/relay.md`).
//!
//! The keys and their order are a contract scripts rely on: change nothing here
//! without changing the documentation and the tests that pin it.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::instance::{Holder, InstanceId};
use crate::liveness::State;
use crate::metadata::Metadata;
use crate::status::{GroupSummary, MemberStatus};
use crate::watch::{Event, EventKind};

/// RFC 3339 in UTC with milliseconds and a `Z` suffix: every time of the contract.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An age in seconds with millisecond precision (finer digits would only be noise).
pub fn age_seconds(age: Duration) -> f64 {
    (age.as_secs_f64() * 1000.0).round() / 1000.0
}

/// One member as `list --json` and `status --json` print it and the relay serves it.
/// The keys are a contract relied on by scripts: exactly these, in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRow {
    /// Group id.
    pub group: String,
    /// Member id.
    pub member: String,
    /// `"up"` or `"down"` (forced down is down).
    pub state: State,
    /// The operator's forced-down flag.
    pub forced_down: bool,
    /// RFC 3339 UTC time of the last stored heartbeat, or null.
    pub last_heartbeat: Option<String>,
    /// Age of the last heartbeat in seconds (as the backend measures it), or null.
    pub age_seconds: Option<f64>,
    /// The instance holding the record: 32 hex digits (all zeros for a record written
    /// before records named their holder).
    pub instance: String,
    /// The record's epoch: 1 when first registered, +1 per takeover (0: unknown holder).
    pub epoch: u64,
    /// RFC 3339 UTC time the current holder registered, or null.
    pub holder_since: Option<String>,
    /// What the member says about itself: an object of strings, `{}` when none.
    pub metadata: Metadata,
}

impl From<&MemberStatus> for MemberRow {
    fn from(s: &MemberStatus) -> Self {
        Self {
            group: s.group.to_string(),
            member: s.member.to_string(),
            state: s.state,
            forced_down: s.forced_down,
            last_heartbeat: s.last_heartbeat.map(rfc3339),
            age_seconds: s.age.map(age_seconds),
            instance: s.holder.instance.to_string(),
            epoch: s.holder.epoch,
            holder_since: s.holder_since.map(rfc3339),
            metadata: s.metadata.clone(),
        }
    }
}

/// Response header of the relay's record answers (`GET …/members`, `GET
/// …/members/{member}`) saying how the records' liveness was judged: absent, by the
/// backend's age of the last heartbeat (`age_seconds`, which the client judges with
/// its own `service_down_time`); [`LIVENESS_EXPIRY`], by the backend's own expiry
/// (memcached TTLs), so `state` is the verdict and `age_seconds` only an estimate.
pub const LIVENESS_HEADER: &str = "servicegroup-liveness";

/// [`LIVENESS_HEADER`]'s value for records judged by the backend's own expiry.
pub const LIVENESS_EXPIRY: &str = "expiry";

/// One group's counts as `summary --json` prints them. The keys are a contract
/// relied on by scripts: exactly these, in this order, every count an integer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// Group id.
    pub group: String,
    /// Members up: not forced down, heartbeat fresh.
    pub up: u64,
    /// Members down: not forced down, heartbeat too old or expired.
    pub down: u64,
    /// Members forced down by an operator (whatever their heartbeat).
    pub forced_down: u64,
    /// Every member: `up + down + forced_down`.
    pub total: u64,
}

impl From<&GroupSummary> for SummaryRow {
    fn from(s: &GroupSummary) -> Self {
        Self {
            group: s.group.to_string(),
            up: s.up,
            down: s.down,
            forced_down: s.forced_down,
            total: s.total(),
        }
    }
}

/// A group's membership revision as the relay serves it
/// (`GET /v1/groups/{group}/revision`): `revision` is null when the relay's driver keeps
/// none ([`crate::Driver::revision`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevisionRow {
    /// Group id.
    pub group: String,
    /// The revision, or null.
    pub revision: Option<u64>,
}

/// One event as `watch --json` prints it and the relay's watch stream sends it:
/// always `event`, `group`, `member`, `at`; a `replaced` event adds the new holder's
/// `instance`, `epoch` and `metadata`, an `updated` event the new `metadata`. Other
/// events have exactly the four keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    /// `"joined"`, `"left"`, `"down"`, `"up"`, `"updated"` or `"replaced"`.
    pub event: EventKind,
    /// Group id.
    pub group: String,
    /// Member id.
    pub member: String,
    /// RFC 3339 UTC time the watch noticed it.
    pub at: String,
    /// `replaced` only: the instance that holds the member now (32 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// `replaced` only: the record's epoch now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// `updated` and `replaced` only: the member's metadata now (`{}` when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

impl From<&Event> for EventRow {
    fn from(e: &Event) -> Self {
        let replaced = e.kind == EventKind::Replaced;
        let with_metadata = replaced || e.kind == EventKind::Updated;
        Self {
            event: e.kind,
            group: e.group.to_string(),
            member: e.member.to_string(),
            at: rfc3339(e.at),
            instance: replaced.then(|| e.holder.instance.to_string()),
            epoch: replaced.then_some(e.holder.epoch),
            metadata: with_metadata.then(|| e.metadata.clone()),
        }
    }
}

impl EventRow {
    /// The text form of `watch`: `AT EVENT GROUP MEMBER`, the same four fields for
    /// every event (ids never contain whitespace); the details are in `--json`.
    pub fn text(&self) -> String {
        format!("{} {} {} {}", self.at, self.event, self.group, self.member)
    }
}

/// A record's holder on the wire: `{"instance": HEX, "epoch": N}`. Unknown fields are
/// refused, as in every request body (the `if_held_by` of a join or registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolderBody {
    /// The holding instance, 32 hex digits.
    pub instance: InstanceId,
    /// The record's epoch.
    pub epoch: u64,
}

impl From<Holder> for HolderBody {
    fn from(h: Holder) -> Self {
        Self {
            instance: h.instance,
            epoch: h.epoch,
        }
    }
}

impl From<HolderBody> for Holder {
    fn from(h: HolderBody) -> Self {
        Holder::new(h.instance, h.epoch)
    }
}

/// The body of `PUT /v1/groups/{group}/members/{member}` (a join).
///
/// `instance` is required; `metadata` defaults to `{}` and `exclusive` to false.
/// The relay driver adds one of the optional conditions `if_absent` / `if_held_by`
/// (the driver trait's `Condition::Absent` / `Condition::HeldAs`); a refused
/// condition is 409 with the record's holder in `error.found`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    /// The joining instance, 32 hex digits.
    pub instance: InstanceId,
    /// The member's metadata.
    #[serde(default)]
    pub metadata: Metadata,
    /// Refuse a member another live instance holds (409, nothing changed).
    #[serde(default)]
    pub exclusive: bool,
    /// Store only if there is no record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub if_absent: bool,
    /// Store only if the record is held exactly by this holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_held_by: Option<HolderBody>,
}

/// The body of `PUT .../forced_down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForcedDownBody {
    /// Set (true) or clear (false) the flag.
    pub forced_down: bool,
}

/// The body of `POST /v1/heartbeat`: one instance's members, `[[group, member], ...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    /// The heartbeating instance, 32 hex digits.
    pub instance: InstanceId,
    /// The members, each `[group, member]`.
    pub members: Vec<(String, String)>,
}

/// A member reported superseded by a heartbeat: the key and who holds it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupersededBody {
    /// Group id.
    pub group: String,
    /// Member id.
    pub member: String,
    /// The instance that holds the record now.
    pub instance: InstanceId,
    /// The record's epoch now.
    pub epoch: u64,
}

/// The answer of `POST /v1/heartbeat`, sent once the heartbeats are stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    /// Members with no record (`[group, member]` each): not created.
    pub missing: Vec<(String, String)>,
    /// Members another instance holds: left untouched.
    pub superseded: Vec<SupersededBody>,
}

/// One registration of `POST /v1/register` (the relay driver's batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationBody {
    /// Group id.
    pub group: String,
    /// Member id.
    pub member: String,
    /// The registering instance.
    pub instance: InstanceId,
    /// The member's metadata.
    #[serde(default)]
    pub metadata: Metadata,
    /// Store only if there is no record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub if_absent: bool,
    /// Store only if the record is held exactly by this holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_held_by: Option<HolderBody>,
}

/// The body of `POST /v1/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// The registrations, applied in one driver call.
    pub registrations: Vec<RegistrationBody>,
}

/// The outcome of one registration: `{"stored": true, "epoch": N}` or
/// `{"stored": false, "found": HOLDER | null}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeBody {
    /// Whether the registration was stored.
    pub stored: bool,
    /// The record's epoch now (stored only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The holder found (refused only; null: no record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<HolderBody>,
}

/// The answer of `POST /v1/register`: one outcome per registration, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterAnswer {
    /// The outcomes.
    pub outcomes: Vec<OutcomeBody>,
}

/// The body of every error answer of the relay:
/// `{"error": {"kind": ..., "message": ...}}` (plus `found` for a refused conditional write).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The library's error kind in snake case (`invalid_id`, `not_found`, `conflict`,
    /// `unavailable`, ...; see [`kind_name`]), or `unauthorized`, `bad_request`,
    /// `payload_too_large`, `timeout` for refusals of the relay itself.
    pub kind: String,
    /// What was wrong, naming the field or id.
    pub message: String,
    /// A refused conditional write: the holder found (`null`: no record). Absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<Option<HolderBody>>,
}

/// The wire name of an error kind: its [`crate::ErrorKind::code`].
pub fn kind_name(kind: crate::ErrorKind) -> &'static str {
    kind.code()
}

/// The error kind of a wire name ([`kind_name`]'s inverse,
/// [`crate::ErrorKind::from_code`]), `None` for the relay's own refusals.
pub fn kind_of(name: &str) -> Option<crate::ErrorKind> {
    crate::ErrorKind::from_code(name)
}

/// The body of `GET /healthz`: `{"status": "ok" | "unavailable", "driver": NAME,
/// "liveness_resolution_ms": N, "error": {...}?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthBody {
    /// `"ok"` (200) or `"unavailable"` (503: the backend did not answer).
    pub status: String,
    /// The relay's driver.
    pub driver: String,
    /// The driver's liveness resolution in milliseconds (the relay driver reports it
    /// as its own).
    pub liveness_resolution_ms: u64,
    /// Why the backend is unavailable (503 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GroupId, MemberId};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn status() -> MemberStatus {
        MemberStatus {
            group: GroupId::new("compute").unwrap(),
            member: MemberId::new("host-1").unwrap(),
            state: State::Down,
            forced_down: true,
            last_heartbeat: Some(at("2026-11-24T10:00:00.25+01:00")),
            age: Some(Duration::from_micros(1_234_567)),
            holder: Holder::new(InstanceId::from_u128(0xabc), 3),
            holder_since: Some(at("2026-11-24T08:30:00Z")),
            metadata: Metadata::from_pairs([("zone", "eu-1"), ("address", "10.0.0.7:8774")])
                .unwrap(),
        }
    }

    const ROW_KEYS: [&str; 10] = [
        "group",
        "member",
        "state",
        "forced_down",
        "last_heartbeat",
        "age_seconds",
        "instance",
        "epoch",
        "holder_since",
        "metadata",
    ];

    #[test]
    fn json_row_has_exactly_the_contract_keys_in_order() {
        let row = MemberRow::from(&status());
        let text = serde_json::to_string(&row).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        let mut expected = ROW_KEYS.to_vec();
        expected.sort();
        assert_eq!(keys, expected);
        let positions: Vec<usize> = ROW_KEYS
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(v["state"], "down");
        assert_eq!(v["forced_down"], true);
        assert_eq!(v["last_heartbeat"], "2026-11-24T09:00:00.250Z");
        assert_eq!(v["age_seconds"], 1.235);
        assert_eq!(v["instance"], format!("{:032x}", 0xabc));
        assert_eq!(v["epoch"], 3);
        assert_eq!(v["holder_since"], "2026-11-24T08:30:00.000Z");
        assert_eq!(
            v["metadata"],
            serde_json::json!({"address": "10.0.0.7:8774", "zone": "eu-1"})
        );
        // And it reads back (the relay driver's side).
        let back: MemberRow = serde_json::from_str(&text).unwrap();
        assert_eq!(back, row);
    }

    #[test]
    fn nulls_and_empty_object_when_unknown() {
        let mut s = status();
        s.last_heartbeat = None;
        s.age = None;
        s.holder_since = None;
        s.metadata = Metadata::new();
        s.holder = Holder::UNKNOWN;
        let v = serde_json::to_value(MemberRow::from(&s)).unwrap();
        assert!(v["last_heartbeat"].is_null());
        assert!(v["age_seconds"].is_null());
        assert!(v["holder_since"].is_null());
        assert_eq!(v["metadata"], serde_json::json!({}));
        assert_eq!(v["instance"], "0".repeat(32));
        assert_eq!(v["epoch"], 0);
    }

    fn event(kind: EventKind) -> Event {
        Event {
            kind,
            group: GroupId::new("compute").unwrap(),
            member: MemberId::new("host-1").unwrap(),
            at: at("2026-11-24T10:00:00Z"),
            holder: Holder::new(InstanceId::from_u128(7), 2),
            metadata: Metadata::from_pairs([("zone", "eu-2")]).unwrap(),
        }
    }

    fn event_keys(kind: EventKind) -> Vec<String> {
        let v = serde_json::to_value(EventRow::from(&event(kind))).unwrap();
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn event_rows_add_details_only_to_updated_and_replaced() {
        for kind in [
            EventKind::Joined,
            EventKind::Left,
            EventKind::Down,
            EventKind::Up,
        ] {
            let mut keys = event_keys(kind);
            keys.sort();
            assert_eq!(keys, ["at", "event", "group", "member"], "{kind}");
        }
        let v = serde_json::to_value(EventRow::from(&event(EventKind::Replaced))).unwrap();
        assert_eq!(v["event"], "replaced");
        assert_eq!(v["instance"], format!("{:032x}", 7));
        assert_eq!(v["epoch"], 2);
        assert_eq!(v["metadata"], serde_json::json!({"zone": "eu-2"}));
        let mut keys = event_keys(EventKind::Replaced);
        keys.sort();
        assert_eq!(
            keys,
            ["at", "epoch", "event", "group", "instance", "member", "metadata"]
        );
        let v = serde_json::to_value(EventRow::from(&event(EventKind::Updated))).unwrap();
        assert_eq!(v["event"], "updated");
        let mut keys = event_keys(EventKind::Updated);
        keys.sort();
        assert_eq!(keys, ["at", "event", "group", "member", "metadata"]);
        assert_eq!(
            EventRow::from(&event(EventKind::Replaced)).text(),
            "2026-11-24T10:00:00.000Z replaced compute host-1"
        );
        let text = serde_json::to_string(&EventRow::from(&event(EventKind::Up))).unwrap();
        let back: EventRow = serde_json::from_str(&text).unwrap();
        assert_eq!(back.event, EventKind::Up);
    }

    #[test]
    fn summary_row_has_exactly_the_contract_keys_in_order() {
        let counts = GroupSummary {
            group: GroupId::new("compute").unwrap(),
            up: 7,
            down: 2,
            forced_down: 1,
        };
        let text = serde_json::to_string(&SummaryRow::from(&counts)).unwrap();
        assert_eq!(
            text,
            r#"{"group":"compute","up":7,"down":2,"forced_down":1,"total":10}"#
        );
    }

    #[test]
    fn error_kinds_round_trip() {
        use crate::ErrorKind as K;
        for kind in [
            K::InvalidId,
            K::Config,
            K::Unavailable,
            K::Timeout,
            K::NotFound,
            K::AlreadyJoined,
            K::Backend,
            K::Conflict,
            K::InvalidMetadata,
        ] {
            assert_eq!(kind_of(kind_name(kind)), Some(kind));
        }
        assert_eq!(kind_of("unauthorized"), None);
    }

    #[test]
    fn join_body_defaults_and_refuses_unknown_fields() {
        let body: JoinBody =
            serde_json::from_str(&format!(r#"{{"instance":"{}"}}"#, "a".repeat(32))).unwrap();
        assert!(!body.exclusive && !body.if_absent && body.metadata.is_empty());
        let e = serde_json::from_str::<JoinBody>(&format!(
            r#"{{"instance":"{}","exclusiv":true}}"#,
            "a".repeat(32)
        ))
        .unwrap_err();
        assert!(e.to_string().contains("exclusiv"), "{e}");
    }
}
