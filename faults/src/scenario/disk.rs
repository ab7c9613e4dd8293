//! Scenario 8, *disk full / read-only*: the SQLite file lives on a 16 MiB tmpfs.
//!
//! - **Full:** once the fleet runs, a filler file takes every free byte for
//!   service_down_time + 2 s, then is deleted. Expected: errors that name the path
//!   (if writing fails at all), heartbeats resume when space returns.
//! - **Read-only:** the file, its WAL files and its directory, owned by an
//!   unprivileged user (`nobody`), are made read-only (0444 / 0555). A member process
//!   that user starts then must fail its join with one error naming the path; the
//!   running fleet keeps the descriptors it opened (permissions are checked at
//!   open) and must keep every member up. Writable again, the user's process joins.
//!   (A read-only *remount* under open writers is refused by the kernel, and root
//!   ignores file modes: this is the read-only file a deployment really meets.)
//! - Both: no corruption (`PRAGMA integrity_check` is `ok` afterwards).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::backend::BackendName;
use crate::error::{FaultsError, Result};
use crate::fleet::{MemberProcess, ProcessOptions};
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
    read_only(ctx, &mut h, &db).await?;
    let row = h.finish().await?;
    integrity(row, &db)
}

/// The unprivileged user of the read-only half (`nobody`).
const UNPRIVILEGED: u32 = 65534;
/// Members of the unprivileged process (numbered after the fleet's).
const READ_ONLY_MEMBERS: usize = 5;

/// The read-only half (see the module doc): notes or failures on `h.row`.
async fn read_only(ctx: &Context, h: &mut Harness, db: &Path) -> Result<()> {
    if !is_root() {
        h.row.note(
            "read-only half not run: it needs root (to hand the file to an unprivileged user)",
        );
        return Ok(());
    }
    let dir = db
        .parent()
        .ok_or_else(|| FaultsError::Setup(format!("{} has no directory", db.display())))?;
    // The unprivileged process must reach the file: the work directory is ours.
    let work_mode = std::fs::metadata(&ctx.work)
        .map_err(|e| FaultsError::io(format!("stat {}", ctx.work.display()), e))?
        .permissions()
        .mode();
    set_mode(&ctx.work, (work_mode & 0o7777) | 0o011)?;
    let files = store_files(dir, db)?;
    for path in std::iter::once(dir).chain(files.iter().map(PathBuf::as_path)) {
        std::os::unix::fs::chown(path, Some(UNPRIVILEGED), Some(UNPRIVILEGED))
            .map_err(|e| FaultsError::io(format!("chown {}", path.display()), e))?;
    }
    let launch = h.fleet.launch().clone();
    let first = ctx.processes * ctx.per_process;
    let as_nobody = ProcessOptions {
        leave_on_exit: true,
        wrapper: vec![
            "setpriv".into(),
            format!("--reuid={UNPRIVILEGED}"),
            format!("--regid={UNPRIVILEGED}"),
            "--clear-groups".into(),
        ],
        ..ProcessOptions::default()
    };
    let errors_before = h.fleet.errors_by_kind();
    for path in &files {
        set_mode(path, 0o444)?;
    }
    set_mode(dir, 0o555)?;
    let mut refused =
        MemberProcess::spawn(&launch, "read-only", first, READ_ONLY_MEMBERS, &as_nobody).await?;
    let outcome = refused.joined(Duration::from_secs(30)).await?;
    // The fleet keeps running through it: no reading of a live member may be down.
    h.run_for(ctx.timing.report_interval * 2).await;
    refused.stop(Duration::from_secs(5)).await;
    let fleet_errors = crate::scenario::slow::diff(&h.fleet.errors_by_kind(), &errors_before);
    for path in &files {
        set_mode(path, 0o644)?;
    }
    set_mode(dir, 0o755)?;
    let name = db.to_string_lossy();
    match outcome {
        Err((kind, message)) if message.contains(name.as_ref()) => h.row.note(format!(
            "read-only: file and directory 0444/0555 for an unprivileged user; its new process's join failed ({kind}): {message}; the running fleet's errors meanwhile: {}",
            kinds_text(&fleet_errors)
        )),
        Err((kind, message)) => h.row.fail(format!(
            "read-only: the join failed ({kind}) without naming {name}: {message}"
        )),
        Ok(n) => h.row.fail(format!(
            "read-only: an unprivileged process joined {n} members on a read-only file"
        )),
    }
    if !fleet_errors.is_empty() {
        h.row.fail(format!(
            "read-only: the running fleet saw errors ({}) although its descriptors stay writable",
            kinds_text(&fleet_errors)
        ));
    }
    // Writable again: the unprivileged process joins and its members are listed up.
    let mut again = MemberProcess::spawn(
        &launch,
        "writable-again",
        first,
        READ_ONLY_MEMBERS,
        &as_nobody,
    )
    .await?;
    match again.joined(Duration::from_secs(30)).await? {
        Ok(_) => {
            let ids = again.ids();
            let deadline = tokio::time::Instant::now()
                + ctx.timing.report_interval * 2
                + Duration::from_secs(2);
            let up = loop {
                let listing = h.observer.listing(Duration::from_secs(10)).await?;
                let up = listing
                    .iter()
                    .filter(|m| {
                        ids.contains(&m.member.to_string()) && m.state == servicegroup::State::Up
                    })
                    .count();
                if up == ids.len() || tokio::time::Instant::now() >= deadline {
                    break up;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            if up == ids.len() {
                h.row.note(format!(
                    "writable again: the unprivileged process joined and its {up} members are listed up"
                ));
            } else {
                h.row.fail(format!(
                    "writable again: {up} of {} members of the unprivileged process listed up",
                    ids.len()
                ));
            }
        }
        Err((kind, message)) => h.row.fail(format!(
            "writable again: the unprivileged join still failed ({kind}): {message}"
        )),
    }
    again.stop(Duration::from_secs(5)).await;
    Ok(())
}

/// Whether this process runs as root (the disk scenario mounts a tmpfs and hands
/// files to another user): `/proc/self` belongs to the effective user.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| FaultsError::io(format!("chmod {mode:o} {}", path.display()), e))
}

/// The database file and its companions (`-wal`, `-shm`, `-journal`) in `dir`.
fn store_files(dir: &Path, db: &Path) -> Result<Vec<PathBuf>> {
    let stem = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(dir).map_err(|e| FaultsError::io(format!("read {}", dir.display()), e))?
    {
        let entry = entry.map_err(|e| FaultsError::io(format!("read {}", dir.display()), e))?;
        if entry.file_name().to_string_lossy().starts_with(&stem) {
            files.push(entry.path());
        }
    }
    Ok(files)
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
    Ok(row)
}
