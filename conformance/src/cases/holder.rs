//! Who holds a member: instance ids and epochs in records, takeover by a second
//! join elsewhere, exclusive joins, fencing of the old holder, leave and forced down
//! across a takeover.
//!
//! "Elsewhere" is another [`ServiceGroup`](servicegroup_core::ServiceGroup) handle on
//! the fixture's configuration: every handle is its own instance, exactly as a second
//! process would be.

use servicegroup_core::{ErrorKind, Holder, InstanceId, JoinOptions, State};
use tokio::time::Instant;

use super::support::{
    expect_kind, metadata, require_holder, require_metadata, require_up, wait_heartbeat_calls,
    wait_superseded, wait_until_down, with_metadata, ROUNDING,
};
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, CaseFailure, Context};
use crate::observe::{crash_boundary, settled_write};

/// Requires `id` to look like an instance id: 32 lowercase hex digits, not all zeros.
fn require_instance_text(id: InstanceId, what: &str) -> Result<(), CaseFailure> {
    let text = id.to_string();
    ensure!(
        text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{what}: instance id {text:?} is not 32 lowercase hex digits"
    );
    ensure!(id != InstanceId::NIL, "{what}: instance id is all zeros");
    Ok(())
}

pub(crate) async fn second_join_elsewhere_takes_over_and_bumps_epoch(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let a = ctx.connect().await?;
    let b = ctx.connect().await?;
    let c = ctx.connect().await?;
    let ids = [
        a.instance(),
        b.instance(),
        c.instance(),
        observer.instance(),
    ];
    for (i, x) in ids.iter().enumerate() {
        ensure!(
            !ids[..i].contains(x),
            "two handles on one configuration have the same instance id {x}: every handle must be its own instance"
        );
    }
    let ma = a.join(&g, "host-1").await.ctx("join on handle A")?;
    ensure!(
        ma.epoch() == 1 && ma.instance() == a.instance(),
        "the first join of {g}/host-1 returned epoch {} and instance {}, expected epoch 1 and \
         handle A's instance {}",
        ma.epoch(),
        ma.instance(),
        a.instance()
    );
    let first = require_holder(&observer, &g, "host-1", ma.holder(), "after A joined").await?;
    require_up(&first, "member() after A joined")?;

    let mb = b
        .join(&g, "host-1")
        .await
        .ctx("join of the same member on handle B (another instance), which must take it over")?;
    ensure!(
        mb.epoch() == 2 && mb.instance() == b.instance(),
        "a second join of live {g}/host-1 from another instance returned epoch {} and instance \
         {}, expected epoch 2 (one more than A's) and handle B's instance {}",
        mb.epoch(),
        mb.instance(),
        b.instance()
    );
    let taken = require_holder(
        &observer,
        &g,
        "host-1",
        Holder::new(b.instance(), 2),
        "after B took over",
    )
    .await?;
    require_up(&taken, "member() after B took over")?;
    ensure!(
        ma.epoch() == 1,
        "A's membership changed its own epoch to {} when B took over",
        ma.epoch()
    );

    let mc = c.join(&g, "host-1").await.ctx("join on handle C")?;
    ensure!(
        mc.epoch() == 3,
        "a third instance taking {g}/host-1 over got epoch {}, expected 3 (one more per takeover)",
        mc.epoch()
    );
    let third = require_holder(
        &observer,
        &g,
        "host-1",
        Holder::new(c.instance(), 3),
        "after C took over",
    )
    .await?;
    require_up(&third, "member() after C took over")?;
    drop((ma, mb));
    Ok(())
}

pub(crate) async fn epoch_moves_only_when_the_holder_changes(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let a = ctx.connect().await?;
    let b = ctx.connect().await?;
    let ma = a.join(&g, "host-1").await.ctx("join on A")?;
    let first = require_holder(&observer, &g, "host-1", ma.holder(), "after A joined").await?;
    ma.crash();
    // The same instance registers again (a membership dropped and joined again).
    let ma = a.join(&g, "host-1").await.ctx("join again on A")?;
    ensure!(
        ma.epoch() == 1,
        "joining again from the instance that holds {g}/host-1 gave epoch {}, expected it to stay 1",
        ma.epoch()
    );
    let again = require_holder(
        &observer,
        &g,
        "host-1",
        Holder::new(a.instance(), 1),
        "after A joined again",
    )
    .await?;
    ensure!(
        again.holder_since == first.holder_since,
        "holder_since moved from {:?} to {:?} when its holder registered again: it changes only \
         when the holder changes",
        first.holder_since,
        again.holder_since
    );

    let mb = b.join(&g, "host-1").await.ctx("join on B")?;
    ensure!(
        mb.epoch() == 2,
        "B's takeover gave epoch {}, expected 2",
        mb.epoch()
    );
    let taken = require_holder(&observer, &g, "host-1", mb.holder(), "after B took over").await?;
    ensure!(
        taken.holder_since.is_some() && taken.holder_since >= first.holder_since,
        "after B took over, holder_since is {:?}, not at or after A's {:?}",
        taken.holder_since,
        first.holder_since
    );
    drop(ma);
    mb.crash();
    let mb = b.join(&g, "host-1").await.ctx("join again on B")?;
    ensure!(
        mb.epoch() == 2,
        "B joining again the member it holds gave epoch {}, expected it to stay 2",
        mb.epoch()
    );
    mb.crash();
    // Back to the first holder: still a change of holder, so one more.
    let ma = a.join(&g, "host-1").await.ctx("join on A after B")?;
    ensure!(
        ma.epoch() == 3,
        "A taking {g}/host-1 back from B gave epoch {}, expected 3: the epoch never goes back",
        ma.epoch()
    );
    require_holder(&observer, &g, "host-1", ma.holder(), "after A took it back").await?;
    Ok(())
}

pub(crate) async fn holder_fields_are_listed(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (a, counters) = ctx.connect_instrumented().await?;
    let b = ctx.connect().await?;
    require_instance_text(a.instance(), "ServiceGroup::instance() of handle A")?;
    require_instance_text(b.instance(), "ServiceGroup::instance() of handle B")?;
    let ma = a.join(&g, "host-a").await.ctx("join host-a on A")?;
    let mb = b.join(&g, "host-b").await.ctx("join host-b on B")?;
    for (sg, m, name) in [(&a, &ma, "host-a"), (&b, &mb, "host-b")] {
        ensure!(
            m.instance() == sg.instance() && m.holder() == Holder::new(sg.instance(), m.epoch()),
            "Membership of {name}: instance {} / holder {}, expected its handle's instance {}",
            m.instance(),
            m.holder(),
            sg.instance()
        );
        let status = require_holder(
            &observer,
            &g,
            name,
            Holder::new(sg.instance(), 1),
            "right after join",
        )
        .await?;
        require_instance_text(status.holder.instance, &format!("member({name})"))?;
        let since = status.holder_since.ok_or_else(|| {
            CaseFailure::violation(format!(
                "member({g}, {name}) reports no holder_since: a record says when its holder registered"
            ))
        })?;
        let beat = status.last_heartbeat.ok_or_else(|| {
            CaseFailure::violation(format!("member({g}, {name}) reports no last heartbeat"))
        })?;
        let tolerance =
            servicegroup_core::chrono::Duration::from_std(ctx.res() + ROUNDING).unwrap_or_default();
        ensure!(
            since <= beat + tolerance,
            "member({name}): holder_since {since} is after the last heartbeat {beat}: the \
             registration stores the first heartbeat"
        );
        let listing = observer.members(&g).await.ctx("members()")?;
        let entry = super::support::listed(&listing, &g, name)?;
        ensure!(
            entry.holder_since == status.holder_since,
            "members() lists {name} with holder_since {:?}, member() says {:?}",
            entry.holder_since,
            status.holder_since
        );
    }

    // Heartbeats move the last heartbeat, never the holder or holder_since.
    let before = observer.member(&g, "host-a").await.ctx("member(host-a)")?;
    let calls = counters.heartbeat_calls();
    wait_heartbeat_calls(&ctx, &counters, calls + 2).await?;
    let after = observer.member(&g, "host-a").await.ctx("member(host-a)")?;
    ensure!(
        after.last_heartbeat > before.last_heartbeat,
        "the last heartbeat of host-a did not move over two heartbeats: {:?} then {:?}",
        before.last_heartbeat,
        after.last_heartbeat
    );
    ensure!(
        after.holder == before.holder && after.holder_since == before.holder_since,
        "heartbeats changed host-a's holder or holder_since: {} since {:?}, then {} since {:?}",
        before.holder,
        before.holder_since,
        after.holder,
        after.holder_since
    );
    drop((ma, mb));
    Ok(())
}

pub(crate) async fn superseded_holder_is_fenced(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (a, a_counters) = ctx.connect_instrumented().await?;
    let (b, b_counters) = ctx.connect_instrumented().await?;
    let old = a.join(&g, "host-1").await.ctx("join on A")?;
    // A second member keeps A's heartbeat loop calling the driver all along.
    let _other = a.join(&g, "other").await.ctx("join other on A")?;
    let new = b.join(&g, "host-1").await.ctx("takeover by B")?;
    // A's loop runs on; its next heartbeats still name host-1 (it has not been told yet).
    let calls = a_counters.heartbeat_calls();
    wait_heartbeat_calls(&ctx, &a_counters, calls + 2).await?;
    new.crash();
    let a_calls = a_counters.heartbeat_calls();
    let sdt = ctx.t.service_down_time;
    crash_boundary(&ctx, &b_counters, &observer, &g, "host-1", sdt)
        .await
        .map_err(|failure| {
            CaseFailure::new(
                failure.kind(),
                format!(
                    "{} — host-1's holder B crashed while the old holder A (instance {}, \
                     superseded) kept heartbeating: a heartbeat of an instance that no longer \
                     holds a record must not refresh it (fencing)",
                    failure.message(),
                    a.instance()
                ),
            )
        })?;
    ensure!(
        a_counters.heartbeat_calls() >= a_calls + 2,
        "inconclusive: the old holder's heartbeat loop made only {} calls while the crashed new \
         holder went down",
        a_counters.heartbeat_calls() - a_calls
    );
    let status = require_holder(
        &observer,
        &g,
        "host-1",
        Holder::new(b.instance(), 2),
        "after the new holder crashed",
    )
    .await?;
    ensure!(
        status.state == State::Down,
        "host-1 is {} after its holder crashed",
        status.state
    );
    ensure!(
        observer.is_up(&g, "other").await.ctx("is_up(other)")?,
        "A's other member went down: the old holder's loop must go on for its other members"
    );
    drop(old);
    Ok(())
}

pub(crate) async fn superseded_holder_is_told(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (a, counters) = ctx.connect_instrumented().await?;
    let b = ctx.connect().await?;
    let old = a.join(&g, "host-1").await.ctx("join on A")?;
    let _other = a.join(&g, "other").await.ctx("join other on A")?;
    let new = b.join(&g, "host-1").await.ctx("takeover by B")?;
    let expected = new.holder();
    let told = wait_superseded(&ctx, &old, Some(&counters)).await?;
    ensure!(
        told == expected,
        "Membership::superseded() resolved with {told}, but {g}/host-1 was taken over by {expected}"
    );
    ensure!(
        old.is_superseded(),
        "superseded() resolved but is_superseded() is false"
    );
    ensure!(
        old.holder() == Holder::new(a.instance(), 1),
        "the superseded membership changed its own holder to {}",
        old.holder()
    );
    match tokio::time::timeout(ctx.poll_every(), old.superseded()).await {
        Ok(again) if again == expected => {}
        Ok(again) => {
            return Err(CaseFailure::violation(format!(
                "a second superseded() resolved with {again}, the first with {expected}"
            )))
        }
        Err(_) => {
            return Err(CaseFailure::violation(
                "a second call of superseded() after the takeover did not resolve at once",
            ))
        }
    }
    // Dropped from A's batch: no more heartbeats or registrations of host-1 from A.
    let reports = counters.superseded_reported();
    let registrations = counters.registrations();
    let calls = counters.heartbeat_calls() as usize;
    wait_heartbeat_calls(&ctx, &counters, calls as u64 + 2).await?;
    let later: Vec<usize> = counters.heartbeats()[calls..]
        .iter()
        .map(|c| c.keys)
        .collect();
    ensure!(
        later.iter().all(|&k| k == 1),
        "after being told, A's heartbeat calls carry {later:?} keys, expected only its other member"
    );
    ensure!(
        counters.registrations() == registrations,
        "A registered {} members again after being superseded (a re-registration fight)",
        counters.registrations() - registrations
    );
    let reported = counters.superseded_reported();
    ensure!(
        reported.len() == reports.len()
            && reported.len() == 1
            && reported[0].key.member.as_str() == "host-1"
            && reported[0].holder == expected
            && reported[0].instance == a.instance(),
        "the driver's heartbeat reports of A named these superseded members: {reported:?}; \
         expected exactly one, host-1 held by {expected}, refused to {}",
        a.instance()
    );
    ensure!(
        !new.is_superseded(),
        "the new holder B was told it was superseded"
    );
    let status = require_holder(&observer, &g, "host-1", expected, "after A was told").await?;
    require_up(&status, "member() after A was told")?;
    Ok(())
}

pub(crate) async fn takeover_is_logged_once_at_error(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let (a, counters) = ctx.connect_instrumented().await?;
    let b = ctx.connect().await?;
    let old = a.join(&g, "host-1").await.ctx("join on A")?;
    let _other = a.join(&g, "other").await.ctx("join other on A")?;
    let new = b.join(&g, "host-1").await.ctx("takeover by B")?;
    // Several ticks of A after the takeover: one ERROR, however many.
    let calls = counters.heartbeat_calls();
    wait_heartbeat_calls(&ctx, &counters, calls + 4).await?;

    let logs = ctx.logs();
    let driver = ctx.driver().to_owned();
    let line = format!(
        "{g}/host-1 was taken over by instance {} (epoch 2); two processes claim one member",
        b.instance()
    );
    let errors: Vec<_> = logs
        .iter()
        .filter(|e| e.level == tracing::Level::ERROR)
        .collect();
    let matching: Vec<_> = errors
        .iter()
        .filter(|e| e.message.contains(&line))
        .collect();
    ensure!(
        matching.len() == 1,
        "expected exactly one ERROR \"{line}\" after the takeover, got {}; this case logged at \
         ERROR: {:?}",
        matching.len(),
        errors.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    ensure!(
        errors.len() == 1,
        "expected no ERROR besides the takeover, got {:?}",
        errors.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    let event = matching[0];
    ensure!(
        event
            .fields
            .iter()
            .any(|(k, v)| k == "driver" && *v == driver),
        "the takeover ERROR has no structured field driver={driver}: {:?}",
        event.fields
    );
    ensure!(
        old.is_superseded() && !new.is_superseded(),
        "after the ERROR, the old membership's is_superseded() is {} and the new one's {}",
        old.is_superseded(),
        new.is_superseded()
    );
    Ok(())
}

pub(crate) async fn exclusive_join_of_live_member_held_elsewhere_is_conflict(
    ctx: Ctx,
) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (a, a_counters) = ctx.connect_instrumented().await?;
    let b = ctx.connect().await?;
    let md_a = metadata([("address", "10.0.0.1:8774"), ("zone", "eu-1")])?;
    let ma = a
        .join_with(&g, "host-1", with_metadata(JoinOptions::new(), &md_a))
        .await
        .ctx("join on A")?;
    wait_heartbeat_calls(&ctx, &a_counters, 1).await?;
    // A stops heartbeating; its record stays live for service_down_time, and nothing
    // may refresh it from now on.
    ma.crash();
    let written = settled_write(&ctx, &a_counters).await?;
    let before = observer.member(&g, "host-1").await.ctx("member()")?;

    let options = JoinOptions::exclusive().with_meta("address", "10.0.0.2:8774");
    let result = b.join_with(&g, "host-1", options).await;
    let ended = Instant::now();
    let live_until = (written.started + ctx.t.service_down_time).checked_sub(ctx.res());
    ensure!(
        live_until.is_some_and(|u| ended < u),
        "inconclusive: the exclusive join ended {:?} after A's last heartbeat write started, \
         when the member may already be down (service_down_time {:?})",
        ended - written.started,
        ctx.t.service_down_time
    );
    let err = expect_kind(
        "exclusive join of a live member held by another instance",
        result,
        ErrorKind::Conflict,
    )?;
    let msg = err.to_string();
    for (what, needle) in [
        ("the group", g.clone()),
        ("the member", "host-1".to_owned()),
        ("the holder's instance", a.instance().to_string()),
        ("the holder's epoch", "epoch 1".to_owned()),
    ] {
        ensure!(
            msg.contains(&needle),
            "the Conflict error does not name {what} ({needle}): {msg}"
        );
    }
    let after = observer.member(&g, "host-1").await.ctx("member()")?;
    ensure!(
        after.holder == before.holder
            && after.metadata == before.metadata
            && after.last_heartbeat == before.last_heartbeat
            && after.forced_down == before.forced_down
            && after.holder_since == before.holder_since,
        "the refused exclusive join changed the record: before {before:?}, after {after:?}"
    );
    require_metadata(
        &after.metadata,
        &md_a,
        "member() after the refused exclusive join",
    )?;
    // Nothing of B heartbeats it: the member goes down on time after A's last write.
    crash_boundary(
        &ctx,
        &a_counters,
        &observer,
        &g,
        "host-1",
        ctx.t.service_down_time,
    )
    .await?;
    // The refused join left nothing behind on B: it can join (take the member) now.
    let mb = b
        .join(&g, "host-1")
        .await
        .ctx("join on B after its refused exclusive join")?;
    ensure!(
        mb.epoch() == 2,
        "B's join after the refused exclusive join gave epoch {}, expected 2",
        mb.epoch()
    );
    Ok(())
}

pub(crate) async fn exclusive_join_of_down_member_takes_it(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let a = ctx.connect().await?;
    let b = ctx.connect().await?;
    let md_a = metadata([("address", "10.0.0.1:8774"), ("zone", "eu-1")])?;
    a.join_with(&g, "host-1", with_metadata(JoinOptions::new(), &md_a))
        .await
        .ctx("join on A")?
        .crash();
    wait_until_down(&ctx, &observer, &g, "host-1").await?;
    let md_b = metadata([("address", "10.0.0.2:8774")])?;
    let mb = b
        .join_with(&g, "host-1", with_metadata(JoinOptions::exclusive(), &md_b))
        .await
        .ctx("exclusive join of a member that is down")?;
    ensure!(
        mb.epoch() == 2 && mb.instance() == b.instance(),
        "the exclusive join of a down member held by A returned epoch {} / instance {}, \
         expected epoch 2 / B's instance {}",
        mb.epoch(),
        mb.instance(),
        b.instance()
    );
    let status = require_holder(
        &observer,
        &g,
        "host-1",
        mb.holder(),
        "after the exclusive join",
    )
    .await?;
    require_up(
        &status,
        "member() right after the exclusive join of a down member",
    )?;
    require_metadata(&status.metadata, &md_b, "member() after the exclusive join")?;
    Ok(())
}

pub(crate) async fn exclusive_join_of_absent_member_creates_epoch_one(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let b = ctx.connect().await?;
    let md = metadata([("zone", "eu-1")])?;
    let m = b
        .join_with(&g, "host-1", with_metadata(JoinOptions::exclusive(), &md))
        .await
        .ctx("exclusive join of a member with no record")?;
    ensure!(
        m.epoch() == 1,
        "an exclusive join of a new member returned epoch {}, expected 1",
        m.epoch()
    );
    let status = require_holder(
        &observer,
        &g,
        "host-1",
        Holder::new(b.instance(), 1),
        "after the exclusive join",
    )
    .await?;
    require_up(&status, "member() after the exclusive join")?;
    require_metadata(&status.metadata, &md, "member() after the exclusive join")?;
    // Its own live record does not conflict with itself.
    m.crash();
    let again = b
        .join_with(&g, "host-1", JoinOptions::exclusive())
        .await
        .ctx("exclusive join again by the instance holding the live record")?;
    ensure!(
        again.epoch() == 1,
        "an exclusive join by the holder itself returned epoch {}, expected 1",
        again.epoch()
    );
    let status = require_holder(&observer, &g, "host-1", again.holder(), "after rejoining").await?;
    require_up(&status, "member() after the holder's exclusive rejoin")?;
    Ok(())
}

pub(crate) async fn leave_by_superseded_holder_leaves_new_holder_alone(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (a, _a_counters) = ctx.connect_instrumented().await?;
    let (b, b_counters) = ctx.connect_instrumented().await?;
    let old_1 = a.join(&g, "host-1").await.ctx("join host-1 on A")?;
    let old_2 = a.join(&g, "host-2").await.ctx("join host-2 on A")?;
    let md_b = metadata([("owner", "b")])?;
    let new_1 = b
        .join_with(&g, "host-1", with_metadata(JoinOptions::new(), &md_b))
        .await
        .ctx("takeover of host-1 by B")?;
    let new_2 = b
        .join_with(&g, "host-2", with_metadata(JoinOptions::new(), &md_b))
        .await
        .ctx("takeover of host-2 by B")?;

    // host-1: A leaves at once, most likely before its loop noticed the takeover, so
    // the driver's remove decides (it must delete only a record A holds).
    old_1
        .leave()
        .await
        .ctx("leave by the old holder of host-1")?;
    let status = match observer.member(&g, "host-1").await {
        Ok(status) => status,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(CaseFailure::violation(format!(
                "the old holder A's leave deleted {g}/host-1, which B holds: leave deletes only a \
                 record its own instance holds"
            )))
        }
        Err(e) => return Err(CaseFailure::unexpected("member(host-1)", &e)),
    };
    ensure!(
        status.holder == new_1.holder(),
        "after the old holder left, host-1 is held by {}, expected B ({})",
        status.holder,
        new_1.holder()
    );
    require_up(&status, "member(host-1) after the old holder left")?;
    require_metadata(
        &status.metadata,
        &md_b,
        "member(host-1) after the old holder left",
    )?;

    // host-2: A leaves after it was told.
    wait_superseded(&ctx, &old_2, None).await?;
    old_2
        .leave()
        .await
        .ctx("leave by the superseded holder of host-2")?;

    // B goes on undisturbed: its records were never deleted and registered again.
    let calls = b_counters.heartbeat_calls();
    wait_heartbeat_calls(&ctx, &b_counters, calls + 2).await?;
    ensure!(
        b_counters.missing_reported().is_empty(),
        "B's heartbeats found {:?} missing after the old holder left: A's leave deleted B's record",
        b_counters.missing_reported()
    );
    for (name, holder) in [("host-1", new_1.holder()), ("host-2", new_2.holder())] {
        let status = require_holder(&observer, &g, name, holder, "after A left").await?;
        require_up(
            &status,
            &format!("member({name}) after the old holder left"),
        )?;
        require_metadata(&status.metadata, &md_b, &format!("member({name})"))?;
    }
    Ok(())
}

pub(crate) async fn forced_down_survives_takeover(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let a = ctx.connect().await?;
    let b = ctx.connect().await?;
    let _old = a.join(&g, "host-1").await.ctx("join on A")?;
    observer
        .set_forced_down(&g, "host-1", true)
        .await
        .ctx("set_forced_down(true)")?;
    let new = b.join(&g, "host-1").await.ctx("takeover by B")?;
    let status = require_holder(&observer, &g, "host-1", new.holder(), "after B took over").await?;
    ensure!(
        status.forced_down && status.state == State::Down,
        "after a takeover the member reports forced_down {} and state {}: the operator's flag \
         must survive a takeover",
        status.forced_down,
        status.state
    );
    // The new holder's heartbeats go on while forced down.
    let first = status.last_heartbeat;
    let deadline = ctx.deadline(ctx.next_heartbeat_within() + ctx.t.report_interval);
    loop {
        let now = observer.member(&g, "host-1").await.ctx("member()")?;
        ensure!(
            now.forced_down && now.state == State::Down,
            "{g}/host-1 lost its forced-down flag after the takeover (forced_down {}, {})",
            now.forced_down,
            now.state
        );
        if now.last_heartbeat > first {
            break;
        }
        deadline.check(|| {
            format!("the new holder's heartbeats of forced-down {g}/host-1 are not stored (last heartbeat stays {first:?})")
        })?;
        ctx.pause().await;
    }
    observer
        .set_forced_down(&g, "host-1", false)
        .await
        .ctx("set_forced_down(false)")?;
    let status = require_holder(&observer, &g, "host-1", new.holder(), "after clearing").await?;
    require_up(&status, "member() after clearing forced down")?;
    Ok(())
}
