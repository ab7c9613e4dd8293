//! `servicegroup join GROUP MEMBER [--meta KEY=VALUE]... [--exclusive]`: heartbeat in
//! the foreground until a signal, or until another process takes the member over.

use servicegroup::config::duration;
use servicegroup::{GroupId, Holder, JoinOptions, LoadedConfig, MemberId, Metadata};

use crate::commands::connect;
use crate::console;
use crate::failure::{describe, Failure, EXIT_OK, EXIT_SUPERSEDED};
use crate::signals::Shutdown;

/// What to join and how, checked before anything connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The group to join.
    pub group: GroupId,
    /// The member id.
    pub member: MemberId,
    /// The metadata given with `--meta` (validated).
    pub metadata: Metadata,
    /// `--exclusive`: refuse a member another live process holds.
    pub exclusive: bool,
}

impl JoinRequest {
    /// Validates the ids and every `--meta KEY=VALUE`: a bad one is an error (exit 2)
    /// naming what was wrong, before any backend is contacted.
    pub fn parse(
        group: String,
        member: String,
        meta: &[String],
        exclusive: bool,
    ) -> Result<Self, Failure> {
        let (group, member) = (GroupId::new(group)?, MemberId::new(member)?);
        Ok(Self {
            group,
            member,
            metadata: parse_meta(meta)?,
            exclusive,
        })
    }

    /// The options core joins with.
    fn options(&self) -> JoinOptions {
        JoinOptions::new()
            .with_exclusive(self.exclusive)
            .with_metadata(self.metadata.iter())
    }
}

/// `--meta` arguments as metadata: each must be `KEY=VALUE` (split at the first `=`,
/// so a value may contain `=`), and together they must follow core's metadata rules
/// (an `InvalidMetadata` error naming the key and the rule otherwise).
pub fn parse_meta(args: &[String]) -> Result<Metadata, Failure> {
    let mut pairs = Vec::with_capacity(args.len());
    for arg in args {
        let Some((key, value)) = arg.split_once('=') else {
            return Err(Failure::msg(format!(
                "invalid metadata: --meta {} is not KEY=VALUE (no '=')",
                shown(arg)
            )));
        };
        pairs.push((key, value));
    }
    Ok(Metadata::from_pairs(pairs)?)
}

/// An argument quoted for a message, cut after 40 characters.
fn shown(text: &str) -> String {
    const SHOWN: usize = 40;
    if text.chars().count() > SHOWN {
        let head: String = text.chars().take(SHOWN).collect();
        format!("{head:?}…")
    } else {
        format!("{text:?}")
    }
}

/// How the foreground wait ended.
enum Ended {
    /// SIGINT or SIGTERM: leave.
    Signal(&'static str),
    /// Another instance took the member over: exit 4 without leaving.
    Superseded(Holder),
}

/// The one-line report of a membership taken over by another process.
fn superseded(group: &GroupId, member: &MemberId, holder: Holder) -> Failure {
    Failure::with_code(
        EXIT_SUPERSEDED,
        format!(
            "superseded: {group} {member} was taken over by instance {} (epoch {})",
            holder.instance, holder.epoch
        ),
    )
}

/// Joins, prints one line once the first heartbeat is stored (with this process's
/// instance and the record's epoch), then waits:
///
/// - for SIGINT or SIGTERM: leaves and exits 0;
/// - for another process to take the member over: prints
///   `error: superseded: …` and exits 4, without leaving (the record is the new
///   holder's).
///
/// Backend failures while running are logged by core (lost once, recovered once) and
/// the heartbeats go on. With `--exclusive`, a member another live process holds is a
/// `conflict` error (exit 2) and nothing is changed.
pub async fn join(loaded: LoadedConfig, request: JoinRequest) -> Result<u8, Failure> {
    // Installed first: a signal during the join is kept and handled right after it.
    let mut shutdown = Shutdown::install()?;
    let sg = connect(loaded).await?;
    let (group, member) = (&request.group, &request.member);
    let membership = sg.join_with(group, member, request.options()).await?;
    crate::logging::running();
    let config = sg.config();
    console::line(format_args!(
        "joined {group} {member} (driver {}, report_interval {}, service_down_time {}, instance {}, epoch {}); SIGINT or SIGTERM leaves",
        sg.driver_name(),
        duration::render(config.report_interval),
        duration::render(config.service_down_time),
        membership.instance(),
        membership.epoch(),
    ))?;
    let ended = tokio::select! {
        biased;
        holder = membership.superseded() => Ended::Superseded(holder),
        signal = shutdown.wait() => Ended::Signal(signal),
    };
    let signal = match ended {
        Ended::Superseded(holder) => return Err(superseded(group, member, holder)),
        Ended::Signal(signal) => signal,
    };
    if membership.is_superseded() {
        // Taken over just as the signal came: the record is not ours to delete.
        return Err(superseded(group, member, membership.superseded().await));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::EXIT_ERROR;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn meta_pairs_split_at_the_first_equals() {
        let md = parse_meta(&args(&["address=10.0.0.7:8774", "url=a=b", "empty="])).unwrap();
        assert_eq!(md.get("address"), Some("10.0.0.7:8774"));
        assert_eq!(md.get("url"), Some("a=b"));
        assert_eq!(md.get("empty"), Some(""));
        assert!(parse_meta(&[]).unwrap().is_empty());
    }

    #[test]
    fn bad_meta_is_an_error_naming_it() {
        let f = parse_meta(&args(&["zone"])).unwrap_err();
        assert_eq!(f.code, EXIT_ERROR);
        assert!(
            f.message.contains("\"zone\"") && f.message.contains("KEY=VALUE"),
            "{f:?}"
        );
        for (bad, needle) in [
            ("Zone=x", "'Z'"),
            ("=x", "must not be empty"),
            (&*format!("{}=x", "k".repeat(64)), "64 bytes"),
            (&*format!("k={}", "v".repeat(1025)), "1025 bytes"),
        ] {
            let f = parse_meta(&args(&[bad])).unwrap_err();
            assert_eq!(f.code, EXIT_ERROR, "{bad}");
            assert!(f.message.starts_with("invalid metadata"), "{f:?}");
            assert!(f.message.contains(needle), "{bad}: {f:?}");
        }
        let twice = parse_meta(&args(&["a=1", "a=2"])).unwrap_err();
        assert!(twice.message.contains("twice"), "{twice:?}");
        let long_arg = "x".repeat(500);
        let f = parse_meta(&args(&[&long_arg])).unwrap_err();
        assert!(f.message.len() < 200, "{f:?}");
    }

    #[test]
    fn request_checks_ids_and_keeps_the_flag() {
        let r = JoinRequest::parse("g".into(), "m".into(), &args(&["k=v"]), true).unwrap();
        assert!(r.exclusive && r.options().is_exclusive());
        assert_eq!(r.metadata.get("k"), Some("v"));
        assert!(JoinRequest::parse("bad g".into(), "m".into(), &[], false).is_err());
        assert!(JoinRequest::parse("g".into(), "m".into(), &args(&["nope"]), false).is_err());
    }
}
