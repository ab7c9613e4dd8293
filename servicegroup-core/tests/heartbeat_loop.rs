//! The heartbeat loop's mechanics, on tokio's paused clock, against a scripted
//! in-memory driver (this tests core's policy, not a backend; backends are covered by
//! the conformance suite against real servers).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use servicegroup_core::driver::{condition_holds, registered_holder};
use servicegroup_core::{
    async_trait, Beats, Capabilities, Config, Driver, Error, ErrorKind, Freshness, GroupId,
    HeartbeatReport, Holder, HolderUpdate, InstanceId, JoinOptions, MemberKey, MemberRecord,
    Metadata, Registered, Registration, Result, ServiceGroup, Superseded,
};
use tokio::time::Instant;

/// One stored record of the scripted driver.
#[derive(Debug, Clone)]
struct Row {
    beat: Instant,
    holder: Holder,
    metadata: Metadata,
}

/// An in-memory driver whose failures are switched by the test.
#[derive(Debug, Default)]
struct Scripted {
    rows: Mutex<BTreeMap<MemberKey, Row>>,
    heartbeat_calls: AtomicUsize,
    keys_per_call: Mutex<Vec<usize>>,
    unreachable: AtomicBool,
    hang: AtomicBool,
    /// Only `register` hangs (a tick re-registering a missing member holds core's
    /// write lock meanwhile).
    hang_register: AtomicBool,
    /// How long each heartbeat call takes.
    heartbeat_delay: Mutex<Duration>,
    /// How long a heartbeat call waits after storing, before it answers.
    answer_delay: Mutex<Duration>,
}

impl Scripted {
    fn check(&self) -> Result<()> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(Error::unavailable("scripted outage"));
        }
        Ok(())
    }

    async fn maybe_hang(&self) {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    fn holder_of(&self, key: &MemberKey) -> Option<Holder> {
        self.rows.lock().unwrap().get(key).map(|r| r.holder)
    }
}

#[async_trait]
impl Driver for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Duration::from_millis(1))
    }
    async fn register(&self, registration: &Registration) -> Result<Registered> {
        self.maybe_hang().await;
        if self.hang_register.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.check()?;
        let mut rows = self.rows.lock().unwrap();
        let found = rows.get(&registration.key).map(|r| r.holder);
        if !condition_holds(registration.condition, found) {
            return Ok(Registered::Refused { found });
        }
        let holder = registered_holder(found, registration.instance);
        rows.insert(
            registration.key.clone(),
            Row {
                beat: Instant::now(),
                holder,
                metadata: registration.metadata.clone(),
            },
        );
        Ok(Registered::Stored {
            epoch: holder.epoch,
        })
    }
    async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        self.heartbeat_calls.fetch_add(1, Ordering::SeqCst);
        self.keys_per_call
            .lock()
            .unwrap()
            .push(batch.iter().map(|b| b.keys.len()).sum());
        let delay = *self.heartbeat_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.maybe_hang().await;
        self.check()?;
        let report = {
            let mut rows = self.rows.lock().unwrap();
            let mut report = HeartbeatReport::default();
            for part in batch {
                for key in part.keys {
                    match rows.get_mut(key) {
                        Some(r) if r.holder.instance == part.instance => r.beat = Instant::now(),
                        Some(r) => report.superseded.push(Superseded {
                            key: key.clone(),
                            instance: part.instance,
                            holder: r.holder,
                        }),
                        None => report.missing.push((part.instance, key.clone())),
                    }
                }
            }
            report
        };
        let answer = *self.answer_delay.lock().unwrap();
        tokio::time::sleep(answer).await;
        Ok(report)
    }
    async fn remove(&self, key: &MemberKey, holder: Option<InstanceId>) -> Result<bool> {
        self.check()?;
        let mut rows = self.rows.lock().unwrap();
        let held = match (rows.get(key), holder) {
            (Some(r), Some(i)) => r.holder.instance == i,
            (Some(_), None) => true,
            (None, _) => false,
        };
        Ok(held && rows.remove(key).is_some())
    }
    async fn set_metadata(
        &self,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        self.check()?;
        Ok(match self.rows.lock().unwrap().get_mut(key) {
            None => HolderUpdate::Missing,
            Some(r) if r.holder.instance != instance => HolderUpdate::NotHeld(r.holder),
            Some(r) => {
                r.metadata = metadata.clone();
                HolderUpdate::Stored
            }
        })
    }
    async fn set_forced_down(&self, _key: &MemberKey, _forced: bool) -> Result<bool> {
        Ok(false)
    }
    async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>> {
        self.maybe_hang().await;
        self.check()?;
        Ok(self.rows.lock().unwrap().get(key).map(|r| MemberRecord {
            key: key.clone(),
            last_heartbeat: None,
            freshness: Freshness::Age(Instant::now() - r.beat),
            forced_down: false,
            holder: r.holder,
            holder_since: None,
            metadata: r.metadata.clone(),
        }))
    }
    async fn list(&self, _group: &GroupId) -> Result<Vec<MemberRecord>> {
        self.check()?;
        Ok(Vec::new())
    }
    async fn groups(&self) -> Result<Vec<GroupId>> {
        Ok(Vec::new())
    }
}

fn config() -> Config {
    let mut c = Config::with_driver("scripted");
    c.report_interval = Duration::from_secs(10);
    c.service_down_time = Duration::from_secs(60);
    c.call_timeout = Duration::from_secs(2);
    c
}

/// Captures formatted log lines of the current thread (the tests run on a
/// current-thread runtime, so the heartbeat task logs on this thread too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(needle)
            .count()
    }
}

#[tokio::test(start_paused = true)]
async fn join_stores_first_heartbeat_before_returning() {
    let driver = Arc::new(Scripted::default());
    let sg = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let _m = sg.join("compute", "a").await.unwrap();
    assert_eq!(driver.rows.lock().unwrap().len(), 1);
    assert!(sg.is_up("compute", "a").await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn all_members_of_a_handle_go_in_one_call_per_tick() {
    let driver = Arc::new(Scripted::default());
    let sg = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let mut members = Vec::new();
    for i in 0..50 {
        members.push(sg.join("compute", format!("h{i}")).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(35)).await;
    let calls = driver.heartbeat_calls.load(Ordering::SeqCst);
    // 35 s at one tick per 9-10 s (jitter makes ticks early, never late): 3 or 4 ticks.
    assert!((3..=4).contains(&calls), "{calls} heartbeat calls");
    assert!(driver
        .keys_per_call
        .lock()
        .unwrap()
        .iter()
        .all(|&n| n == 50));
    // Long past service_down_time, every member is still up.
    tokio::time::sleep(Duration::from_secs(120)).await;
    for i in 0..50 {
        assert!(sg.is_up("compute", format!("h{i}")).await.unwrap());
    }
}

/// A leave cancelled while it waits for a tick's re-registration still stops the
/// member's heartbeats (it must not stay in the batch with no membership).
#[tokio::test(start_paused = true)]
async fn cancelled_leave_still_stops_heartbeats() {
    let driver = Arc::new(Scripted::default());
    let sg = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let a = sg.join("compute", "a").await.unwrap();
    let _b = sg.join("compute", "b").await.unwrap();
    // b's record is lost: the next tick re-registers it, and that hangs until
    // call_timeout (2 s) while the tick holds the write lock.
    let b_key = MemberKey::new("compute".parse().unwrap(), "b".parse().unwrap());
    driver.rows.lock().unwrap().remove(&b_key);
    driver.hang_register.store(true, Ordering::SeqCst);
    let calls = driver.heartbeat_calls.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    while driver.heartbeat_calls.load(Ordering::SeqCst) == calls {
        assert!(Instant::now() < deadline, "no tick within 15 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The tick is now stuck re-registering b; a's leave waits for it and is cancelled.
    let left = tokio::time::timeout(Duration::from_millis(100), a.leave()).await;
    assert!(left.is_err(), "leave should still be waiting for the tick");
    driver.hang_register.store(false, Ordering::SeqCst);
    driver.keys_per_call.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(35)).await;
    let sizes = driver.keys_per_call.lock().unwrap().clone();
    assert!(
        sizes.len() >= 3,
        "ticks after the cancelled leave: {sizes:?}"
    );
    assert!(
        sizes.iter().all(|&n| n == 1),
        "only b is heartbeated after a's cancelled leave: {sizes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn lost_and_recovered_are_logged_once_each() {
    let logs = Logs::default();
    let _guard = logs.install();
    let driver = Arc::new(Scripted::default());
    let sg = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let _m = sg.join("compute", "a").await.unwrap();

    driver.unreachable.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await; // ~6 failing ticks
    assert!(driver.heartbeat_calls.load(Ordering::SeqCst) >= 5);
    assert_eq!(logs.count("lost connection to scripted backend"), 1);
    assert!(!sg.is_healthy());
    // "Cannot tell" is an error, never "down".
    let err = sg.is_up("compute", "a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);

    driver.unreachable.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(logs.count("recovered connection to scripted backend"), 1);
    assert_eq!(logs.count("lost connection to scripted backend"), 1);
    assert!(sg.is_healthy());
}

#[tokio::test(start_paused = true)]
async fn a_hung_backend_call_times_out_and_the_loop_lives_on() {
    let logs = Logs::default();
    let _guard = logs.install();
    let driver = Arc::new(Scripted::default());
    let sg = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let _m = sg.join("compute", "a").await.unwrap();

    driver.hang.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let err = sg.is_up("compute", "a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("call_timeout"), "{err}");
    assert!(started.elapsed() <= Duration::from_secs(2) + Duration::from_millis(10));

    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(logs.count("lost connection to scripted backend"), 1);
    let calls_while_hung = driver.heartbeat_calls.load(Ordering::SeqCst);
    driver.hang.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(driver.heartbeat_calls.load(Ordering::SeqCst) > calls_while_hung);
    assert_eq!(logs.count("recovered connection to scripted backend"), 1);
}

#[tokio::test(start_paused = true)]
async fn slow_ticks_are_skipped_not_piled_up() {
    let driver = Arc::new(Scripted::default());
    *driver.heartbeat_delay.lock().unwrap() = Duration::from_secs(25);
    let mut c = config();
    c.call_timeout = Duration::from_secs(30);
    let sg = ServiceGroup::with_driver(driver.clone(), c).unwrap();
    let _m = sg.join("compute", "a").await.unwrap();
    tokio::time::sleep(Duration::from_secs(100)).await;
    // Each call takes 25 s and starts at most every ~10 s, so at most one call
    // runs at a time: about 100 / (25 + 9..10) = 2..3 calls, never 10.
    let calls = driver.heartbeat_calls.load(Ordering::SeqCst);
    assert!((2..=4).contains(&calls), "{calls} calls");
}

#[tokio::test(start_paused = true)]
async fn a_member_whose_record_vanished_is_registered_again_and_logged_once() {
    let logs = Logs::default();
    let _guard = logs.install();
    let driver = Arc::new(Scripted::default());
    let sg = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let _m = sg.join("compute", "a").await.unwrap();
    driver.rows.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(driver.rows.lock().unwrap().len(), 1);
    assert_eq!(logs.count("gone from the scripted backend"), 1);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(logs.count("gone from the scripted backend"), 1);
    // Many at once: one line for the tick, naming how many.
    let _more = sg.join_many("compute", ["b", "c", "d"]).await.unwrap();
    driver.rows.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(driver.rows.lock().unwrap().len(), 4);
    assert_eq!(logs.count("gone from the scripted backend"), 2);
    assert_eq!(logs.count("4 member record(s) were gone"), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_membership_stops_heartbeats_and_leave_removes() {
    let driver = Arc::new(Scripted::default());
    let sg = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let crashed = sg.join("compute", "crashed").await.unwrap();
    let leaving = sg.join("compute", "leaving").await.unwrap();
    crashed.crash();
    leaving.leave().await.unwrap();
    assert_eq!(
        driver.rows.lock().unwrap().len(),
        1,
        "leave removed the record, crash kept it"
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        driver.heartbeat_calls.load(Ordering::SeqCst),
        0,
        "nobody left to heartbeat"
    );
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(!sg.is_up("compute", "crashed").await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn join_twice_on_one_handle_is_already_joined() {
    let sg = ServiceGroup::with_driver(Arc::new(Scripted::default()), config()).unwrap();
    let _m = sg.join("compute", "a").await.unwrap();
    let err = sg.join("compute", "a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyJoined);
}

#[tokio::test(start_paused = true)]
async fn a_failed_join_leaves_nothing_behind() {
    let driver = Arc::new(Scripted::default());
    let sg = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    driver.unreachable.store(true, Ordering::SeqCst);
    let err = sg.join("compute", "a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(err.driver(), Some("scripted"));
    driver.unreachable.store(false, Ordering::SeqCst);
    // Not half-joined: joining again works.
    let _m = sg.join("compute", "a").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn join_many_registers_everyone_and_heartbeats_them_in_one_call() {
    let driver = Arc::new(Scripted::default());
    let sg = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let names: Vec<String> = (0..2500).map(|i| format!("h{i:04}")).collect();
    let members = sg.join_many("compute", &names).await.unwrap();
    assert_eq!(members.len(), 2500);
    assert_eq!(members[17].member().as_str(), "h0017", "order as given");
    assert_eq!(driver.rows.lock().unwrap().len(), 2500);
    // The first tick comes at a random point of the first interval, the next 9-10 s
    // later: one or two ticks in 11 s, each one call with every member.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let calls = driver.heartbeat_calls.load(Ordering::SeqCst);
    assert!((1..=2).contains(&calls), "{calls} heartbeat calls");
    let sizes = driver.keys_per_call.lock().unwrap().clone();
    assert!(sizes.iter().all(|&n| n == 2500), "{sizes:?}");
}

#[tokio::test(start_paused = true)]
async fn join_many_is_all_or_nothing() {
    let driver = Arc::new(Scripted::default());
    let sg = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let _a = sg.join("compute", "a").await.unwrap();
    // A duplicate (inside the call or with an existing membership) refuses the whole call.
    let err = sg.join_many("compute", ["b", "c", "b"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyJoined);
    let err = sg.join_many("compute", ["d", "a"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyJoined);
    // A bad id refuses the whole call before anything is stored.
    let err = sg.join_many("compute", ["e", "bad id"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidId);
    assert_eq!(driver.rows.lock().unwrap().len(), 1);
    // A backend failure leaves none of them joined: they can all be joined again.
    driver.unreachable.store(true, Ordering::SeqCst);
    assert!(sg.join_many("compute", ["b", "c", "d"]).await.is_err());
    driver.unreachable.store(false, Ordering::SeqCst);
    let joined = sg.join_many("compute", ["b", "c", "d"]).await.unwrap();
    assert_eq!(joined.len(), 3);
}

fn key(group: &str, member: &str) -> MemberKey {
    MemberKey::new(group.parse().unwrap(), member.parse().unwrap())
}

/// Two handles (two instances) on one store: the second join takes the member over,
/// the first is fenced at its next tick (one ERROR, out of its batch, told through
/// its membership) and its leave leaves the new holder's record alone.
#[tokio::test(start_paused = true)]
async fn a_takeover_fences_the_old_holder_once() {
    let logs = Logs::default();
    let _guard = logs.install();
    let driver = Arc::new(Scripted::default());
    let old = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let new = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    assert_ne!(old.instance(), new.instance());
    let _other = old.join("compute", "b").await.unwrap();
    let first = old.join("compute", "a").await.unwrap();
    assert_eq!(first.epoch(), 1);
    assert!(!first.is_superseded());
    let second = new.join("compute", "a").await.unwrap();
    assert_eq!(second.epoch(), 2);
    assert_eq!(
        driver.holder_of(&key("compute", "a")),
        Some(second.holder())
    );

    let told = tokio::time::timeout(Duration::from_secs(11), first.superseded())
        .await
        .expect("the old holder is told within one report interval");
    assert_eq!(told, Holder::new(new.instance(), 2));
    assert!(first.is_superseded());
    assert_eq!(logs.count("compute/a was taken over by instance"), 1);
    assert_eq!(logs.count("two processes claim one member"), 1);
    // Out of the old handle's batch: its later ticks carry only b, and no more ERRORs.
    driver.keys_per_call.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(logs.count("two processes claim one member"), 1);
    assert_eq!(
        driver.holder_of(&key("compute", "a")),
        Some(second.holder())
    );
    // A superseded membership cannot change the record.
    let err = first.set_metadata([("zone", "x")]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.to_string().contains("superseded"), "{err}");
    // Joining again on the old handle while the superseded membership lives is refused.
    let err = old.join("compute", "a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyJoined);
    first.leave().await.unwrap();
    assert_eq!(
        driver.holder_of(&key("compute", "a")),
        Some(second.holder()),
        "the superseded holder's leave must not delete the new holder's record"
    );
    second.leave().await.unwrap();
    assert_eq!(driver.holder_of(&key("compute", "a")), None);
}

#[tokio::test(start_paused = true)]
async fn exclusive_join_refuses_a_live_holder_and_takes_a_down_one() {
    let driver = Arc::new(Scripted::default());
    let a = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let b = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let held = a
        .join_with("compute", "x", JoinOptions::new().with_meta("zone", "a"))
        .await
        .unwrap();
    let err = b
        .join_with("compute", "x", JoinOptions::exclusive())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let text = err.to_string();
    for part in [
        "compute",
        "x",
        &a.instance().to_string(),
        "epoch 1",
        "conflict",
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
    assert_eq!(driver.holder_of(&key("compute", "x")), Some(held.holder()));
    // b may join x again after the refusal (nothing was left taken on b).
    held.crash();
    tokio::time::sleep(Duration::from_secs(61)).await;
    let taken = b
        .join_with("compute", "x", JoinOptions::exclusive())
        .await
        .unwrap();
    assert_eq!(taken.holder(), Holder::new(b.instance(), 2));
    assert!(
        taken.metadata().is_empty(),
        "takeover replaces the metadata"
    );
    // Absent: epoch 1.
    let fresh = b
        .join_with("compute", "y", JoinOptions::exclusive())
        .await
        .unwrap();
    assert_eq!(fresh.epoch(), 1);
}

#[tokio::test(start_paused = true)]
async fn bad_metadata_is_refused_before_any_driver_call() {
    let driver = Arc::new(Scripted::default());
    let sg = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let err = sg
        .join_with("compute", "a", JoinOptions::new().with_meta("Bad Key", "v"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMetadata);
    assert!(err.to_string().contains("Bad Key"), "{err}");
    assert!(driver.rows.lock().unwrap().is_empty());
    // Not half-joined.
    let m = sg.join("compute", "a").await.unwrap();
    let err = m.set_metadata([("k", "v".repeat(1025))]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMetadata);
    m.set_metadata([("k", "v")]).await.unwrap();
    assert_eq!(m.metadata().get("k"), Some("v"));
    // A record lost by the backend is registered again with its metadata.
    driver.rows.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let row = driver
        .rows
        .lock()
        .unwrap()
        .get(&key("compute", "a"))
        .cloned();
    assert_eq!(
        row.map(|r| r.metadata.get("k").map(str::to_owned)),
        Some(Some("v".into()))
    );
}

/// A tick's report arriving after the member left and joined again speaks of the old
/// incarnation: it must not fence the new one (which holds the record again).
#[tokio::test(start_paused = true)]
async fn a_late_superseded_report_spares_a_membership_joined_again() {
    let logs = Logs::default();
    let _guard = logs.install();
    let driver = Arc::new(Scripted::default());
    let a = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let b = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    // A holds two members, so its ticks are the calls carrying two keys.
    let _other = a.join("compute", "other").await.unwrap();
    let old = a.join("compute", "k").await.unwrap();
    let taken = b.join("compute", "k").await.unwrap();
    assert_eq!(taken.epoch(), 2);
    // A's next tick finds k held by B, but answers only 1 s later (within call_timeout).
    *driver.answer_delay.lock().unwrap() = Duration::from_secs(1);
    driver.keys_per_call.lock().unwrap().clear();
    while !driver.keys_per_call.lock().unwrap().contains(&2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the call read the store (it answers 1 s later).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!old.is_superseded(), "A's tick has not answered yet");
    // Meanwhile A's application drops the old membership and joins again: epoch 3.
    drop(old);
    let again = a.join("compute", "k").await.unwrap();
    assert_eq!(again.holder(), Holder::new(a.instance(), 3));
    drop(taken);
    *driver.answer_delay.lock().unwrap() = Duration::ZERO;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        !again.is_superseded(),
        "the stale report fenced the new membership"
    );
    assert_eq!(logs.count("two processes claim one member"), 0);
    assert_eq!(driver.holder_of(&key("compute", "k")), Some(again.holder()));
    assert!(a.is_up("compute", "k").await.unwrap());
}

/// What the library records through the `metrics` facade, read back from a real
/// Prometheus rendering (a recorder local to this thread: the test's runtime is
/// current-thread, so the heartbeat task records on this thread too).
#[tokio::test(start_paused = true)]
async fn the_library_records_calls_batches_transitions_and_takeovers() {
    use metrics_exporter_prometheus::PrometheusBuilder;
    let recorder = PrometheusBuilder::new()
        .set_buckets(servicegroup_core::metrics::SECONDS_BUCKETS)
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    servicegroup_core::metrics::describe();

    let driver = Arc::new(Scripted::default());
    let a = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let a1 = a.join("compute", "a1").await.unwrap();
    let _a2 = a.join("compute", "a2").await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await; // one tick of 2 members
                                                       // An outage: lost once, recovered once.
    driver.unreachable.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(25)).await;
    driver.unreachable.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(11)).await;
    // a2's record vanishes: registered again by the next tick.
    driver.rows.lock().unwrap().remove(&key("compute", "a2"));
    tokio::time::sleep(Duration::from_secs(11)).await;
    // Another handle takes a1 over; a's next tick fences it.
    let b = ServiceGroup::with_driver(driver.clone(), config()).unwrap();
    let _b1 = b.join("compute", "a1").await.unwrap();
    tokio::time::timeout(Duration::from_secs(15), a1.superseded())
        .await
        .expect("a1 fenced within a tick");

    let text = handle.render();
    let line = |prefix: &str| -> f64 {
        let found = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{text}"));
        found.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(
        line(
            r#"servicegroup_driver_calls_total{driver="scripted",operation="register",kind="ok"}"#
        ),
        4.0,
        "a1, a2, a2 again, b's a1"
    );
    assert!(
        line(
            r#"servicegroup_driver_calls_total{driver="scripted",operation="heartbeat",kind="unavailable"}"#
        ) >= 2.0
    );
    assert!(
        line(
            r#"servicegroup_driver_calls_total{driver="scripted",operation="heartbeat",kind="ok"}"#
        ) >= 3.0
    );
    assert_eq!(
        line(r#"servicegroup_backend_lost_total{driver="scripted"}"#),
        1.0
    );
    assert_eq!(
        line(r#"servicegroup_backend_recovered_total{driver="scripted"}"#),
        1.0
    );
    assert_eq!(
        line(r#"servicegroup_reregistrations_total{driver="scripted"}"#),
        1.0
    );
    assert_eq!(
        line(r#"servicegroup_takeovers_total{driver="scripted"}"#),
        1.0
    );
    assert_eq!(
        line(r#"servicegroup_superseded_total{driver="scripted"}"#),
        1.0
    );
    // Histograms as buckets, with the batch sizes seen (2 members, then 1 after a1 was fenced).
    assert!(
        text.contains(
            r#"servicegroup_heartbeat_batch_seconds_bucket{driver="scripted",le="0.001"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"servicegroup_driver_call_seconds_count{driver="scripted",operation="register"} 4"#
        ),
        "{text}"
    );
    assert!(
        text.contains("# HELP servicegroup_takeovers_total"),
        "{text}"
    );
    // No member id in any label.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !l.contains("a1") && !l.contains("a2"),
            "member id in a series: {l}"
        );
    }
}
