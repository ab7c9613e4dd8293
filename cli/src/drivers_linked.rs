//! The drivers linked into this binary, and what the CLI shows about their defaults.
//!
//! The `servicegroup` facade names each enabled driver crate, so its
//! `register_driver!` entry is linked (see the registry's linker note).

/// Where the `db` driver keeps its data when no `db.url` is configured, as a URL.
pub fn default_sqlite_location() -> Option<String> {
    None
}
