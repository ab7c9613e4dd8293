//! # servicegroup-conformance
//!
//! The one behaviour suite every servicegroup driver runs. It is written against
//! the public API of [`servicegroup_core`] only (`ServiceGroup`, `Membership`,
//! `JoinOptions`, `Metadata`, `Watch`, `Config`, `Registry`, `ErrorKind`), so a driver
//! that passes it behaves like every other driver: the same up/down verdicts at the
//! same times, the same holders and epochs, the same metadata, the same errors, the
//! same listings.
//!
//! ## What the cases cover
//!
//! [`CASES`] lists every case with what it checks; by topic:
//!
//! - **membership**: join visible at once (the first heartbeat stored before join
//!   returns), ages, heartbeats keeping a member up, `get_updated_time`, leave,
//!   `AlreadyJoined`, several handles, one member id in two groups;
//! - **liveness**: the `is_up` boundary of a crashed member on both sides (± the
//!   driver's `liveness_resolution`), crashed members listed down (not dropped),
//!   rejoin after a crash, Nova's `service_down_time <= report_interval` rule;
//! - **heartbeat cadence**: about one heartbeat per `report_interval` reaches the
//!   driver and is stored; 1,000 members in one call per tick; few backend operations
//!   per batch;
//! - **forced down**: wins over heartbeats, which go on; clearing; survives a rejoin
//!   and a takeover; unknown members;
//! - **lookups, listings, groups**: `NotFound`, operator `remove` (a live member
//!   registers again), sorted and scoped listings, `groups()`;
//! - **ids**: bad ids rejected at every entry point before any driver call; long and
//!   unusual ids round-trip without collisions;
//! - **who holds a member**: every handle is an instance (32 hex digits) stored in the
//!   records it registers, with an epoch and `holder_since`; a second join elsewhere
//!   takes over (epoch + 1); the old holder is fenced (its heartbeats no longer keep
//!   the record fresh), told once (`Membership::superseded()`, one ERROR log line) and
//!   cannot delete or update the new holder's record; exclusive joins are `Conflict`
//!   on a live member held elsewhere (changing nothing) and take a down or absent one;
//! - **metadata**: exact round trips (unicode, 1024-byte values, 32 entries, 4 KiB),
//!   limits rejected with `InvalidMetadata` before any driver call, `set_metadata`
//!   visible at once, kept across heartbeats and re-registration, replaced by a
//!   takeover;
//! - **watch**: `Joined`, `Left`, `Down`, `Up`, `Updated` and `Replaced`, each exactly
//!   once and nothing spurious;
//! - **outages**: "cannot tell" is `Unavailable`/`Timeout`, never "down"; the heartbeat
//!   loop heals by itself and logs the loss and the recovery once each;
//! - **scale**: many members on one handle, many handles at once.
//!
//! Handles of one case are built from one configuration, so they share a backend; each
//! is its own instance, exactly as separate processes would be.
//!
//! ## Running it on a driver: one macro call
//!
//! In a test file of the driver crate (`tests/conformance.rs`), write a setup
//! function that returns a **fresh, isolated** configuration (a [`Fixture`], a plain
//! [`servicegroup_core::Config`], or a `Result` of either) and call
//! [`conformance_suite!`]:
//!
//! ```
//! use servicegroup_conformance::{conformance_suite, unique_name, Fixture};
//! use servicegroup_core::{Config, Result};
//! // Name the driver crate, or the linker drops it and its registration.
//! use servicegroup_driver_inproc as _;
//!
//! async fn setup() -> Result<Fixture> {
//!     let name = unique_name("inproc");
//!     let mut config = Config::with_driver("inproc");
//!     config.set("inproc.name", &name)?;
//!     Ok(Fixture::new(config).with_outage_switch(move |reachable| {
//!         servicegroup_driver_inproc::set_reachable(&name, reachable);
//!         async { Ok(()) }
//!     }))
//! }
//!
//! conformance_suite!(inproc, setup, skip: {
//!     heartbeat_batch_costs_few_backend_operations: "the in-process store has no backend operations to count",
//! });
//! # fn main() {}
//! ```
//!
//! This expands to a module `inproc` with one `#[test]` per case, so each case is
//! its own named test (`inproc::join_is_visible_at_once`, ...) in `cargo test` and
//! `cargo nextest` output. Different backends call the macro with different module
//! names (`sqlite`, `postgres`, `mc_single`, ...).
//!
//! The setup function runs once per case, inside the case's tokio runtime (so pools
//! and servers it starts belong to that case). Every handle of a case is built from
//! the fixture's configuration with the case [`Timings`] applied
//! (`report_interval` 200 ms, `service_down_time` 1 s, `call_timeout` 1 s by default),
//! so handles of one case share a backend and cases never see each other.
//!
//! ## Skips are declared, never silent
//!
//! Some cases need more than a configuration ([`Need`]): an outage hook, a counter of
//! backend operations, the suite's log capture. A case whose need the fixture does
//! not meet **fails** with a message naming the hook and how to declare the skip.
//! A driver that cannot support a case declares it in the macro with a reason:
//!
//! ```text
//! conformance_suite!(mc, setup, skip: { outage_logs_lost_and_recovered_once: "why" });
//! ```
//!
//! A declared case is emitted as `#[ignore = "why"]`, so runners report it as
//! ignored/skipped with the reason, never as passed. `cargo test -- --ignored` runs it
//! anyway, for real. A misspelled case name in `skip:` is a compile error.
//!
//! ## The clock
//!
//! By default cases run in real time on a multi-thread runtime. A driver whose
//! [`Capabilities::follows_tokio_clock`](servicegroup_core::Capabilities) is true may
//! add `clock: paused` (before `skip:`): cases then run on tokio's paused clock and
//! finish almost at once, deterministically. Timing assertions use the driver's
//! `liveness_resolution` as their margin and are only made where the verdict is
//! certain; nothing depends on a lucky sleep.
//!
//! ## One case at a time
//!
//! Every case is also a plain `pub async fn` in [`cases`] taking a [`Fixture`] and
//! returning `Result<(), CaseFailure>`: run one case in your own test, or check that
//! a deliberately broken driver fails it (this crate's `tests/broken_drivers.rs`
//! does). [`CASES`] lists every case with its needs and what it checks.
#![deny(missing_docs)]

pub mod cases;
mod ctx;
mod failure;
mod fixture;
pub mod instrument;
pub mod logs;
mod need;
mod observe;
pub mod proxy;
mod runner;

pub use async_trait::async_trait;
pub use cases::CASES;
pub use failure::{CaseFailure, FailureKind};
pub use fixture::{
    unique_name, Fixture, HeartbeatOps, IntoFixture, Outage, OutageSwitch, SetupFuture, Timings,
};
pub use need::{CaseFuture, CaseInfo, Need};
pub use runner::{run_case, Clock};

/// `docs/writing-a-driver.md`, compiled here so its examples stay correct (they use
/// this crate, `servicegroup-core`, the inproc driver, chrono and tokio).
#[cfg(doctest)]
#[doc = include_str!("../../docs/writing-a-driver.md")]
pub struct WritingADriverGuide;

/// Runs the whole conformance suite on a driver: one `#[test]` per case in a module
/// called `$name`.
///
/// ```text
/// conformance_suite!(NAME, SETUP);
/// conformance_suite!(NAME, SETUP, clock: paused);
/// conformance_suite!(NAME, SETUP, skip: { CASE: "reason", ... });
/// conformance_suite!(NAME, SETUP, clock: paused, skip: { CASE: "reason", ... });
/// ```
///
/// - `NAME`: the module name, and so the test name prefix (`sqlite`, `mc_multi`, ...).
/// - `SETUP`: an expression callable as `SETUP()` returning a future whose output is
///   [`IntoFixture`] (a [`Fixture`], a `Config`, or a `Result` of either); usually the
///   name of an `async fn` in scope.
/// - `clock: paused` runs every case on tokio's paused clock (only for drivers that
///   follow it; see [`Clock`]); `clock: real` is the default.
/// - `skip: { CASE: "reason", ... }` marks cases the driver cannot run: they are
///   emitted as `#[ignore = "reason"]`. Names are checked at compile time.
///
/// The module also holds `CASE_NAMES` (every case, in order) and `DECLARED_SKIPS`.
#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, $setup:expr $(,)?) => {
        $crate::conformance_suite!(@emit ($) $name, $setup, Real, {});
    };
    ($name:ident, $setup:expr, clock: real $(,)?) => {
        $crate::conformance_suite!(@emit ($) $name, $setup, Real, {});
    };
    ($name:ident, $setup:expr, clock: paused $(,)?) => {
        $crate::conformance_suite!(@emit ($) $name, $setup, Paused, {});
    };
    ($name:ident, $setup:expr, skip: { $($skip:ident : $reason:literal),* $(,)? } $(,)?) => {
        $crate::conformance_suite!(@emit ($) $name, $setup, Real, { $($skip : $reason),* });
    };
    ($name:ident, $setup:expr, clock: real, skip: { $($skip:ident : $reason:literal),* $(,)? } $(,)?) => {
        $crate::conformance_suite!(@emit ($) $name, $setup, Real, { $($skip : $reason),* });
    };
    ($name:ident, $setup:expr, clock: paused, skip: { $($skip:ident : $reason:literal),* $(,)? } $(,)?) => {
        $crate::conformance_suite!(@emit ($) $name, $setup, Paused, { $($skip : $reason),* });
    };
    (@emit ($d:tt) $name:ident, $setup:expr, $clock:ident, { $($skip:ident : $reason:literal),* }) => {
        mod $name {
            #![allow(unused_imports)]
            use super::*;
            // A misspelled skip is a compile error here.
            $(use $crate::cases::$skip as _;)*

            macro_rules! __servicegroup_conformance_case {
                $(
                    ($skip) => {
                        #[test]
                        #[ignore = $reason]
                        fn $skip() {
                            $crate::run_case(
                                stringify!($skip),
                                $crate::Clock::$clock,
                                ::std::option::Option::Some($reason),
                                $setup,
                                $crate::cases::$skip,
                            );
                        }
                    };
                )*
                ($d case:ident) => {
                    #[test]
                    fn $d case() {
                        $crate::run_case(
                            stringify!($d case),
                            $crate::Clock::$clock,
                            ::std::option::Option::None,
                            $setup,
                            $crate::cases::$d case,
                        );
                    }
                };
            }

            /// The skips declared for this suite: (case, reason).
            pub const DECLARED_SKIPS: &[(&str, &str)] = &[$((stringify!($skip), $reason)),*];

            $crate::__servicegroup_conformance_cases!(__servicegroup_conformance_case);
        }
    };
}

/// The list of cases, applied to a callback macro in scope at the call site, plus
/// the `CASE_NAMES` constant. Internal to [`conformance_suite!`]; keep in step with
/// [`CASES`] (a test checks it).
#[doc(hidden)]
#[macro_export]
macro_rules! __servicegroup_conformance_cases {
    ($cb:ident) => {
        $crate::__servicegroup_conformance_cases!(@list $cb
            join_is_visible_at_once
            live_member_age_is_small
            heartbeats_keep_member_up_past_down_time
            get_updated_time_advances
            leave_removes_at_once
            join_twice_on_one_handle_is_already_joined
            two_handles_see_each_others_members
            member_in_two_groups_is_independent
            crashed_member_is_up_until_down_time_then_down
            crashed_member_is_listed_down_not_dropped
            rejoin_after_crash_is_up_at_once
            down_time_not_above_report_interval_is_two_and_a_half_intervals
            forced_down_wins_while_heartbeats_continue
            clearing_forced_down_makes_live_member_up_at_once
            forced_down_survives_rejoin
            forced_down_of_unknown_member_is_not_found
            unknown_member_is_not_found
            remove_of_unknown_member_is_not_found
            removed_crashed_member_is_gone
            removed_live_member_registers_again
            unknown_or_empty_group_lists_empty
            members_are_sorted_and_scoped_to_group
            groups_lists_groups_with_members
            members_in_a_state_and_summary_agree_with_the_listing
            invalid_member_ids_are_rejected
            invalid_group_ids_are_rejected
            long_and_unusual_ids_round_trip_without_collisions
            thousand_members_heartbeated_in_batches
            heartbeat_batch_costs_few_backend_operations
            eight_handles_hundred_members_all_up
            watch_reports_each_transition_once
            watch_reports_forced_down_and_clear
            outage_is_an_error_never_down
            heartbeats_recover_after_outage
            outage_logs_lost_and_recovered_once
            second_join_elsewhere_takes_over_and_bumps_epoch
            epoch_moves_only_when_the_holder_changes
            holder_fields_are_listed
            superseded_holder_is_fenced
            superseded_holder_is_told
            takeover_is_logged_once_at_error
            exclusive_join_of_live_member_held_elsewhere_is_conflict
            exclusive_join_of_down_member_takes_it
            exclusive_join_of_absent_member_creates_epoch_one
            leave_by_superseded_holder_leaves_new_holder_alone
            forced_down_survives_takeover
            metadata_round_trips_exactly
            invalid_metadata_is_rejected_before_any_driver_call
            set_metadata_is_visible_at_once
            set_metadata_by_superseded_holder_is_conflict
            metadata_survives_heartbeats_and_reregistration
            takeover_replaces_metadata
            watch_reports_updated_once
            watch_reports_replaced_once
            watch_completes_polls_slower_than_the_callers_timeout
            revision_moves_with_every_change_but_heartbeats
            watch_of_a_revision_driver_lists_only_after_changes
            heartbeats_arrive_at_report_interval
        );
    };
    (@list $cb:ident $($case:ident)*) => {
        $($cb!($case);)*
        /// Every case of the suite, in order.
        pub const CASE_NAMES: &[&str] = &[$(stringify!($case)),*];
    };
}
