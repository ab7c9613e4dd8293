//! # servicegroup-core
//!
//! The policy core of servicegroup: which members of a group are alive, and who
//! holds each of them. It holds everything that must behave the same on every
//! backend:
//!
//! - validated ids ([`GroupId`], [`MemberId`]), instance ids ([`InstanceId`]) and
//!   member [`Metadata`],
//! - the storage contract drivers implement ([`Driver`]) and the facts they report
//!   ([`MemberRecord`]),
//! - the one liveness rule ([`liveness::is_up`]),
//! - configuration ([`Config`], [`ConfigLoader`]): core's keys, and the tables drivers
//!   declare with their registration ([`DriverConfig`], [`DriverTable`]),
//! - the driver [`Registry`],
//! - the handle applications use ([`ServiceGroup`], [`Membership`]) with its heartbeat
//!   engine (batching, timeouts, re-registration, fencing) and [`Watch`],
//! - the [`coalesce::Coalescer`] that merges the calls of every handle on one driver.
//!
//! It has no backend dependency; drivers live in their own crates.
#![deny(missing_docs)]

pub mod claim;
pub mod coalesce;
pub mod config;
pub mod driver;
mod engine;
pub mod error;
pub mod feed;
mod handle;
pub mod id;
pub mod instance;
mod joined;
pub mod json;
pub mod liveness;
mod membership;
pub mod metadata;
pub mod metrics;
pub mod record;
pub mod registry;
pub mod status;
pub mod watch;

pub use config::{
    Config, ConfigLoader, DatabaseUrl, DriverConfig, DriverTable, Entry, InvalidKey, LoadedConfig,
    NovaOption, Origin, Table, Value,
};
pub use driver::{Capabilities, Driver};
pub use engine::JOIN_CHUNK;
pub use error::{BoxError, Error, ErrorKind, Result};
pub use feed::ChangeFeed;
pub use handle::ServiceGroup;
pub use id::{GroupId, IntoId, MemberId, MemberKey, MAX_ID_LEN};
pub use instance::{Holder, InstanceId};
pub use liveness::State;
pub use membership::{JoinOptions, Membership};
pub use metadata::{IntoMetadata, Metadata};
pub use record::{
    Beats, Condition, Freshness, HeartbeatReport, HolderUpdate, MemberRecord, Registered,
    Registration, Summary, Superseded,
};
pub use registry::{BuildFuture, DriverFactory, Registry};
pub use status::{GroupSummary, MemberStatus};
pub use watch::{Event, EventKind, Watch};

/// Re-exported so drivers can implement [`Driver`] with the same `async_trait`.
pub use async_trait::async_trait;
/// Re-exported so drivers name the same time types as [`MemberRecord`].
pub use chrono;
/// Re-exported so drivers name the same `Serialize` / `Deserialize` that
/// [`DriverTable`] requires (derive with `#[serde(crate = "servicegroup_core::serde")]`
/// if the driver does not depend on serde itself).
pub use serde;

#[doc(hidden)]
pub mod __private {
    pub use inventory;
}
