//! `servicegroup join GROUP MEMBER`: heartbeat in the foreground until a signal.

use servicegroup::config::duration;
use servicegroup::{GroupId, LoadedConfig, MemberId};

use crate::commands::connect;
use crate::console;
use crate::failure::{describe, Failure, EXIT_OK};
use crate::signals::Shutdown;

/// Joins, prints one line once the first heartbeat is stored, waits for SIGINT or
/// SIGTERM, leaves and exits 0. Backend failures while running are logged by core
/// (lost once, recovered once) and the heartbeats go on.
pub async fn join(loaded: LoadedConfig, group: String, member: String) -> Result<u8, Failure> {
    let (group, member) = (GroupId::new(group)?, MemberId::new(member)?);
    // Installed first: a signal during the join is kept and handled right after it.
    let mut shutdown = Shutdown::install()?;
    let sg = connect(loaded).await?;
    let membership = sg.join(&group, &member).await?;
    crate::logging::running();
    let config = sg.config();
    console::line(format_args!(
        "joined {group} {member} (driver {}, report_interval {}, service_down_time {}); SIGINT or SIGTERM leaves",
        sg.driver_name(),
        duration::render(config.report_interval),
        duration::render(config.service_down_time),
    ))?;
    let signal = shutdown.wait().await;
    tracing::info!(signal, group = %group, member = %member, "leaving");
    match membership.leave().await {
        Ok(()) => {
            console::line(format_args!("left {group} {member}"))?;
            Ok(EXIT_OK)
        }
        Err(error) => Err(Failure::msg(format!(
            "could not leave {group} {member} gracefully (heartbeats stopped; it goes down after service_down_time): {}",
            describe(&error)
        ))),
    }
}
