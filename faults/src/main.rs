//! `servicegroup-faults`: runs the fault matrix (`run`), and serves as the member
//! and relay processes the matrix starts (hidden `member` and `relay` subcommands).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use servicegroup_faults::backend::BackendName;
use servicegroup_faults::member::{self, MemberArgs};
use servicegroup_faults::scenario::{self, ScenarioName};
use servicegroup_faults::Context;

#[derive(Parser, Debug)]
#[command(name = "servicegroup-faults", about = "The servicegroup fault matrix")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the matrix and writes the report.
    Run {
        /// One backend per scenario (what CI runs).
        #[arg(long)]
        quick: bool,
        /// Only this backend (repeatable).
        #[arg(long = "backend")]
        backends: Vec<String>,
        /// Only this scenario (repeatable).
        #[arg(long = "scenario")]
        scenarios: Vec<String>,
        /// The repository's scripts/lib directory.
        #[arg(long, default_value = "scripts/lib")]
        scripts: PathBuf,
        /// Where servers and logs go (default: a new temporary directory).
        #[arg(long)]
        work: Option<PathBuf>,
        /// The report to write.
        #[arg(long, default_value = "docs/reliability.md")]
        out: PathBuf,
        /// The command line to print in the report.
        #[arg(long)]
        command_line: Option<String>,
        /// Member processes.
        #[arg(long, default_value_t = 4)]
        processes: usize,
        /// Members per process.
        #[arg(long, default_value_t = 50)]
        per_process: usize,
    },
    /// A member process (started by the matrix).
    #[command(hide = true)]
    Member {
        #[arg(long)]
        driver: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        first: usize,
        #[arg(long)]
        count: usize,
        #[arg(long = "set", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        #[arg(long)]
        exclusive: bool,
        #[arg(long)]
        leave_on_exit: bool,
    },
    /// A relay process (started by the matrix).
    #[command(hide = true)]
    Relay {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        driver: String,
        #[arg(long = "set", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
    },
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Member {
                driver,
                group,
                first,
                count,
                settings,
                exclusive,
                leave_on_exit,
            } => {
                member::run(MemberArgs {
                    driver,
                    settings,
                    group,
                    first,
                    count,
                    exclusive,
                    leave_on_exit,
                })
                .await
            }
            Command::Relay {
                listen,
                driver,
                settings,
            } => relay(listen, driver, settings).await,
            Command::Run {
                quick,
                backends,
                scenarios,
                scripts,
                work,
                out,
                command_line,
                processes,
                per_process,
            } => {
                run(
                    quick,
                    backends,
                    scenarios,
                    scripts,
                    work,
                    out,
                    command_line,
                    processes,
                    per_process,
                )
                .await
            }
        }
    });
    std::process::exit(code);
}

async fn relay(listen: SocketAddr, driver: String, settings: Vec<(String, String)>) -> i32 {
    let config = match servicegroup_faults::backend::config_of(&driver, &settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut options = servicegroup_relay::RelayOptions::new(listen);
    options.insecure = true;
    let relay = match servicegroup_relay::Relay::build(config, options).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let running = match relay.start().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    match running.wait().await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: relay stopped: {e}");
            1
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    quick: bool,
    backends: Vec<String>,
    scenarios: Vec<String>,
    scripts: PathBuf,
    work: Option<PathBuf>,
    out: PathBuf,
    command_line: Option<String>,
    processes: usize,
    per_process: usize,
) -> i32 {
    let mut backend_filter = Vec::new();
    for name in &backends {
        match BackendName::parse(name) {
            Some(b) => backend_filter.push(b),
            None => {
                let known: Vec<&str> = BackendName::ALL.iter().map(|b| b.as_str()).collect();
                eprintln!(
                    "error: unknown backend {name:?} (known: {})",
                    known.join(", ")
                );
                return 2;
            }
        }
    }
    let mut scenario_filter = Vec::new();
    for name in &scenarios {
        match ScenarioName::parse(name) {
            Some(s) => scenario_filter.push(s),
            None => {
                let known: Vec<&str> = ScenarioName::ALL.iter().map(|s| s.as_str()).collect();
                eprintln!(
                    "error: unknown scenario {name:?} (known: {})",
                    known.join(", ")
                );
                return 2;
            }
        }
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find this program's path: {e}");
            return 1;
        }
    };
    let scripts = std::fs::canonicalize(&scripts).unwrap_or(scripts);
    let temp;
    let work = match work {
        Some(w) => w,
        None => match tempfile::Builder::new()
            .prefix("servicegroup-faults.")
            .tempdir()
        {
            Ok(t) => {
                temp = t;
                temp.path().to_owned()
            }
            Err(e) => {
                eprintln!("error: cannot make a work directory: {e}");
                return 1;
            }
        },
    };
    // The postgres user must reach its data directories when run as root.
    let _ = std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let mut ctx = Context::new(exe, scripts, work);
    ctx.processes = processes;
    ctx.per_process = per_process;
    let plan = scenario::plan(quick, &scenario_filter, &backend_filter);
    eprintln!("== {} rows to run", plan.len());
    let started = chrono::Utc::now();
    let mut rows = Vec::new();
    for (scenario, backend) in plan {
        eprintln!("== {scenario} on {backend}");
        let row = scenario::run(&ctx, scenario, backend).await;
        eprintln!("   {}", row.summary());
        rows.push(row);
    }
    let info = scenario::run_info(
        command_line.unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" ")),
        started,
        &ctx,
    );
    if let Err(e) = scenario::write_report(&out, &info, &rows) {
        eprintln!("error: {e}");
        return 1;
    }
    eprintln!("== wrote {}", out.display());
    if rows.iter().all(|r| r.outcome.is_ok()) {
        0
    } else {
        1
    }
}
