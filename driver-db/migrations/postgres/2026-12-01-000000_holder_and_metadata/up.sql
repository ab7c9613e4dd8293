-- Who holds a member and what it says about itself (core v2: instance ids, epochs,
-- fencing, metadata).
-- `holder` is the InstanceId of the handle holding the row: 16 bytes, big-endian
-- (bytea: 17 bytes on disk with its header; `\x…` shows the id's 32 hex digits).
-- `epoch` is 1 when a member is first registered and grows by one each time another
-- instance takes it over; heartbeats refresh a row only while the beating instance
-- holds it (fencing). `holder_since` is when the current holder registered, on the
-- server's clock (now()). `metadata` is the member's map as a JSON object of strings
-- (servicegroup_core::Metadata::to_json, `{}` when empty).
-- Rows written before this migration get the nil instance and epoch 0 (the unknown
-- holder), no holder_since and no metadata. Constant defaults: PostgreSQL 11+ adds
-- the columns without rewriting the table.
-- No index on any of them: the heartbeat UPDATE (`last_seen` only) stays HOT, and
-- registrations, which write these columns, touch no indexed column either.
ALTER TABLE servicegroup_members
    ADD COLUMN holder       BYTEA       NOT NULL DEFAULT '\x00000000000000000000000000000000'::bytea,
    ADD COLUMN epoch        BIGINT      NOT NULL DEFAULT 0,
    ADD COLUMN holder_since TIMESTAMPTZ,
    ADD COLUMN metadata     TEXT        NOT NULL DEFAULT '{}';
