//! `join_timeout`: a backend that stops taking joins ends the run with an error saying
//! how far joining got, after the members that joined were cleaned up, instead of
//! hanging the run (a benchmark row waits for its report).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use servicegroup::inproc::InprocDriver;
use servicegroup::{
    async_trait, Beats, Capabilities, Config, Driver, GroupId, HeartbeatReport, HolderUpdate,
    InstanceId, MemberKey, MemberRecord, Metadata, Registered, Registration,
};
use servicegroup_simulator::{Error, Options};

/// The registered name of the driver below.
const NAME: &str = "stalling-joins";
/// The in-process store it keeps its records in.
const STORE: &str = "simulator-join-timeout";
/// Registrations it takes before every further one hangs.
const ADMITTED: usize = 10;

/// The in-process driver, except that registrations after the first [`ADMITTED`]
/// never complete: a backend that stopped taking joins.
#[derive(Debug)]
struct StallingJoins {
    inner: InprocDriver,
    taken: AtomicUsize,
}

impl StallingJoins {
    /// Waits forever once `n` more registrations would pass [`ADMITTED`].
    async fn admit(&self, n: usize) {
        if self.taken.fetch_add(n, Ordering::SeqCst) + n > ADMITTED {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl Driver for StallingJoins {
    fn name(&self) -> &str {
        NAME
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn register(&self, r: &Registration) -> servicegroup::Result<Registered> {
        self.admit(1).await;
        self.inner.register(r).await
    }
    async fn register_many(&self, rs: &[Registration]) -> servicegroup::Result<Vec<Registered>> {
        self.admit(rs.len()).await;
        self.inner.register_many(rs).await
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
        self.inner.list(group).await
    }
    async fn groups(&self) -> servicegroup::Result<Vec<GroupId>> {
        self.inner.groups().await
    }
}

servicegroup::register_driver! {
    name: NAME,
    description: "test: the in-process driver, hanging every registration after the first ten",
    build: |_config| Box::pin(async move {
        Ok(Arc::new(StallingJoins {
            inner: InprocDriver::new(STORE),
            taken: AtomicUsize::new(0),
        }) as _)
    }),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_cannot_finish_ends_the_run_and_cleans_up() {
    let mut config = Config::with_driver(NAME);
    config.report_interval = Duration::from_millis(200);
    config.service_down_time = Duration::from_secs(1);
    let group = "join-timeout";
    let options = Options {
        members: 50,
        handles: 1,
        join_batch: 5,
        join_concurrency: 1,
        join_timeout: Duration::from_secs(2),
        observers: 0,
        group: Some(group.to_owned()),
        ..Options::default()
    };
    // The deadline of the whole run: far above the join timeout, so only a run that
    // ignores it fails here.
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        servicegroup_simulator::run(config, options),
    )
    .await
    .expect("the run hung past its join timeout");
    match outcome {
        Err(Error::JoinTimedOut {
            after,
            joined,
            members,
        }) => {
            assert_eq!(after, Duration::from_secs(2));
            assert_eq!((joined, members), (ADMITTED as u64, 50));
            let message = Error::JoinTimedOut {
                after,
                joined,
                members,
            }
            .to_string();
            assert!(
                message.contains("within 2s") && message.contains("10 of 50 members joined"),
                "{message}"
            );
        }
        other => panic!("expected JoinTimedOut, got {other:?}"),
    }
    // The members that joined left again: nothing stays behind in the store.
    let left = InprocDriver::new(STORE)
        .list(&GroupId::new(group).unwrap())
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}
