//! # servicegroup-driver-relay
//!
//! The `relay` driver: implements [`servicegroup_core::Driver`] over HTTP against
//! `servicegroup relay` servers (the `servicegroup-relay` crate), so a process with
//! one member (a host) hands its heartbeats to a relay instead of holding a database
//! connection of its own. The relay runs the real driver; this one only carries
//! calls and passes the backend's facts (ages, holders, epochs) back.
//!
//! - `[relay] urls`: tried in order, starting with the one that answered last; a
//!   connect error, a broken connection or a 5xx answer moves on to the next.
//! - An unreachable relay is [`servicegroup_core::ErrorKind::Unavailable`] (or
//!   `Timeout`), never "down".
//! - Every driver instance of a process with the same target shares one HTTP
//!   connection pool (or one HTTP/2 connection, `relay.http2`) ([`client`]),
//!   bounded by `relay.max_connections`.
//!
//! Configuration: [`RelayConfig`] (`docs/relay.md`).
#![deny(missing_docs)]

pub mod client;
pub mod config;
mod driver;
mod record;

pub use client::heartbeat_requests;
pub use config::RelayConfig;
pub use driver::RelayDriver;

/// The name this driver is registered under.
pub const NAME: &str = "relay";

servicegroup_core::register_driver! {
    name: NAME,
    description: "servicegroup relay servers over HTTP (`servicegroup relay`; [relay] urls, token)",
    config: config::CONFIG,
    build: |config| Box::pin(async move {
        let options: RelayConfig = config.driver_config(NAME)?;
        Ok(std::sync::Arc::new(RelayDriver::connect(options).await?) as _)
    }),
}
