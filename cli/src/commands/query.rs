//! `servicegroup list` and `servicegroup status`.

use servicegroup::{GroupId, LoadedConfig, MemberStatus};

use crate::commands::connect;
use crate::console;
use crate::failure::{Failure, EXIT_DOWN, EXIT_OK};
use crate::output::{human_age, member_table, ListFormat, MemberRow};

/// Lists one group or every group, sorted by group then member, as a table (`wide`:
/// with the holder and metadata) or one JSON array.
pub async fn list(
    loaded: LoadedConfig,
    group: Option<String>,
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
        let members: Vec<MemberStatus> = sg.members(g).await?;
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
