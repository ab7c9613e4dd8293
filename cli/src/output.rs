//! How members and events are printed: the JSON objects of the contract and the table.

use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{presets, CellAlignment, ColumnConstraint, Table};
use serde::Serialize;
use servicegroup::{Event, EventKind, GroupSummary, MemberStatus, Metadata};

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
            state: s.state.as_str(),
            forced_down: s.forced_down,
            last_heartbeat: s.last_heartbeat.map(rfc3339),
            // Millisecond precision: finer digits would only be noise.
            age_seconds: s.age.map(|a| (a.as_secs_f64() * 1000.0).round() / 1000.0),
            instance: s.holder.instance.to_string(),
            epoch: s.holder.epoch,
            holder_since: s.holder_since.map(rfc3339),
            metadata: s.metadata.clone(),
        }
    }
}

/// One group's counts as `summary --json` prints them. The keys are a contract
/// relied on by scripts: exactly these, in this order, every count an integer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// The `summary` table: `GROUP UP DOWN FORCED_DOWN TOTAL`, counts right-aligned (one
/// word per header, so `awk` can split every line on whitespace).
pub fn summary_table(rows: &[SummaryRow]) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_header(["GROUP", "UP", "DOWN", "FORCED_DOWN", "TOTAL"]);
    for row in rows {
        table.add_row([
            row.group.clone(),
            row.up.to_string(),
            row.down.to_string(),
            row.forced_down.to_string(),
            row.total.to_string(),
        ]);
    }
    for (i, col) in table.column_iter_mut().enumerate() {
        if i > 0 {
            col.set_cell_alignment(CellAlignment::Right);
        }
        col.set_constraint(ColumnConstraint::ContentWidth);
        col.set_padding((0, 2));
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    text
}

/// How `list` prints its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// The table: group, member, state, forced down, last heartbeat, age.
    Table,
    /// The table plus instance, epoch, holder since and metadata (`--wide`).
    Wide,
    /// One JSON array of [`MemberRow`]s (`--json`; every key, whatever `--wide` says).
    Json,
}

impl ListFormat {
    /// The format the flags ask for (`--json` wins over `--wide`).
    pub fn from_flags(json: bool, wide: bool) -> Self {
        match (json, wide) {
            (true, _) => Self::Json,
            (false, true) => Self::Wide,
            (false, false) => Self::Table,
        }
    }
}

/// One event as `watch --json` prints it: always `event`, `group`, `member`, `at`;
/// a `replaced` event adds the new holder's `instance`, `epoch` and `metadata`, an
/// `updated` event the new `metadata`. Other events have exactly the four keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    /// `"joined"`, `"left"`, `"down"`, `"up"`, `"updated"` or `"replaced"`.
    pub event: &'static str,
    /// Group id.
    pub group: String,
    /// Member id.
    pub member: String,
    /// RFC 3339 UTC time the watch noticed it.
    pub at: String,
    /// `replaced` only: the instance that holds the member now (32 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// `replaced` only: the record's epoch now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// `updated` and `replaced` only: the member's metadata now (`{}` when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

impl From<&Event> for EventRow {
    fn from(e: &Event) -> Self {
        let replaced = e.kind == EventKind::Replaced;
        let with_metadata = replaced || e.kind == EventKind::Updated;
        Self {
            event: e.kind.as_str(),
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

/// A time as the table shows it: `2026-11-24 11:04:17.694Z`, or `-`.
fn table_time(t: Option<&str>) -> String {
    t.map(|t| t.replace('T', " "))
        .unwrap_or_else(|| "-".to_owned())
}

/// Metadata as the wide table shows it: `key=value,key=value` with control
/// characters escaped (so a row stays one line), or `-` when there is none.
pub fn table_metadata(metadata: &Metadata) -> String {
    if metadata.is_empty() {
        return "-".to_owned();
    }
    let mut out = String::new();
    for (i, (k, v)) in metadata.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        for c in v.chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// The `list` table: group, member, state, forced down, last heartbeat, age; with
/// `wide` also instance, epoch, holder since and metadata.
pub fn member_table(rows: &[MemberRow], wide: bool) -> String {
    let mut table = Table::new();
    let mut header = vec![
        "GROUP",
        "MEMBER",
        "STATE",
        "FORCED DOWN",
        "LAST HEARTBEAT",
        "AGE",
    ];
    if wide {
        header.extend(["INSTANCE", "EPOCH", "HOLDER SINCE", "METADATA"]);
    }
    table.load_preset(presets::NOTHING).set_header(header);
    for row in rows {
        let mut cells = vec![
            row.group.clone(),
            row.member.clone(),
            row.state.to_owned(),
            if row.forced_down { "yes" } else { "no" }.to_owned(),
            table_time(row.last_heartbeat.as_deref()),
            row.age_seconds
                .map(human_age)
                .unwrap_or_else(|| "-".to_owned()),
        ];
        if wide {
            cells.extend([
                row.instance.clone(),
                row.epoch.to_string(),
                table_time(row.holder_since.as_deref()),
                table_metadata(&row.metadata),
            ]);
        }
        table.add_row(cells);
    }
    for right in [5, 7] {
        if let Some(col) = table.column_mut(right) {
            col.set_cell_alignment(CellAlignment::Right);
        }
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
    use servicegroup::{GroupId, Holder, InstanceId, MemberId, State};
    use std::time::Duration;

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
        // In the documented order.
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

    #[test]
    fn table_shows_every_column_and_wide_adds_the_holder() {
        let rows = [MemberRow::from(&status())];
        let text = member_table(&rows, false);
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
        for word in ["INSTANCE", "EPOCH", "HOLDER SINCE", "METADATA", "zone=eu-1"] {
            assert!(!text.contains(word), "{word} in the narrow table\n{text}");
        }
        let wide = member_table(&rows, true);
        for word in [
            "INSTANCE",
            "EPOCH",
            "HOLDER SINCE",
            "METADATA",
            &format!("{:032x}", 0xabc),
            "2026-11-24 08:30:00.000Z",
            "address=10.0.0.7:8774,zone=eu-1",
        ] {
            assert!(wide.contains(word), "{word} missing in\n{wide}");
        }
        assert_eq!(wide.lines().count(), 2, "{wide}");
    }

    #[test]
    fn table_metadata_stays_on_one_line() {
        let md = Metadata::from_pairs([("note", "a\nb\tc ✓")]).unwrap();
        assert_eq!(table_metadata(&md), "note=a\\nb\\tc ✓");
        assert_eq!(table_metadata(&Metadata::new()), "-");
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
        assert_eq!(v["metadata"], serde_json::json!({"zone": "eu-2"}));
        let mut keys = event_keys(EventKind::Updated);
        keys.sort();
        assert_eq!(keys, ["at", "event", "group", "member", "metadata"]);
        assert_eq!(
            EventRow::from(&event(EventKind::Replaced)).text(),
            "2026-11-24T10:00:00.000Z replaced compute host-1"
        );
    }

    fn counts(group: &str, up: u64, down: u64, forced_down: u64) -> GroupSummary {
        GroupSummary {
            group: GroupId::new(group).unwrap(),
            up,
            down,
            forced_down,
        }
    }

    #[test]
    fn summary_row_has_exactly_the_contract_keys_in_order() {
        let text = serde_json::to_string(&SummaryRow::from(&counts("compute", 7, 2, 1))).unwrap();
        assert_eq!(
            text,
            r#"{"group":"compute","up":7,"down":2,"forced_down":1,"total":10}"#
        );
    }

    #[test]
    fn summary_table_has_one_word_per_column() {
        let rows = [
            SummaryRow::from(&counts("compute", 1200, 3, 1)),
            SummaryRow::from(&counts("scheduler", 2, 0, 0)),
        ];
        let text = summary_table(&rows);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines,
            [
                vec!["GROUP", "UP", "DOWN", "FORCED_DOWN", "TOTAL"],
                vec!["compute", "1200", "3", "1", "1204"],
                vec!["scheduler", "2", "0", "0", "2"],
            ],
            "{text}"
        );
        // Counts are right-aligned: the last column ends at the same place.
        let ends: Vec<usize> = text.lines().map(|l| l.trim_end().len()).collect();
        assert!(ends.windows(2).all(|w| w[0] == w[1]), "{text}");
        assert_eq!(summary_table(&[]).lines().count(), 1);
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(human_age(0.85), "850ms");
        assert_eq!(human_age(4.25), "4.2s");
        assert_eq!(human_age(192.0), "3m12s");
        assert_eq!(human_age(7500.0), "2h05m");
    }
}
