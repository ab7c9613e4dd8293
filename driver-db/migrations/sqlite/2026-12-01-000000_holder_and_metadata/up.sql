-- Who holds a member and what it says about itself (core v2: instance ids, epochs,
-- fencing, metadata).
-- `holder` is the InstanceId of the handle holding the row: a 16-byte BLOB,
-- big-endian. `epoch` is 1 when a member is first registered and grows by one each
-- time another instance takes it over; heartbeats refresh a row only while the
-- beating instance holds it (fencing). `holder_since` is when the current holder
-- registered, in Unix epoch seconds on the database's clock (unixepoch('subsec')).
-- `metadata` is the member's map as a JSON object of strings
-- (servicegroup_core::Metadata::to_json, `{}` when empty).
-- Rows written before this migration get the nil instance and epoch 0 (the unknown
-- holder), no holder_since and no metadata.
-- No index on any of them: heartbeats only touch `last_seen` of the row.
ALTER TABLE servicegroup_members ADD COLUMN holder BLOB NOT NULL DEFAULT x'00000000000000000000000000000000';
ALTER TABLE servicegroup_members ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE servicegroup_members ADD COLUMN holder_since REAL;
ALTER TABLE servicegroup_members ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
