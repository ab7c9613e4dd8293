//! [`ServiceGroup`]: the handle applications use.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::driver::{Capabilities, Driver};
use crate::engine::Inner;
use crate::error::{Error, ErrorKind, Result};
use crate::id::{GroupId, IntoId, MemberId, MemberKey};
use crate::instance::InstanceId;
use crate::liveness::State;
use crate::membership::{JoinOptions, Membership};
use crate::metadata::Metadata;
use crate::record::{Condition, Registered};
use crate::registry::Registry;
use crate::status::{self, GroupSummary, MemberStatus};
use crate::watch::Watch;

fn key_of<G, M>(group: G, member: M) -> Result<MemberKey>
where
    G: IntoId<GroupId>,
    M: IntoId<MemberId>,
{
    Ok(MemberKey::new(group.into_id()?, member.into_id()?))
}

/// The handle applications use: join groups, ask who is up, watch changes.
///
/// Cheap to clone; clones share one heartbeat loop and one [`InstanceId`]. All
/// members joined through one handle (and its clones) are heartbeated together,
/// one driver call per tick; the ticks of every handle built on one driver instance
/// are merged further, into one call per `coalesce_window` ([`crate::coalesce`]).
#[derive(Debug, Clone)]
pub struct ServiceGroup {
    inner: Arc<Inner>,
}

impl ServiceGroup {
    /// Validates `config` and builds the driver it names through the [`Registry`].
    pub async fn connect(config: Config) -> Result<Self> {
        let config = config.validated()?;
        let driver = Registry::build(&config).await?;
        Self::with_driver(driver, config)
    }

    /// Uses an already built driver (wrappers, tests, drivers outside the registry).
    ///
    /// The handle calls the driver through its coalescer
    /// ([`crate::coalesce::Coalescer::shared`]): every handle built on the same `Arc`
    /// shares one, so their heartbeats and registrations are merged into few calls.
    pub fn with_driver(driver: Arc<dyn Driver>, config: Config) -> Result<Self> {
        let config = config.validated()?;
        Ok(Self {
            inner: Arc::new(Inner::new(driver, config)),
        })
    }

    /// The configuration in effect (`service_down_time` already adjusted by Nova's rule).
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The driver's name.
    pub fn driver_name(&self) -> &str {
        self.inner.driver.name()
    }

    /// The driver's capabilities.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.driver.capabilities()
    }

    /// This handle's identity (random, 128 bits), stored in every record it registers.
    pub fn instance(&self) -> InstanceId {
        self.inner.instance
    }

    /// Whether the last heartbeat tick of this handle reached the backend.
    pub fn is_healthy(&self) -> bool {
        self.inner.is_healthy()
    }

    /// Joins `group` as `member` with the default [`JoinOptions`] (no metadata,
    /// takeover). Returns once the first heartbeat is stored; from then on the member
    /// is heartbeated every `report_interval` until the [`Membership`] leaves or is
    /// dropped, or another instance takes it over.
    ///
    /// Joining a member that this handle already has is [`ErrorKind::AlreadyJoined`].
    /// Joining a member another handle or process holds takes it over (epoch + 1).
    pub async fn join<G, M>(&self, group: G, member: M) -> Result<Membership>
    where
        G: IntoId<GroupId>,
        M: IntoId<MemberId>,
    {
        self.join_with(group, member, JoinOptions::new()).await
    }

    /// Joins with options: metadata, and [`JoinOptions::exclusive`] to refuse a member
    /// another live instance holds ([`ErrorKind::Conflict`], nothing changed).
    /// Bad metadata is [`ErrorKind::InvalidMetadata`] and no driver call is made.
    pub async fn join_with<G, M>(
        &self,
        group: G,
        member: M,
        options: JoinOptions,
    ) -> Result<Membership>
    where
        G: IntoId<GroupId>,
        M: IntoId<MemberId>,
    {
        let key = key_of(group, member)?;
        let metadata = options.validated_metadata()?;
        let keys = std::slice::from_ref(&key);
        self.start_joining(keys)?;
        let outcome = if options.exclusive {
            self.claim_exclusively(&key, &metadata).await
        } else {
            let registration =
                self.inner
                    .registration(key.clone(), metadata.clone(), Condition::Always);
            self.inner
                .call("register", self.inner.driver.register(&registration))
                .await
                .and_then(|outcome| self.stored_epoch(&key, outcome))
        };
        let epoch = match outcome {
            Ok(epoch) => epoch,
            Err(error) => {
                self.inner.joined().abort_joining(keys);
                return Err(error);
            }
        };
        self.inner.keep_metadata(&key, metadata);
        Ok(self.finish_joining(vec![(key, epoch)]).remove(0))
    }

    /// Joins many members of one group at once (default options: no metadata,
    /// takeover): validates every id first, registers them in chunks of
    /// [`crate::JOIN_CHUNK`] keys per driver call (one round trip each where the driver
    /// supports it), and returns the memberships in the order given.
    /// All or nothing: if a chunk fails, no member of the call stays joined on this
    /// handle (records already stored go down after `service_down_time`).
    pub async fn join_many<G, M, I>(&self, group: G, members: I) -> Result<Vec<Membership>>
    where
        G: IntoId<GroupId>,
        I: IntoIterator<Item = M>,
        M: IntoId<MemberId>,
    {
        let group = group.into_id()?;
        let keys = members
            .into_iter()
            .map(|m| Ok(MemberKey::new(group.clone(), m.into_id()?)))
            .collect::<Result<Vec<_>>>()?;
        self.start_joining(&keys)?;
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_unstable_by(|&a, &b| keys[a].cmp(&keys[b]));
        let registrations: Vec<_> = order
            .iter()
            .map(|&i| {
                self.inner
                    .registration(keys[i].clone(), Metadata::new(), Condition::Always)
            })
            .collect();
        let mut epochs = vec![0; keys.len()];
        let stored = match self.inner.register_all(&registrations).await {
            Ok(outcomes) => order.iter().zip(outcomes).try_for_each(|(&i, outcome)| {
                epochs[i] = self.stored_epoch(&keys[i], outcome)?;
                Ok(())
            }),
            Err(error) => Err(error),
        };
        if let Err(error) = stored {
            self.inner.joined().abort_joining(&keys);
            return Err(error);
        }
        tracing::debug!(driver = self.driver_name(), members = keys.len(), "joined");
        Ok(self.finish_joining(keys.into_iter().zip(epochs).collect()))
    }

    /// Takes `keys` on this handle, or fails with `AlreadyJoined`.
    fn start_joining(&self, keys: &[MemberKey]) -> Result<()> {
        let inner = &self.inner;
        if let Some(key) = keys.iter().find(|k| inner.superseded_by(k).is_some()) {
            return Err(Error::new(
                ErrorKind::AlreadyJoined,
                format!(
                    "member {key} of this handle was taken over by another instance and its membership still exists: drop it (or leave) before joining again"
                ),
            )
            .with_driver(inner.driver.name().to_owned()));
        }
        if let Err(dup) = inner.joined().start_joining(keys) {
            return Err(Error::new(
                ErrorKind::AlreadyJoined,
                format!("member {dup} is already joined on this handle"),
            )
            .with_driver(inner.driver.name().to_owned()));
        }
        Ok(())
    }

    fn finish_joining(&self, joined: Vec<(MemberKey, u64)>) -> Vec<Membership> {
        let inner = &self.inner;
        {
            let mut set = inner.joined();
            let keys: Vec<MemberKey> = joined.iter().map(|(k, _)| k.clone()).collect();
            set.finish_joining(&keys);
        }
        inner.ensure_heartbeating();
        // A stored epoch above 1 means the record was held by another instance.
        let takeovers = joined.iter().filter(|(_, epoch)| *epoch > 1).count();
        if takeovers > 0 {
            crate::metrics::count(
                crate::metrics::TAKEOVERS_TOTAL,
                inner.driver.name(),
                takeovers as u64,
            );
        }
        joined
            .into_iter()
            .map(|(key, epoch)| Membership::new(inner.clone(), key, epoch))
            .collect()
    }

    /// The epoch of an unconditional registration (which a driver cannot refuse).
    fn stored_epoch(&self, key: &MemberKey, outcome: Registered) -> Result<u64> {
        match outcome {
            Registered::Stored { epoch } => Ok(epoch),
            Registered::Refused { found } => Err(Error::backend(format!(
                "the driver refused an unconditional registration of {key} (found {found:?})"
            ))
            .with_driver(self.driver_name().to_owned())),
        }
    }

    /// Exclusive join: core's one claim rule ([`crate::claim::claim_exclusively`]).
    async fn claim_exclusively(&self, key: &MemberKey, metadata: &Metadata) -> Result<u64> {
        let inner = &self.inner;
        crate::claim::claim_exclusively(
            inner.driver.as_ref(),
            inner.config.call_timeout,
            inner.config.service_down_time,
            key,
            inner.instance,
            metadata,
        )
        .await
    }

    /// Nova's `is_up`: whether the member is up now. Unknown member: `NotFound`.
    pub async fn is_up<G, M>(&self, group: G, member: M) -> Result<bool>
    where
        G: IntoId<GroupId>,
        M: IntoId<MemberId>,
    {
        Ok(self.member(group, member).await?.is_up())
    }

    /// Nova's `get_updated_time`: the time of the last stored heartbeat. Unknown member: `NotFound`.
    pub async fn get_updated_time<G, M>(&self, group: G, member: M) -> Result<Option<DateTime<Utc>>>
    where
        G: IntoId<GroupId>,
        M: IntoId<MemberId>,
    {
        Ok(self.member(group, member).await?.last_heartbeat)
    }

    /// One member with its state, holder and metadata. Unknown member: `NotFound`.
    pub async fn member<G, M>(&self, group: G, member: M) -> Result<MemberStatus>
    where
        G: IntoId<GroupId>,
        M: IntoId<MemberId>,
    {
        let key = key_of(group, member)?;
        status::member(&self.inner, &key)
            .await?
            .ok_or_else(|| self.not_found(&key))
    }

    /// Every member of `group` with its state, sorted by member id. Members that
    /// stopped heartbeating are listed as down until they leave or are removed.
    pub async fn members<G>(&self, group: G) -> Result<Vec<MemberStatus>>
    where
        G: IntoId<GroupId>,
    {
        status::members(&self.inner, &group.into_id()?).await
    }

    /// The members of `group` in `state` (`State::Down`: stale, expired or forced
    /// down), sorted by member id, asking the backend only for those where it can
    /// judge on its own clock (a database ships only the matching rows).
    pub async fn members_in<G>(&self, group: G, state: State) -> Result<Vec<MemberStatus>>
    where
        G: IntoId<GroupId>,
    {
        status::members_in(&self.inner, &group.into_id()?, state).await
    }

    /// How many members of `group` are up, down and forced down, from one backend
    /// call (a counting query on a database). An unknown group counts zero.
    pub async fn summary<G>(&self, group: G) -> Result<GroupSummary>
    where
        G: IntoId<GroupId>,
    {
        status::summary(&self.inner, &group.into_id()?).await
    }

    /// Every group with at least one member, sorted.
    pub async fn groups(&self) -> Result<Vec<GroupId>> {
        let mut groups = self
            .inner
            .call("groups", self.inner.driver.groups())
            .await?;
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// Sets or clears the operator's forced-down flag (Nova's `service set --down/--up`).
    /// Forced down wins over heartbeats, which go on. Unknown member: `NotFound`.
    pub async fn set_forced_down<G, M>(&self, group: G, member: M, forced_down: bool) -> Result<()>
    where
        G: IntoId<GroupId>,
        M: IntoId<MemberId>,
    {
        let key = key_of(group, member)?;
        let found = self
            .inner
            .call(
                "set_forced_down",
                self.inner.driver.set_forced_down(&key, forced_down),
            )
            .await?;
        if found {
            tracing::info!(driver = self.driver_name(), group = %key.group, member = %key.member, forced_down, "forced-down flag set");
            Ok(())
        } else {
            Err(self.not_found(&key))
        }
    }

    /// Deletes a member record whoever holds it (Nova's `service delete`). Unknown
    /// member: `NotFound`. A member still heartbeating through some handle registers
    /// itself again.
    pub async fn remove<G, M>(&self, group: G, member: M) -> Result<()>
    where
        G: IntoId<GroupId>,
        M: IntoId<MemberId>,
    {
        let key = key_of(group, member)?;
        if self
            .inner
            .call("remove", self.inner.driver.remove(&key, None))
            .await?
        {
            Ok(())
        } else {
            Err(self.not_found(&key))
        }
    }

    /// Watches `group` with the configured `watch_interval`. See [`Watch`].
    pub async fn watch<G>(&self, group: G) -> Result<Watch>
    where
        G: IntoId<GroupId>,
    {
        let interval = self.inner.config.effective_watch_interval();
        self.watch_with_interval(group, interval).await
    }

    /// Watches `group`, polling its listing every `interval`.
    pub async fn watch_with_interval<G>(&self, group: G, interval: Duration) -> Result<Watch>
    where
        G: IntoId<GroupId>,
    {
        if interval.is_zero() {
            return Err(Error::config("watch interval must be greater than zero"));
        }
        Watch::start(self.inner.clone(), group.into_id()?, interval).await
    }

    fn not_found(&self, key: &MemberKey) -> Error {
        Error::not_found(format!("no member {} in group {}", key.member, key.group))
            .with_driver(self.driver_name().to_owned())
    }
}
