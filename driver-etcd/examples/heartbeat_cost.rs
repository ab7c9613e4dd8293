//! What a heartbeat costs on the etcd driver: for one handle holding N members,
//! the requests one heartbeat sends and its latency (p50 / p99 over 50 ticks), and
//! the latency of one listing of the group.
//!
//! ```text
//! scripts/lib/etcd.sh start /tmp/sg-etcd-bench        # prints the endpoints
//! SERVICEGROUP_TEST_ETCD_ENDPOINTS=<endpoints> cargo run -p servicegroup-driver-etcd --example heartbeat_cost [N...]
//! ```

use std::time::{Duration, Instant};

use servicegroup_core::{
    Beats, Condition, Config, Driver, GroupId, InstanceId, MemberId, MemberKey, Metadata,
    Registration,
};
use servicegroup_driver_etcd::{heartbeat_requests, EtcdDriver};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints: Vec<String> = std::env::var("SERVICEGROUP_TEST_ETCD_ENDPOINTS")?
        .split(',')
        .map(str::to_owned)
        .collect();
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![1, 100, 1_000, 10_000]
    } else {
        sizes
    };
    println!("| members | requests per heartbeat | heartbeat p50 | heartbeat p99 | listing |");
    println!("|---|---|---|---|---|");
    for n in sizes {
        let prefix = format!("bench-{}-{n}", std::process::id());
        let mut config = Config::with_driver("etcd");
        config.set("etcd.endpoints", endpoints.clone())?;
        config.set("etcd.prefix", prefix.clone())?;
        config.service_down_time = Duration::from_secs(60);
        let driver = EtcdDriver::connect(&config).await?;
        let instance = InstanceId::random();
        let group = GroupId::new("compute")?;
        let keys: Vec<MemberKey> = (0..n)
            .map(|i| {
                Ok(MemberKey::new(
                    group.clone(),
                    MemberId::new(format!("host-{i:06}"))?,
                ))
            })
            .collect::<servicegroup_core::Result<_>>()?;
        let registrations: Vec<Registration> = keys
            .iter()
            .map(|key| Registration {
                key: key.clone(),
                instance,
                metadata: Metadata::new(),
                condition: Condition::Always,
            })
            .collect();
        for chunk in registrations.chunks(1000) {
            driver.register_many(chunk).await?;
        }
        // Let the fence watch settle (its first start makes the next tick read all).
        let batch = [Beats {
            instance,
            keys: &keys,
        }];
        tokio::time::sleep(Duration::from_millis(500)).await;
        driver.heartbeat(&batch).await?;
        let before = heartbeat_requests(&prefix);
        let mut times = Vec::new();
        for _ in 0..50 {
            let start = Instant::now();
            let report = driver.heartbeat(&batch).await?;
            times.push(start.elapsed());
            assert!(report.missing.is_empty() && report.superseded.is_empty());
        }
        let requests = (heartbeat_requests(&prefix) - before) as f64 / 50.0;
        times.sort();
        let start = Instant::now();
        let listed = driver.list(&group).await?;
        let listing = start.elapsed();
        assert_eq!(listed.len(), n);
        println!(
            "| {n} | {requests} | {:?} | {:?} | {listing:?} |",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    Ok(())
}
