-- One row per (group, member). `last_seen` is the last heartbeat in Unix epoch
-- seconds (REAL, sub-second) on the database's clock: written and judged with
-- unixepoch('subsec'), never with a client's clock.
-- AUTOINCREMENT: ids are never reused, so an id cached by a driver can never
-- point at another member after a delete.
-- No index on last_seen: heartbeats only touch the row.
CREATE TABLE IF NOT EXISTS servicegroup_members (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id    TEXT    NOT NULL,
    member_id   TEXT    NOT NULL,
    last_seen   REAL    NOT NULL,
    forced_down BOOLEAN NOT NULL DEFAULT 0,
    created_at  REAL    NOT NULL DEFAULT (unixepoch('subsec')),
    CONSTRAINT servicegroup_members_key UNIQUE (group_id, member_id)
);
