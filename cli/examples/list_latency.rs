//! How long listing one group takes when nothing else runs: `ServiceGroup::members`
//! (driver listing, liveness verdicts, sort) timed `ROUNDS` times on the driver the
//! environment configures (`SERVICEGROUP_*`, as for the CLI).
//!
//! ```sh
//! cargo run --release -p servicegroup-cli --example list_latency -- GROUP [ROUNDS]
//! ```
//!
//! Prints one JSON object: members listed, rounds, and latency min/p50/p99/max in ms.
//! `scripts/bench-listing` fills a group with `servicegroup simulate --keep` first.

use std::process::ExitCode;
use std::time::Instant;

use servicegroup::{ConfigLoader, ServiceGroup};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: list_latency GROUP [ROUNDS]";
    let group = args.next().ok_or(usage)?;
    let rounds: usize = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|e| format!("ROUNDS `{n}` is not a count: {e}"))?,
        None => 30,
    };
    if rounds == 0 {
        return Err("ROUNDS must be at least 1".into());
    }
    let loaded = ConfigLoader::new()
        .env()
        .load()
        .map_err(|e| e.to_string())?;
    let sg = ServiceGroup::connect(loaded.config)
        .await
        .map_err(|e| e.to_string())?;
    // One listing first: connections, statement preparation and caches warm up.
    let members = sg
        .members(group.as_str())
        .await
        .map_err(|e| e.to_string())?
        .len();
    let mut ms = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let listed = sg
            .members(group.as_str())
            .await
            .map_err(|e| e.to_string())?;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        if listed.len() != members {
            return Err(format!(
                "the group changed while it was timed: {members} then {} members",
                listed.len()
            ));
        }
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{{\"members\": {members}, \"rounds\": {rounds}, \"min_ms\": {:.1}, \"p50_ms\": {:.1}, \"p99_ms\": {:.1}, \"max_ms\": {:.1}}}",
        ms[0],
        at(0.5),
        at(0.99),
        ms[ms.len() - 1]
    );
    Ok(())
}
