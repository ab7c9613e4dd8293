-- One row per (group, member). `last_seen` is the last heartbeat on the database
-- server's clock (now()), and ages are computed in SQL as now() - last_seen:
-- never a client's clock.
-- No index on last_seen and a fillfactor below 100, so heartbeat UPDATEs stay
-- HOT (heap-only: no index is touched).
CREATE TABLE IF NOT EXISTS servicegroup_members (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id    VARCHAR(255) NOT NULL,
    member_id   VARCHAR(255) NOT NULL,
    last_seen   TIMESTAMPTZ  NOT NULL,
    forced_down BOOLEAN      NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT servicegroup_members_key UNIQUE (group_id, member_id)
) WITH (fillfactor = 80);
