-- Reconnect recovery (docs/contract.md, "Round three"): per user, the head of the
-- outbox (the last sequence number given, the resumed connections) written whole
-- with a version, and the messages kept for the recovery window, removed by the
-- sweep once expired (DynamoDB removes them by TTL).
CREATE TABLE outbox_heads (
    user_id TEXT    PRIMARY KEY,
    version INTEGER NOT NULL,
    -- The head with the attribute names of the DynamoDB item, as JSON.
    item    TEXT    NOT NULL
);
CREATE TABLE outbox_messages (
    user_id       TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    -- The message with the attribute names of the DynamoDB item, as JSON.
    item          TEXT    NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX outbox_messages_expiry ON outbox_messages (expires_at_ms);
