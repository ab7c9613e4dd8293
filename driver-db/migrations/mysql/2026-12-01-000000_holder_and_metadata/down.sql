ALTER TABLE servicegroup_members
    DROP COLUMN metadata,
    DROP COLUMN holder_since,
    DROP COLUMN epoch,
    DROP COLUMN holder;
