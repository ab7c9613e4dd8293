//! Scenario 10, *watch across failure*: the observer's watch runs while five members
//! really go down (their process is killed), the store hangs (scenario 1), the
//! store restarts (scenario 4), on PostgreSQL the primary fails over to its standby
//! (scenario 6), and the five come back (a new process joins them).
//! The watch must keep going, report each real transition exactly once (per victim
//! one `down`, then `up`, with `replaced` before it where the store reports the new
//! holder, or `left` and `joined` where the restart lost the record) and no
//! transition of a member that stayed alive.

use std::collections::BTreeMap;
use std::time::Duration;

use servicegroup::EventKind;
use tokio::time::Instant;

use crate::backend::BackendName;
use crate::error::{FaultsError, Result};
use crate::fleet::{MemberProcess, ProcessOptions};
use crate::report::Row;
use crate::scenario::harness::{Harness, Setup};
use crate::scenario::{hang, restart, ScenarioName};
use crate::Context;

const VICTIMS: usize = 5;

/// Runs the scenario on `backend`.
pub async fn run(ctx: &Context, backend: BackendName) -> Result<Row> {
    // On PostgreSQL the watch goes through a failover (scenario 6) too.
    let failover = backend == BackendName::Postgres;
    let setup = Setup {
        standby: failover,
        ..Setup::default()
    };
    let mut h = Harness::start(ctx, ScenarioName::Watch, backend, setup).await?;
    let first = ctx.processes * ctx.per_process;
    let launch = h.fleet.launch().clone();
    let mut victim = MemberProcess::spawn(
        &launch,
        "victim",
        first,
        VICTIMS,
        &ProcessOptions::default(),
    )
    .await?;
    joined(&victim).await?;
    let victims = victim.ids();
    h.observer.now_live(&victims);
    h.run_for(Duration::from_secs(2)).await;
    let from = Instant::now();
    victim.kill().await;
    h.observer.not_live(&victims);
    h.run_for(ctx.timing.service_down_time + Duration::from_secs(2))
        .await;
    hang::hang_store(&mut h).await?;
    let first_recovery = h.expect_recovery().await;
    h.row.recovery = None;
    restart::restart_store(&mut h).await?;
    let second_recovery = h.expect_recovery().await;
    h.row.recovery = None;
    let mut third_recovery = None;
    if failover {
        h.run_for(Duration::from_secs(2)).await;
        h.deployment.servers[0].signal("KILL").await?;
        h.fault_ending();
        h.deployment.servers[1].promote().await?;
        h.fault_ended();
        third_recovery = h.expect_recovery().await;
        h.row
            .note("then the primary killed and the standby promoted");
    }
    h.row.recovery = first_recovery.max(second_recovery).max(third_recovery);
    let back = MemberProcess::spawn(
        &launch,
        "victim-again",
        first,
        VICTIMS,
        &ProcessOptions::default(),
    )
    .await?;
    joined(&back).await?;
    h.observer.now_live(&victims);
    h.fleet.processes.push(back);
    h.run_for(Duration::from_secs(3)).await;

    let tally = h.observer.tally();
    let events: Vec<_> = tally.events.iter().filter(|e| e.at >= from).collect();
    // Per victim: its events in order.
    let mut per_victim: BTreeMap<&str, Vec<EventKind>> = BTreeMap::new();
    let mut phantom = 0;
    let mut first_phantom = None;
    for e in &events {
        if victims.contains(&e.member) {
            per_victim
                .entry(e.member.as_str())
                .or_default()
                .push(e.kind);
        } else if e.member != h.forced {
            phantom += 1;
            first_phantom.get_or_insert_with(|| format!("{} {}", e.kind, e.member));
        }
    }
    // Down once, then up once when it joins again; on a store that lost the records
    // in the restart (memcached) the dead victims are gone: down, left, joined.
    // (With three memcached servers, only the victims whose records were on the
    // restarted one are lost.)
    let durable = crate::scenario::harness::durable(backend);
    // The new process is another instance: a store may report the takeover
    // (`replaced`) before the member is up again.
    let kept = [EventKind::Down, EventKind::Up];
    let taken = [EventKind::Down, EventKind::Replaced, EventKind::Up];
    let lost = [EventKind::Down, EventKind::Left, EventKind::Joined];
    let expected: Vec<&[EventKind]> = if durable {
        vec![&kept, &taken]
    } else {
        vec![&kept, &taken, &lost]
    };
    let exact = victims.iter().all(|v| {
        per_victim
            .get(v.as_str())
            .is_some_and(|seen| expected.contains(&seen.as_slice()))
    });
    h.row.note(format!(
        "{} watch events; each victim's: {}; {} events of members that stayed alive",
        events.len(),
        summarize(&per_victim),
        phantom
    ));
    if !exact {
        h.row.fail(format!(
            "the watch did not report exactly one of {expected:?} for each victim"
        ));
    }
    if phantom > 0 {
        h.row.fail(format!(
            "the watch reported {phantom} transition(s) that did not happen (first: {})",
            first_phantom.unwrap_or_default()
        ));
    }
    if !failover {
        h.row
            .note("no failover on this backend (scenario 6 is PostgreSQL's)");
    }
    h.expect_error_kinds(&["timeout", "unavailable", "backend"]);
    h.finish().await
}

async fn joined(p: &MemberProcess) -> Result<()> {
    match p.joined(Duration::from_secs(30)).await? {
        Ok(_) => Ok(()),
        Err((kind, message)) => Err(FaultsError::Member {
            name: p.name().to_owned(),
            message: format!("join failed ({kind}): {message}"),
        }),
    }
}

/// `down,up ×5` style: each distinct event sequence and how many victims had it.
fn summarize(per_victim: &BTreeMap<&str, Vec<EventKind>>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for kinds in per_victim.values() {
        let key: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        *counts.entry(key.join(",")).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join("; ")
}
