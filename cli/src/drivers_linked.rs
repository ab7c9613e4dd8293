//! The drivers linked into this binary, and what the CLI shows about their defaults.
//!
//! The `servicegroup` facade names each enabled driver crate (features `inproc`, `db`
//! with `sqlite` and `postgres`, `mc`), so its `register_driver!` entry is linked
//! (see the registry's linker note).

/// Where the `db` driver keeps its data when no `db.url` is configured, as a
/// `sqlite://` URL (`None` when neither `XDG_STATE_HOME` nor `HOME` gives a path).
pub fn default_sqlite_location() -> Option<String> {
    servicegroup::db::default_sqlite_path()
        .ok()
        .map(|p| format!("sqlite://{}", p.display()))
}
