-- Connection leases (MAX_CONNECTIONS_PER_USER): one row per user, written whole
-- with a version (see src/domain/lease.rs).
CREATE TABLE leases (
    user_id TEXT    PRIMARY KEY,
    version INTEGER NOT NULL,
    -- The leases with the attribute names of the DynamoDB item, as JSON.
    item    TEXT    NOT NULL
);
