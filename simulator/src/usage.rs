//! CPU time and memory of the simulator itself and of the database server it talks
//! to, read from `/proc` (Linux), so the report shows whether the simulator or the
//! server was the bottleneck. Elsewhere the figures are simply absent.

use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Fields 14..=17 of `/proc/PID/stat`: utime, stime, cutime, cstime, in ticks.
fn cpu_ticks(pid: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14 -> index 11.
    let n = |k: usize| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some((n(11) + n(12), n(13) + n(14)))
}

fn parent_of(pid: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A `kB` line of a `/proc` file, in kB.
fn kb_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU seconds the simulator used so far (user + system).
fn own_cpu_seconds() -> Option<f64> {
    cpu_ticks("self").map(|(own, _)| own as f64 / TICKS_PER_SECOND)
}

/// The server process and its children (PostgreSQL: postmaster + backends).
fn tree(pid: u32) -> Vec<String> {
    let mut pids = vec![pid.to_string()];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.bytes().all(|b| b.is_ascii_digit()) && parent_of(&name) == Some(pid) {
                pids.push(name);
            }
        }
    }
    pids
}

/// CPU seconds of the servers' trees: every live process's own time plus each
/// root's reaped children (backends that exited). `None` without servers or when one
/// cannot be read.
fn server_cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    let mut total = 0;
    for &pid in pids {
        for (k, p) in tree(pid).iter().enumerate() {
            let (own, children) = cpu_ticks(p)?;
            total += own + if k == 0 { children } else { 0 };
        }
    }
    Some(total as f64 / TICKS_PER_SECOND)
}

/// Proportional set size of the servers' trees in kB (shared memory counted once).
fn server_pss_kb(pids: &[u32]) -> Option<u64> {
    let mut total = 0;
    for &pid in pids {
        for p in tree(pid) {
            total += kb_field(&format!("/proc/{p}/smaps_rollup"), "Pss:")?;
        }
    }
    Some(total)
}

/// A CPU sample at the start of a measured window.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    at: Instant,
    own: Option<f64>,
    server: Option<f64>,
}

/// Takes a sample now (`servers`: the pids of the store's servers, summed; may be
/// empty).
pub fn mark(servers: &[u32]) -> Mark {
    Mark {
        at: Instant::now(),
        own: own_cpu_seconds(),
        server: server_cpu_seconds(servers),
    }
}

/// The simulator's own cost during the measured run.
#[derive(Debug, Clone, Serialize)]
pub struct SimulatorUsage {
    /// CPU seconds (user + system) during the measured run.
    pub cpu_seconds: Option<f64>,
    /// The same as a percentage of one core.
    pub cpu_percent: Option<f64>,
    /// CPU seconds while the fleet joined.
    pub join_cpu_seconds: Option<f64>,
    /// Resident memory at the end of the run, MB.
    pub rss_mb: Option<f64>,
    /// Peak resident memory, MB.
    pub peak_rss_mb: Option<f64>,
    /// Peak resident memory per 100,000 members, MB.
    pub peak_rss_mb_per_100k_members: Option<f64>,
}

/// The store's cost during the measured run (`--server-pid`, summed over every pid
/// given: each member of a cluster).
#[derive(Debug, Clone, Serialize)]
pub struct ServerUsage {
    /// The (first) server's root process id.
    pub pid: u32,
    /// Every server's root process id.
    pub pids: Vec<u32>,
    /// CPU seconds of the servers and their child processes during the measured run.
    pub cpu_seconds: Option<f64>,
    /// The same as a percentage of one core.
    pub cpu_percent: Option<f64>,
    /// Proportional set size of the servers' processes at the end of the run, MB.
    pub pss_mb: Option<f64>,
    /// The same per 100,000 members, MB.
    pub pss_mb_per_100k_members: Option<f64>,
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn per_100k(mb: Option<f64>, members: u64) -> Option<f64> {
    mb.filter(|_| members > 0)
        .map(|mb| round(mb * 100_000.0 / members as f64))
}

/// The simulator's figures since `run` (and `join` → `run` for the join phase).
pub fn simulator(join: Mark, run: Mark, members: u64) -> SimulatorUsage {
    let end = mark(&[]);
    let wall = end.at.duration_since(run.at).as_secs_f64().max(1e-9);
    let cpu = end.own.zip(run.own).map(|(e, s)| e - s);
    let peak = kb_field("/proc/self/status", "VmHWM:").map(|kb| kb as f64 / 1024.0);
    SimulatorUsage {
        cpu_seconds: cpu.map(round),
        cpu_percent: cpu.map(|c| round(100.0 * c / wall)),
        join_cpu_seconds: run.own.zip(join.own).map(|(r, j)| round(r - j)),
        rss_mb: kb_field("/proc/self/status", "VmRSS:").map(|kb| round(kb as f64 / 1024.0)),
        peak_rss_mb: peak.map(round),
        peak_rss_mb_per_100k_members: per_100k(peak, members),
    }
}

/// The figures of the servers `pids` (those `run` was taken of) since `run`; `None`
/// without servers.
pub fn server(pids: &[u32], run: Mark, members: u64) -> Option<ServerUsage> {
    let &pid = pids.first()?;
    let wall = run.at.elapsed().as_secs_f64().max(1e-9);
    let cpu = server_cpu_seconds(pids).zip(run.server).map(|(e, s)| e - s);
    let pss = server_pss_kb(pids).map(|kb| kb as f64 / 1024.0);
    Some(ServerUsage {
        pid,
        pids: pids.to_vec(),
        cpu_seconds: cpu.map(round),
        cpu_percent: cpu.map(|c| round(100.0 * c / wall)),
        pss_mb: pss.map(round),
        pss_mb_per_100k_members: per_100k(pss, members),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_figures_are_read_from_proc() {
        let me = std::process::id();
        let start = mark(&[me]);
        // Burn a little CPU so the difference is visible.
        let mut x = 0u64;
        let until = Instant::now() + std::time::Duration::from_millis(50);
        while Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let usage = simulator(start, start, 100_000);
        assert!(usage.cpu_seconds.unwrap() >= 0.0);
        assert!(usage.peak_rss_mb.unwrap() > 0.0);
        assert_eq!(usage.peak_rss_mb, usage.peak_rss_mb_per_100k_members);
        let one = server(&[me], start, 100_000).unwrap();
        assert!(one.cpu_seconds.unwrap() >= 0.0);
        assert!(one.pss_mb.unwrap() > 0.0);
        // Several servers are summed (here the same process twice: twice its memory).
        let twice = server(&[me, me], mark(&[me, me]), 100_000).unwrap();
        assert_eq!(twice.pids, vec![me, me]);
        let (one_pss, two_pss) = (one.pss_mb.unwrap(), twice.pss_mb.unwrap());
        assert!(
            two_pss > one_pss * 1.5,
            "two servers' PSS {two_pss} MB should be about twice one's {one_pss} MB"
        );
        assert!(server(&[], start, 100_000).is_none());
    }
}
