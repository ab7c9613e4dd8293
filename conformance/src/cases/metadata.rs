//! Member metadata: stored exactly, validated before any driver call, replaceable by
//! its holder, kept across heartbeats and re-registration, replaced by a takeover.

use std::collections::BTreeMap;

use servicegroup_core::{ErrorKind, EventKind, JoinOptions, Metadata};

use super::support::{
    expect_kind, key_of, metadata, require_holder, require_metadata, require_up,
    wait_heartbeat_calls, with_metadata,
};
use super::watch::notice;
use super::CaseResult;
use crate::ctx::Ctx;
use crate::failure::{ensure, CaseFailure, Context};

/// Values no backend may alter: non-ASCII text, combining marks (no normalization),
/// quotes, backslashes, whitespace at both ends, control characters (NUL included),
/// JSON look-alikes, an empty value.
fn unicode() -> Vec<(String, String)> {
    [
        ("greeting", "héllo wörld ✓ — 日本語 — 🚀🧪"),
        ("combining", "e\u{301} a\u{308} (not normalized)"),
        ("family", "👩\u{200d}👩\u{200d}👧\u{200d}👦"),
        ("rtl", "שלום مرحبا"),
        ("quotes", "\"'`\\ \\\\ {}[]:,=&%$#@!;--"),
        ("whitespace", " leading and trailing \t\n\r "),
        ("control", "nul:\u{0} bell:\u{7} esc:\u{1b}[31m del:\u{7f}"),
        ("separators", "\u{2028}\u{2029}\u{feff}\u{a0}"),
        ("json", "{\"a\": [1, \"\\u0000\"]}"),
        ("empty", ""),
        ("k.v_1/2-3", "every key character"),
        (&"k".repeat(63), "a 63-byte key"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The largest metadata allowed: values of exactly 1024 bytes (one-, two- and
/// three-byte characters) and exactly 4096 bytes of keys and values together.
fn largest() -> Vec<(String, String)> {
    let values = [
        "x".repeat(1024),
        "é".repeat(512),
        format!("{}a", "日".repeat(341)),
        "🚀".repeat(254),
    ];
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("k{i}"), v))
        .collect()
}

/// 32 entries, the most allowed.
fn many() -> Vec<(String, String)> {
    (0..32)
        .map(|i| {
            let key = if i == 31 {
                format!("{}-31", "z".repeat(60))
            } else {
                format!("entry.{i:02}")
            };
            (key, format!("value {i} ✓"))
        })
        .collect()
}

/// The metadata sets of the round-trip case, by member.
fn round_trip_sets() -> Result<Vec<(&'static str, Metadata)>, CaseFailure> {
    let largest = metadata(largest())?;
    let total: usize = largest.iter().map(|(k, v)| k.len() + v.len()).sum();
    ensure!(
        total == 4096 && largest.iter().all(|(_, v)| v.len() <= 1024),
        "conformance bug: the largest metadata is {total} bytes"
    );
    Ok(vec![
        ("unicode", metadata(unicode())?),
        ("largest", largest),
        ("many", metadata(many())?),
        ("none", Metadata::new()),
    ])
}

pub(crate) async fn metadata_round_trips_exactly(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let mut watch = observer.watch(&g).await.ctx("watch")?;
    let sg = ctx.connect().await?;
    let sets = round_trip_sets()?;
    let mut memberships = Vec::new();
    for (name, md) in &sets {
        let m = sg
            .join_with(&g, *name, with_metadata(JoinOptions::new(), md))
            .await
            .ctx(format_args!(
                "join_with({name}) with {} metadata entries",
                md.len()
            ))?;
        require_metadata(
            &m.metadata(),
            md,
            &format!("Membership::metadata() of {name}"),
        )?;
        memberships.push(m);
    }
    for (name, md) in &sets {
        let status = observer
            .member(&g, *name)
            .await
            .ctx(format_args!("member({name})"))?;
        require_metadata(
            &status.metadata,
            md,
            &format!("member({name}) on another handle"),
        )?;
    }
    let listing = observer.members(&g).await.ctx("members()")?;
    for (name, md) in &sets {
        let entry = super::support::listed(&listing, &g, name)?;
        require_metadata(&entry.metadata, md, &format!("members() entry of {name}"))?;
    }
    // The watch reports each join with the member's metadata.
    let mut joined = BTreeMap::new();
    while joined.len() < sets.len() {
        let event = match tokio::time::timeout(notice(&ctx), watch.next()).await {
            Ok(Ok(event)) => event,
            Ok(Err(e)) => return Err(CaseFailure::unexpected("Watch::next", &e)),
            Err(_) => {
                return Err(CaseFailure::violation(format!(
                    "the watch reported {} of {} joins within {:?}",
                    joined.len(),
                    sets.len(),
                    notice(&ctx)
                )))
            }
        };
        ensure!(
            event.kind == EventKind::Joined,
            "the watch reported `{}` of {}, expected only `joined` events",
            event.kind,
            event.member
        );
        joined.insert(event.member.to_string(), event.metadata);
    }
    for (name, md) in &sets {
        let got = joined.get(*name).ok_or_else(|| {
            CaseFailure::violation(format!("the watch never reported {name} joining"))
        })?;
        require_metadata(got, md, &format!("the `joined` event of {name}"))?;
    }
    drop(memberships);
    Ok(())
}

/// Metadata every entry point must refuse: (what is wrong, pairs, a text the
/// message must contain: the key, or the rule).
/// One refused metadata: what is wrong, the pairs, what the message must name.
type Invalid = (&'static str, Vec<(String, String)>, String);

fn invalid() -> Vec<Invalid> {
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let long_key = "k".repeat(64);
    let mut too_many = many();
    too_many.push(("one-more".to_owned(), "v".to_owned()));
    let mut too_large = largest();
    too_large[3].1.push('!');
    vec![
        ("33 entries", too_many, "33 entries".to_owned()),
        (
            "a 64-byte key",
            vec![(long_key.clone(), "v".to_owned())],
            long_key[..30].to_owned(),
        ),
        ("an empty key", pairs(&[("", "v")]), "empty".to_owned()),
        (
            "an upper-case key",
            pairs(&[("Zone", "v")]),
            "Zone".to_owned(),
        ),
        (
            "a key with a space",
            pairs(&[("a b", "v")]),
            "a b".to_owned(),
        ),
        (
            "a non-ASCII key",
            pairs(&[("ключ", "v")]),
            "ключ".to_owned(),
        ),
        (
            "a key with a newline",
            pairs(&[("zone\n", "v")]),
            "zone".to_owned(),
        ),
        (
            "a 1025-byte value",
            vec![("big".to_owned(), "x".repeat(1025))],
            "big".to_owned(),
        ),
        (
            "a 1025-byte value of 513 characters",
            vec![("wide".to_owned(), format!("{}x", "é".repeat(512)))],
            "wide".to_owned(),
        ),
        ("4097 bytes in all", too_large, "4096".to_owned()),
        (
            "a key given twice",
            pairs(&[("zone", "a"), ("zone", "b")]),
            "zone".to_owned(),
        ),
    ]
}

/// Requires an `InvalidMetadata` error whose message contains `needle`.
fn check_invalid<T: std::fmt::Debug>(
    what: &str,
    label: &str,
    needle: &str,
    result: Result<T, servicegroup_core::Error>,
) -> Result<(), CaseFailure> {
    let err = expect_kind(
        format!("{what} with metadata holding {label}"),
        result,
        ErrorKind::InvalidMetadata,
    )?;
    ensure!(
        err.to_string().contains(needle),
        "{what} with metadata holding {label}: the InvalidMetadata message does not name \
         {needle:?}: {err}"
    );
    Ok(())
}

pub(crate) async fn invalid_metadata_is_rejected_before_any_driver_call(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    let cases = invalid();
    for (label, pairs, needle) in &cases {
        for (what, options) in [
            ("join_with", JoinOptions::new()),
            ("exclusive join_with", JoinOptions::exclusive()),
        ] {
            let result = sg
                .join_with(&g, "host-1", options.with_metadata(pairs.clone()))
                .await;
            check_invalid(what, label, needle, result)?;
        }
    }
    ensure!(
        counters.total_calls() == 0,
        "{} driver calls were made by joins with invalid metadata: metadata must be checked \
         before the driver is called",
        counters.total_calls()
    );
    expect_kind(
        "member() after joins with invalid metadata",
        observer.member(&g, "host-1").await,
        ErrorKind::NotFound,
    )?;
    // The refused joins left nothing taken on the handle.
    let good = metadata([("zone", "eu-1")])?;
    let m = sg
        .join_with(&g, "host-1", with_metadata(JoinOptions::new(), &good))
        .await
        .ctx("join_with valid metadata after the refused ones")?;

    let before = counters.calls_except_heartbeats();
    for (label, pairs, needle) in &cases {
        check_invalid(
            "set_metadata",
            label,
            needle,
            m.set_metadata(pairs.clone()).await,
        )?;
        if !label.contains("twice") {
            let map: BTreeMap<String, String> = pairs.iter().cloned().collect();
            check_invalid(
                "set_metadata (as a map)",
                label,
                needle,
                m.set_metadata(map).await,
            )?;
        }
    }
    ensure!(
        counters.calls_except_heartbeats() == before,
        "{} driver calls (set_metadata: {}) were made by set_metadata with invalid metadata: \
         metadata must be checked before the driver is called",
        counters.calls_except_heartbeats() - before,
        counters.set_metadata_calls()
    );
    require_metadata(
        &m.metadata(),
        &good,
        "Membership::metadata() after refused updates",
    )?;
    let status = observer.member(&g, "host-1").await.ctx("member()")?;
    require_metadata(
        &status.metadata,
        &good,
        "member() after refused set_metadata calls",
    )?;
    Ok(())
}

pub(crate) async fn set_metadata_is_visible_at_once(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    let md1 = metadata([("address", "10.0.0.1:8774"), ("zone", "eu-1")])?;
    let m = sg
        .join_with(&g, "host-1", with_metadata(JoinOptions::new(), &md1))
        .await
        .ctx("join_with")?;
    let before = observer.member(&g, "host-1").await.ctx("member()")?;
    require_metadata(&before.metadata, &md1, "member() after join")?;
    let registrations = counters.registrations();

    let md2 = metadata([("version", "29.1.0"), ("build", "a1b2c3")])?;
    m.set_metadata(md2.clone()).await.ctx("set_metadata")?;
    require_metadata(
        &m.metadata(),
        &md2,
        "Membership::metadata() after set_metadata",
    )?;
    let after = require_holder(&observer, &g, "host-1", m.holder(), "after set_metadata").await?;
    require_metadata(
        &after.metadata,
        &md2,
        "member() on another handle right after set_metadata",
    )?;
    require_up(&after, "member() after set_metadata")?;
    let listing = observer.members(&g).await.ctx("members()")?;
    let entry = super::support::listed(&listing, &g, "host-1")?;
    require_metadata(&entry.metadata, &md2, "members() right after set_metadata")?;
    ensure!(
        after.holder_since == before.holder_since,
        "set_metadata changed holder_since from {:?} to {:?}",
        before.holder_since,
        after.holder_since
    );

    // Everything else stays: the forced-down flag too.
    observer
        .set_forced_down(&g, "host-1", true)
        .await
        .ctx("set_forced_down(true)")?;
    m.set_metadata([("zone", "eu-2")])
        .await
        .ctx("set_metadata while forced down")?;
    let status = require_holder(&observer, &g, "host-1", m.holder(), "after set_metadata").await?;
    require_metadata(&status.metadata, &metadata([("zone", "eu-2")])?, "member()")?;
    ensure!(
        status.forced_down,
        "set_metadata cleared the forced-down flag"
    );
    observer
        .set_forced_down(&g, "host-1", false)
        .await
        .ctx("set_forced_down(false)")?;

    m.set_metadata(Metadata::new())
        .await
        .ctx("set_metadata(empty)")?;
    let status = observer.member(&g, "host-1").await.ctx("member()")?;
    require_metadata(
        &status.metadata,
        &Metadata::new(),
        "member() after clearing the metadata",
    )?;
    ensure!(
        counters.registrations() == registrations,
        "set_metadata of a held record made {} registrations: it must update the record in place",
        counters.registrations() - registrations
    );
    ensure!(
        counters.set_metadata_calls() == 3,
        "three set_metadata calls reached the driver {} times",
        counters.set_metadata_calls()
    );
    Ok(())
}

pub(crate) async fn set_metadata_by_superseded_holder_is_conflict(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let a = ctx.connect().await?;
    let b = ctx.connect().await?;
    let md_a = metadata([("owner", "a")])?;
    let md_b = metadata([("owner", "b")])?;
    let old = a
        .join_with(&g, "host-1", with_metadata(JoinOptions::new(), &md_a))
        .await
        .ctx("join on A")?;
    let new = b
        .join_with(&g, "host-1", with_metadata(JoinOptions::new(), &md_b))
        .await
        .ctx("takeover by B")?;
    for attempt in ["first", "second"] {
        let err = expect_kind(
            format!("{attempt} set_metadata by the membership B took over"),
            old.set_metadata([("owner", "a-again")]).await,
            ErrorKind::Conflict,
        )?;
        ensure!(
            err.to_string().contains(&b.instance().to_string()),
            "the Conflict of a superseded set_metadata does not name the new holder {}: {err}",
            b.instance()
        );
        let status = require_holder(
            &observer,
            &g,
            "host-1",
            new.holder(),
            "after the refused set_metadata",
        )
        .await?;
        require_metadata(
            &status.metadata,
            &md_b,
            "member() after a superseded holder's set_metadata",
        )?;
    }
    ensure!(
        old.is_superseded(),
        "the membership whose set_metadata found the record held by B is not superseded"
    );
    let md = metadata([("owner", "b"), ("zone", "eu-1")])?;
    new.set_metadata(md.clone())
        .await
        .ctx("set_metadata by the new holder")?;
    let status = observer.member(&g, "host-1").await.ctx("member()")?;
    require_metadata(
        &status.metadata,
        &md,
        "member() after the new holder's set_metadata",
    )?;
    Ok(())
}

pub(crate) async fn metadata_survives_heartbeats_and_reregistration(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let (sg, counters) = ctx.connect_instrumented().await?;
    let md1 = metadata([("address", "10.0.0.1:8774"), ("note", "ünïcødé ✓")])?;
    let m = sg
        .join_with(&g, "host-1", with_metadata(JoinOptions::new(), &md1))
        .await
        .ctx("join_with")?;
    let calls = counters.heartbeat_calls();
    wait_heartbeat_calls(&ctx, &counters, calls + 3).await?;
    let status = observer.member(&g, "host-1").await.ctx("member()")?;
    require_metadata(&status.metadata, &md1, "member() after three heartbeats")?;

    let md2 = metadata([("address", "10.0.0.1:8775"), ("version", "2")])?;
    m.set_metadata(md2.clone()).await.ctx("set_metadata")?;
    let calls = counters.heartbeat_calls();
    wait_heartbeat_calls(&ctx, &counters, calls + 2).await?;
    let status = observer.member(&g, "host-1").await.ctx("member()")?;
    require_metadata(
        &status.metadata,
        &md2,
        "member() two heartbeats after set_metadata",
    )?;

    // The operator deletes the live record; the holder registers it again, with the
    // metadata it set last.
    let registrations = counters.registrations();
    observer
        .remove(&g, "host-1")
        .await
        .ctx("remove of a live member")?;
    let deadline = ctx.deadline(ctx.next_heartbeat_within() + ctx.t.report_interval);
    let status = loop {
        if counters.registrations() > registrations {
            match observer.member(&g, "host-1").await {
                Ok(status) => break status,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(CaseFailure::unexpected("member() after remove", &e)),
            }
        }
        deadline.check(|| {
            format!(
                "{g}/host-1 was removed while heartbeating and was not registered again \
                 (heartbeats reported missing: {:?})",
                counters.missing_reported()
            )
        })?;
        ctx.pause().await;
    };
    ensure!(
        counters.missing_reported().contains(&key_of(&g, "host-1")?),
        "{g}/host-1 came back without a heartbeat reporting it missing"
    );
    ensure!(
        status.holder.instance == sg.instance(),
        "the re-registered record is held by {}, expected the handle's instance {}",
        status.holder,
        sg.instance()
    );
    require_up(&status, "member() after re-registration")?;
    require_metadata(
        &status.metadata,
        &md2,
        "member() after the member registered again",
    )?;
    let listing = observer.members(&g).await.ctx("members()")?;
    let entry = super::support::listed(&listing, &g, "host-1")?;
    require_metadata(&entry.metadata, &md2, "members() after re-registration")?;
    Ok(())
}

pub(crate) async fn takeover_replaces_metadata(ctx: Ctx) -> CaseResult {
    let g = ctx.group("compute");
    let observer = ctx.connect().await?;
    let a = ctx.connect().await?;
    let b = ctx.connect().await?;
    let c = ctx.connect().await?;
    let md_a = metadata([
        ("address", "10.0.0.1:8774"),
        ("zone", "eu-1"),
        ("version", "28.0.0"),
    ])?;
    let md_b = metadata([("address", "10.0.0.2:8774"), ("build", "b")])?;
    let _ma = a
        .join_with(&g, "host-1", with_metadata(JoinOptions::new(), &md_a))
        .await
        .ctx("join on A")?;
    let mb = b
        .join_with(&g, "host-1", with_metadata(JoinOptions::new(), &md_b))
        .await
        .ctx("takeover by B")?;
    let status = require_holder(&observer, &g, "host-1", mb.holder(), "after B took over").await?;
    require_metadata(
        &status.metadata,
        &md_b,
        "member() after a takeover (the new holder's metadata replaces the old, never merged)",
    )?;
    let listing = observer.members(&g).await.ctx("members()")?;
    let entry = super::support::listed(&listing, &g, "host-1")?;
    require_metadata(&entry.metadata, &md_b, "members() after a takeover")?;

    let mc = c
        .join(&g, "host-1")
        .await
        .ctx("takeover by C without metadata")?;
    let status = require_holder(&observer, &g, "host-1", mc.holder(), "after C took over").await?;
    require_metadata(
        &status.metadata,
        &Metadata::new(),
        "member() after a takeover without metadata",
    )?;
    Ok(())
}
