//! The backends of the matrix ([`BackendName`]) and a started one ([`Deployment`]):
//! its servers, and the driver settings clients use ([`Target`]), directly or through
//! proxies.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::{FaultsError, Result};
use crate::server::{RelayProcess, Server, ServerKind};
use crate::Context;

/// What a client needs to reach a backend: the driver and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The driver name (`db`, `mc`, `etcd`, `relay`).
    pub driver: String,
    /// Keys and values set on the configuration (`db.url`, `report_interval`, ...).
    pub settings: Vec<(String, String)>,
}

impl Target {
    /// A target of `driver` with `settings`.
    pub fn new(driver: &str, settings: Vec<(String, String)>) -> Self {
        Self {
            driver: driver.to_owned(),
            settings,
        }
    }

    /// This target with `key` set to `value` (replacing an earlier value).
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.settings.retain(|(k, _)| k != key);
        self.settings.push((key.to_owned(), value.into()));
        self
    }

    /// The configuration this target describes.
    pub fn config(&self) -> servicegroup::Result<servicegroup::Config> {
        config_of(&self.driver, &self.settings)
    }
}

/// The list-valued keys (given here as one comma-separated string).
const LIST_KEYS: [&str; 3] = ["mc.servers", "etcd.endpoints", "relay.urls"];

/// A configuration of `driver` with `settings` set; list keys take a comma-separated
/// string, as their environment variables do.
pub fn config_of(
    driver: &str,
    settings: &[(String, String)],
) -> servicegroup::Result<servicegroup::Config> {
    let mut config = servicegroup::Config::with_driver(driver.to_owned());
    for (k, v) in settings {
        if LIST_KEYS.contains(&k.as_str()) {
            config.set(k, servicegroup::Value::serialize(&[v.as_str()])?)?;
        } else {
            config.set(k, v.as_str())?;
        }
    }
    Ok(config)
}

/// A backend of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendName {
    /// The db driver on a SQLite file.
    Sqlite,
    /// The db driver on PostgreSQL.
    Postgres,
    /// The db driver on MariaDB.
    Mariadb,
    /// The mc driver on one memcached.
    Memcached,
    /// The mc driver on three memcached servers.
    Memcached3,
    /// The etcd driver on a three-member cluster.
    Etcd,
    /// The relay driver on two relays in front of PostgreSQL.
    Relay,
}

impl BackendName {
    /// Every backend, in table order.
    pub const ALL: [BackendName; 7] = [
        BackendName::Sqlite,
        BackendName::Postgres,
        BackendName::Mariadb,
        BackendName::Memcached,
        BackendName::Memcached3,
        BackendName::Etcd,
        BackendName::Relay,
    ];

    /// The name used on the command line and in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendName::Sqlite => "sqlite",
            BackendName::Postgres => "postgres",
            BackendName::Mariadb => "mariadb",
            BackendName::Memcached => "memcached",
            BackendName::Memcached3 => "memcached-3",
            BackendName::Etcd => "etcd-3",
            BackendName::Relay => "relay-pg",
        }
    }

    /// The backend named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == name)
    }

    /// The `SERVICEGROUP_TEST_*` variable that says this backend's server is
    /// installed in a test run (`None` for SQLite, which needs no server).
    pub fn test_env(self) -> Option<&'static str> {
        match self {
            BackendName::Sqlite => None,
            BackendName::Postgres | BackendName::Relay => Some("SERVICEGROUP_TEST_POSTGRES_URL"),
            BackendName::Mariadb => Some("SERVICEGROUP_TEST_MARIADB_URL"),
            BackendName::Memcached | BackendName::Memcached3 => {
                Some("SERVICEGROUP_TEST_MEMCACHED_SERVERS")
            }
            BackendName::Etcd => Some("SERVICEGROUP_TEST_ETCD_ENDPOINTS"),
        }
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A started backend: its servers (and relays), owned for one scenario.
#[derive(Debug)]
pub struct Deployment {
    name: BackendName,
    /// The store's servers (one, three memcached, or one etcd cluster).
    pub servers: Vec<Server>,
    /// The relays in front of the store (relay backend only).
    pub relays: Vec<RelayProcess>,
    sqlite: Option<PathBuf>,
    timing: Vec<(String, String)>,
}

impl Deployment {
    /// Starts `name` in `dir`; `memcached_env` goes to memcached's script
    /// (`SG_MEMCACHED_MEMORY`).
    pub async fn start(
        ctx: &Context,
        name: BackendName,
        dir: &std::path::Path,
        memcached_env: Vec<(String, String)>,
    ) -> Result<Self> {
        let scripts = &ctx.scripts;
        let mut deployment = Deployment {
            name,
            servers: Vec::new(),
            relays: Vec::new(),
            sqlite: None,
            timing: ctx.timing.settings(),
        };
        match name {
            BackendName::Sqlite => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| FaultsError::io(format!("create {}", dir.display()), e))?;
                deployment.sqlite = Some(dir.join("sg.db"));
            }
            BackendName::Postgres | BackendName::Relay => deployment.servers.push(
                Server::start(ServerKind::Postgres, scripts, &dir.join("pg"), Vec::new()).await?,
            ),
            BackendName::Mariadb => deployment.servers.push(
                Server::start(ServerKind::Mariadb, scripts, &dir.join("mdb"), Vec::new()).await?,
            ),
            BackendName::Memcached | BackendName::Memcached3 => {
                let n = if name == BackendName::Memcached { 1 } else { 3 };
                for i in 0..n {
                    deployment.servers.push(
                        Server::start(
                            ServerKind::Memcached,
                            scripts,
                            &dir.join(format!("mc{i}")),
                            memcached_env.clone(),
                        )
                        .await?,
                    );
                }
            }
            BackendName::Etcd => deployment.servers.push(
                Server::start(ServerKind::Etcd, scripts, &dir.join("etcd"), Vec::new()).await?,
            ),
        }
        if name == BackendName::Relay {
            let store = deployment.store_target(None);
            for i in 0..2 {
                deployment.relays.push(
                    RelayProcess::start(&ctx.exe, store.clone(), dir.join(format!("relay{i}.log")))
                        .await?,
                );
            }
        }
        Ok(deployment)
    }

    /// Adds a streaming standby of the PostgreSQL primary in `dir`: from then on
    /// clients get a libpq multi-host URL naming both, with
    /// `target_session_attrs=read-write`, so they follow whichever is primary.
    pub async fn add_standby(&mut self, dir: &std::path::Path) -> Result<()> {
        let standby = Server::start_standby(&self.servers[0], dir).await?;
        self.servers.push(standby);
        Ok(())
    }

    /// Which backend.
    pub fn name(&self) -> BackendName {
        self.name
    }

    /// The addresses clients connect to (relays for the relay backend).
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        if !self.relays.is_empty() {
            return self.relays.iter().map(|r| r.addr()).collect();
        }
        self.servers.iter().flat_map(|s| s.socket_addrs()).collect()
    }

    /// What clients use, directly.
    pub fn target(&self) -> Target {
        self.target_via(None)
    }

    /// What clients use, connecting to `via` instead of [`Deployment::upstreams`]
    /// (proxies, in the same order).
    pub fn target_via(&self, via: Option<&[SocketAddr]>) -> Target {
        if self.name == BackendName::Relay {
            let addrs = via.map_or_else(|| self.upstreams(), <[SocketAddr]>::to_vec);
            let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
            return Target::new(
                "relay",
                self.with_timing(vec![("relay.urls".into(), urls.join(","))]),
            );
        }
        self.store_target(via)
    }

    fn with_timing(&self, mut settings: Vec<(String, String)>) -> Vec<(String, String)> {
        settings.extend(self.timing.iter().cloned());
        settings
    }

    /// The store itself (what relays use), through `via` when given.
    fn store_target(&self, via: Option<&[SocketAddr]>) -> Target {
        let addrs = via.map_or_else(
            || self.servers.iter().flat_map(|s| s.socket_addrs()).collect(),
            <[SocketAddr]>::to_vec,
        );
        let settings = match self.name {
            BackendName::Sqlite => vec![(
                "db.url".into(),
                format!(
                    "sqlite://{}",
                    self.sqlite
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            )],
            BackendName::Postgres | BackendName::Relay | BackendName::Mariadb => {
                let url = self.servers[0].address();
                let url = match addrs.as_slice() {
                    [] => url.to_owned(),
                    [one] => replace_hostport(url, *one),
                    many => {
                        let hosts: Vec<String> = many.iter().map(SocketAddr::to_string).collect();
                        let url = replace_hostport(url, many[0])
                            .replace(&many[0].to_string(), &hosts.join(","));
                        format!("{url}?target_session_attrs=read-write")
                    }
                };
                vec![("db.url".into(), url)]
            }
            BackendName::Memcached | BackendName::Memcached3 => {
                let list: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
                vec![("mc.servers".into(), list.join(","))]
            }
            BackendName::Etcd => {
                let list: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
                vec![("etcd.endpoints".into(), list.join(","))]
            }
        };
        let driver = match self.name {
            BackendName::Memcached | BackendName::Memcached3 => "mc",
            BackendName::Etcd => "etcd",
            _ => "db",
        };
        Target::new(driver, self.with_timing(settings))
    }

    /// The SQLite file (SQLite backend only).
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        self.sqlite.as_deref()
    }

    /// Every process of the store (not the relays): what a hang stops.
    pub fn store_pids(&self) -> Vec<u32> {
        self.servers.iter().flat_map(|s| s.pids()).collect()
    }
}

/// `scheme://user@HOST:PORT/path` with HOST:PORT replaced by `addr`.
pub fn replace_hostport(url: &str, addr: SocketAddr) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (user, rest) = match rest.rsplit_once('@') {
        Some((u, r)) => (format!("{u}@"), r),
        None => (String::new(), rest),
    };
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("{scheme}://{user}{addr}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_host_and_port_only() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(
            replace_hostport("postgres://postgres@127.0.0.1:5432/postgres", addr),
            "postgres://postgres@127.0.0.1:9/postgres"
        );
        assert_eq!(
            replace_hostport("mysql://root@127.0.0.1:3306/servicegroup", addr),
            "mysql://root@127.0.0.1:9/servicegroup"
        );
    }
}
