//! Every conformance case as a plain `pub async fn`, and the table [`CASES`].
//!
//! Each function takes a [`Fixture`] and returns `Ok(())` when the driver behaved,
//! or a [`CaseFailure`] saying what was observed and what was required. The
//! [`conformance_suite!`](crate::conformance_suite) macro runs each of them as its
//! own test; call them directly to run one case, or to check that a deliberately
//! broken driver fails it:
//!
//! ```
//! # async fn demo(fixture: servicegroup_conformance::Fixture) {
//! let result = servicegroup_conformance::cases::forced_down_wins_while_heartbeats_continue(fixture).await;
//! # let _ = result;
//! # }
//! ```
//!
//! A case checks its [`Need`]s first and fails with
//! [`FailureKind::MissingRequirement`](crate::FailureKind::MissingRequirement) when the
//! fixture lacks one.

mod cadence;
mod crash;
mod forced;
mod holder;
mod ids;
mod listing;
mod lookup;
mod membership;
mod metadata;
mod outage;
mod revision;
mod scale;
mod states;
mod support;
mod watch;

use crate::ctx::run;
use crate::failure::CaseFailure;
use crate::fixture::Fixture;
use crate::need::{CaseFuture, CaseInfo, Need};

/// The result of one case body.
pub(crate) type CaseResult = Result<(), CaseFailure>;

macro_rules! cases {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident needs [$($need:ident),*] => $body:path;
    )+) => {
        $(
            $(#[doc = $doc])+
            ///
            #[doc = concat!("Needs: ", $("[`Need::", stringify!($need), "`] ",)* "nothing beyond a configuration", ".")]
            pub async fn $name(fixture: Fixture) -> Result<(), CaseFailure> {
                run(stringify!($name), &[$(Need::$need),*], fixture, $body).await
            }
        )+

        /// Every case, in the order the macro emits them.
        pub const CASES: &[CaseInfo] = &[
            $(CaseInfo {
                name: stringify!($name),
                needs: &[$(Need::$need),*],
                summary: concat!($($doc, "\n"),+),
                run: {
                    fn boxed(fixture: Fixture) -> CaseFuture {
                        Box::pin($name(fixture))
                    }
                    boxed
                },
            },)+
        ];
    };
}

cases! {
    /// Right after `join` returns, the member is up on the joining handle and on another
    /// handle, listed up, has an update time, and its age is no more than the time since
    /// join started (plus the liveness resolution): join returns only once the first
    /// heartbeat is stored.
    join_is_visible_at_once needs [] => membership::join_is_visible_at_once;

    /// While a member heartbeats, its reported age never exceeds the time since the
    /// start of its latest successful heartbeat write (plus the resolution), in
    /// `member()` and in `members()`.
    live_member_age_is_small needs [] => membership::live_member_age_is_small;

    /// A heartbeating member stays up at every observation for more than twice
    /// `service_down_time`.
    heartbeats_keep_member_up_past_down_time needs [] => membership::heartbeats_keep_member_up_past_down_time;

    /// `get_updated_time` of a heartbeating member moves forward by the next heartbeat.
    get_updated_time_advances needs [] => membership::get_updated_time_advances;

    /// `leave` removes the member at once (not found, not listed, no update time) while
    /// other members stay, and later heartbeats of the handle do not bring it back.
    leave_removes_at_once needs [] => membership::leave_removes_at_once;

    /// Joining a member twice on one handle is `AlreadyJoined` and leaves the first
    /// membership working; after `leave` it can join again; another handle may take it over.
    join_twice_on_one_handle_is_already_joined needs [] => membership::join_twice_on_one_handle_is_already_joined;

    /// Two handles on the same configuration see each other's members, forced-down
    /// flags and leaves.
    two_handles_see_each_others_members needs [] => membership::two_handles_see_each_others_members;

    /// One member id in two groups is two independent members (forced down, leave).
    member_in_two_groups_is_independent needs [] => membership::member_in_two_groups_is_independent;

    /// A crashed member (heartbeats stopped, no leave) is up at every observation that
    /// ends before its last heartbeat + `service_down_time` - resolution, and down at
    /// every observation that starts after last heartbeat + `service_down_time` + resolution.
    crashed_member_is_up_until_down_time_then_down needs [] => crash::crashed_member_is_up_until_down_time_then_down;

    /// A crashed member that went down is still listed (down, not forced, with its last
    /// heartbeat and an age of at least `service_down_time`), keeps its group in
    /// `groups()`, and `is_up` answers `false`, not `NotFound`.
    crashed_member_is_listed_down_not_dropped needs [] => crash::crashed_member_is_listed_down_not_dropped;

    /// A member that crashed and went down is up at once when it joins again (a restart
    /// through a new handle), with a fresh age and one listing entry.
    rejoin_after_crash_is_up_at_once needs [] => crash::rejoin_after_crash_is_up_at_once;

    /// With `service_down_time <= report_interval` the handle uses `report_interval * 2.5`
    /// (Nova's rule), and a crashed member is judged by that: up past the configured
    /// down time, down after 2.5 intervals.
    down_time_not_above_report_interval_is_two_and_a_half_intervals needs [] => crash::down_time_not_above_report_interval_is_two_and_a_half_intervals;

    /// Forced down makes a heartbeating member down at once on every handle and in the
    /// listing, while its heartbeats go on (`get_updated_time` advances, age stays small).
    forced_down_wins_while_heartbeats_continue needs [] => forced::forced_down_wins_while_heartbeats_continue;

    /// A member forced down for longer than `service_down_time` is up at the very first
    /// observation after the flag is cleared, because its heartbeats went on.
    clearing_forced_down_makes_live_member_up_at_once needs [] => forced::clearing_forced_down_makes_live_member_up_at_once;

    /// The forced-down flag survives a crash and a rejoin (an operator's decision
    /// survives a restart); clearing it then makes the member up.
    forced_down_survives_rejoin needs [] => forced::forced_down_survives_rejoin;

    /// Setting or clearing forced down on an unknown member or group is `NotFound` and
    /// creates no record.
    forced_down_of_unknown_member_is_not_found needs [] => forced::forced_down_of_unknown_member_is_not_found;

    /// `is_up`, `get_updated_time` and `member` of an unknown member or group are
    /// `NotFound`, naming the member and the driver.
    unknown_member_is_not_found needs [] => lookup::unknown_member_is_not_found;

    /// `remove` of an unknown member, of an unknown group, or of a member that left is `NotFound`.
    remove_of_unknown_member_is_not_found needs [] => lookup::remove_of_unknown_member_is_not_found;

    /// `remove` (operator delete) of a crashed member deletes it at once and for good;
    /// removing it again is `NotFound`; its emptied group leaves `groups()`.
    removed_crashed_member_is_gone needs [] => lookup::removed_crashed_member_is_gone;

    /// `remove` of a live member: its next heartbeat reports it missing (the driver does
    /// not recreate records on heartbeat) and core registers it again, up within one
    /// report interval plus margin.
    removed_live_member_registers_again needs [] => lookup::removed_live_member_registers_again;

    /// An unknown group, and a group whose members all left, list empty (not an error)
    /// and are not in `groups()`.
    unknown_or_empty_group_lists_empty needs [] => listing::unknown_or_empty_group_lists_empty;

    /// `members()` is sorted by member id and holds only the group's own members.
    members_are_sorted_and_scoped_to_group needs [] => listing::members_are_sorted_and_scoped_to_group;

    /// `groups()` lists every group with a member (live or crashed), sorted, without
    /// duplicates, and drops a group once its last member left.
    groups_lists_groups_with_members needs [] => listing::groups_lists_groups_with_members;

    /// `members_in(group, state)` returns exactly the members the listing shows in that
    /// state (down: stale, expired or forced down), in member order with the same
    /// facts; `summary(group)` counts up, down and forced-down members (forced down
    /// counts once, as forced down) and follows a cleared flag at once; an unknown
    /// group is empty and counts zero.
    members_in_a_state_and_summary_agree_with_the_listing needs [] => states::members_in_a_state_and_summary_agree_with_the_listing;

    /// Bad member ids (empty, spaces, `\r\nflush_all`, control characters, 256 bytes,
    /// non-UTF-8 bytes) are `InvalidId` at every entry point, as `&str` and as `&[u8]`,
    /// and no driver call is made.
    invalid_member_ids_are_rejected needs [] => ids::invalid_member_ids_are_rejected;

    /// Bad group ids are `InvalidId` at every entry point (including `members` and
    /// `watch`), and no driver call is made.
    invalid_group_ids_are_rejected needs [] => ids::invalid_group_ids_are_rejected;

    /// Valid but awkward ids (255 bytes, multi-byte, `:` `/` `%` quotes, case
    /// differences, long ids differing in their last byte) round-trip exactly and never
    /// collide: forcing down or leaving one leaves its look-alike untouched.
    long_and_unusual_ids_round_trip_without_collisions needs [] => ids::long_and_unusual_ids_round_trip_without_collisions;

    /// 1,000 members on one handle are heartbeated in one driver call per tick carrying
    /// all 1,000 keys, no member is registered twice, and all are up after
    /// `service_down_time` (checked with an instrumenting driver wrapper).
    thousand_members_heartbeated_in_batches needs [] => scale::thousand_members_heartbeated_in_batches;

    /// A heartbeat batch of 1,000 members costs at most 10 backend operations (counted by
    /// the fixture's [`Fixture::with_heartbeat_ops`] hook), not one per member.
    heartbeat_batch_costs_few_backend_operations needs [HeartbeatOps] => scale::heartbeat_batch_costs_few_backend_operations;

    /// 8 handles joining 100 members each, concurrently: all 800 listed up, still up after
    /// `service_down_time`, and gone after they all leave concurrently.
    eight_handles_hundred_members_all_up needs [] => scale::eight_handles_hundred_members_all_up;

    /// A watch reports `Joined`, `Down` (crash), `Up` with `Replaced` (rejoin by a
    /// restarted process, a new instance) and `Left` (leave) of a member exactly once
    /// each, in order, and nothing else.
    watch_reports_each_transition_once needs [] => watch::watch_reports_each_transition_once;

    /// A watch reports forcing down as `Down` and clearing it as `Up`, once each.
    watch_reports_forced_down_and_clear needs [] => watch::watch_reports_forced_down_and_clear;

    /// With the backend unreachable every call (`is_up`, `member`, `get_updated_time`,
    /// `members`, `groups`, `set_forced_down`, `remove`, `join`, a watch) fails with
    /// `Unavailable` or `Timeout`, never an answer such as "down", "absent" or "empty";
    /// after the backend is back the member is up and joins work.
    outage_is_an_error_never_down needs [Outage] => outage::outage_is_an_error_never_down;

    /// The heartbeat loop notices an outage longer than `service_down_time`
    /// (`is_healthy()` turns false) and recovers by itself: within one report interval
    /// plus margin after the backend is back, every member is listed up again (no
    /// record lost) and stays up.
    heartbeats_recover_after_outage needs [Outage] => outage::heartbeats_recover_after_outage;

    /// An outage is logged once at WARN (`lost connection to <driver> backend`) and the
    /// recovery once at INFO (`recovered connection to <driver> backend`), however many
    /// ticks fail.
    outage_logs_lost_and_recovered_once needs [Outage, LogCapture] => outage::outage_logs_lost_and_recovered_once;

    /// Every handle is its own instance; a join of a live member from another handle
    /// (another instance, as a second process) takes it over: the new membership and
    /// the record (`member()` and `members()`, listed once) name the new instance with
    /// epoch 2, and a third instance makes it epoch 3; the member stays up throughout.
    second_join_elsewhere_takes_over_and_bumps_epoch needs [] => holder::second_join_elsewhere_takes_over_and_bumps_epoch;

    /// The epoch moves only when the holder changes: the holding instance joining again
    /// keeps the epoch and `holder_since`; a takeover adds one and moves `holder_since`
    /// forward; taking the member back from the second holder is a change again (epoch 3).
    epoch_moves_only_when_the_holder_changes needs [] => holder::epoch_moves_only_when_the_holder_changes;

    /// `member()` and `members()` report the holder (the joining handle's `instance()`,
    /// 32 lowercase hex digits, as the membership says), epoch 1 for a new member and a
    /// `holder_since` no later than the first heartbeat; heartbeats move the last
    /// heartbeat but never the holder or `holder_since`.
    holder_fields_are_listed needs [] => holder::holder_fields_are_listed;

    /// Fencing: after another instance took a member over, the old holder's heartbeats
    /// (its handle alive, heartbeating another member) no longer refresh the record.
    /// When the new holder crashes, the member is up until its last heartbeat +
    /// `service_down_time` and down after it (± resolution), still held by the new holder.
    superseded_holder_is_fenced needs [] => holder::superseded_holder_is_fenced;

    /// The old holder is told once: within one report interval plus margin
    /// `Membership::superseded()` resolves with the new holder's instance and epoch (and
    /// again at once when asked again), `is_superseded()` is true, the driver reported
    /// the member superseded exactly once, and the old handle neither heartbeats nor
    /// registers it again; the new holder is not told anything.
    superseded_holder_is_told needs [] => holder::superseded_holder_is_told;

    /// A takeover is logged exactly once at ERROR by the old holder
    /// (`<group>/<member> was taken over by instance <hex> (epoch 2); two processes claim one member`,
    /// with the field `driver`), however many ticks follow, and nothing else at ERROR.
    takeover_is_logged_once_at_error needs [LogCapture] => holder::takeover_is_logged_once_at_error;

    /// An exclusive join of a live member held by another instance (crashed, within its
    /// down time) is `Conflict`, naming the group, member, holder instance and epoch; it
    /// changes nothing (holder, epoch, metadata, last heartbeat, `holder_since`), the
    /// member goes down on time after the old holder's last heartbeat, and the refused
    /// handle can join normally afterwards (epoch 2).
    exclusive_join_of_live_member_held_elsewhere_is_conflict needs [] => holder::exclusive_join_of_live_member_held_elsewhere_is_conflict;

    /// An exclusive join of a member that is down takes it: epoch 2, the new instance,
    /// up at once, with the new metadata.
    exclusive_join_of_down_member_takes_it needs [] => holder::exclusive_join_of_down_member_takes_it;

    /// An exclusive join of a member with no record creates it with epoch 1 (up, with its
    /// metadata); an exclusive join by the instance that holds the live record takes it
    /// again (no conflict with itself), keeping epoch 1.
    exclusive_join_of_absent_member_creates_epoch_one needs [] => holder::exclusive_join_of_absent_member_creates_epoch_one;

    /// `leave` by a superseded holder, before or after it was told, leaves the new
    /// holder's record alone: still present, up, held by the new holder with its
    /// metadata, and the new holder's heartbeats never find it missing.
    leave_by_superseded_holder_leaves_new_holder_alone needs [] => holder::leave_by_superseded_holder_leaves_new_holder_alone;

    /// The forced-down flag survives a takeover; the new holder's heartbeats are stored
    /// while it is forced down, so clearing the flag makes the member up at once.
    forced_down_survives_takeover needs [] => holder::forced_down_survives_takeover;

    /// Metadata round-trips exactly in `Membership::metadata()`, `member()`, `members()`
    /// and the watch's `Joined` events: unicode (combining marks, emoji sequences,
    /// right-to-left, control characters including NUL, quotes, whitespace at both ends,
    /// an empty value), values of exactly 1024 bytes of 1-, 2-, 3- and 4-byte characters
    /// totalling exactly 4096 bytes, 32 entries with a 63-byte key, and no metadata.
    metadata_round_trips_exactly needs [] => metadata::metadata_round_trips_exactly;

    /// Metadata over the limits (33 entries, 64-byte / empty / upper-case / non-ASCII /
    /// spaced keys, 1025-byte values also of multi-byte characters, 4097 bytes in all, a
    /// key twice) is `InvalidMetadata` naming the key or rule, at `join_with` (plain
    /// and exclusive) and `set_metadata`, with no driver call made and nothing stored;
    /// the refused joins leave the member free to join.
    invalid_metadata_is_rejected_before_any_driver_call needs [] => metadata::invalid_metadata_is_rejected_before_any_driver_call;

    /// `set_metadata` replaces the metadata (no merge) and is visible on another handle
    /// as soon as it returns, in `member()` and `members()`; holder, epoch,
    /// `holder_since` and the forced-down flag stay; clearing it stores no metadata;
    /// no registration is made.
    set_metadata_is_visible_at_once needs [] => metadata::set_metadata_is_visible_at_once;

    /// `set_metadata` by a membership another instance took over is `Conflict` naming the
    /// new holder and changes nothing; the membership then reports itself superseded; the
    /// new holder's `set_metadata` works.
    set_metadata_by_superseded_holder_is_conflict needs [] => metadata::set_metadata_by_superseded_holder_is_conflict;

    /// Metadata survives heartbeats and re-registration by the same holder: after an
    /// operator's `remove` of the live member, it is registered again (reported missing
    /// by the heartbeat) with the metadata it set last.
    metadata_survives_heartbeats_and_reregistration needs [] => metadata::metadata_survives_heartbeats_and_reregistration;

    /// A takeover replaces the metadata with the new holder's exactly (keys of the old
    /// holder do not survive), and a takeover without metadata leaves none.
    takeover_replaces_metadata needs [] => metadata::takeover_replaces_metadata;

    /// A watch reports `set_metadata` as `Updated` exactly once, with the new metadata
    /// and the unchanged holder; heartbeats and storing the same metadata again are no
    /// event; clearing is `Updated` again.
    watch_reports_updated_once needs [] => watch::watch_reports_updated_once;

    /// A watch reports a takeover as `Replaced` exactly once, with the new holder and its
    /// metadata: not also `Updated`, no `Down`/`Up`, nothing while the old holder is
    /// fenced; a takeover with unchanged metadata is `Replaced` too; `Left` names the
    /// last holder.
    watch_reports_replaced_once needs [] => watch::watch_reports_replaced_once;

    /// A watch read with a timeout shorter than its polls (`timeout(watch_interval,
    /// watch.next())` in a loop, every group read slowed to four times that): a poll a
    /// cancelled `next` started resumes at the next call, so `Joined` and then `Down`
    /// of a crashed member still arrive in time, once each.
    watch_completes_polls_slower_than_the_callers_timeout needs [] => watch::watch_completes_polls_slower_than_the_callers_timeout;

    /// A driver's membership revision (`Driver::revision`, where it keeps one) moves with
    /// a join, `set_metadata`, setting and clearing forced down, a takeover, a leave and
    /// an operator's remove, each visible as soon as the call returned, and stays while
    /// heartbeats alone reach the driver.
    revision_moves_with_every_change_but_heartbeats needs [] => revision::revision_moves_with_every_change_but_heartbeats;

    /// A watch on a driver with a revision (and no change feed) sees a crashed member go
    /// down from down-set queries (`list_in`), listing the whole group at most once per
    /// `RESYNC_POLLS` polls while only ages change; a metadata change and the removal of a
    /// down member are listed at once (`Updated`, `Left`, never a false `Up`).
    watch_of_a_revision_driver_lists_only_after_changes needs [] => revision::watch_of_a_revision_driver_lists_only_after_changes;

    /// Heartbeat cadence: over 10 report intervals after the first tick, between 8 and
    /// 12 heartbeat calls reach the driver (ticks come every interval minus up to 10 %,
    /// the lower bound allowing two late ticks), and the stored heartbeat time moves at
    /// least 8 times: a loop skipping ticks, or a driver dropping writes, fails.
    heartbeats_arrive_at_report_interval needs [] => cadence::heartbeats_arrive_at_report_interval;
}

/// The entry of [`CASES`] called `name`.
pub fn info(name: &str) -> Option<&'static CaseInfo> {
    CASES.iter().find(|c| c.name == name)
}
