//! How members and events are printed: the JSON objects of the contract and the table.

use comfy_table::{presets, CellAlignment, ColumnConstraint, Table};
use servicegroup::Metadata;

// The JSON objects of the contract live in core, shared with the relay and its driver.
pub use servicegroup::json::{EventRow, MemberRow, SummaryRow};

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
            row.state.to_string(),
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
    use chrono::{DateTime, Utc};
    use servicegroup::{GroupId, GroupSummary, Holder, InstanceId, MemberId, MemberStatus, State};
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

    fn counts(group: &str, up: u64, down: u64, forced_down: u64) -> GroupSummary {
        GroupSummary {
            group: GroupId::new(group).unwrap(),
            up,
            down,
            forced_down,
        }
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
