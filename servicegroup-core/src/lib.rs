//! # servicegroup-core
//!
//! The policy core of servicegroup: which members of a group are alive.
//! It holds everything that must behave the same on every backend:
//!
//! - validated ids ([`GroupId`], [`MemberId`]),
//! - the storage contract drivers implement ([`Driver`]),
//! - the one liveness rule ([`liveness::is_up`]),
//! - configuration ([`Config`], [`ConfigLoader`]),
//! - the driver [`Registry`],
//! - the handle applications use ([`ServiceGroup`]) with its heartbeat loop and [`Watch`].
//!
//! It has no backend dependency; drivers live in their own crates.
#![deny(missing_docs)]

pub mod config;
pub mod driver;
pub mod error;
mod group;
mod heartbeat;
pub mod id;
pub mod liveness;
mod members;
pub mod record;
pub mod registry;
pub mod status;
pub mod watch;

pub use config::{
    Config, ConfigLoader, DatabaseUrl, DbConfig, InprocConfig, LoadedConfig, McConfig, Origin,
};
pub use driver::{Capabilities, Driver};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use group::{Membership, ServiceGroup, JOIN_CHUNK};
pub use id::{GroupId, IntoId, MemberId, MemberKey, MAX_ID_LEN};
pub use liveness::State;
pub use record::{Freshness, HeartbeatReport, MemberRecord};
pub use registry::{BuildFuture, DriverFactory, Registry};
pub use status::MemberStatus;
pub use watch::{Event, EventKind, Watch};

/// Re-exported so drivers can implement [`Driver`] with the same `async_trait`.
pub use async_trait::async_trait;

#[doc(hidden)]
pub mod __private {
    pub use inventory;
}
