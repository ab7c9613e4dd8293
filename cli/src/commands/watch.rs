//! `servicegroup watch GROUP`: one line per event until a signal.

use servicegroup::config::duration;
use servicegroup::{GroupId, LoadedConfig};

use crate::commands::connect;
use crate::console::{self, Sink};
use crate::failure::{describe, Failure, EXIT_OK};
use crate::output::EventRow;
use crate::signals::Shutdown;

/// Prints events (`joined`, `left`, `down`, `up`, `updated`, `replaced`) of `group`
/// as lines or JSON lines.
/// A failed poll is logged (once until it recovers) and the watch goes on.
pub async fn watch(loaded: LoadedConfig, group: String, json: bool) -> Result<u8, Failure> {
    let group = GroupId::new(group)?;
    let mut shutdown = Shutdown::install()?;
    let sg = connect(loaded).await?;
    let interval = sg.config().effective_watch_interval();
    let mut watch = sg.watch(&group).await?;
    crate::logging::running();
    console::err_line(format_args!(
        "watching group {group} (polling every {}); SIGINT or SIGTERM stops",
        duration::render(interval)
    ));
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            next = watch.next() => match next {
                Ok(event) => {
                    if failing {
                        failing = false;
                        tracing::info!(group = %group, "watch recovered: the backend answers again");
                    }
                    let row = EventRow::from(&event);
                    let line = if json {
                        serde_json::to_string(&row)
                            .map_err(|e| Failure::msg(format!("cannot encode JSON: {e}")))?
                    } else {
                        row.text()
                    };
                    if console::line(line)? == Sink::Closed {
                        break; // nobody reads the events any more
                    }
                }
                Err(error) => {
                    if !failing {
                        failing = true;
                        tracing::warn!(group = %group, kind = %error.kind(), "watch poll failed, retrying: {}", describe(&error));
                    }
                }
            },
        }
    }
    Ok(EXIT_OK)
}
