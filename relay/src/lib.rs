//! # servicegroup-relay
//!
//! The server behind `servicegroup relay`: it runs one configured driver (any of
//! them, built through the [`servicegroup_core::Registry`] as
//! [`servicegroup_core::ServiceGroup::connect`] does) and serves the whole
//! `ServiceGroup` API to other processes over HTTP with JSON bodies under `/v1/`
//! (the contract is in `docs/relay.md`; the JSON objects are
//! [`servicegroup_core::json`]'s). The `relay` driver is its client.
//!
//! The relay is stateless: it holds no membership state beyond the requests in
//! flight and adds no clock (ages are the backend's), so killing one loses nothing and
//! several run behind a load balancer. Watches are the exception that proves the
//! rule: one backend poll per watched group per relay, fanned out to every watcher
//! ([`watch`]), gone when the last watcher leaves.
//!
//! Security: a bearer token on every call but `/healthz` ([`auth`]), TLS with rustls
//! (ring), plain HTTP without a token only on a loopback address with `insecure`
//! ([`RelayOptions::check`]); ids and metadata validated at the relay; a body size
//! limit; request and header-read timeouts.
#![deny(missing_docs)]

mod api;
pub mod auth;
mod body;
pub mod error;
pub mod options;
mod server;
pub mod watch;

pub use error::RelayError;
pub use options::{RelayOptions, TlsFiles};
pub use server::{Relay, RunningRelay};
