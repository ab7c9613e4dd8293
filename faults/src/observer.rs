//! The observer: one handle in the runner that lists the group every 200 ms and
//! watches it, and judges every answer against the truth the scenario knows (which
//! members are alive). A live member listed down (or missing) is a **false down**,
//! except within the grace window right after a fault ends (the backend's clock
//! moved on while no heartbeat could land; those readings are counted apart as
//! *recovering*). A listing that fails is counted by error kind: "cannot tell"
//! is never "down".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use servicegroup::{EventKind, MemberStatus, ServiceGroup, State};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::Target;
use crate::error::{FaultsError, Result};

/// How often the observer lists.
pub const POLL: Duration = Duration::from_millis(200);

/// One watch event as the observer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// What happened.
    pub kind: EventKind,
    /// To whom.
    pub member: String,
    /// When (runner's monotonic clock).
    pub at: Instant,
}

/// What the observer counted.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Listings answered.
    pub listings: u64,
    /// Listings that failed, by error kind code.
    pub errors: BTreeMap<String, u64>,
    /// Readings of a live member as down outside the grace window.
    pub false_down_readings: u64,
    /// Live members read as down outside the grace window.
    pub false_down_members: BTreeSet<String>,
    /// Readings of a live member as missing outside the grace window.
    pub missing_readings: u64,
    /// Readings of a live member as down or missing inside the grace window.
    pub recovering_readings: u64,
    /// Readings of a live member as down or missing while a fault in which that is
    /// the backend's truth was under way ([`Observer::expect_downs`]).
    pub tolerated_readings: u64,
    /// Time from the end of the last fault to the first listing with every live member up.
    pub recovered_after: Option<Duration>,
    /// Watch events.
    pub events: Vec<Seen>,
    /// Watch errors, by kind code.
    pub watch_errors: BTreeMap<String, u64>,
    /// The first message of each error kind seen (listing or watch).
    pub first_messages: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Truth {
    live: BTreeSet<String>,
    fault_ended: Option<Instant>,
    grace: Duration,
    tolerate: bool,
    ending: bool,
}

#[derive(Debug, Default)]
struct Shared {
    truth: Mutex<Truth>,
    tally: Mutex<Tally>,
    last: Mutex<Option<Vec<MemberStatus>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The observer of one scenario. Stops when dropped.
#[derive(Debug)]
pub struct Observer {
    sg: ServiceGroup,
    group: String,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Observer {
    /// Connects with `target`, takes `live` as the members alive now and starts
    /// listing and watching `group`. `grace` is the window after a fault's end in
    /// which down readings count as recovering.
    pub async fn start(
        target: &Target,
        group: &str,
        live: impl IntoIterator<Item = String>,
        grace: Duration,
    ) -> Result<Self> {
        let config = target
            .config()
            .map_err(|e| FaultsError::library("observer configuration", e))?;
        let sg = ServiceGroup::connect(config)
            .await
            .map_err(|e| FaultsError::library("observer connect", e))?;
        let shared = Arc::new(Shared::default());
        {
            let mut truth = lock(&shared.truth);
            truth.live = live.into_iter().collect();
            truth.grace = grace;
        }
        let mut watch = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while watch.is_none() {
            match sg.watch(group).await {
                Ok(w) => watch = Some(w),
                Err(e) if Instant::now() >= deadline => {
                    return Err(FaultsError::library("observer watch", e))
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
        let mut watch = watch.expect("set above");
        let watcher = {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    match watch.next().await {
                        Ok(event) => lock(&shared.tally).events.push(Seen {
                            kind: event.kind,
                            member: event.member.to_string(),
                            at: Instant::now(),
                        }),
                        Err(e) => {
                            {
                                let mut tally = lock(&shared.tally);
                                *tally
                                    .watch_errors
                                    .entry(e.kind().code().to_owned())
                                    .or_insert(0) += 1;
                                tally
                                    .first_messages
                                    .entry(e.kind().code().to_owned())
                                    .or_insert_with(|| e.to_string());
                            }
                            tokio::time::sleep(POLL).await;
                        }
                    }
                }
            })
        };
        let lister = {
            let (sg, group, shared) = (sg.clone(), group.to_owned(), shared.clone());
            tokio::spawn(async move {
                loop {
                    let result = sg.members(group.as_str()).await;
                    judge(&shared, result);
                    tokio::time::sleep(POLL).await;
                }
            })
        };
        Ok(Self {
            sg,
            group: group.to_owned(),
            shared,
            tasks: vec![watcher, lister],
        })
    }

    /// The observer's handle (for operator calls such as forced down).
    pub fn handle(&self) -> &ServiceGroup {
        &self.sg
    }

    /// Replaces the set of live members.
    pub fn set_live(&self, live: impl IntoIterator<Item = String>) {
        lock(&self.shared.truth).live = live.into_iter().collect();
    }

    /// Removes members from the live set (killed, forced down: not judged).
    pub fn not_live(&self, members: &[String]) {
        let mut truth = lock(&self.shared.truth);
        for m in members {
            truth.live.remove(m);
        }
    }

    /// Adds members to the live set.
    pub fn now_live(&self, members: &[String]) {
        let mut truth = lock(&self.shared.truth);
        truth.live.extend(members.iter().cloned());
    }

    /// From now until [`Observer::fault_ended`], down or missing live members are the
    /// fault itself, counted apart: the backend really lost records (an eviction) or
    /// really could not store heartbeats while it still answered reads (a full disk).
    pub fn expect_downs(&self) {
        lock(&self.shared.truth).tolerate = true;
    }

    /// The fault is being ended now (SIGCONT sent, a server starting, a standby being
    /// promoted): until [`Observer::fault_ended`], readings count as recovering.
    pub fn fault_ending(&self) {
        lock(&self.shared.truth).ending = true;
    }

    /// The last fault ended now: the grace window starts and recovery is timed from here.
    pub fn fault_ended(&self) {
        {
            let mut truth = lock(&self.shared.truth);
            truth.fault_ended = Some(Instant::now());
            truth.tolerate = false;
            truth.ending = false;
        }
        lock(&self.shared.tally).recovered_after = None;
    }

    /// Waits until every live member was listed up after the last fault (or `within`
    /// passed); the time it took.
    pub async fn recovered(&self, within: Duration) -> Option<Duration> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(d) = lock(&self.shared.tally).recovered_after {
                return Some(d);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What was counted so far.
    pub fn tally(&self) -> Tally {
        lock(&self.shared.tally).clone()
    }

    /// A fresh listing, retried until it succeeds or `within` passes.
    pub async fn listing(&self, within: Duration) -> Result<Vec<MemberStatus>> {
        let deadline = Instant::now() + within;
        loop {
            match self.sg.members(self.group.as_str()).await {
                Ok(list) => return Ok(list),
                Err(e) if Instant::now() >= deadline => {
                    return Err(FaultsError::library("final listing", e))
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Live members missing from `listing` or not up in it.
    pub fn lost_in(&self, listing: &[MemberStatus]) -> (Vec<String>, Vec<String>) {
        let live = lock(&self.shared.truth).live.clone();
        let by_id: BTreeMap<String, &MemberStatus> =
            listing.iter().map(|m| (m.member.to_string(), m)).collect();
        let missing = live
            .iter()
            .filter(|m| !by_id.contains_key(*m))
            .cloned()
            .collect();
        let down = live
            .iter()
            .filter(|m| by_id.get(*m).is_some_and(|s| s.state == State::Down))
            .cloned()
            .collect();
        (missing, down)
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn judge(shared: &Shared, result: servicegroup::Result<Vec<MemberStatus>>) {
    let now = Instant::now();
    let list = match result {
        Ok(list) => list,
        Err(e) => {
            let mut tally = lock(&shared.tally);
            *tally.errors.entry(e.kind().code().to_owned()).or_insert(0) += 1;
            tally
                .first_messages
                .entry(e.kind().code().to_owned())
                .or_insert_with(|| e.to_string());
            return;
        }
    };
    let truth = lock(&shared.truth);
    let by_id: BTreeMap<&str, &MemberStatus> =
        list.iter().map(|m| (m.member.as_str(), m)).collect();
    let mut down = Vec::new();
    let mut missing = 0;
    for id in &truth.live {
        match by_id.get(id.as_str()) {
            Some(m) if m.state == State::Up => {}
            Some(_) => down.push(id.clone()),
            None => missing += 1,
        }
    }
    let in_grace = truth.ending
        || truth
            .fault_ended
            .is_some_and(|end| now <= end + truth.grace);
    let fault_ended = truth.fault_ended;
    let tolerate = truth.tolerate;
    drop(truth);
    let mut tally = lock(&shared.tally);
    tally.listings += 1;
    if down.is_empty() && missing == 0 {
        if let (Some(end), None) = (fault_ended, tally.recovered_after) {
            tally.recovered_after = Some(now.saturating_duration_since(end));
        }
    } else if tolerate {
        tally.tolerated_readings += (down.len() + missing) as u64;
    } else if in_grace {
        tally.recovering_readings += (down.len() + missing) as u64;
    } else {
        tally.false_down_readings += down.len() as u64;
        tally.missing_readings += missing as u64;
        tally.false_down_members.extend(down);
    }
    drop(tally);
    *lock(&shared.last) = Some(list);
}
