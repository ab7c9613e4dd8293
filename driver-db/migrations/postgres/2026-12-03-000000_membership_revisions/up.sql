-- Each group's membership revision (servicegroup_core::Driver::revision): moved by
-- one, after the change is committed, by every registration, leave, remove,
-- metadata and forced-down change of the group's members, never by a heartbeat. A
-- watch compares it before and after asking for the down set and lists the whole
-- group only when it moved. A group without a row is at revision 0.
CREATE TABLE IF NOT EXISTS servicegroup_revisions (
    group_id VARCHAR(255) PRIMARY KEY,
    revision BIGINT       NOT NULL
);
