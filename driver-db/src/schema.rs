//! The `servicegroup_members` table as diesel sees it, per backend (the SQL types
//! of the time columns differ: `TIMESTAMPTZ` on PostgreSQL, `REAL` epoch seconds on
//! SQLite; MySQL's `DATETIME(6)` table lives in `backend/mysql.rs`). The migrations
//! under `migrations/<backend>/` create it.

/// The table name, as used in raw SQL and docs.
pub const TABLE: &str = "servicegroup_members";

/// PostgreSQL: `last_seen TIMESTAMPTZ` written with `now()`, `holder BYTEA` (16 bytes).
#[cfg(feature = "postgres")]
pub(crate) mod pg {
    diesel::table! {
        servicegroup_members (id) {
            id -> BigInt,
            group_id -> Text,
            member_id -> Text,
            last_seen -> Timestamptz,
            forced_down -> Bool,
            created_at -> Timestamptz,
            holder -> Binary,
            epoch -> BigInt,
            holder_since -> Nullable<Timestamptz>,
            metadata -> Text,
        }
    }
}

/// SQLite: `last_seen REAL`, Unix epoch seconds written with `unixepoch('subsec')`,
/// `holder BLOB` (16 bytes).
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite {
    diesel::table! {
        servicegroup_members (id) {
            id -> BigInt,
            group_id -> Text,
            member_id -> Text,
            last_seen -> Double,
            forced_down -> Bool,
            created_at -> Double,
            holder -> Binary,
            epoch -> BigInt,
            holder_since -> Nullable<Double>,
            metadata -> Text,
        }
    }
}

/// The `servicegroup_revisions` table (every backend): one row per group whose
/// membership changed, its revision moved by every change but heartbeats
/// ([`servicegroup_core::Driver::revision`]).
pub(crate) mod revisions {
    diesel::table! {
        servicegroup_revisions (group_id) {
            group_id -> Text,
            revision -> BigInt,
        }
    }
}
