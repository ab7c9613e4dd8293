//! Measures members heartbeated per second, in batches, against memcached.
//!
//! ```text
//! cargo run --release -p servicegroup-driver-mc --example heartbeat_bench -- 127.0.0.1:11211[,HOST:PORT...] [members] [rounds] [listings] [mixed]
//! ```
//!
//! Registers `members` (default 100 000) under a fresh key prefix as one instance
//! (one handle), then times `rounds` (default 5) heartbeat calls covering every
//! member, as core's loop does once per `report_interval` (one `Driver::heartbeat`
//! call per handle and tick). Prints each round's time and pipelined exchanges
//! (round trips to a server, summed over the servers), and the median rate. Then
//! times `listings` (default 3) listings of the group, by this driver object and by
//! a fresh one (another process that never saw the members), and prints the median.
//! With `mixed` (default 0), then times that many listings while the batch is
//! heartbeated back to back meanwhile, and prints the heartbeat batches' times too.
//! Not a test: a figure for docs/mc-driver.md.

use std::time::{Duration, Instant};

use servicegroup_core::{
    Beats, Condition, Config, Driver, InstanceId, MemberKey, Metadata, Registered, Registration,
};
use servicegroup_driver_mc::{heartbeat_exchanges, McDriver};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let servers = args
        .next()
        .ok_or("usage: heartbeat_bench HOST:PORT[,HOST:PORT...] [members] [rounds]")?;
    let members: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let listings: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let mixed: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);

    let prefix = format!("bench-{}", std::process::id());
    let mut config = Config::with_driver("mc");
    config
        .set("mc.servers", [servers.clone()])?
        .set("mc.prefix", prefix.as_str())?
        .set("mc.timeout", Duration::from_secs(2))?;
    let config = config.validated()?;
    let driver = McDriver::connect(&config).await?;

    let group = "compute".parse()?;
    let keys: Vec<MemberKey> = (0..members)
        .map(|i| {
            Ok(MemberKey::new(
                Clone::clone(&group),
                format!("host-{i:07}.example.org").parse()?,
            ))
        })
        .collect::<Result<_, servicegroup_core::Error>>()?;
    let instance = InstanceId::random();
    let started = Instant::now();
    for chunk in keys.chunks(5_000) {
        let registrations: Vec<Registration> = chunk
            .iter()
            .map(|key| Registration {
                key: key.clone(),
                instance,
                metadata: Metadata::new(),
                condition: Condition::Always,
            })
            .collect();
        let outcomes = driver.register_many(&registrations).await?;
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Registered::Stored { .. })),
            "a registration was refused"
        );
    }
    let register = started.elapsed();
    println!(
        "registered {members} members in {register:.2?} ({:.0}/s)",
        members as f64 / register.as_secs_f64()
    );

    let batch = [Beats {
        instance,
        keys: &keys,
    }];
    let mut rates = Vec::new();
    for round in 0..rounds {
        let exchanges = heartbeat_exchanges(&prefix);
        let started = Instant::now();
        let report = driver.heartbeat(&batch).await?;
        let took = started.elapsed();
        let exchanges = heartbeat_exchanges(&prefix) - exchanges;
        assert!(
            report.missing.is_empty() && report.superseded.is_empty(),
            "{} missing, {} superseded",
            report.missing.len(),
            report.superseded.len()
        );
        let rate = members as f64 / took.as_secs_f64();
        println!(
            "round {round}: {members} heartbeats in {took:.2?} = {rate:.0} members/s, {exchanges} exchanges"
        );
        rates.push(rate);
    }
    // Resident memory now: the members' keys, and what the driver remembers about
    // the members it heartbeats (compare runs, not absolute values).
    if let Some(rss) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
    {
        println!(
            "after the heartbeats: {}",
            rss.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
        );
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "median: {:.0} members/s (one batch of {members}, servers {servers})",
        rates[rates.len() / 2]
    );

    let fresh = McDriver::connect(&config).await?;
    let mut times = Vec::new();
    for n in 0..listings.max(1) {
        // Alternately by the heartbeating driver object and by one that never saw
        // the members (another process: nothing remembered).
        let (who, lister) = if n % 2 == 0 {
            ("same process", &driver)
        } else {
            ("fresh process", &fresh)
        };
        let started = Instant::now();
        let listed = lister.list(&group).await?.len();
        let took = started.elapsed();
        assert_eq!(listed, members, "the listing is incomplete");
        println!("listing {listed} members took {took:.2?} ({who})");
        times.push(took);
    }
    times.sort();
    println!(
        "listing median: {:.2?} ({} listings of {members})",
        times[times.len() / 2],
        times.len()
    );

    if mixed > 0 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let beats = {
            let (driver, keys, stop) = (driver.clone(), keys.clone(), stop.clone());
            tokio::spawn(async move {
                let mut took = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let batch = [Beats {
                        instance,
                        keys: &keys,
                    }];
                    let report = driver.heartbeat(&batch).await.expect("heartbeat");
                    assert!(report.missing.is_empty() && report.superseded.is_empty());
                    took.push(started.elapsed());
                }
                took
            })
        };
        let mut times = Vec::new();
        for n in 0..mixed {
            let lister = if n % 2 == 0 { &driver } else { &fresh };
            let started = Instant::now();
            let listed = lister.list(&group).await?.len();
            let took = started.elapsed();
            assert_eq!(listed, members, "the listing is incomplete");
            println!("listing {listed} members while heartbeating took {took:.2?}");
            times.push(took);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut beats = beats.await?;
        times.sort();
        beats.sort();
        println!(
            "while heartbeating: listing median {:.2?} (max {:.2?}); {} heartbeat batches of {members}, median {:.2?}, max {:.2?}",
            times[times.len() / 2],
            times[times.len() - 1],
            beats.len(),
            beats.get(beats.len() / 2).copied().unwrap_or_default(),
            beats.last().copied().unwrap_or_default(),
        );
    }
    Ok(())
}
