//! Scenario 5, *eviction*: memcached started with an 8 MiB memory limit is flooded
//! for service_down_time + 2 s with other keys of every size a member record can
//! have, first written once (cold), then each read twice after its write (hot, so
//! the segmented LRU ranks them like the members' records, which are read by every
//! listing). While the flood runs
//! evicted members are missing or down (the fault itself, counted apart); after it
//! every live member must be listed up again within the window. Whether the
//! forced-down flag survives is measured.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use crate::backend::BackendName;
use crate::error::{FaultsError, Result};
use crate::report::Row;
use crate::scenario::harness::{Harness, Setup};
use crate::scenario::ScenarioName;
use crate::Context;

/// memcached's memory limit in the scenario (MiB).
pub const MEMORY_MIB: u32 = 8;

/// Runs the scenario on `backend` (memcached, one or three servers).
pub async fn run(ctx: &Context, backend: BackendName) -> Result<Row> {
    let setup = Setup {
        memcached_env: vec![("SG_MEMCACHED_MEMORY".into(), MEMORY_MIB.to_string())],
        ..Setup::default()
    };
    let mut h = Harness::start(ctx, ScenarioName::Eviction, backend, setup).await?;
    h.run_for(Duration::from_secs(2)).await;
    let servers: Vec<SocketAddr> = h
        .deployment
        .servers
        .iter()
        .flat_map(|s| s.socket_addrs())
        .collect();
    for hot in [false, true] {
        let before = {
            let mut n = 0;
            for addr in &servers {
                n += stat(*addr, "evictions").await?;
            }
            n
        };
        let readings_before = h.observer.tally().tolerated_readings;
        h.observer.expect_downs();
        let until = Instant::now() + h.fault_length();
        let floods: Vec<_> = servers
            .iter()
            .map(|addr| tokio::spawn(flood(*addr, until, hot)))
            .collect();
        let mut written = 0u64;
        for f in floods {
            written += f
                .await
                .map_err(|e| FaultsError::Setup(format!("flood task: {e}")))??;
        }
        h.fault_ending();
        h.fault_ended();
        let mut evictions = 0;
        for addr in &servers {
            evictions += stat(*addr, "evictions").await?;
        }
        let evictions = evictions.saturating_sub(before);
        let lost = h.observer.tally().tolerated_readings - readings_before;
        h.row.note(format!(
            "{} flood: {} MiB of other keys{} into {} MiB per server, {evictions} evictions; {lost} readings of a live member missing or down during it",
            if hot { "hot" } else { "cold" },
            written / (1024 * 1024),
            if hot { ", each read twice after its write" } else { "" },
            MEMORY_MIB,
        ));
        if evictions == 0 {
            h.row
                .fail("memcached evicted nothing: the flood did not test anything");
        }
        let recovered = h.expect_recovery().await;
        h.row.note(format!(
            "{} flood: recovered in {}",
            if hot { "hot" } else { "cold" },
            recovered.map_or("–".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
        ));
    }
    h.expect_error_kinds(&["timeout", "unavailable"]);
    h.finish().await
}

/// Writes keys of 32 B to 2 KiB values (noreply) to `addr` until `until`, and with
/// `hot` reads each one twice right after (memcached's segmented LRU then treats
/// them as active, like the members' records); bytes written.
async fn flood(addr: SocketAddr, until: Instant, hot: bool) -> Result<u64> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| FaultsError::io(format!("connect to memcached {addr}"), e))?;
    let (mut read, mut write) = stream.into_split();
    // Drain the answers of the reads (the sets are noreply).
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let mut written = 0u64;
    let mut i = 0u64;
    let value = vec![b'x'; 2048];
    let mut batch = Vec::with_capacity(256 * 1024);
    let result = async {
        while Instant::now() < until {
            batch.clear();
            for _ in 0..200 {
                let len = 32 + (i as usize * 37) % (2048 - 32);
                batch.extend_from_slice(format!("set flood:{i} 0 0 {len} noreply\r\n").as_bytes());
                batch.extend_from_slice(&value[..len]);
                batch.extend_from_slice(b"\r\n");
                if hot {
                    batch.extend_from_slice(format!("mg flood:{i}\r\nmg flood:{i}\r\n").as_bytes());
                }
                i += 1;
            }
            write
                .write_all(&batch)
                .await
                .map_err(|e| FaultsError::io(format!("flood memcached {addr}"), e))?;
            written += batch.len() as u64;
        }
        Ok::<_, FaultsError>(written)
    }
    .await;
    drop(write);
    drain.abort();
    result
}

/// memcached's `STAT name` value on `addr`.
async fn stat(addr: SocketAddr, name: &str) -> Result<u64> {
    let io = |e| FaultsError::io(format!("stats of memcached {addr}"), e);
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
    stream.write_all(b"stats\r\n").await.map_err(io)?;
    let mut lines = BufReader::new(stream).lines();
    let mut value = 0;
    while let Some(line) = lines.next_line().await.map_err(io)? {
        if line == "END" {
            break;
        }
        let mut parts = line.split_whitespace();
        if parts.next() == Some("STAT") && parts.next() == Some(name) {
            value = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    Ok(value)
}
