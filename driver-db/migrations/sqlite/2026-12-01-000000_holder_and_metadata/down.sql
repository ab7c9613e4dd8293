ALTER TABLE servicegroup_members DROP COLUMN metadata;
ALTER TABLE servicegroup_members DROP COLUMN holder_since;
ALTER TABLE servicegroup_members DROP COLUMN epoch;
ALTER TABLE servicegroup_members DROP COLUMN holder;
