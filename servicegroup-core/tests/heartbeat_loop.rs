//! The heartbeat loop's mechanics, on tokio's paused clock, against a scripted
//! in-memory driver (this tests core's policy, not a backend; backends are covered by
//! the conformance suite against real servers).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use servicegroup_core::{
    async_trait, Capabilities, Config, Driver, Error, ErrorKind, Freshness, GroupId,
    HeartbeatReport, MemberKey, MemberRecord, Result, ServiceGroup,
};
use tokio::time::Instant;

/// An in-memory driver whose failures are switched by the test.
#[derive(Debug, Default)]
struct Scripted {
    rows: Mutex<BTreeMap<MemberKey, Instant>>,
    heartbeat_calls: AtomicUsize,
    keys_per_call: Mutex<Vec<usize>>,
    unreachable: AtomicBool,
    hang: AtomicBool,
    /// Only `register` hangs (a tick re-registering a missing member holds core's
    /// write lock meanwhile).
    hang_register: AtomicBool,
    /// How long each heartbeat call takes.
    heartbeat_delay: Mutex<Duration>,
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
}

#[async_trait]
impl Driver for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Duration::from_millis(1))
    }
    async fn register(&self, key: &MemberKey) -> Result<()> {
        self.maybe_hang().await;
        if self.hang_register.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.check()?;
        self.rows
            .lock()
            .unwrap()
            .insert(key.clone(), Instant::now());
        Ok(())
    }
    async fn heartbeat(&self, keys: &[MemberKey]) -> Result<HeartbeatReport> {
        self.heartbeat_calls.fetch_add(1, Ordering::SeqCst);
        self.keys_per_call.lock().unwrap().push(keys.len());
        let delay = *self.heartbeat_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.maybe_hang().await;
        self.check()?;
        let mut rows = self.rows.lock().unwrap();
        let mut report = HeartbeatReport::default();
        for key in keys {
            match rows.get_mut(key) {
                Some(t) => *t = Instant::now(),
                None => report.missing.push(key.clone()),
            }
        }
        Ok(report)
    }
    async fn remove(&self, key: &MemberKey) -> Result<bool> {
        self.check()?;
        Ok(self.rows.lock().unwrap().remove(key).is_some())
    }
    async fn set_forced_down(&self, _key: &MemberKey, _forced: bool) -> Result<bool> {
        Ok(false)
    }
    async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>> {
        self.maybe_hang().await;
        self.check()?;
        Ok(self.rows.lock().unwrap().get(key).map(|t| MemberRecord {
            key: key.clone(),
            last_heartbeat: None,
            freshness: Freshness::Age(Instant::now() - *t),
            forced_down: false,
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
