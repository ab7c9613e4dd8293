//! `servicegroup list`, `servicegroup summary` and `servicegroup status`.

use servicegroup::{GroupId, GroupSummary, LoadedConfig, MemberStatus, State};

use crate::commands::connect;
use crate::console;
use crate::failure::{Failure, EXIT_DOWN, EXIT_OK};
use crate::output::{human_age, member_table, summary_table, ListFormat, MemberRow, SummaryRow};

/// The values `list --state` accepts, as the error names them.
const STATES: &str = "`up` or `down`";

/// The `--state` of `list`: exactly `up` or `down`; anything else is one `error:`
/// line naming the accepted values (exit 2), before any backend is contacted.
pub fn parse_state(text: &str) -> Result<State, Failure> {
    match text {
        "up" => Ok(State::Up),
        "down" => Ok(State::Down),
        other => Err(Failure::msg(format!(
            "invalid value {other:?} for --state: expected {STATES}"
        ))),
    }
}

/// Lists one group or every group, sorted by group then member, as a table (`wide`:
/// with the holder and metadata) or one JSON array. With `state`, only the members in
/// that state, asked of the backend as such (`members_in`: a database ships only the
/// matching rows); without GROUP the filter applies to every group.
pub async fn list(
    loaded: LoadedConfig,
    group: Option<String>,
    state: Option<State>,
    format: ListFormat,
) -> Result<u8, Failure> {
    // Validate the id before connecting: a bad id is an error whatever the backend.
    let group = group.map(GroupId::new).transpose()?;
    let sg = connect(loaded).await?;
    let groups = match group {
        Some(g) => vec![g],
        None => sg.groups().await?,
    };
    let mut rows: Vec<MemberRow> = Vec::new();
    for g in groups {
        let members: Vec<MemberStatus> = match state {
            Some(state) => sg.members_in(g, state).await?,
            None => sg.members(g).await?,
        };
        rows.extend(members.iter().map(MemberRow::from));
    }
    rows.sort_by(|a, b| (&a.group, &a.member).cmp(&(&b.group, &b.member)));
    match format {
        ListFormat::Json => console::line(to_json(&rows)?)?,
        ListFormat::Table => console::out(&member_table(&rows, false))?,
        ListFormat::Wide => console::out(&member_table(&rows, true))?,
    };
    Ok(EXIT_OK)
}

/// Counts of one group (an unknown group counts zero), or of every group sorted by
/// group: a table, or with `json` one JSON object (GROUP given) or one JSON array.
/// Each count comes from one backend call per group (a counting query on a database).
pub async fn summary(
    loaded: LoadedConfig,
    group: Option<String>,
    json: bool,
) -> Result<u8, Failure> {
    let group = group.map(GroupId::new).transpose()?;
    let sg = connect(loaded).await?;
    let one = group.is_some();
    let groups = match group {
        Some(g) => vec![g],
        None => sg.groups().await?,
    };
    let mut rows: Vec<SummaryRow> = Vec::with_capacity(groups.len());
    for g in groups {
        let counts: GroupSummary = sg.summary(g).await?;
        rows.push(SummaryRow::from(&counts));
    }
    rows.sort_by(|a, b| a.group.cmp(&b.group));
    match (json, one, rows.as_slice()) {
        (false, _, _) => console::out(&summary_table(&rows))?,
        (true, true, [row]) => console::line(to_json(row)?)?,
        (true, _, _) => console::line(to_json(&rows)?)?,
    };
    Ok(EXIT_OK)
}

/// Exit 0 when up, 1 when down, 3 when there is no such member, 2 on any error.
pub async fn status(
    loaded: LoadedConfig,
    group: String,
    member: String,
    json: bool,
) -> Result<u8, Failure> {
    let group = GroupId::new(group)?;
    let member = servicegroup::MemberId::new(member)?;
    let sg = connect(loaded).await?;
    let status = sg
        .member(group, member)
        .await
        .map_err(Failure::not_found_is_3)?;
    let row = MemberRow::from(&status);
    if json {
        console::line(to_json(&row)?)?;
    } else {
        let mut line = format!("{} {} {}", row.group, row.member, row.state);
        if row.forced_down {
            line.push_str(" (forced down)");
        }
        match (&row.last_heartbeat, row.age_seconds) {
            (Some(t), Some(age)) => {
                line.push_str(&format!(", last heartbeat {t} ({} ago)", human_age(age)))
            }
            (Some(t), None) => line.push_str(&format!(", last heartbeat {t}")),
            _ => line.push_str(", no heartbeat stored"),
        }
        console::line(line)?;
    }
    Ok(if status.is_up() { EXIT_OK } else { EXIT_DOWN })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure::msg(format!("cannot encode JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::EXIT_ERROR;

    #[test]
    fn state_is_up_or_down_and_nothing_else() {
        assert_eq!(parse_state("up").unwrap(), State::Up);
        assert_eq!(parse_state("down").unwrap(), State::Down);
        for bad in ["", "Down", "UP", "forced", "down ", "forced_down"] {
            let f = parse_state(bad).unwrap_err();
            assert_eq!(f.code, EXIT_ERROR, "{bad:?}");
            assert!(
                f.message.contains(&format!("{bad:?}"))
                    && f.message.contains("`up`")
                    && f.message.contains("`down`")
                    && !f.message.contains('\n'),
                "{bad:?}: {f:?}"
            );
        }
    }
}
