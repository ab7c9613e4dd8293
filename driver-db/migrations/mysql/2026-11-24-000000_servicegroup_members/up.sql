-- One row per (group, member). `last_seen` is the last heartbeat on the database
-- server's clock (NOW(6), microseconds; the driver's sessions run in UTC), and ages
-- are computed in SQL as TIMESTAMPDIFF(MICROSECOND, last_seen, NOW(6)): never a
-- client's clock.
-- utf8mb4 with the binary collation, so ids compare byte for byte as on the other
-- backends ('A' != 'a', trailing spaces count). The unique key is 2 x 255 x 4 =
-- 2,040 bytes, inside InnoDB's 3,072-byte limit for the DYNAMIC row format.
-- AUTO_INCREMENT ids are never reused (InnoDB persists the counter since MariaDB
-- 10.2.4 / MySQL 8.0), so an id cached by a driver never points at another member.
-- No index on last_seen: heartbeats only touch the row.
CREATE TABLE IF NOT EXISTS servicegroup_members (
    id          BIGINT       NOT NULL AUTO_INCREMENT,
    group_id    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    member_id   VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    last_seen   DATETIME(6)  NOT NULL,
    forced_down BOOLEAN      NOT NULL DEFAULT FALSE,
    created_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (id),
    CONSTRAINT servicegroup_members_key UNIQUE KEY (group_id, member_id)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
