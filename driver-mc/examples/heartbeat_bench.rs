//! Measures members heartbeated per second, in batches, against memcached.
//!
//! ```text
//! cargo run --release -p servicegroup-driver-mc --example heartbeat_bench -- 127.0.0.1:11211[,HOST:PORT...] [members] [rounds]
//! ```
//!
//! Registers `members` (default 100 000) under a fresh key prefix as one instance
//! (one handle), then times `rounds` (default 5) heartbeat calls covering every
//! member, as core's loop does once per `report_interval` (one `Driver::heartbeat`
//! call per handle and tick). Prints each round's time and pipelined exchanges
//! (round trips to a server, summed over the servers), and the median rate. Not a
//! test: a figure for docs/mc-driver.md.

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

    let prefix = format!("bench-{}", std::process::id());
    let mut config = Config::with_driver("mc");
    config
        .set("mc.servers", [servers.clone()])?
        .set("mc.prefix", prefix.as_str())?
        .set("mc.timeout", Duration::from_secs(2))?;
    let driver = McDriver::connect(&config.validated()?).await?;

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
    rates.sort_by(f64::total_cmp);
    println!(
        "median: {:.0} members/s (one batch of {members}, servers {servers})",
        rates[rates.len() / 2]
    );

    let started = Instant::now();
    let listed = driver.list(&group).await?.len();
    println!("listing {listed} members took {:.2?}", started.elapsed());
    Ok(())
}
