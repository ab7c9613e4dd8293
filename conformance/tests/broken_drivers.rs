//! The suite must be able to fail. Each driver here is the real `inproc` driver with
//! one deliberate defect (a kind of bug real drivers have had), registered under its
//! own name; each test runs the conformance cases that defect breaks and asserts they
//! FAIL with a contract violation, and runs the same cases on the correct driver to
//! show they pass there (so the failure comes from the defect, not from the harness).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use servicegroup_conformance::{
    cases, run_case, unique_name, CaseFuture, Clock, FailureKind, Fixture,
};
use servicegroup_core::{
    async_trait, Beats, Capabilities, Condition, Config, Driver, Error, ErrorKind, Freshness,
    GroupId, HeartbeatReport, Holder, HolderUpdate, InstanceId, MemberId, MemberKey, MemberRecord,
    Metadata, Registered, Registration, Result,
};
use servicegroup_driver_inproc::{InprocConfig, InprocDriver};

/// The defects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Defect {
    /// `set_forced_down` answers "done" but stores nothing.
    IgnoresForcedDown,
    /// `heartbeat` answers Ok but stores nothing (heartbeats lost).
    SkipsHeartbeats,
    /// `heartbeat` answers Ok at once but the write lands 1.5 s later (a write-behind
    /// queue that falls behind).
    LateHeartbeats,
    /// Heartbeat times come from a clock 600 ms behind (a driver trusting a skewed host
    /// clock): every age reads 600 ms too old.
    StaleClock,
    /// With the backend unreachable, answers "absent" / empty / "no such member"
    /// instead of an error (Nova's memcached driver).
    AbsentWhenUnreachable,
    /// Writes a heartbeat batch as one backend operation per member (Nova's db driver).
    HeartbeatsOneMemberPerCall,
    /// Drops members whose heartbeat is older than `service_down_time` from listings
    /// (a verdict in the driver; crashed members vanish instead of being listed down).
    DropsDownMembers,
    /// `heartbeat` recreates records that do not exist instead of reporting them missing.
    UpsertsOnHeartbeat,
    /// Truncates member ids to 250 bytes (memcached's key limit), so long ids collide.
    TruncatesLongIds,
    /// `heartbeat` ignores the heartbeating instance: it refreshes every record it finds,
    /// whoever holds it, and never reports one superseded (no fencing: a zombie process
    /// keeps a member alive).
    IgnoresInstanceOnHeartbeat,
    /// Stores and returns no metadata (registrations and `set_metadata` store an empty
    /// map; reads return one).
    DropsMetadata,
    /// Every second `heartbeat` call of a driver (one per handle) returns Ok and stores
    /// nothing: what a heartbeat loop skipping every second tick looks like to the store.
    SkipsEverySecondHeartbeat,
    /// `remove` with a holder deletes the record whoever holds it (today's leave before
    /// identities: the old holder's leave deletes the new holder's record).
    RemoveIgnoresHolder,
    /// `set_metadata` stores whoever holds the record.
    SetMetadataIgnoresInstance,
    /// Every record reads epoch 1, whatever the takeovers.
    EpochNeverMoves,
}

/// Backend operations spent on heartbeats, per in-process store name.
static HEARTBEAT_OPS: LazyLock<Mutex<HashMap<String, Arc<AtomicU64>>>> =
    LazyLock::new(Default::default);

fn ops_counter(store: &str) -> Arc<AtomicU64> {
    HEARTBEAT_OPS
        .lock()
        .unwrap()
        .entry(store.to_owned())
        .or_default()
        .clone()
}

#[derive(Debug)]
struct Broken {
    name: String,
    inner: InprocDriver,
    defect: Option<Defect>,
    ops: Arc<AtomicU64>,
    service_down_time: Duration,
    /// Heartbeat calls this driver (this handle) received.
    heartbeat_calls: AtomicU64,
}

impl Broken {
    fn build(config: &Config, defect: Option<Defect>) -> Result<Arc<dyn Driver>> {
        // The wrapped in-process store is the one `[inproc] name` names.
        let store = config.driver_config::<InprocConfig>("inproc")?.name;
        Ok(Arc::new(Broken {
            name: config.driver.clone(),
            inner: InprocDriver::new(&store),
            defect,
            ops: ops_counter(&store),
            service_down_time: config.service_down_time,
            heartbeat_calls: AtomicU64::new(0),
        }))
    }

    fn is(&self, defect: Defect) -> bool {
        self.defect == Some(defect)
    }

    /// The key as the truncating driver stores it.
    fn stored(&self, key: &MemberKey) -> MemberKey {
        if !self.is(Defect::TruncatesLongIds) || key.member.as_str().len() <= 250 {
            return key.clone();
        }
        let s = key.member.as_str();
        let mut end = 250;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        MemberKey::new(key.group.clone(), MemberId::new(&s[..end]).unwrap())
    }

    /// The registration as the driver applies it.
    fn stored_registration(&self, registration: &Registration) -> Registration {
        let mut stored = registration.clone();
        stored.key = self.stored(&registration.key);
        if self.is(Defect::DropsMetadata) {
            stored.metadata = Metadata::new();
        }
        stored
    }

    fn adjust(&self, mut record: MemberRecord) -> MemberRecord {
        if self.is(Defect::StaleClock) {
            if let Freshness::Age(age) = record.freshness {
                record.freshness = Freshness::Age(age + Duration::from_millis(600));
            }
        }
        if self.is(Defect::DropsMetadata) {
            record.metadata = Metadata::new();
        }
        if self.is(Defect::EpochNeverMoves) {
            record.holder.epoch = 1;
        }
        record
    }

    /// The no-fencing heartbeat: every record found is refreshed as if the
    /// heartbeating instance held it (each key is sent in the part of its holder).
    async fn heartbeat_ignoring_instance(
        &self,
        batch: &[(InstanceId, Vec<MemberKey>)],
    ) -> Result<HeartbeatReport> {
        let mut by_holder: BTreeMap<InstanceId, Vec<MemberKey>> = BTreeMap::new();
        for (instance, keys) in batch {
            for key in keys {
                let holder = match self.inner.get(key).await? {
                    Some(record) => record.holder.instance,
                    None => *instance,
                };
                by_holder.entry(holder).or_default().push(key.clone());
            }
        }
        for keys in by_holder.values_mut() {
            keys.sort();
            keys.dedup();
        }
        let parts: Vec<Beats<'_>> = by_holder
            .iter()
            .map(|(instance, keys)| Beats {
                instance: *instance,
                keys,
            })
            .collect();
        let mut report = self.inner.heartbeat(&parts).await?;
        report.superseded.clear();
        Ok(report)
    }
}

/// The parts of a batch as owned keys (mapped through `stored`).
fn owned_parts(
    batch: &[Beats<'_>],
    stored: impl Fn(&MemberKey) -> MemberKey,
) -> Vec<(InstanceId, Vec<MemberKey>)> {
    batch
        .iter()
        .map(|part| (part.instance, part.keys.iter().map(&stored).collect()))
        .collect()
}

/// Borrowed parts of owned ones.
fn beats(parts: &[(InstanceId, Vec<MemberKey>)]) -> Vec<Beats<'_>> {
    parts
        .iter()
        .map(|(instance, keys)| Beats {
            instance: *instance,
            keys,
        })
        .collect()
}

fn unreachable(e: &Error) -> bool {
    e.kind() == ErrorKind::Unavailable
}

#[async_trait]
impl Driver for Broken {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn register(&self, registration: &Registration) -> Result<Registered> {
        let outcome = self
            .inner
            .register(&self.stored_registration(registration))
            .await?;
        Ok(match outcome {
            Registered::Stored { .. } if self.is(Defect::EpochNeverMoves) => {
                Registered::Stored { epoch: 1 }
            }
            other => other,
        })
    }

    async fn heartbeat(&self, batch: &[Beats<'_>]) -> Result<HeartbeatReport> {
        let parts = owned_parts(batch, |k| self.stored(k));
        let call = self.heartbeat_calls.fetch_add(1, Ordering::SeqCst);
        match self.defect {
            Some(Defect::SkipsHeartbeats) => Ok(HeartbeatReport::default()),
            Some(Defect::SkipsEverySecondHeartbeat) if call % 2 == 1 => {
                Ok(HeartbeatReport::default())
            }
            Some(Defect::IgnoresInstanceOnHeartbeat) => {
                self.ops.fetch_add(1, Ordering::SeqCst);
                self.heartbeat_ignoring_instance(&parts).await
            }
            Some(Defect::LateHeartbeats) => {
                let inner = self.inner.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    let _ = inner.heartbeat(&beats(&parts)).await;
                });
                Ok(HeartbeatReport::default())
            }
            Some(Defect::HeartbeatsOneMemberPerCall) => {
                let mut report = HeartbeatReport::default();
                for (instance, keys) in &parts {
                    for key in keys {
                        self.ops.fetch_add(1, Ordering::SeqCst);
                        let one = [Beats {
                            instance: *instance,
                            keys: std::slice::from_ref(key),
                        }];
                        let got = self.inner.heartbeat(&one).await?;
                        report.missing.extend(got.missing);
                        report.superseded.extend(got.superseded);
                    }
                }
                Ok(report)
            }
            Some(Defect::UpsertsOnHeartbeat) => {
                let mut report = self.inner.heartbeat(&beats(&parts)).await?;
                for (instance, key) in std::mem::take(&mut report.missing) {
                    self.inner
                        .register(&Registration {
                            key,
                            instance,
                            metadata: Metadata::new(),
                            condition: Condition::Always,
                        })
                        .await?;
                }
                Ok(report)
            }
            _ => {
                self.ops.fetch_add(1, Ordering::SeqCst);
                self.inner.heartbeat(&beats(&parts)).await
            }
        }
    }

    async fn remove(&self, key: &MemberKey, holder: Option<InstanceId>) -> Result<bool> {
        let holder = if self.is(Defect::RemoveIgnoresHolder) {
            None
        } else {
            holder
        };
        match self.inner.remove(&self.stored(key), holder).await {
            Err(e) if self.is(Defect::AbsentWhenUnreachable) && unreachable(&e) => Ok(false),
            other => other,
        }
    }

    async fn set_metadata(
        &self,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        let metadata = if self.is(Defect::DropsMetadata) {
            Metadata::new()
        } else {
            metadata.clone()
        };
        let key = self.stored(key);
        let instance = match self.inner.get(&key).await? {
            Some(record) if self.is(Defect::SetMetadataIgnoresInstance) => record.holder.instance,
            _ => instance,
        };
        self.inner.set_metadata(&key, instance, &metadata).await
    }

    async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool> {
        let key = self.stored(key);
        if self.is(Defect::IgnoresForcedDown) {
            return Ok(self.inner.get(&key).await?.is_some());
        }
        match self.inner.set_forced_down(&key, forced_down).await {
            Err(e) if self.is(Defect::AbsentWhenUnreachable) && unreachable(&e) => Ok(false),
            other => other,
        }
    }

    async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>> {
        match self.inner.get(&self.stored(key)).await {
            Err(e) if self.is(Defect::AbsentWhenUnreachable) && unreachable(&e) => {
                Ok(Some(MemberRecord {
                    key: key.clone(),
                    last_heartbeat: None,
                    freshness: Freshness::Absent,
                    forced_down: false,
                    holder: Holder::UNKNOWN,
                    holder_since: None,
                    metadata: Metadata::new(),
                }))
            }
            other => Ok(other?.map(|r| self.adjust(r))),
        }
    }

    async fn list(&self, group: &GroupId) -> Result<Vec<MemberRecord>> {
        let records = match self.inner.list(group).await {
            Err(e) if self.is(Defect::AbsentWhenUnreachable) && unreachable(&e) => Vec::new(),
            other => other?,
        };
        Ok(records
            .into_iter()
            .map(|r| self.adjust(r))
            .filter(|r| {
                !(self.is(Defect::DropsDownMembers)
                    && matches!(r.freshness, Freshness::Age(a) if a > self.service_down_time))
            })
            .collect())
    }

    async fn groups(&self) -> Result<Vec<GroupId>> {
        match self.inner.groups().await {
            Err(e) if self.is(Defect::AbsentWhenUnreachable) && unreachable(&e) => Ok(Vec::new()),
            other => other,
        }
    }
}

macro_rules! register {
    ($name:literal, $defect:expr) => {
        servicegroup_core::register_driver! {
            name: $name,
            description: "inproc with a deliberate defect (conformance self-test)",
            build: |config: Config| Box::pin(async move { Broken::build(&config, $defect) }),
        }
    };
}

register!("correct", None);
register!("ignores-forced-down", Some(Defect::IgnoresForcedDown));
register!("skips-heartbeats", Some(Defect::SkipsHeartbeats));
register!("late-heartbeats", Some(Defect::LateHeartbeats));
register!("stale-clock", Some(Defect::StaleClock));
register!(
    "absent-when-unreachable",
    Some(Defect::AbsentWhenUnreachable)
);
register!(
    "one-member-per-call",
    Some(Defect::HeartbeatsOneMemberPerCall)
);
register!("drops-down-members", Some(Defect::DropsDownMembers));
register!("upserts-on-heartbeat", Some(Defect::UpsertsOnHeartbeat));
register!("truncates-long-ids", Some(Defect::TruncatesLongIds));
register!("no-fencing", Some(Defect::IgnoresInstanceOnHeartbeat));
register!("drops-metadata", Some(Defect::DropsMetadata));
register!(
    "skips-every-second-heartbeat",
    Some(Defect::SkipsEverySecondHeartbeat)
);
register!("remove-ignores-holder", Some(Defect::RemoveIgnoresHolder));
register!(
    "set-metadata-ignores-instance",
    Some(Defect::SetMetadataIgnoresInstance)
);
register!("epoch-never-moves", Some(Defect::EpochNeverMoves));

/// A fresh fixture on `driver`, with an outage switch and a heartbeat operation counter.
fn fixture(driver: &str) -> Fixture {
    let store = unique_name(driver);
    let mut config = Config::with_driver(driver);
    config
        .set("inproc.name", &store)
        .expect("inproc.name is the inproc driver's key");
    let ops = ops_counter(&store);
    Fixture::new(config)
        .with_outage_switch(move |reachable| {
            servicegroup_driver_inproc::set_reachable(&store, reachable);
            async { Ok(()) }
        })
        .with_heartbeat_ops(move || ops.load(Ordering::SeqCst))
}

/// A case as a function pointer.
type Case = fn(Fixture) -> CaseFuture;

macro_rules! case {
    ($name:ident) => {
        (stringify!($name), {
            fn run(fixture: Fixture) -> CaseFuture {
                Box::pin(cases::$name(fixture))
            }
            run as Case
        })
    };
}

/// Runs each case on `driver` and requires a contract violation; runs it on the
/// correct driver and requires a pass. Returns the failure messages.
async fn must_fail(driver: &str, named: &[(&str, Case)]) -> Vec<String> {
    let mut messages = Vec::new();
    for (name, case) in named {
        match case(fixture(driver)).await {
            Ok(()) => panic!("case {name} PASSED on the defective driver {driver:?}; it must fail"),
            Err(failure) => {
                assert_eq!(
                    failure.kind(),
                    FailureKind::Violation,
                    "case {name} on {driver:?} failed, but not as a contract violation: {failure}"
                );
                assert_eq!(failure.case(), *name);
                eprintln!("{driver}: {failure}");
                messages.push(failure.to_string());
            }
        }
        if let Err(failure) = case(fixture("correct")).await {
            panic!("control: case {name} fails on the correct driver: {failure}");
        }
    }
    messages
}

/// Requires each case to pass on `driver` (the defect is targeted, not a broken harness).
async fn must_pass(driver: &str, named: &[(&str, Case)]) {
    for (name, case) in named {
        if let Err(failure) = case(fixture(driver)).await {
            panic!("case {name} should be unaffected by the defect of {driver:?}: {failure}");
        }
    }
}

fn assert_mentions(messages: &[String], needle: &str) {
    assert!(
        messages.iter().any(|m| m.contains(needle)),
        "no failure message mentions {needle:?}: {messages:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn ignoring_forced_down_is_caught() {
    let messages = must_fail(
        "ignores-forced-down",
        &[
            case!(forced_down_wins_while_heartbeats_continue),
            case!(clearing_forced_down_makes_live_member_up_at_once),
            case!(forced_down_survives_rejoin),
            case!(two_handles_see_each_others_members),
            case!(watch_reports_forced_down_and_clear),
            case!(member_in_two_groups_is_independent),
        ],
    )
    .await;
    assert_mentions(&messages, "forced down must win over heartbeats");
    must_pass(
        "ignores-forced-down",
        &[
            case!(join_is_visible_at_once),
            case!(crashed_member_is_up_until_down_time_then_down),
        ],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn skipped_heartbeats_are_caught() {
    let messages = must_fail(
        "skips-heartbeats",
        &[
            case!(heartbeats_keep_member_up_past_down_time),
            case!(get_updated_time_advances),
            case!(live_member_age_is_small),
            case!(clearing_forced_down_makes_live_member_up_at_once),
            case!(thousand_members_heartbeated_in_batches),
            case!(eight_handles_hundred_members_all_up),
        ],
    )
    .await;
    assert_mentions(&messages, "its heartbeats are not stored");
    must_pass("skips-heartbeats", &[case!(join_is_visible_at_once)]).await;
}

#[tokio::test(start_paused = true)]
async fn late_heartbeats_are_caught() {
    let messages = must_fail(
        "late-heartbeats",
        &[
            case!(heartbeats_keep_member_up_past_down_time),
            case!(live_member_age_is_small),
        ],
    )
    .await;
    assert_mentions(&messages, "was reported down");
}

#[tokio::test(start_paused = true)]
async fn a_stale_heartbeat_clock_is_caught() {
    let messages = must_fail(
        "stale-clock",
        &[
            case!(join_is_visible_at_once),
            case!(live_member_age_is_small),
            case!(crashed_member_is_up_until_down_time_then_down),
            case!(rejoin_after_crash_is_up_at_once),
        ],
    )
    .await;
    assert_mentions(
        &messages,
        "it must stay up until service_down_time has passed",
    );
    // A heartbeating member still reads up (600 ms + 200 ms < 1 s): only the precise cases see it.
    must_pass(
        "stale-clock",
        &[case!(heartbeats_keep_member_up_past_down_time)],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn answering_absent_when_unreachable_is_caught() {
    let messages = must_fail(
        "absent-when-unreachable",
        &[case!(outage_is_an_error_never_down)],
    )
    .await;
    assert_mentions(&messages, "returned Ok(false)");
    must_pass(
        "absent-when-unreachable",
        &[
            case!(heartbeats_recover_after_outage),
            case!(join_is_visible_at_once),
        ],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn one_backend_operation_per_member_is_caught() {
    let messages = must_fail(
        "one-member-per-call",
        &[case!(heartbeat_batch_costs_few_backend_operations)],
    )
    .await;
    assert_mentions(&messages, "(1000 per batch)");
    // Core still hands the driver one call per tick; only the backend count shows the defect.
    must_pass(
        "one-member-per-call",
        &[case!(thousand_members_heartbeated_in_batches)],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn dropping_down_members_from_listings_is_caught() {
    let messages = must_fail(
        "drops-down-members",
        &[
            case!(crashed_member_is_listed_down_not_dropped),
            case!(watch_reports_each_transition_once),
        ],
    )
    .await;
    assert_mentions(&messages, "should list the live and the crashed member");
}

#[tokio::test(start_paused = true)]
async fn recreating_records_on_heartbeat_is_caught() {
    let messages = must_fail(
        "upserts-on-heartbeat",
        &[case!(removed_live_member_registers_again)],
    )
    .await;
    assert_mentions(&messages, "HeartbeatReport::missing");
}

#[tokio::test(start_paused = true)]
async fn truncating_long_ids_is_caught() {
    let messages = must_fail(
        "truncates-long-ids",
        &[case!(long_and_unusual_ids_round_trip_without_collisions)],
    )
    .await;
    assert_mentions(&messages, "members(");
}

#[tokio::test(start_paused = true)]
async fn ignoring_the_instance_on_heartbeat_is_caught() {
    let messages = must_fail(
        "no-fencing",
        &[
            case!(superseded_holder_is_fenced),
            case!(superseded_holder_is_told),
            case!(leave_by_superseded_holder_leaves_new_holder_alone),
        ],
    )
    .await;
    assert_mentions(&messages, "must not refresh it (fencing)");
    assert_mentions(&messages, "its old membership was not told");
    // Takeover itself (a registration) still works: only the fencing cases see it.
    must_pass(
        "no-fencing",
        &[
            case!(second_join_elsewhere_takes_over_and_bumps_epoch),
            case!(exclusive_join_of_live_member_held_elsewhere_is_conflict),
            case!(metadata_round_trips_exactly),
        ],
    )
    .await;
}

/// The message of a panic caught by `catch_unwind`.
fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(s) => *s,
        Err(panic) => panic
            .downcast::<&str>()
            .map(|s| (*s).to_owned())
            .unwrap_or_default(),
    }
}

/// The log case needs the suite's log capture, which only the runner's named threads
/// have: it runs through `run_case` (which panics with the failure) instead of as a
/// plain async fn.
#[test]
fn ignoring_the_instance_on_heartbeat_logs_no_takeover_and_that_is_caught() {
    let failed = std::panic::catch_unwind(|| {
        run_case(
            "takeover_is_logged_once_at_error",
            Clock::Paused,
            None,
            || async { fixture("no-fencing") },
            cases::takeover_is_logged_once_at_error,
        )
    });
    let message = panic_message(failed.expect_err(
        "takeover_is_logged_once_at_error PASSED on the driver that never reports superseded",
    ));
    assert!(
        message.contains("takeover_is_logged_once_at_error")
            && message.contains("contract violation")
            && message.contains("expected exactly one ERROR")
            && message.contains("got 0"),
        "{message}"
    );
    // Control: it passes on the correct driver.
    run_case(
        "takeover_is_logged_once_at_error",
        Clock::Paused,
        None,
        || async { fixture("correct") },
        cases::takeover_is_logged_once_at_error,
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_metadata_is_caught() {
    let messages = must_fail(
        "drops-metadata",
        &[
            case!(metadata_round_trips_exactly),
            case!(set_metadata_is_visible_at_once),
            case!(metadata_survives_heartbeats_and_reregistration),
            case!(takeover_replaces_metadata),
            case!(watch_reports_updated_once),
            case!(exclusive_join_of_down_member_takes_it),
            case!(set_metadata_by_superseded_holder_is_conflict),
            case!(invalid_metadata_is_rejected_before_any_driver_call),
        ],
    )
    .await;
    assert_mentions(&messages, "the metadata is not exactly what was stored");
    assert_mentions(&messages, "the `joined` event");
    must_pass(
        "drops-metadata",
        &[
            case!(second_join_elsewhere_takes_over_and_bumps_epoch),
            case!(superseded_holder_is_fenced),
        ],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn skipping_every_second_heartbeat_is_caught() {
    let messages = must_fail(
        "skips-every-second-heartbeat",
        &[case!(heartbeats_arrive_at_report_interval)],
    )
    .await;
    assert_mentions(&messages, "without storing them");
    // A member beating every 2 intervals (400 ms) against a down time of 1 s is never
    // judged down: the liveness cases cannot see it. (The cases timing a crash against
    // the wrapper's write windows, such as live_member_age_is_small, see a driver that
    // drops writes, but not a heartbeat loop that skips ticks, which makes no call:
    // only the cadence case's call count sees that.)
    must_pass(
        "skips-every-second-heartbeat",
        &[
            case!(heartbeats_keep_member_up_past_down_time),
            case!(get_updated_time_advances),
            case!(thousand_members_heartbeated_in_batches),
            case!(join_is_visible_at_once),
        ],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_leave_deleting_another_holders_record_is_caught() {
    let messages = must_fail(
        "remove-ignores-holder",
        &[case!(leave_by_superseded_holder_leaves_new_holder_alone)],
    )
    .await;
    assert_mentions(
        &messages,
        "leave deletes only a record its own instance holds",
    );
}

#[tokio::test(start_paused = true)]
async fn set_metadata_by_a_non_holder_is_caught() {
    let messages = must_fail(
        "set-metadata-ignores-instance",
        &[case!(set_metadata_by_superseded_holder_is_conflict)],
    )
    .await;
    assert_mentions(&messages, "expected a Conflict error, got Ok(())");
}

#[tokio::test(start_paused = true)]
async fn an_epoch_that_never_moves_is_caught() {
    let messages = must_fail(
        "epoch-never-moves",
        &[
            case!(second_join_elsewhere_takes_over_and_bumps_epoch),
            case!(epoch_moves_only_when_the_holder_changes),
            case!(exclusive_join_of_down_member_takes_it),
        ],
    )
    .await;
    assert_mentions(&messages, "expected epoch 2");
}

#[tokio::test(start_paused = true)]
async fn the_correct_driver_passes_every_case_that_needs_no_log_capture() {
    for info in servicegroup_conformance::CASES {
        if info
            .needs
            .contains(&servicegroup_conformance::Need::LogCapture)
        {
            continue;
        }
        if let Err(failure) = info.run(fixture("correct")).await {
            panic!("{failure}");
        }
    }
}

/// A case that needs a hook the fixture lacks fails (never passes), and says how to
/// declare the skip.
#[tokio::test(start_paused = true)]
async fn a_missing_hook_fails_and_says_how_to_declare_the_skip() {
    let mut config = Config::with_driver("correct");
    config.set("inproc.name", unique_name("no-hooks")).unwrap();
    let failure = cases::outage_is_an_error_never_down(Fixture::new(config.clone()))
        .await
        .unwrap_err();
    assert_eq!(failure.kind(), FailureKind::MissingRequirement);
    let msg = failure.to_string();
    assert!(msg.contains("outage hook"), "{msg}");
    assert!(
        msg.contains("skip: { outage_is_an_error_never_down: \"why\" }"),
        "{msg}"
    );
    let failure = cases::heartbeat_batch_costs_few_backend_operations(Fixture::new(config))
        .await
        .unwrap_err();
    assert_eq!(failure.kind(), FailureKind::MissingRequirement);
}
