//! [`Membership`]: one joined member, and [`JoinOptions`]: how to join.

use std::sync::Arc;

use crate::engine::Inner;
use crate::error::{Error, ErrorKind, Result};
use crate::id::{GroupId, MemberId, MemberKey};
use crate::instance::{Holder, InstanceId};
use crate::metadata::{IntoMetadata, Metadata};
use crate::record::{Condition, HolderUpdate, Registered};

/// How to join: metadata to store, and whether to refuse a member another live
/// instance holds. The default joins with no metadata and takes the member over
/// from whoever holds it (a restarted service is up at once).
///
/// ```
/// use servicegroup_core::JoinOptions;
/// let options = JoinOptions::exclusive()
///     .with_meta("address", "10.0.0.7:8774")
///     .with_meta("zone", "eu-1");
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinOptions {
    pub(crate) metadata: Vec<(String, String)>,
    pub(crate) exclusive: bool,
}

impl JoinOptions {
    /// Takeover, no metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exclusive: joining a member that another instance holds and that is live
    /// (its last heartbeat no older than `service_down_time`) fails with
    /// [`ErrorKind::Conflict`] and changes nothing. A member that is down, absent or
    /// held by this handle is taken as usual.
    pub fn exclusive() -> Self {
        Self::new().with_exclusive(true)
    }

    /// Sets whether the join is exclusive (see [`Self::exclusive`]).
    pub fn with_exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Replaces the metadata to store with these pairs (checked at join: a bad one
    /// is an [`ErrorKind::InvalidMetadata`] error, and so is a key given twice).
    pub fn with_metadata<I, K, V>(mut self, pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.metadata = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// Adds one metadata entry.
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Whether the join is exclusive.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// The metadata, validated.
    pub(crate) fn validated_metadata(&self) -> Result<Metadata> {
        Metadata::from_pairs(self.metadata.iter().cloned())
    }
}

/// A joined member. It is heartbeated as long as this value lives and no other
/// instance took it over.
///
/// - [`Membership::leave`] leaves gracefully: the record is removed at once (only
///   if this handle still holds it).
/// - Dropping it (or [`Membership::crash`]) stops the heartbeats **without**
///   removing the record, exactly what a crashed process looks like: the member
///   stays up until `service_down_time` has passed, then is listed as down.
/// - If another instance takes the member over, this handle stops heartbeating it
///   (fencing) and [`Membership::superseded`] resolves with the new holder.
#[derive(Debug)]
pub struct Membership {
    inner: Arc<Inner>,
    key: MemberKey,
    epoch: u64,
    active: bool,
}

impl Membership {
    pub(crate) fn new(inner: Arc<Inner>, key: MemberKey, epoch: u64) -> Self {
        Self {
            inner,
            key,
            epoch,
            active: true,
        }
    }

    /// The group joined.
    pub fn group(&self) -> &GroupId {
        &self.key.group
    }

    /// The member id.
    pub fn member(&self) -> &MemberId {
        &self.key.member
    }

    /// Group and member.
    pub fn key(&self) -> &MemberKey {
        &self.key
    }

    /// The instance holding this membership (its handle's instance).
    pub fn instance(&self) -> InstanceId {
        self.inner.instance
    }

    /// The record's epoch when this handle registered it: a fencing token to put
    /// in your own writes.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// This handle's instance and the epoch.
    pub fn holder(&self) -> Holder {
        Holder::new(self.inner.instance, self.epoch)
    }

    /// The metadata this membership stored last.
    pub fn metadata(&self) -> Metadata {
        self.inner.metadata_of(&self.key)
    }

    /// Whether another instance took the member over (this handle no longer
    /// heartbeats it).
    pub fn is_superseded(&self) -> bool {
        self.inner.superseded_by(&self.key).is_some()
    }

    /// Resolves once another instance has taken the member over, with the new
    /// holder's instance and epoch. Never resolves while this handle holds it.
    pub async fn superseded(&self) -> Holder {
        self.inner.wait_superseded(&self.key).await
    }

    fn superseded_error(&self, holder: Holder) -> Error {
        Error::conflict(format!(
            "superseded: {} {} was taken over by instance {} (epoch {})",
            self.key.group, self.key.member, holder.instance, holder.epoch
        ))
        .with_driver(self.inner.driver.name().to_owned())
    }

    /// Replaces the member's metadata, stored before this returns (listings and
    /// watches see it). Bad metadata is [`ErrorKind::InvalidMetadata`]; a membership
    /// that was taken over is [`ErrorKind::Conflict`] and changes nothing. If the
    /// record was removed meanwhile (an operator's delete) it is registered again
    /// with the new metadata.
    pub async fn set_metadata(&self, metadata: impl IntoMetadata) -> Result<()> {
        let metadata = metadata.into_metadata()?;
        let inner = &self.inner;
        let _guard = inner.write_lock.lock().await;
        if let Some(holder) = inner.superseded_by(&self.key) {
            return Err(self.superseded_error(holder));
        }
        let update = inner
            .call(
                "set_metadata",
                inner
                    .driver
                    .set_metadata(&self.key, inner.instance, &metadata),
            )
            .await?;
        match update {
            HolderUpdate::Stored => {}
            HolderUpdate::NotHeld(holder) => {
                inner.fence(&self.key, holder);
                return Err(self.superseded_error(holder));
            }
            HolderUpdate::Missing => {
                let registration =
                    inner.registration(self.key.clone(), metadata.clone(), Condition::Absent);
                match inner
                    .call("register", inner.driver.register(&registration))
                    .await?
                {
                    Registered::Stored { .. } => {}
                    Registered::Refused {
                        found: Some(holder),
                    } if holder.instance != inner.instance => {
                        inner.fence(&self.key, holder);
                        return Err(self.superseded_error(holder));
                    }
                    Registered::Refused { .. } => {
                        return Err(Error::new(
                            ErrorKind::Backend,
                            format!(
                                "the record of {} changed while its metadata was stored; try again",
                                self.key
                            ),
                        )
                        .with_driver(inner.driver.name().to_owned()))
                    }
                }
            }
        }
        inner.keep_metadata(&self.key, metadata);
        Ok(())
    }

    /// Leaves gracefully: stops heartbeating and removes the record if this handle
    /// still holds it, so the member disappears from listings at once (a member
    /// taken over by another instance is left to its new holder). If the backend
    /// cannot be reached the heartbeats still stop and the error is returned; the
    /// record then goes down after `service_down_time`.
    pub async fn leave(mut self) -> Result<()> {
        let inner = self.inner.clone();
        // Heartbeats stop before the first await: a leave cancelled while it waits
        // (a `select!`, a timeout) must not leave the key heartbeated with no
        // membership. A tick that already picked the member to re-register still
        // holds the write lock, so the record is removed after it, not before.
        inner.joined().remove(&self.key);
        self.active = false;
        let superseded = inner.superseded_by(&self.key);
        inner.forget(&self.key);
        if superseded.is_some() {
            return Ok(());
        }
        let _guard = inner.write_lock.lock().await;
        let removed = inner
            .call(
                "remove",
                inner.driver.remove(&self.key, Some(inner.instance)),
            )
            .await?;
        if !removed {
            tracing::debug!(driver = inner.driver.name(), group = %self.key.group, member = %self.key.member, "left a member whose record this handle no longer held");
        }
        Ok(())
    }

    /// Simulates a crash: stops heartbeating without removing the record.
    /// Same as dropping the membership; named for tests and demos.
    pub fn crash(self) {
        drop(self);
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.active {
            self.inner.joined().remove(&self.key);
            self.inner.forget(&self.key);
        }
    }
}
