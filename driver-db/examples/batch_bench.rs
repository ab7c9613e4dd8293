//! How long one batch heartbeat of N members takes on a database (a benchmark, not a test).
//!
//! ```sh
//! cargo run --release --example batch_bench -p servicegroup-driver-db -- sqlite
//! cargo run --release --example batch_bench -p servicegroup-driver-db -- postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! The first argument is a `[db] url`, or `sqlite` for a SQLite file in a temporary
//! directory. Options: `--members N` (default 10000), `--rounds R` (default 30),
//! `--instances I` (default 1). It registers N members of a fresh group for I
//! instances (member i held by instance i mod I), then times R heartbeat batches of
//! all of them (`Driver::heartbeat`, one part per instance: one `UPDATE … WHERE id IN
//! (…)` statement that refreshes only rows the beating instance holds; I > 1 is a
//! relay's batch, merged from many clients) and prints the median, p90, min and max,
//! and the statements each batch took. The members stay in the database: point it at
//! a throwaway one.

use std::time::{Duration, Instant};

use servicegroup_core::{
    Beats, Condition, DatabaseUrl, Driver, GroupId, InstanceId, MemberId, MemberKey, Metadata,
    Registration,
};
use servicegroup_driver_db::{DbConfig, DbDriver};

fn usage() -> ! {
    eprintln!(
        "usage: batch_bench <sqlite | DATABASE_URL> [--members N] [--rounds R] [--instances I]"
    );
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(target) = args.next() else { usage() };
    let (mut members, mut rounds, mut instances) = (10_000usize, 30usize, 1usize);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage());
        match flag.as_str() {
            "--members" => members = value,
            "--rounds" => rounds = value,
            "--instances" => instances = value,
            _ => usage(),
        }
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = if target == "sqlite" {
        format!("sqlite://{}", dir.path().join("bench.db").display())
    } else {
        target
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(run(
        url,
        members,
        rounds.max(1),
        instances.clamp(1, members.max(1)),
    ));
}

async fn run(url: String, n: usize, rounds: usize, instances: usize) {
    let mut options = DbConfig::default();
    options.url = Some(DatabaseUrl::new(url));
    options.timeout = Duration::from_secs(30);
    let driver = match DbDriver::open(&options).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let group = GroupId::new(format!("bench-{}-{}", std::process::id(), now_ms())).unwrap();
    let keys: Vec<MemberKey> = (0..n)
        .map(|i| MemberKey::new(group.clone(), MemberId::new(format!("m{i:07}")).unwrap()))
        .collect();
    let ids: Vec<InstanceId> = (0..instances).map(|_| InstanceId::random()).collect();
    // Each instance's members, sorted (a part of a batch is sorted and unique).
    let parts: Vec<Vec<MemberKey>> = (0..instances)
        .map(|p| keys.iter().skip(p).step_by(instances).cloned().collect())
        .collect();
    let registrations: Vec<Registration> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| Registration {
            key: key.clone(),
            instance: ids[i % instances],
            metadata: Metadata::new(),
            condition: Condition::Always,
        })
        .collect();
    let started = Instant::now();
    for chunk in registrations.chunks(1000) {
        driver.register_many(chunk).await.expect("register");
    }
    let registered = started.elapsed();
    let batch: Vec<Beats<'_>> = parts
        .iter()
        .zip(&ids)
        .map(|(keys, instance)| Beats {
            instance: *instance,
            keys,
        })
        .collect();
    // One warm-up batch (statement preparation, caches).
    driver.heartbeat(&batch).await.expect("heartbeat");
    let mut times = Vec::with_capacity(rounds);
    let before = driver.statistics();
    for _ in 0..rounds {
        let t = Instant::now();
        let report = driver.heartbeat(&batch).await.expect("heartbeat");
        times.push(t.elapsed());
        assert!(
            report.missing.is_empty() && report.superseded.is_empty(),
            "members went missing ({}) or were superseded ({})",
            report.missing.len(),
            report.superseded.len()
        );
    }
    let statements = driver.statistics().statements - before.statements;
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "backend={} location={} members={n} instances={instances} rounds={rounds} register_many={:.1?} \
         batch: median={:.2?} p90={:.2?} min={:.2?} max={:.2?} statements/batch={}",
        driver.backend(),
        driver.location(),
        registered,
        pct(0.5),
        pct(0.9),
        times[0],
        times[times.len() - 1],
        statements as f64 / rounds as f64,
    );
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
