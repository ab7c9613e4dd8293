//! The relay's JSON records back into [`MemberRecord`]s: the backend's facts as
//! the relay passed them (the age of the last heartbeat as the backend measured it,
//! holder, epoch, metadata). A record without an age (no heartbeat time known), and
//! every record of a backend that judges by its own expiry (the relay says so in
//! [`servicegroup_core::json::LIVENESS_HEADER`]: memcached's TTLs), is fresh exactly
//! when the relay judged it up; the age it sent is then only the relay host's
//! estimate and never the verdict.

use std::time::Duration;

use servicegroup_core::chrono::{DateTime, Utc};
use servicegroup_core::json::MemberRow;
use servicegroup_core::{
    Error, Freshness, GroupId, Holder, InstanceId, MemberId, MemberKey, MemberRecord, Result, State,
};

fn time(field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                Error::backend(format!(
                    "the relay sent a record whose `{field}` {t:?} is not an RFC 3339 time: {e}"
                ))
            })
    })
    .transpose()
}

/// A record from the relay's object.
pub(crate) fn from_row(row: MemberRow, expiry: bool) -> Result<MemberRecord> {
    let bad = |e: Error| Error::backend(format!("the relay sent a record with {}", e.message()));
    let key = MemberKey::new(
        GroupId::new(row.group).map_err(bad)?,
        MemberId::new(row.member).map_err(bad)?,
    );
    let freshness = match row.age_seconds {
        Some(age) if !expiry && age.is_finite() && age >= 0.0 => {
            Freshness::Age(Duration::from_secs_f64(age))
        }
        _ if row.state == State::Up && !row.forced_down => Freshness::Present,
        _ => Freshness::Absent,
    };
    Ok(MemberRecord {
        last_heartbeat: time("last_heartbeat", row.last_heartbeat.as_deref())?,
        freshness,
        forced_down: row.forced_down,
        holder: Holder::new(InstanceId::parse(&row.instance).map_err(bad)?, row.epoch),
        holder_since: time("holder_since", row.holder_since.as_deref())?,
        metadata: row.metadata,
        key,
    })
}
