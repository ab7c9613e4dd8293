//! `servicegroup force-down` and `servicegroup remove`.

use servicegroup::{GroupId, LoadedConfig, MemberId};

use crate::commands::connect;
use crate::console;
use crate::failure::{Failure, EXIT_OK};

/// Sets or clears the forced-down flag. Unknown member: exit 3.
pub async fn force_down(
    loaded: LoadedConfig,
    group: String,
    member: String,
    clear: bool,
) -> Result<u8, Failure> {
    let (group, member) = (GroupId::new(group)?, MemberId::new(member)?);
    let sg = connect(loaded).await?;
    sg.set_forced_down(&group, &member, !clear)
        .await
        .map_err(Failure::not_found_is_3)?;
    if clear {
        console::line(format_args!("{group} {member}: forced-down flag cleared"))?;
    } else {
        console::line(format_args!("{group} {member}: forced down"))?;
    }
    Ok(EXIT_OK)
}

/// Deletes a member record. Unknown member: exit 3.
pub async fn remove(loaded: LoadedConfig, group: String, member: String) -> Result<u8, Failure> {
    let (group, member) = (GroupId::new(group)?, MemberId::new(member)?);
    let sg = connect(loaded).await?;
    sg.remove(&group, &member)
        .await
        .map_err(Failure::not_found_is_3)?;
    console::line(format_args!("{group} {member}: removed"))?;
    Ok(EXIT_OK)
}
