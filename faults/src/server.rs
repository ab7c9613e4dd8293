//! Backend servers the scenarios own: started, stopped, restarted and paused
//! (SIGSTOP / SIGCONT of every process of the server) through the same
//! `scripts/lib/*.sh` standalone commands the other tests use, each in its own
//! directory on its own ports. A [`Server`] destroys its server when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::backend::Target;
use crate::error::{FaultsError, Result};

/// Which server program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// PostgreSQL (`scripts/lib/postgres.sh`).
    Postgres,
    /// MariaDB (`scripts/lib/mariadb.sh`).
    Mariadb,
    /// One memcached (`scripts/lib/memcached.sh`).
    Memcached,
    /// A three-member etcd cluster (`scripts/lib/etcd.sh`).
    Etcd,
}

impl ServerKind {
    fn script(self) -> &'static str {
        match self {
            ServerKind::Postgres => "postgres.sh",
            ServerKind::Mariadb => "mariadb.sh",
            ServerKind::Memcached => "memcached.sh",
            ServerKind::Etcd => "etcd.sh",
        }
    }
}

/// A running server (or cluster) in its own directory.
#[derive(Debug)]
pub struct Server {
    kind: ServerKind,
    script: PathBuf,
    dir: PathBuf,
    /// What the script printed: a URL (databases), `host:port` (memcached) or the
    /// comma-separated endpoints (etcd).
    address: String,
    /// memcached's port (its script takes it as an argument).
    port: u16,
    /// Extra environment for the script (`SG_MEMCACHED_MEMORY`).
    env: Vec<(String, String)>,
}

/// A free TCP port on 127.0.0.1 (asks the kernel).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| FaultsError::io("bind a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| FaultsError::io("read a bound port", e))
}

async fn run_script(
    script: &Path,
    args: &[&str],
    env: &[(String, String)],
    within: Duration,
) -> Result<String> {
    let mut command = Command::new("bash");
    command
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let action = args.join(" ");
    let output = tokio::time::timeout(within, command.output())
        .await
        .map_err(|_| FaultsError::Script {
            script: script.to_owned(),
            action: action.clone(),
            code: None,
            stderr: format!("did not finish within {within:?}"),
        })?
        .map_err(|e| FaultsError::io(format!("run {}", script.display()), e))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        return Err(FaultsError::Script {
            script: script.to_owned(),
            action,
            code: output.status.code(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

async fn bash(script: &str, within: Duration) -> Result<String> {
    let output = tokio::time::timeout(
        within,
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| FaultsError::Setup(format!("`{script}` did not finish within {within:?}")))?
    .map_err(|e| FaultsError::io("run bash", e))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(FaultsError::Script {
            script: PathBuf::from("bash -c"),
            action: script.to_owned(),
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

impl Server {
    /// Starts a server of `kind` in `dir` with the scripts in `scripts` (the repository's
    /// `scripts/lib`). `env` is passed to the script (memcached's memory limit).
    pub async fn start(
        kind: ServerKind,
        scripts: &Path,
        dir: &Path,
        env: Vec<(String, String)>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| FaultsError::io(format!("create {}", dir.display()), e))?;
        let port = if kind == ServerKind::Memcached {
            free_port()?
        } else {
            0
        };
        let mut server = Server {
            kind,
            script: scripts.join(kind.script()),
            dir: dir.to_owned(),
            address: String::new(),
            port,
            env,
        };
        server.address = server.start_again().await?;
        if kind == ServerKind::Memcached {
            server.address = format!("127.0.0.1:{port}");
        }
        Ok(server)
    }

    /// A PostgreSQL streaming standby of `primary` in `dir` (`pg_basebackup -R` over
    /// the primary's trust replication access), started on its own port.
    pub async fn start_standby(primary: &Server, dir: &Path) -> Result<Self> {
        let port = primary
            .socket_addrs()
            .first()
            .map(|a| a.port())
            .ok_or_else(|| FaultsError::Setup("the primary has no address".into()))?;
        std::fs::create_dir_all(dir.join("socket"))
            .map_err(|e| FaultsError::io(format!("create {}", dir.display()), e))?;
        let lib = primary.script.clone();
        let d = dir.to_string_lossy().into_owned();
        let script = format!(
            ". {lib:?}; set -e; if [ \"$(id -u)\" = 0 ]; then chown -R postgres {d:?}; fi; \
             _pg_as_owner \"$(dirname \"$(readlink -f \"$(_pg_bindir)/pg_ctl\")\")/pg_basebackup\" -h 127.0.0.1 -p {port} -U postgres -D {d:?}/data -R -X stream -c fast; \
             chmod 700 {d:?}/data",
            lib = lib.display().to_string(),
        );
        bash(&script, Duration::from_secs(120)).await?;
        Server::start(
            ServerKind::Postgres,
            lib.parent().unwrap_or(Path::new(".")),
            dir,
            Vec::new(),
        )
        .await
    }

    /// Promotes a PostgreSQL standby (`pg_ctl promote -w`).
    pub async fn promote(&self) -> Result<()> {
        let d = self.dir.to_string_lossy().into_owned();
        let script = format!(
            ". {:?}; _pg_as_owner \"$(_pg_bindir)/pg_ctl\" -D {d:?}/data -w -t 60 promote",
            self.script.display().to_string()
        );
        bash(&script, Duration::from_secs(90)).await.map(drop)
    }

    /// Starts the server again after [`Server::stop`] (same ports, same data, except
    /// memcached, which comes back empty). Returns what the script printed.
    pub async fn start_again(&self) -> Result<String> {
        let dir = self.dir.to_string_lossy().into_owned();
        let port = self.port.to_string();
        let args: Vec<&str> = match self.kind {
            ServerKind::Memcached => vec!["start", &dir, &port],
            _ => vec!["start", &dir],
        };
        run_script(&self.script, &args, &self.env, Duration::from_secs(180)).await
    }

    /// Stops the server: a fast shutdown that disconnects clients, data kept.
    pub async fn stop(&self) -> Result<()> {
        let dir = self.dir.to_string_lossy().into_owned();
        run_script(
            &self.script,
            &["stop", &dir],
            &self.env,
            Duration::from_secs(90),
        )
        .await
        .map(drop)
    }

    /// Runs another action of the script on this server's directory
    /// (`stop-member DIR a`, `leader DIR` for etcd).
    pub async fn action(&self, action: &str, extra: &[&str]) -> Result<String> {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut args = vec![action, dir.as_str()];
        args.extend_from_slice(extra);
        run_script(&self.script, &args, &self.env, Duration::from_secs(90)).await
    }

    /// The kind of server.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the script printed when the server started (URL, address or endpoints).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The TCP addresses clients connect to.
    pub fn socket_addrs(&self) -> Vec<SocketAddr> {
        self.address
            .split(',')
            .filter_map(|part| {
                let rest = part.split_once("://").map_or(part, |(_, r)| r);
                let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
                let hostport = rest.split('/').next().unwrap_or(rest);
                hostport.parse().ok()
            })
            .collect()
    }

    /// The main process ids of the server (one per etcd member), from its pid files.
    pub fn main_pids(&self) -> Vec<u32> {
        let files: Vec<PathBuf> = match self.kind {
            ServerKind::Postgres => vec![self.dir.join("data/postmaster.pid")],
            ServerKind::Mariadb => vec![self.dir.join("mysqld.pid")],
            ServerKind::Memcached => vec![self.dir.join("memcached.pid")],
            ServerKind::Etcd => ["a", "b", "c"]
                .iter()
                .map(|m| self.dir.join(format!("{m}.pid")))
                .collect(),
        };
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .filter_map(|text| text.lines().next()?.trim().parse().ok())
            .collect()
    }

    /// Every process of the server: the main processes and all their descendants.
    pub fn pids(&self) -> Vec<u32> {
        with_descendants(&self.main_pids())
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`) to every process of the server.
    pub async fn signal(&self, signal: &str) -> Result<()> {
        signal_pids(&self.pids(), signal).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Never leave a stopped server behind: continue it, then destroy it.
        let pids = self.pids();
        if !pids.is_empty() {
            let _ = std::process::Command::new("kill")
                .arg("-CONT")
                .args(pids.iter().map(u32::to_string))
                .stderr(Stdio::null())
                .status();
        }
        let dir = self.dir.to_string_lossy().into_owned();
        let action = if self.kind == ServerKind::Memcached {
            "stop"
        } else {
            "destroy"
        };
        let _ = std::process::Command::new("bash")
            .arg(&self.script)
            .arg(action)
            .arg(&dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Sends `signal` to `pids` with kill(1) (no unsafe code).
pub async fn signal_pids(pids: &[u32], signal: &str) -> Result<()> {
    if pids.is_empty() {
        return Err(FaultsError::Setup(format!(
            "no process to send SIG{signal} to"
        )));
    }
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(|e| FaultsError::io("run kill", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(FaultsError::Setup(format!(
            "kill -{signal} {pids:?} failed: {status}"
        )))
    }
}

/// `pids` and all their descendants, read from `/proc/*/stat`.
pub fn with_descendants(pids: &[u32]) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...; comm may hold spaces and parentheses.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut out: Vec<u32> = pids.to_vec();
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        for &(pid, ppid) in &parents {
            if ppid == parent && !out.contains(&pid) {
                out.push(pid);
            }
        }
        i += 1;
    }
    out
}

/// A relay server process (the hidden `relay` subcommand) in front of a backend.
#[derive(Debug)]
pub struct RelayProcess {
    exe: PathBuf,
    target: Target,
    addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl RelayProcess {
    /// Starts a relay on a free loopback port serving `target`'s driver.
    pub async fn start(exe: &Path, target: Target, log: PathBuf) -> Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut relay = RelayProcess {
            exe: exe.to_owned(),
            target,
            addr,
            log,
            child: None,
        };
        relay.start_again().await?;
        Ok(relay)
    }

    /// Starts the relay again on the same address (after [`RelayProcess::kill`]).
    pub async fn start_again(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| FaultsError::io(format!("open {}", self.log.display()), e))?;
        let mut command = Command::new(&self.exe);
        command
            .arg("relay")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--driver")
            .arg(&self.target.driver);
        for (k, v) in &self.target.settings {
            command.arg("--set").arg(format!("{k}={v}"));
        }
        command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| FaultsError::io("start a relay process", e))?;
        self.child = Some(child);
        // Ready when it accepts connections.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(FaultsError::Setup(format!(
                    "relay on {} did not listen within 30 s (log {})",
                    self.addr,
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the relay (SIGKILL) and waits for it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}
