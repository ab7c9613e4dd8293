//! The loop that lists every watched group once per interval, publishes the
//! per-group gauges and keeps the latest view for the status page.
//!
//! One listing per group per interval, whatever the number of scrapers or page
//! viewers. A listing that fails keeps the previous figures (the members are not
//! "down": the exporter cannot tell), counts the error and shows it on the page.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use servicegroup_core::{GroupId, ServiceGroup};
use tokio::sync::watch;

use crate::snapshot::{GroupSnapshot, Shown, Transitions};

/// `servicegroup_members{group, state}`: members by state (`up`, `down`, `forced_down`).
pub const MEMBERS: &str = "servicegroup_members";
/// `servicegroup_oldest_heartbeat_age_seconds{group}`: the oldest heartbeat among the members up.
pub const OLDEST_HEARTBEAT_AGE_SECONDS: &str = "servicegroup_oldest_heartbeat_age_seconds";
/// `servicegroup_member_state_changes_total{group}`: members whose state changed between listings.
pub const MEMBER_STATE_CHANGES_TOTAL: &str = "servicegroup_member_state_changes_total";
/// `servicegroup_exporter_listing_errors_total{group, kind}`: listings that failed.
pub const LISTING_ERRORS_TOTAL: &str = "servicegroup_exporter_listing_errors_total";
/// `servicegroup_exporter_backend_reachable`: 1 when the last round of listings succeeded.
pub const BACKEND_REACHABLE: &str = "servicegroup_exporter_backend_reachable";
/// `servicegroup_member_up{group, member}` (only with `per_member`): 1 up, 0 not.
pub const MEMBER_UP: &str = "servicegroup_member_up";

/// What to collect.
#[derive(Debug, Clone)]
pub struct CollectorOptions {
    /// The groups to list; empty: every group the backend knows, looked up each round.
    pub groups: Vec<GroupId>,
    /// Time between two rounds of listings.
    pub interval: Duration,
    /// Also publish one series per member (`servicegroup_member_up`). Off by
    /// default: it makes the series count grow with the fleet.
    pub per_member: bool,
}

impl Default for CollectorOptions {
    fn default() -> Self {
        Self {
            groups: Vec::new(),
            interval: Duration::from_secs(5),
            per_member: false,
        }
    }
}

/// One group in the latest view: its snapshot, and the error of the latest
/// listing if it failed (the snapshot is then the last good one, if any).
#[derive(Debug, Clone)]
pub struct GroupView {
    /// The group.
    pub group: GroupId,
    /// The last successful listing.
    pub snapshot: Option<GroupSnapshot>,
    /// Why the latest listing failed (`None`: it succeeded).
    pub error: Option<String>,
}

/// Everything the page shows: every group, as of `taken_at`.
#[derive(Debug, Clone, Default)]
pub struct FleetView {
    /// The groups, sorted by id.
    pub groups: Vec<GroupView>,
    /// When the latest round finished (`None`: no round yet).
    pub taken_at: Option<SystemTime>,
    /// Why the latest round could not even list the groups.
    pub error: Option<String>,
}

/// The collector's output: the latest view, updated after every round.
pub type FleetWatch = watch::Receiver<Arc<FleetView>>;

/// Starts the collector on `sg`; it runs until every receiver is dropped.
pub fn spawn(sg: ServiceGroup, options: CollectorOptions) -> FleetWatch {
    let (tx, rx) = watch::channel(Arc::new(FleetView::default()));
    tokio::spawn(run(sg, options, tx));
    rx
}

async fn run(sg: ServiceGroup, options: CollectorOptions, tx: watch::Sender<Arc<FleetView>>) {
    let mut transitions: std::collections::HashMap<GroupId, Transitions> = Default::default();
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if tx.is_closed() {
            return;
        }
        let previous = tx.borrow().clone();
        let view = round(&sg, &options, &previous, &mut transitions).await;
        if tx.send(Arc::new(view)).is_err() {
            return;
        }
    }
}

/// One round: every group listed once.
async fn round(
    sg: &ServiceGroup,
    options: &CollectorOptions,
    previous: &FleetView,
    transitions: &mut std::collections::HashMap<GroupId, Transitions>,
) -> FleetView {
    let groups = if options.groups.is_empty() {
        match sg.groups().await {
            Ok(groups) => groups,
            Err(error) => {
                tracing::warn!(error = %error, kind = %error.kind(), "exporter cannot list the groups: {error}");
                metrics::counter!(LISTING_ERRORS_TOTAL, "group" => "", "kind" => error.kind().code())
                    .increment(1);
                metrics::gauge!(BACKEND_REACHABLE).set(0.0);
                return FleetView {
                    error: Some(error.to_string()),
                    taken_at: Some(SystemTime::now()),
                    ..previous.clone()
                };
            }
        }
    } else {
        options.groups.clone()
    };
    let mut views = Vec::with_capacity(groups.len());
    let mut reachable = true;
    for group in groups {
        let last_good = previous
            .groups
            .iter()
            .find(|v| v.group == group)
            .and_then(|v| v.snapshot.clone());
        match sg.members(group.clone()).await {
            Ok(members) => {
                let changed = transitions
                    .entry(group.clone())
                    .or_default()
                    .update(&members);
                metrics::counter!(MEMBER_STATE_CHANGES_TOTAL, "group" => group.to_string())
                    .increment(changed);
                if options.per_member {
                    for m in &members {
                        let up = if Shown::of(m) == Shown::Up { 1.0 } else { 0.0 };
                        metrics::gauge!(MEMBER_UP, "group" => group.to_string(), "member" => m.member.to_string())
                            .set(up);
                    }
                }
                let snapshot = GroupSnapshot::from_members(group.clone(), members);
                publish(&snapshot);
                views.push(GroupView {
                    group,
                    snapshot: Some(snapshot),
                    error: None,
                });
            }
            Err(error) => {
                reachable = false;
                tracing::warn!(group = %group, error = %error, kind = %error.kind(), "exporter cannot list group {group}: {error}");
                metrics::counter!(LISTING_ERRORS_TOTAL, "group" => group.to_string(), "kind" => error.kind().code())
                    .increment(1);
                views.push(GroupView {
                    group,
                    snapshot: last_good,
                    error: Some(error.to_string()),
                });
            }
        }
    }
    metrics::gauge!(BACKEND_REACHABLE).set(if reachable { 1.0 } else { 0.0 });
    views.sort_by(|a, b| a.group.cmp(&b.group));
    FleetView {
        groups: views,
        taken_at: Some(SystemTime::now()),
        error: None,
    }
}

/// Sets the per-group gauges of one snapshot.
fn publish(s: &GroupSnapshot) {
    let group = s.group.to_string();
    for (state, n) in [
        (Shown::Up, s.up),
        (Shown::Down, s.down),
        (Shown::ForcedDown, s.forced_down),
    ] {
        metrics::gauge!(MEMBERS, "group" => group.clone(), "state" => state.as_str()).set(n as f64);
    }
    let oldest = s.oldest_up_age.map_or(0.0, |a| a.as_secs_f64());
    metrics::gauge!(OLDEST_HEARTBEAT_AGE_SECONDS, "group" => group).set(oldest);
}

/// Describes the exporter's own metrics to the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_gauge!(
        MEMBERS,
        Unit::Count,
        "Members of a group by state (up, down, forced_down), from the exporter's latest listing."
    );
    describe_gauge!(
        OLDEST_HEARTBEAT_AGE_SECONDS,
        Unit::Seconds,
        "Age of the oldest heartbeat among a group's members that are up (0 when none is up)."
    );
    describe_counter!(
        MEMBER_STATE_CHANGES_TOTAL,
        "Members whose state changed (or that appeared or went away) between two listings."
    );
    describe_counter!(
        LISTING_ERRORS_TOTAL,
        "Listings by the exporter that failed, by group and error kind."
    );
    describe_gauge!(
        BACKEND_REACHABLE,
        "1 when the exporter's latest round of listings reached the backend, else 0."
    );
    describe_gauge!(
        MEMBER_UP,
        "1 when the member is up, else 0 (only with --per-member)."
    );
}
