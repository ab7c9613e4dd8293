//! # servicegroup-docs
//!
//! The guides of servicegroup, compiled: every Rust code block in them is a doc
//! test, so `cargo test --doc -p servicegroup-docs` keeps the examples honest.
//! Read them on disk in `docs/` or here as modules.
#![deny(missing_docs)]

#[doc = include_str!("../architecture.md")]
pub mod architecture {}

#[doc = include_str!("../configuration.md")]
pub mod configuration {}

#[doc = include_str!("../operations.md")]
pub mod operations {}

#[doc = include_str!("../writing-a-driver.md")]
pub mod writing_a_driver {}
