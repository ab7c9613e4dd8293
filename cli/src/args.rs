//! The command line: global options and one subcommand per operation (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `servicegroup`: which members of a group are alive right now.
#[derive(Debug, Parser)]
#[command(
    name = "servicegroup",
    version,
    about = "Which members of a group are alive right now (OpenStack Nova's ServiceGroup API).",
    long_about = "Which members of a group are alive right now (OpenStack Nova's ServiceGroup API).\n\n\
        With no configuration the `db` driver keeps membership in a SQLite file in your state \
        directory, so `servicegroup join` in one terminal and `servicegroup list` in another just work.\n\n\
        Exit codes: 0 success (status: up), 1 status: down, 2 error, 3 no such member, \
        4 join: superseded (another process took the member over)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Configuration file: TOML or a nova.conf-style INI (detected from its content).
    /// Default: $SERVICEGROUP_CONFIG when set.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Driver to use (overrides `driver` / `servicegroup_driver` from file and environment).
    #[arg(long, global = true, value_name = "NAME")]
    pub driver: Option<String>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The operations.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the registered drivers with a description.
    Drivers,
    /// Show the effective configuration and where each value came from (secrets masked).
    Config,
    /// Join GROUP as MEMBER and heartbeat in the foreground until SIGINT/SIGTERM, then leave.
    /// Exit 4 (without leaving) when another process takes the member over.
    Join {
        /// Group to join (Nova: a topic such as `compute`).
        group: String,
        /// Member id (Nova: the host name).
        member: String,
        /// Metadata to store with the member, KEY=VALUE (repeatable). Keys: 1-63 bytes
        /// of a-z 0-9 . _ / -; values at most 1024 bytes; at most 32 entries, 4 KiB in all.
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// Refuse (exit 2, "conflict") a member that another live process holds,
        /// instead of taking it over.
        #[arg(long)]
        exclusive: bool,
    },
    /// List members of one group, or of every group.
    List {
        /// Only this group.
        group: Option<String>,
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Add the holder's instance, epoch, holder-since time and metadata to the table.
        #[arg(long)]
        wide: bool,
        /// Only members in this state: `up` or `down` (down: heartbeat too old or
        /// expired, or forced down). The backend ships only those where it can.
        #[arg(long, value_name = "up|down")]
        state: Option<String>,
    },
    /// Count the members of GROUP (or of each group) up, down and forced down.
    Summary {
        /// Only this group (default: one line per group).
        group: Option<String>,
        /// Print JSON: one object for GROUP, an array of objects without it.
        #[arg(long)]
        json: bool,
    },
    /// Is MEMBER of GROUP up? Exit 0 up, 1 down (forced down included), 3 no such member, 2 error.
    Status {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// Print the member as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Set (or with --clear, clear) the operator's forced-down flag. Exit 3 for an unknown member.
    ForceDown {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// Clear the flag instead of setting it.
        #[arg(long)]
        clear: bool,
    },
    /// Delete a member record (Nova's `service delete`). Exit 3 for an unknown member.
    Remove {
        /// The group.
        group: String,
        /// The member.
        member: String,
    },
    /// Print one line per membership event of GROUP until SIGINT/SIGTERM.
    Watch {
        /// The group to watch.
        group: String,
        /// Print each event as a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Serve Prometheus metrics (`/metrics`) and the live status page (`/`) for GROUPs
    /// (default: every group) until SIGINT/SIGTERM.
    Exporter {
        /// Address to listen on, e.g. 127.0.0.1:9477 (port 0: a free port, printed).
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// Groups to cover (default: every group, looked up at each listing).
        groups: Vec<String>,
        /// Time between two listings of each group (default 5s).
        #[arg(long, value_name = "DURATION")]
        interval: Option<String>,
        /// Also export one series per member (`servicegroup_member_up`); off by
        /// default so the series count stays bounded at any fleet size.
        #[arg(long)]
        per_member: bool,
    },
    /// Serve the configured driver over HTTP to other processes (the `relay` driver's
    /// server; docs/relay.md). Runs until SIGINT/SIGTERM.
    Relay(RelayArgs),
    /// Fleet simulator: many members heartbeating, observers checking, members killed at random.
    Simulate(SimulateArgs),
}

/// Options of `servicegroup relay`.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Address to listen on (port 0: any free port; the line on stdout says which).
    #[arg(long, default_value = "127.0.0.1:7450", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// File holding the bearer token clients must send (default: `relay.token`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// TLS certificate chain, PEM (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key, PEM (with --tls-cert).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve without a token (only on a loopback listen address).
    #[arg(long)]
    pub insecure: bool,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub body_limit: usize,
    /// Longest a request may take, body upload included.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Longest a client may take to send its headers (or its next request on a kept-alive connection).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Also serve Prometheus metrics (`/metrics`) and the status page (`/`) on this
    /// address, as `servicegroup exporter` does, covering every group. No token on
    /// it: bind it to a private address.
    #[arg(long, value_name = "ADDR")]
    pub status_listen: Option<std::net::SocketAddr>,
    /// Time between two listings of each group for --status-listen.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub status_interval: Duration,
}

/// Options of `servicegroup simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Number of simulated members (the default runs in about 20 s on the embedded
    /// SQLite default with a release build).
    #[arg(long, default_value_t = 20_000)]
    pub members: u32,
    /// Number of ServiceGroup handles the members are spread over (each heartbeats its
    /// members in one driver call per tick).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub handles: u32,
    /// `shared`: the members spread over --handles handles sharing one driver instance.
    /// `per-process`: every member its own handle, as one process per host (--handles
    /// is ignored), sending its own heartbeat call every tick.
    #[arg(long, value_enum, default_value_t = Topology::Shared)]
    pub topology: Topology,
    /// Per-process topology: simulated processes sharing one driver instance and its
    /// connections (its pool, its sockets); each keeps its own handle and its own call
    /// per tick (never merged with another's). 1: every process its own instance.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub processes_per_driver: u32,
    /// How long the measured run lasts (after every member has joined).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Fraction of members killed at random times (heartbeats stop, no leave).
    #[arg(long, default_value_t = 0.05, value_parser = parse_fraction)]
    pub kill: f64,
    /// Heartbeat interval. Default: the configured one if set in a file or the
    /// environment, else 1s (so the default run shows detections within ~20 s).
    #[arg(long, value_parser = parse_duration)]
    pub report_interval: Option<Duration>,
    /// Age after which a member is down. Default: the configured one if set in a file
    /// or the environment, else 3s.
    #[arg(long, value_parser = parse_duration)]
    pub service_down_time: Option<Duration>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Group the simulated members join. Default: a fresh `simulate-<time>-<pid>`.
    #[arg(long)]
    pub group: Option<String>,
    /// Number of observer tasks listing the group and checking single members.
    #[arg(long, default_value_t = 2)]
    pub observers: u32,
    /// How the observers watch the group: `down-set` (ask for the down set back to
    /// back and check single members) or `watch` (a `Watch`, one poll per
    /// watch_interval, as a deployed observer). The Nova baseline always lists.
    #[arg(long, value_enum, default_value_t = Observe::DownSet)]
    pub observe: Observe,
    /// Members joined per `join_many` call while the fleet starts.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub join_batch: u32,
    /// How many join batches are in flight at once while the fleet starts.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub join_concurrency: u32,
    /// Longest the fleet may take to join: past it the run stops with an error saying
    /// how many joined, after cleaning them up.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub join_timeout: Duration,
    /// How many leave/remove calls are in flight at once while cleaning up.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub cleanup_concurrency: u32,
    /// Leave the member records in place at the end (default: remove them).
    #[arg(long)]
    pub keep: bool,
    /// Run a baseline instead of the configured driver: `nova` is Nova's own database
    /// driver (one read-then-update transaction per member heartbeat, client clock),
    /// on the PostgreSQL of `db.url`, in its own table `nova_services`.
    #[arg(long, value_enum)]
    pub baseline: Option<Baseline>,
    /// Process id of the store's server on this machine (repeatable: each member of
    /// a cluster): the report then includes their CPU time and memory during the
    /// measured run, summed.
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// Process id of a relay the members talk through (repeatable): the report then
    /// includes its CPU time (also per heartbeat request) and memory.
    #[arg(long = "relay-pid", value_name = "PID")]
    pub relay_pids: Vec<u32>,
}

/// Topologies of `simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// Handles sharing one driver instance (one process reporting for many members).
    Shared,
    /// One handle per member, as one process per host.
    PerProcess,
}

/// How `simulate`'s observers watch the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Observe {
    /// Down-set queries back to back, and single-member checks.
    DownSet,
    /// A `Watch` of the group.
    Watch,
}

/// Baselines `simulate` can measure instead of a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    /// Nova's database servicegroup driver.
    Nova,
}

/// Parses `10`, `0.5`, `200ms`, `1m` with the same rules as the configuration.
fn parse_duration(text: &str) -> Result<Duration, String> {
    servicegroup::config::duration::parse(text)
}

/// Parses a fraction in `[0, 1]`.
fn parse_fraction(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a fraction between 0 and 1, found {text:?}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("expected a fraction between 0 and 1, found {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn fractions_and_durations() {
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("-0.1").is_err());
        assert!(parse_fraction("x").is_err());
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert!(parse_duration("0").is_err());
    }
}
