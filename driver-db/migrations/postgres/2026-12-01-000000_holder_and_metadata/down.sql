ALTER TABLE servicegroup_members
    DROP COLUMN IF EXISTS metadata,
    DROP COLUMN IF EXISTS holder_since,
    DROP COLUMN IF EXISTS epoch,
    DROP COLUMN IF EXISTS holder;
