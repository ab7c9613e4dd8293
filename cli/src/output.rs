//! How members and events are printed: the JSON objects of the contract and the table.

use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{presets, CellAlignment, ColumnConstraint, Table};
use serde::Serialize;
use servicegroup::{Event, MemberStatus};

/// One member as `list --json` and `status --json` print it. The keys are a
/// contract relied on by scripts: exactly these, in this order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberRow {
    /// Group id.
    pub group: String,
    /// Member id.
    pub member: String,
    /// `"up"` or `"down"` (forced down is down).
    pub state: &'static str,
    /// The operator's forced-down flag.
    pub forced_down: bool,
    /// RFC 3339 UTC time of the last stored heartbeat, or null.
    pub last_heartbeat: Option<String>,
    /// Age of the last heartbeat in seconds, or null.
    pub age_seconds: Option<f64>,
}

impl From<&MemberStatus> for MemberRow {
    fn from(s: &MemberStatus) -> Self {
        Self {
            group: s.group.to_string(),
            member: s.member.to_string(),
            state: s.state.as_str(),
            forced_down: s.forced_down,
            last_heartbeat: s.last_heartbeat.map(rfc3339),
            // Millisecond precision: finer digits would only be noise.
            age_seconds: s.age.map(|a| (a.as_secs_f64() * 1000.0).round() / 1000.0),
        }
    }
}

/// One event as `watch --json` prints it: exactly `event`, `group`, `member`, `at`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    /// `"joined"`, `"left"`, `"down"` or `"up"`.
    pub event: &'static str,
    /// Group id.
    pub group: String,
    /// Member id.
    pub member: String,
    /// RFC 3339 UTC time the watch noticed it.
    pub at: String,
}

impl From<&Event> for EventRow {
    fn from(e: &Event) -> Self {
        Self {
            event: e.kind.as_str(),
            group: e.group.to_string(),
            member: e.member.to_string(),
            at: rfc3339(e.at),
        }
    }
}

/// RFC 3339 in UTC with milliseconds and a `Z` suffix.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A short human duration: `850ms`, `4.2s`, `3m12s`, `2h05m`.
pub fn human_age(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0}ms", secs * 1000.0)
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        let s = secs as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = secs as u64 / 60;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// The `list` table: group, member, state, forced down, last heartbeat, age.
pub fn member_table(rows: &[MemberRow]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(vec![
        "GROUP",
        "MEMBER",
        "STATE",
        "FORCED DOWN",
        "LAST HEARTBEAT",
        "AGE",
    ]);
    for row in rows {
        table.add_row(vec![
            row.group.clone(),
            row.member.clone(),
            row.state.to_owned(),
            if row.forced_down { "yes" } else { "no" }.to_owned(),
            row.last_heartbeat
                .as_deref()
                .map(|t| t.replace('T', " "))
                .unwrap_or_else(|| "-".to_owned()),
            row.age_seconds
                .map(human_age)
                .unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    if let Some(col) = table.column_mut(5) {
        col.set_cell_alignment(CellAlignment::Right);
    }
    for col in table.column_iter_mut() {
        col.set_constraint(ColumnConstraint::ContentWidth);
        col.set_padding((0, 2));
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use servicegroup::{GroupId, MemberId, State};
    use std::time::Duration;

    fn status() -> MemberStatus {
        MemberStatus {
            group: GroupId::new("compute").unwrap(),
            member: MemberId::new("host-1").unwrap(),
            state: State::Down,
            forced_down: true,
            last_heartbeat: Some(
                DateTime::parse_from_rfc3339("2026-11-24T10:00:00.25+01:00")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            age: Some(Duration::from_micros(1_234_567)),
        }
    }

    #[test]
    fn json_row_has_exactly_the_contract_keys() {
        let row = MemberRow::from(&status());
        let v = serde_json::to_value(&row).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut expected = vec![
            "group",
            "member",
            "state",
            "forced_down",
            "last_heartbeat",
            "age_seconds",
        ];
        expected.sort();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort();
        assert_eq!(keys_sorted, expected);
        assert_eq!(v["state"], "down");
        assert_eq!(v["forced_down"], true);
        assert_eq!(v["last_heartbeat"], "2026-11-24T09:00:00.250Z");
        assert_eq!(v["age_seconds"], 1.235);
    }

    #[test]
    fn nulls_when_unknown() {
        let mut s = status();
        s.last_heartbeat = None;
        s.age = None;
        let v = serde_json::to_value(MemberRow::from(&s)).unwrap();
        assert!(v["last_heartbeat"].is_null());
        assert!(v["age_seconds"].is_null());
    }

    #[test]
    fn table_shows_every_column() {
        let text = member_table(&[MemberRow::from(&status())]);
        for word in [
            "GROUP",
            "compute",
            "host-1",
            "down",
            "yes",
            "2026-11-24 09:00:00.250Z",
            "1.2s",
        ] {
            assert!(text.contains(word), "{word} missing in\n{text}");
        }
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(human_age(0.85), "850ms");
        assert_eq!(human_age(4.25), "4.2s");
        assert_eq!(human_age(192.0), "3m12s");
        assert_eq!(human_age(7500.0), "2h05m");
    }
}
