//! Fleet status for servicegroup: the numbers in Prometheus and a page to look at.
//!
//! - [`collector`]: one listing per watched group per interval, published as
//!   bounded per-group gauges (`servicegroup_members{group, state}` with state
//!   `up`, `down` or `forced_down`, the oldest heartbeat age of the members up,
//!   state changes) and kept as the latest [`collector::FleetView`].
//! - [`page`]: the status page, server-rendered (counts readable without
//!   JavaScript) and updated live by a small script, paged at 100 members per
//!   group so it stays usable at 100,000 members.
//! - [`server`]: the Prometheus recorder (the library's own metrics, see
//!   `servicegroup_core::metrics`, plus the collector's) and the router for
//!   `/metrics`, `/` and `/status.json`.
//!
//! `servicegroup exporter --listen ADDR [GROUP...]` is the thin front; the relay
//! serves the same on its `--status-listen` address ([`run`]).

pub mod collector;
pub mod page;
pub mod server;
pub mod snapshot;

pub use collector::{spawn as spawn_collector, CollectorOptions, FleetView, FleetWatch};
pub use server::{install_recorder, router, run, serve, ExporterError, StatusState};
