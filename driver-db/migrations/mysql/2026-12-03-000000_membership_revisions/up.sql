-- Each group's membership revision (servicegroup_core::Driver::revision): moved by
-- one, after the change is committed, by every registration, leave, remove,
-- metadata and forced-down change of the group's members, never by a heartbeat. A
-- watch compares it before and after asking for the down set and lists the whole
-- group only when it moved. A group without a row is at revision 0. Group ids
-- compare byte for byte, as in servicegroup_members.
CREATE TABLE IF NOT EXISTS servicegroup_revisions (
    group_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    revision BIGINT       NOT NULL,
    PRIMARY KEY (group_id)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
