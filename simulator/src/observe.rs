//! The observers: down-set queries and single-member checks, judging every member
//! they see down as a detection (killed) or a false down (live).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use servicegroup::{EventKind, ServiceGroup, State};
use tokio::time::Instant;

use crate::run::{lock, Sim};

/// Single-member checks an observer makes after each group query.
pub const CHECKS_PER_ROUND: usize = 8;

/// One observer: ask for the group's down set, check a few single members, pause,
/// repeat.
///
/// Every kill and every false down is a member judged down, so the down set
/// (`members_in(group, State::Down)`: stale, expired or forced down) is all an
/// observer needs to see them; a database answers it with one query that ships only
/// the down rows, instead of the whole group each round. What is measured is
/// unchanged: each member of the down set is a detection (killed) or a false down
/// (live), exactly as the down members of a full listing were.
pub async fn observe(sim: Arc<Sim>, sg: ServiceGroup, pause: Duration) {
    let mut rng = fastrand::Rng::new();
    let n = sim.fleet.len();
    while !sim.stopped() {
        let started = Instant::now();
        let mut listed_in = Duration::ZERO;
        match sg.members_in(&sim.group, State::Down).await {
            Ok(down) => {
                listed_in = started.elapsed();
                lock(&sim.observed.listing_latency).record(listed_in);
                sim.observed.listings.fetch_add(1, Ordering::Relaxed);
                // Core re-checks every record against the rule; the filter only
                // states what the loop relies on.
                for m in down.iter().filter(|m| m.state == State::Down) {
                    if let Some(i) = sim.fleet.index_of(m.member.as_str()) {
                        sim.fleet.judged_down(i, m.member.as_str());
                    }
                }
            }
            Err(error) => sim.stats.errors.add(error.kind()),
        }
        for _ in 0..CHECKS_PER_ROUND {
            let i = rng.usize(..n);
            if !sim.fleet.is_joined(i) {
                continue;
            }
            let id = sim.fleet.member_id(i);
            match sg.member(&sim.group, id.as_str()).await {
                Ok(status) => {
                    sim.observed.checks.fetch_add(1, Ordering::Relaxed);
                    if !status.is_up() {
                        sim.fleet.judged_down(i, &id);
                    }
                }
                Err(error) => sim.stats.errors.add(error.kind()),
            }
        }
        tokio::time::sleep(observer_pause(pause, listed_in)).await;
    }
}

/// One observer as deployed: a [`servicegroup::Watch`] of the group (one poll per
/// `watch_interval`; on the database driver the down set between membership changes),
/// every `down` event a judgement of that member. Its polls are not timed one by one
/// (the report's listing figures stay empty); what it costs shows in the heartbeats'
/// latency and the server's CPU.
pub async fn watch(sim: Arc<Sim>, sg: ServiceGroup) {
    let mut watch = loop {
        match sg.watch(&sim.group).await {
            Ok(watch) => break watch,
            Err(error) => {
                sim.stats.errors.add(error.kind());
                if sim.stopped() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    while !sim.stopped() {
        // `next` is cancel-safe: the timeout only lets the loop see the end of the run.
        match tokio::time::timeout(Duration::from_millis(200), watch.next()).await {
            Err(_) => {}
            Ok(Ok(event)) if event.kind == EventKind::Down => {
                if let Some(i) = sim.fleet.index_of(event.member.as_str()) {
                    sim.fleet.judged_down(i, event.member.as_str());
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => sim.stats.errors.add(error.kind()),
        }
    }
}

/// The pause after a group query that took `listed_in`: at least `pause`, and twice
/// its time, so observers of a huge group (a Nova listing of 1,000,000 members takes
/// seconds) spend at most a third of their time querying and never starve heartbeats.
pub fn observer_pause(pause: Duration, listed_in: Duration) -> Duration {
    pause.max(listed_in * 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    use servicegroup::inproc::InprocDriver;
    use servicegroup::{
        async_trait, Beats, Capabilities, Config, Driver, GroupId, HeartbeatReport, HolderUpdate,
        InstanceId, MemberKey, MemberRecord, Metadata, Registered, Registration, Summary,
    };

    use crate::timing::{Stats, TimingDriver};

    /// The in-process driver, counting the group queries that reach it.
    #[derive(Debug)]
    struct Counting {
        inner: InprocDriver,
        lists: AtomicU64,
        down_sets: AtomicU64,
        up_sets: AtomicU64,
    }

    #[async_trait]
    impl Driver for Counting {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        async fn register(&self, r: &Registration) -> servicegroup::Result<Registered> {
            self.inner.register(r).await
        }
        async fn heartbeat(&self, batch: &[Beats<'_>]) -> servicegroup::Result<HeartbeatReport> {
            self.inner.heartbeat(batch).await
        }
        async fn remove(
            &self,
            key: &MemberKey,
            holder: Option<InstanceId>,
        ) -> servicegroup::Result<bool> {
            self.inner.remove(key, holder).await
        }
        async fn set_metadata(
            &self,
            key: &MemberKey,
            instance: InstanceId,
            metadata: &Metadata,
        ) -> servicegroup::Result<HolderUpdate> {
            self.inner.set_metadata(key, instance, metadata).await
        }
        async fn set_forced_down(&self, key: &MemberKey, on: bool) -> servicegroup::Result<bool> {
            self.inner.set_forced_down(key, on).await
        }
        async fn get(&self, key: &MemberKey) -> servicegroup::Result<Option<MemberRecord>> {
            self.inner.get(key).await
        }
        async fn list(&self, group: &GroupId) -> servicegroup::Result<Vec<MemberRecord>> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            self.inner.list(group).await
        }
        async fn list_in(
            &self,
            group: &GroupId,
            state: State,
            sdt: Duration,
        ) -> servicegroup::Result<Vec<MemberRecord>> {
            match state {
                State::Down => &self.down_sets,
                State::Up => &self.up_sets,
            }
            .fetch_add(1, Ordering::SeqCst);
            self.inner.list_in(group, state, sdt).await
        }
        async fn summary(&self, group: &GroupId, sdt: Duration) -> servicegroup::Result<Summary> {
            self.inner.summary(group, sdt).await
        }
        async fn groups(&self) -> servicegroup::Result<Vec<GroupId>> {
            self.inner.groups().await
        }
    }

    /// An observer asks for the down set only (through the timing driver, which must
    /// pass the query on rather than list the group), and still sees both a kill (a
    /// detection) and a live member forced down (a false down).
    #[test]
    fn observers_ask_for_the_down_set_and_see_kills_and_false_downs() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let counting = Arc::new(Counting {
                inner: InprocDriver::new(&format!("observe-{}", std::process::id())),
                lists: AtomicU64::new(0),
                down_sets: AtomicU64::new(0),
                up_sets: AtomicU64::new(0),
            });
            let stats = Arc::new(Stats::default());
            let driver: Arc<dyn Driver> =
                Arc::new(TimingDriver::new(counting.clone(), stats.clone()));
            let mut config = Config::with_driver("inproc");
            config.report_interval = Duration::from_millis(100);
            config.service_down_time = Duration::from_millis(600);
            let sg = ServiceGroup::with_driver(driver, config).unwrap();
            let group = GroupId::new("observed").unwrap();
            let sim = Arc::new(Sim::new(group.clone(), 3, stats, false));
            let ids: Vec<String> = (0..3).map(|i| sim.fleet.member_id(i)).collect();
            let mut memberships = sg.join_many(&group, ids.clone()).await.unwrap();
            for i in 0..3 {
                sim.fleet.mark_joined(i);
            }
            // m1 crashes; m2 lives on but is forced down.
            sim.fleet.mark_killed(1);
            memberships.remove(1).crash();
            sg.set_forced_down(&group, ids[2].as_str(), true)
                .await
                .unwrap();
            counting.lists.store(0, Ordering::SeqCst);

            let observer =
                tokio::spawn(observe(sim.clone(), sg.clone(), Duration::from_millis(20)));
            let deadline = Instant::now() + Duration::from_secs(10);
            while sim.fleet.detected() < 1 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sim.stop.store(true, Ordering::SeqCst);
            observer.await.unwrap();

            assert_eq!(sim.fleet.detected(), 1, "the kill was never seen");
            assert_eq!(sim.fleet.false_downs(), 1, "the forced-down member");
            let down_sets = counting.down_sets.load(Ordering::SeqCst);
            assert!(down_sets > 0);
            assert_eq!(
                sim.observed.listings.load(Ordering::SeqCst),
                down_sets,
                "each observer query is one down-set query at the driver"
            );
            assert_eq!(counting.lists.load(Ordering::SeqCst), 0, "a whole listing");
            assert_eq!(counting.up_sets.load(Ordering::SeqCst), 0);
            drop(memberships);
        });
    }
}
