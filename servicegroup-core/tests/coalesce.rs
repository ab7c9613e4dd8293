//! The coalescer's mechanics on tokio's paused clock, against a scripted in-memory
//! driver that records every call (this tests core's merging, not a backend; the
//! conformance suite runs the coalescer on real backends, and counts its calls for
//! 10,000 handles on one driver).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use servicegroup_core::coalesce::{CoalesceOptions, Coalescer};
use servicegroup_core::driver::{condition_holds, registered_holder};
use servicegroup_core::{
    async_trait, Beats, Capabilities, Condition, Config, Driver, Error, ErrorKind, GroupId,
    HeartbeatReport, Holder, HolderUpdate, InstanceId, MemberKey, MemberRecord, Metadata,
    Registered, Registration, Result, ServiceGroup, Superseded,
};
use tokio::time::Instant;

/// A heartbeat call's parts: each instance with its keys.
type Parts = Vec<(InstanceId, Vec<MemberKey>)>;

/// What the scripted driver was asked, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    /// A heartbeat: each part's instance and keys.
    Heartbeat(Parts),
    /// `register` of one key.
    Register(MemberKey),
    /// `register_many` of these keys.
    RegisterMany(Vec<MemberKey>),
}

/// An in-memory driver whose failures and delays are switched by the test. It checks
/// the parts of the `Driver` contract the coalescer must keep (sorted, unique keys).
#[derive(Debug, Default)]
struct Scripted {
    rows: Mutex<BTreeMap<MemberKey, Holder>>,
    calls: Mutex<Vec<(Instant, Call)>>,
    unreachable: AtomicBool,
    hang_heartbeat: AtomicBool,
    register_delay: Mutex<Duration>,
}

impl Scripted {
    fn calls(&self) -> Vec<(Instant, Call)> {
        self.calls.lock().unwrap().clone()
    }

    fn heartbeats(&self) -> Vec<(Instant, Parts)> {
        self.calls()
            .into_iter()
            .filter_map(|(at, call)| match call {
                Call::Heartbeat(parts) => Some((at, parts)),
                _ => None,
            })
            .collect()
    }

    fn registration_calls(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .map(|(_, call)| call)
            .filter(|call| !matches!(call, Call::Heartbeat(_)))
            .collect()
    }

    fn hold(&self, key: &MemberKey, instance: InstanceId) {
        self.rows
            .lock()
            .unwrap()
            .insert(key.clone(), Holder::new(instance, 1));
    }

    fn check(&self) -> Result<()> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(Error::unavailable("scripted outage"));
        }
        Ok(())
    }

    fn apply(&self, registration: &Registration) -> Registered {
        let mut rows = self.rows.lock().unwrap();
        let found = rows.get(&registration.key).copied();
        if !condition_holds(registration.condition, found) {
            return Registered::Refused { found };
        }
        let holder = registered_holder(found, registration.instance);
        rows.insert(registration.key.clone(), holder);
        Registered::Stored {
            epoch: holder.epoch,
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
    async fn register(&self, registration: &Registration) -> Result<Registered> {
        self.calls
            .lock()
            .unwrap()
            .push((Instant::now(), Call::Register(registration.key.clone())));
        let delay = *self.register_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.check()?;
        Ok(self.apply(registration))
    }
    async fn register_many(&self, registrations: &[Registration]) -> Result<Vec<Registered>> {
        let keys: Vec<MemberKey> = registrations.iter().map(|r| r.key.clone()).collect();
        self.calls
            .lock()
            .unwrap()
            .push((Instant::now(), Call::RegisterMany(keys.clone())));
        if !keys.windows(2).all(|w| w[0] < w[1]) {
            return Err(Error::backend("register_many: keys not sorted and unique"));
        }
        let delay = *self.register_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.check()?;
        Ok(registrations.iter().map(|r| self.apply(r)).collect())
    }
    async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        let parts: Parts = batch
            .iter()
            .map(|p| (p.instance, p.keys.to_vec()))
            .collect();
        self.calls
            .lock()
            .unwrap()
            .push((Instant::now(), Call::Heartbeat(parts.clone())));
        if !parts
            .iter()
            .all(|(_, keys)| keys.windows(2).all(|w| w[0] < w[1]))
        {
            return Err(Error::backend("heartbeat: keys not sorted and unique"));
        }
        if self.hang_heartbeat.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.check()?;
        let rows = self.rows.lock().unwrap();
        let mut report = HeartbeatReport::default();
        for (instance, keys) in parts {
            for key in keys {
                match rows.get(&key) {
                    Some(holder) if holder.instance == instance => {}
                    Some(holder) => report.superseded.push(Superseded {
                        key,
                        instance,
                        holder: *holder,
                    }),
                    None => report.missing.push((instance, key)),
                }
            }
        }
        Ok(report)
    }
    async fn remove(&self, key: &MemberKey, _holder: Option<InstanceId>) -> Result<bool> {
        Ok(self.rows.lock().unwrap().remove(key).is_some())
    }
    async fn set_metadata(
        &self,
        _key: &MemberKey,
        _instance: InstanceId,
        _metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        Ok(HolderUpdate::Missing)
    }
    async fn set_forced_down(&self, _key: &MemberKey, _forced: bool) -> Result<bool> {
        Ok(false)
    }
    async fn get(&self, _key: &MemberKey) -> Result<Option<MemberRecord>> {
        self.check()?;
        Ok(None)
    }
    async fn list(&self, _group: &GroupId) -> Result<Vec<MemberRecord>> {
        self.check()?;
        Ok(Vec::new())
    }
    async fn groups(&self) -> Result<Vec<GroupId>> {
        Ok(Vec::new())
    }
}

fn key(member: &str) -> MemberKey {
    MemberKey::new("compute".parse().unwrap(), member.parse().unwrap())
}

fn keys(members: &[&str]) -> Vec<MemberKey> {
    let mut keys: Vec<MemberKey> = members.iter().map(|m| key(m)).collect();
    keys.sort();
    keys
}

fn options(window_ms: u64) -> CoalesceOptions {
    let mut options = CoalesceOptions::default();
    options.window = Duration::from_millis(window_ms);
    options.call_timeout = Duration::from_secs(1);
    options
}

fn setup(options: CoalesceOptions) -> (Arc<Scripted>, Arc<Coalescer>) {
    let driver = Arc::new(Scripted::default());
    let coalescer = Coalescer::new(driver.clone(), options);
    (driver, coalescer)
}

/// Heartbeats `keys` for `instance` through `driver` after `delay`, in a task.
fn beat_later(
    driver: &Arc<Coalescer>,
    delay: Duration,
    instance: InstanceId,
    keys: Vec<MemberKey>,
) -> tokio::task::JoinHandle<Result<HeartbeatReport>> {
    let driver = driver.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        driver
            .heartbeat(&[Beats {
                instance,
                keys: &keys,
            }])
            .await
    })
}

fn registration(member: &str, instance: InstanceId) -> Registration {
    Registration {
        key: key(member),
        instance,
        metadata: Metadata::new(),
        condition: Condition::Always,
    }
}

#[tokio::test(start_paused = true)]
async fn heartbeats_within_one_window_share_one_call_after_the_window() {
    let (driver, coalescer) = setup(options(10));
    let (a, b, c) = (
        InstanceId::random(),
        InstanceId::random(),
        InstanceId::random(),
    );
    for (instance, member) in [(a, "a"), (b, "b"), (c, "c")] {
        driver.hold(&key(member), instance);
    }
    let start = Instant::now();
    let first = beat_later(&coalescer, Duration::ZERO, a, keys(&["a"]));
    let second = beat_later(&coalescer, Duration::from_millis(4), b, keys(&["b"]));
    let third = beat_later(&coalescer, Duration::from_millis(9), c, keys(&["c"]));
    for task in [first, second, third] {
        assert_eq!(task.await.unwrap().unwrap(), HeartbeatReport::default());
    }
    let calls = driver.heartbeats();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (at, parts) = &calls[0];
    assert_eq!(
        *at - start,
        Duration::from_millis(10),
        "sent when the window ended"
    );
    let mut expected = vec![(a, keys(&["a"])), (b, keys(&["b"])), (c, keys(&["c"]))];
    expected.sort();
    assert_eq!(parts, &expected, "one part per instance");

    // A caller after the window opens the next one.
    let start = Instant::now();
    beat_later(&coalescer, Duration::ZERO, a, keys(&["a"]))
        .await
        .unwrap()
        .unwrap();
    let calls = driver.heartbeats();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].0 - start, Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn parts_of_one_instance_are_merged_sorted_and_unique() {
    let (driver, coalescer) = setup(options(5));
    let a = InstanceId::random();
    for m in ["a", "b", "c"] {
        driver.hold(&key(m), a);
    }
    let one = beat_later(&coalescer, Duration::ZERO, a, keys(&["c", "a"]));
    let two = beat_later(&coalescer, Duration::ZERO, a, keys(&["b", "c"]));
    one.await.unwrap().unwrap();
    two.await.unwrap().unwrap();
    let calls = driver.heartbeats();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1, vec![(a, keys(&["a", "b", "c"]))]);
}

#[tokio::test(start_paused = true)]
async fn each_caller_gets_only_its_own_missing_and_superseded_keys() {
    let (driver, coalescer) = setup(options(5));
    let (a, b, c) = (
        InstanceId::random(),
        InstanceId::random(),
        InstanceId::random(),
    );
    driver.hold(&key("held-by-a"), a);
    driver.hold(&key("taken-by-b"), b);
    driver.hold(&key("also-a"), a);
    // x (instance a): one stored, one missing. y (instance c): one taken over by b,
    // one missing. z (instance a again, another handle): stored only.
    let x = beat_later(
        &coalescer,
        Duration::ZERO,
        a,
        keys(&["held-by-a", "gone-x"]),
    );
    let y = beat_later(
        &coalescer,
        Duration::ZERO,
        c,
        keys(&["taken-by-b", "gone-y"]),
    );
    let z = beat_later(&coalescer, Duration::ZERO, a, keys(&["also-a"]));
    let (x, y, z) = (
        x.await.unwrap().unwrap(),
        y.await.unwrap().unwrap(),
        z.await.unwrap().unwrap(),
    );
    assert_eq!(driver.heartbeats().len(), 1);
    assert_eq!(x.missing, vec![(a, key("gone-x"))]);
    assert!(x.superseded.is_empty(), "{x:?}");
    assert_eq!(y.missing, vec![(c, key("gone-y"))]);
    assert_eq!(
        y.superseded,
        vec![Superseded {
            key: key("taken-by-b"),
            instance: c,
            holder: Holder::new(b, 1),
        }]
    );
    assert_eq!(z, HeartbeatReport::default());
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_goes_out_at_once_and_a_large_caller_is_sent_whole() {
    let mut opts = options(50);
    opts.max_keys = 4;
    let (driver, coalescer) = setup(opts);
    let a = InstanceId::random();
    let start = Instant::now();
    let one = beat_later(&coalescer, Duration::ZERO, a, keys(&["a", "b"]));
    let two = beat_later(&coalescer, Duration::ZERO, a, keys(&["c", "d"]));
    one.await.unwrap().unwrap();
    two.await.unwrap().unwrap();
    let calls = driver.heartbeats();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].0, start,
        "a full batch does not wait for the window"
    );
    assert_eq!(calls[0].1[0].1.len(), 4);

    // More keys than the bound: alone, at once, not split.
    let big: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let big: Vec<&str> = big.iter().map(String::as_str).collect();
    let start = Instant::now();
    beat_later(&coalescer, Duration::ZERO, a, keys(&big))
        .await
        .unwrap()
        .unwrap();
    let calls = driver.heartbeats();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].0, start);
    assert_eq!(calls[1].1[0].1.len(), 10);

    // A caller that does not fit closes the open batch: it goes out at once, the
    // caller opens the next.
    let start = Instant::now();
    let small = beat_later(&coalescer, Duration::ZERO, a, keys(&["a", "b", "c"]));
    let next = beat_later(&coalescer, Duration::from_millis(1), a, keys(&["d", "e"]));
    small.await.unwrap().unwrap();
    next.await.unwrap().unwrap();
    let calls = driver.heartbeats();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(calls[2].0 - start, Duration::from_millis(1));
    assert_eq!(calls[2].1[0].1, keys(&["a", "b", "c"]));
    assert_eq!(calls[3].0 - start, Duration::from_millis(51));
    assert_eq!(calls[3].1[0].1, keys(&["d", "e"]));
}

#[tokio::test(start_paused = true)]
async fn a_caller_gone_before_the_call_is_left_out_of_it_and_the_others_are_answered() {
    let (driver, coalescer) = setup(options(10));
    let (a, b) = (InstanceId::random(), InstanceId::random());
    driver.hold(&key("b"), b);
    let cancelled = {
        let coalescer = coalescer.clone();
        tokio::spawn(async move {
            let keys = keys(&["a"]);
            tokio::time::timeout(
                Duration::from_millis(3),
                coalescer.heartbeat(&[Beats {
                    instance: a,
                    keys: &keys,
                }]),
            )
            .await
        })
    };
    let kept = beat_later(&coalescer, Duration::from_millis(1), b, keys(&["b"]));
    assert!(cancelled.await.unwrap().is_err(), "timed out by its caller");
    assert_eq!(kept.await.unwrap().unwrap(), HeartbeatReport::default());
    let calls = driver.heartbeats();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].1,
        vec![(b, keys(&["b"]))],
        "the cancelled keys were left out"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_reports_its_typed_error_to_every_caller() {
    let (driver, coalescer) = setup(options(5));
    let (a, b) = (InstanceId::random(), InstanceId::random());
    driver.unreachable.store(true, Ordering::SeqCst);
    let one = beat_later(&coalescer, Duration::ZERO, a, keys(&["a"]));
    let two = beat_later(&coalescer, Duration::ZERO, b, keys(&["b"]));
    for task in [one, two] {
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert_eq!(err.driver(), Some("scripted"));
        assert!(err.to_string().contains("scripted outage"), "{err}");
    }
    assert_eq!(driver.heartbeats().len(), 1);

    // A hung backend: every caller gets Timeout after call_timeout, and the call
    // slots are free again afterwards.
    driver.unreachable.store(false, Ordering::SeqCst);
    driver.hang_heartbeat.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|i| beat_later(&coalescer, Duration::from_millis(i * 20), a, keys(&["a"])))
        .collect();
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(err.to_string().contains("call_timeout"), "{err}");
    }
    // Two slots: the third call waited for a slot until the first timed out.
    assert!(Instant::now() - start >= Duration::from_secs(2));
    driver.hang_heartbeat.store(false, Ordering::SeqCst);
    driver.hold(&key("a"), a);
    let ok = beat_later(&coalescer, Duration::ZERO, a, keys(&["a"]));
    assert_eq!(ok.await.unwrap().unwrap(), HeartbeatReport::default());
}

#[tokio::test(start_paused = true)]
async fn registrations_never_wait_behind_heartbeats() {
    let (driver, coalescer) = setup(options(5));
    let a = InstanceId::random();
    driver.hang_heartbeat.store(true, Ordering::SeqCst);
    // Both heartbeat slots hung, more heartbeats waiting.
    let hung: Vec<_> = (0..4)
        .map(|i| beat_later(&coalescer, Duration::from_millis(i * 10), a, keys(&["a"])))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    let outcome = coalescer.register(&registration("new", a)).await.unwrap();
    assert_eq!(outcome, Registered::Stored { epoch: 1 });
    assert_eq!(
        Instant::now(),
        start,
        "a lone registration waits for nothing"
    );
    for task in hung {
        assert_eq!(task.await.unwrap().unwrap_err().kind(), ErrorKind::Timeout);
    }
}

#[tokio::test(start_paused = true)]
async fn registrations_arriving_while_a_call_runs_share_the_next_call() {
    let mut opts = options(5);
    opts.register_calls = 1;
    let (driver, coalescer) = setup(opts);
    *driver.register_delay.lock().unwrap() = Duration::from_millis(10);
    let (a, b) = (InstanceId::random(), InstanceId::random());
    driver.hold(&key("m3"), b);
    let mut tasks = Vec::new();
    for (i, member) in ["m1", "m4", "m3", "m2"].into_iter().enumerate() {
        let coalescer = coalescer.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i as u64)).await;
            coalescer.register(&registration(member, a)).await
        }));
    }
    // One caller with several registrations, in its own (unsorted) order.
    let many = {
        let coalescer = coalescer.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let mut exclusive = registration("m5", a);
            exclusive.condition = Condition::Absent;
            let mut refused = registration("m0", a);
            refused.condition = Condition::HeldAs(Holder::new(b, 7));
            coalescer.register_many(&[exclusive, refused]).await
        })
    };
    let outcomes: Vec<Registered> = {
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap().unwrap());
        }
        out
    };
    // m3 was held by b: taken over, epoch 2; the others are new.
    assert_eq!(
        outcomes,
        vec![
            Registered::Stored { epoch: 1 },
            Registered::Stored { epoch: 1 },
            Registered::Stored { epoch: 2 },
            Registered::Stored { epoch: 1 },
        ]
    );
    assert_eq!(
        many.await.unwrap().unwrap(),
        vec![
            Registered::Stored { epoch: 1 },
            Registered::Refused { found: None }
        ],
        "outcomes in the caller's order"
    );
    let calls = driver.registration_calls();
    assert_eq!(
        calls,
        vec![
            Call::Register(key("m1")),
            Call::RegisterMany(keys(&["m0", "m2", "m3", "m4", "m5"])),
        ],
        "the first went alone; the rest arrived while it ran and shared one call"
    );
}

#[tokio::test(start_paused = true)]
async fn one_key_twice_goes_in_two_calls() {
    let mut opts = options(5);
    opts.register_calls = 1;
    opts.register_window = Duration::from_millis(10);
    let (driver, coalescer) = setup(opts);
    let (a, b) = (InstanceId::random(), InstanceId::random());
    let first = {
        let c = coalescer.clone();
        tokio::spawn(async move {
            c.register_many(&[registration("x", a), registration("y", a)])
                .await
        })
    };
    let second = {
        let c = coalescer.clone();
        tokio::spawn(async move { c.register(&registration("x", b)).await })
    };
    assert_eq!(first.await.unwrap().unwrap().len(), 2);
    assert_eq!(
        second.await.unwrap().unwrap(),
        Registered::Stored { epoch: 2 }
    );
    assert_eq!(
        driver.registration_calls(),
        vec![
            Call::RegisterMany(keys(&["x", "y"])),
            Call::Register(key("x"))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_registration_call_fails_every_caller_in_it() {
    let mut opts = options(5);
    opts.register_window = Duration::from_millis(5);
    let (driver, coalescer) = setup(opts);
    driver.unreachable.store(true, Ordering::SeqCst);
    let a = InstanceId::random();
    let tasks: Vec<_> = ["p", "q", "r"]
        .into_iter()
        .map(|m| {
            let c = coalescer.clone();
            tokio::spawn(async move { c.register(&registration(m, a)).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(
            task.await.unwrap().unwrap_err().kind(),
            ErrorKind::Unavailable
        );
    }
    assert_eq!(driver.registration_calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn handles_on_one_driver_share_one_coalescer_and_a_coalescer_is_never_wrapped_twice() {
    let driver: Arc<dyn Driver> = Arc::new(Scripted::default());
    let first = Coalescer::shared(&driver, CoalesceOptions::default());
    let again = Coalescer::shared(&driver, options(50));
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(again.options().window, CoalesceOptions::default().window);
    let as_driver: Arc<dyn Driver> = first.clone();
    assert!(Arc::ptr_eq(
        &Coalescer::shared(&as_driver, options(1)),
        &first
    ));
    let own = Coalescer::new(driver.clone(), options(1));
    assert!(!Arc::ptr_eq(&own, &first));
    let own_driver: Arc<dyn Driver> = own.clone();
    assert!(Arc::ptr_eq(
        &Coalescer::shared(&own_driver, options(2)),
        &own
    ));
    // Once every user is gone, the next handle gets a fresh one.
    let window = first.options().window;
    drop((first, again, as_driver));
    let fresh = Coalescer::shared(&driver, options(50));
    assert_eq!(fresh.options().window, Duration::from_millis(50));
    assert_ne!(window, fresh.options().window);
}

#[tokio::test(start_paused = true)]
async fn many_handles_on_one_driver_heartbeat_in_shared_calls() {
    let scripted = Arc::new(Scripted::default());
    let driver: Arc<dyn Driver> = scripted.clone();
    let mut config = Config::with_driver("scripted");
    config.report_interval = Duration::from_secs(1);
    config.service_down_time = Duration::from_secs(6);
    config.coalesce_window = Duration::from_millis(20);
    let mut handles = Vec::new();
    let mut memberships = Vec::new();
    for i in 0..200 {
        let sg = ServiceGroup::with_driver(driver.clone(), config.clone()).unwrap();
        memberships.push(sg.join("compute", format!("host-{i}")).await.unwrap());
        handles.push(sg);
    }
    let before = scripted.heartbeats().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let beats = &scripted.heartbeats()[before..];
    // 200 handles x 10 ticks = 2,000 heartbeats; one call per 20 ms window at most
    // (the ticks spread over the interval): <= 50 per second, plus the edges.
    let total: usize = beats.iter().map(|(_, parts)| parts.len()).sum();
    assert!(
        total >= 1_800,
        "{total} handle heartbeats reached the driver"
    );
    assert!(beats.len() <= 10 * 50 + 10, "{} calls", beats.len());
    assert!(beats
        .iter()
        .all(|(_, parts)| parts.iter().all(|(_, k)| k.len() == 1)));
    for m in &memberships {
        assert!(!m.is_superseded());
    }
}
