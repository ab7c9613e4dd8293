//! [`ChangeFeed`]: a driver's own change notifications for one group, which
//! [`crate::Watch`] uses instead of polling on a timer when the driver offers them
//! ([`crate::Driver::change_feed`]).
//!
//! A feed only says "this group may have changed"; the watch then lists the group and
//! diffs the listing against the previous one, exactly as the polling watch does. So
//! every transition is reported exactly once whatever the feed coalesces, repeats or
//! (after a resynchronisation) reports without a cause, and a driver that fell behind
//! its own change log only has to signal once more. A driver offers a feed only when
//! every change of a member's state is a change it sees (etcd: a lease expiry deletes
//! a key), since the watch no longer polls for ageing heartbeats.

use std::fmt;

use async_trait::async_trait;

use crate::error::Result;

/// Change notifications for one group, opened by [`crate::Driver::change_feed`].
#[async_trait]
pub trait ChangeFeed: Send + Sync + fmt::Debug {
    /// Waits until the group may have changed since the feed was opened or the previous
    /// call returned. An `Err` (the backend cannot be reached) leaves the feed usable:
    /// the next call waits again, and returns at once once the driver resumed (it
    /// signals after resuming, so what changed meanwhile is listed). Every outage is
    /// reported as an `Err` once, even one that began and ended between two calls:
    /// the watch holds back what its first listings after an outage show, and only
    /// knows of the outage from this `Err` (a stream that goes silent without
    /// breaking is an outage too, once the backend does not answer).
    ///
    /// Must be cancel-safe: a call dropped before it returned loses no notification.
    async fn changed(&mut self) -> Result<()>;
}
