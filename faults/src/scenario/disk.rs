//! Scenario 8, *disk full*: the SQLite file lives on a 16 MiB tmpfs; once the fleet
//! runs, a filler file takes every free byte for service_down_time + 2 s, then is
//! deleted. Expected: errors that name the path (if writing fails at all), no
//! corruption (`PRAGMA integrity_check` is `ok` afterwards), heartbeats resume when
//! space returns. The read-only half is reported as not run (see the row).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::backend::BackendName;
use crate::error::{FaultsError, Result};
use crate::report::{kinds_text, Row};
use crate::scenario::harness::{Harness, Setup};
use crate::scenario::ScenarioName;
use crate::Context;

/// Size of the small filesystem (MiB).
pub const SIZE_MIB: u32 = 16;

/// A tmpfs mounted for the scenario, unmounted on drop.
#[derive(Debug)]
pub struct SmallFs {
    path: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `mib` MiB at `path` (needs root).
    pub fn mount(path: &Path, mib: u32) -> Result<Self> {
        std::fs::create_dir_all(path)
            .map_err(|e| FaultsError::io(format!("create {}", path.display()), e))?;
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .map_err(|e| FaultsError::io("run mount", e))?;
        if !status.success() {
            return Err(FaultsError::Setup(format!(
                "cannot mount a {mib} MiB tmpfs at {} (needs root): {status}",
                path.display()
            )));
        }
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Runs the scenario on `backend` (SQLite).
pub async fn run(ctx: &Context, backend: BackendName) -> Result<Row> {
    let setup = Setup {
        small_fs_mib: Some(SIZE_MIB),
        ..Setup::default()
    };
    let mut h = Harness::start(ctx, ScenarioName::Disk, backend, setup).await?;
    h.run_for(Duration::from_secs(2)).await;
    let db = h
        .deployment
        .sqlite_path()
        .map(Path::to_owned)
        .ok_or_else(|| FaultsError::Setup("no SQLite file".into()))?;
    let filler = db.with_file_name("filler");
    let before = h.fleet.errors_by_kind();
    // Heartbeats cannot be stored while reads still work: the file's truth is that
    // members stop heartbeating, so down readings are the fault itself (counted apart).
    h.observer.expect_downs();
    let filled = fill(&filler)?;
    h.run_for(h.fault_length()).await;
    let during = crate::scenario::slow::diff(&h.fleet.errors_by_kind(), &before);
    h.fault_ending();
    std::fs::remove_file(&filler)
        .map_err(|e| FaultsError::io(format!("remove {}", filler.display()), e))?;
    h.fault_ended();
    h.row.note(format!(
        "filesystem filled ({} KiB written by the filler); member errors while full: {}; {} readings of live members down while full",
        filled / 1024,
        kinds_text(&during),
        h.observer.tally().tolerated_readings
    ));
    if !during.is_empty() {
        let named = logs_name(&h.dir, &db);
        if named {
            h.row.note("the members' WARN names the SQLite path");
        } else {
            h.row
                .fail("errors while the disk was full, but no member log names the SQLite file");
        }
    }
    h.expect_recovery().await;
    let row = h.finish().await?;
    integrity(row, &db)
}

fn fill(path: &Path) -> Result<u64> {
    let mut file = std::fs::File::create(path)
        .map_err(|e| FaultsError::io(format!("create {}", path.display()), e))?;
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => return Err(FaultsError::io(format!("fill {}", path.display()), e)),
        }
    }
    let _ = file.sync_all();
    Ok(written)
}

fn logs_name(dir: &Path, db: &Path) -> bool {
    let name = db.to_string_lossy();
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .any(|e| {
            std::fs::read_to_string(e.path())
                .map(|t| t.contains(name.as_ref()))
                .unwrap_or(false)
        })
}

fn integrity(mut row: Row, db: &Path) -> Result<Row> {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])")
        .arg(db)
        .output()
        .map_err(|e| FaultsError::io("run python3 for PRAGMA integrity_check", e))?;
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if answer == "ok" {
        row.note("PRAGMA integrity_check: ok");
    } else {
        row.fail(format!(
            "PRAGMA integrity_check: {answer:?} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    row.note("read-only half not run: as root a chmod is no fault, and a tmpfs cannot be remounted read-only while SQLite holds the file open for writing");
    Ok(row)
}
