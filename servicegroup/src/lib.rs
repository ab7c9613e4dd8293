//! # servicegroup
//!
//! Which members of a group are alive right now? OpenStack Nova's ServiceGroup API
//! (join, heartbeat every `report_interval`, up while the last heartbeat is no older
//! than `service_down_time`) as a library with pluggable drivers.
//!
//! This facade re-exports [`servicegroup_core`] and links the drivers picked by
//! cargo features: `inproc` (default), later `db` and `mc`. A driver crate must be
//! named somewhere in the final program or the linker drops it and its
//! registration; this crate names every enabled one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> servicegroup::Result<()> {
//! use servicegroup::{Config, ServiceGroup};
//!
//! let mut config = Config::with_driver("inproc");
//! config.inproc.name = "doc-example".into();
//! let sg = ServiceGroup::connect(config).await?;
//! let me = sg.join("compute", "host-1").await?;
//! assert!(sg.is_up("compute", "host-1").await?);
//! me.leave().await?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub use servicegroup_core::*;

/// The `inproc` driver crate (feature `inproc`).
#[cfg(feature = "inproc")]
pub use servicegroup_driver_inproc as inproc;
