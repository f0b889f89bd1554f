-- Presence (docs/contract.md, "Round three"): one row per user, written whole with
-- a version (see crates/core/src/domain/presence.rs). check_at is when the record
-- needs attention by itself (a user online, an offline waiting for its grace,
-- events owed to a sink); NULL otherwise, so the index holds only those.
CREATE TABLE presence (
    user_id  TEXT    PRIMARY KEY,
    version  INTEGER NOT NULL,
    check_at TEXT,
    -- The record with the attribute names of the DynamoDB item, as JSON.
    item     TEXT    NOT NULL
);
CREATE INDEX presence_check_at ON presence (check_at) WHERE check_at IS NOT NULL;
