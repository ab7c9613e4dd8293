-- Who holds a member and what it says about itself (core v2: instance ids, epochs,
-- fencing, metadata).
-- `holder` is the InstanceId of the handle holding the row: BINARY(16), big-endian.
-- `epoch` is 1 when a member is first registered and grows by one each time another
-- instance takes it over; heartbeats refresh a row only while the beating instance
-- holds it (fencing). `holder_since` is when the current holder registered, on the
-- server's clock (NOW(6), UTC sessions). `metadata` is the member's map as a JSON
-- object of strings (servicegroup_core::Metadata::to_json, `{}` when empty; at most
-- 4,096 bytes of keys and values, so TEXT's 65,535 bytes hold it even fully escaped).
-- TEXT's default is written as an expression, the form MySQL 8.0.13+ and MariaDB
-- 10.2+ both accept.
-- Rows written before this migration get the nil instance and epoch 0 (the unknown
-- holder), no holder_since and no metadata.
-- No index on any of them: heartbeats only touch `last_seen` of the row.
ALTER TABLE servicegroup_members
    ADD COLUMN holder       BINARY(16)  NOT NULL DEFAULT X'00000000000000000000000000000000',
    ADD COLUMN epoch        BIGINT      NOT NULL DEFAULT 0,
    ADD COLUMN holder_since DATETIME(6) NULL,
    ADD COLUMN metadata     TEXT        NOT NULL DEFAULT ('{}');
