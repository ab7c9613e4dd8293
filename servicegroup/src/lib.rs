//! # servicegroup
//!
//! Which members of a group are alive right now? OpenStack Nova's ServiceGroup API
//! (join, heartbeat every `report_interval`, up while the last heartbeat is no older
//! than `service_down_time`) as a library with pluggable drivers.
//!
//! This facade re-exports [`servicegroup_core`] and links the drivers picked by
//! cargo features:
//!
//! - `db` (default) with its backends `sqlite` (default), `postgres` and `mysql` (MySQL / MariaDB), in the
//!   spirit of sqlx: a build only compiles the backends it names. A `[db] url`
//!   whose backend is not compiled in is a `Config` error naming the feature.
//! - `inproc`: the in-process driver.
//! - `mc`: the memcached driver (links `inproc` too).
//! - `relay`: the relay driver, a client of `servicegroup relay` servers over HTTP.
//! - `etcd`: the etcd driver (an etcd cluster; no build tools needed).
//!
//! Each driver owns its configuration table (`[db]`, `[mc]`, `[inproc]`) and declares
//! it with its registration; the typed options are re-exported here as [`DbConfig`],
//! [`McConfig`] and [`InprocConfig`] for the enabled drivers. Set a driver's key with
//! [`Config::set`] and read its table with [`Config::driver_config`].
//!
//! A driver crate must be named somewhere in the final program or the linker drops
//! it and its registration; this crate names every enabled one.
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> servicegroup::Result<()> {
//! use servicegroup::{Config, ServiceGroup};
//!
//! // The db driver; without a URL it uses a SQLite file in ~/.local/state/servicegroup/.
//! let mut config = Config::with_driver("db");
//! config.set("db.url", "sqlite::memory:")?;
//! let sg = ServiceGroup::connect(config).await?;
//! let me = sg.join("compute", "host-1").await?;
//! assert!(sg.is_up("compute", "host-1").await?);
//! me.leave().await?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
#![deny(missing_docs)]

pub use servicegroup_core::*;

/// The `db` driver crate (feature `db`; backends `sqlite`, `postgres`, `mysql`).
#[cfg(feature = "db")]
pub use servicegroup_driver_db as db;
/// `[db]`: the db driver's options (feature `db`).
#[cfg(feature = "db")]
pub use servicegroup_driver_db::DbConfig;

/// The `inproc` driver crate (feature `inproc`).
#[cfg(feature = "inproc")]
pub use servicegroup_driver_inproc as inproc;
/// `[inproc]`: the inproc driver's options (feature `inproc`).
#[cfg(feature = "inproc")]
pub use servicegroup_driver_inproc::InprocConfig;

/// The `mc` driver crate (feature `mc`): memcached, one or several servers.
#[cfg(feature = "mc")]
pub use servicegroup_driver_mc as mc;
/// `[mc]`: the mc driver's options (feature `mc`).
#[cfg(feature = "mc")]
pub use servicegroup_driver_mc::McConfig;

/// The `etcd` driver crate (feature `etcd`): an etcd cluster, shared leases, native watch.
#[cfg(feature = "etcd")]
pub use servicegroup_driver_etcd as etcd;
/// `[etcd]`: the etcd driver's options (feature `etcd`).
#[cfg(feature = "etcd")]
pub use servicegroup_driver_etcd::EtcdConfig;
/// The `relay` driver crate (feature `relay`): `servicegroup relay` servers over HTTP.
#[cfg(feature = "relay")]
pub use servicegroup_driver_relay as relay;
/// `[relay]`: the relay driver's options (feature `relay`).
#[cfg(feature = "relay")]
pub use servicegroup_driver_relay::RelayConfig;
