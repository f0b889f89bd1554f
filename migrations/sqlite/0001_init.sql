-- The embedded store: the ledger, its change feed, the views, and checkpoints.
-- Applied once, in order, by `SqliteStore::open` (PRAGMA user_version counts them).

CREATE TABLE events (
    -- The change feed: a monotonic sequence, the order appends were committed in.
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    expires_at    INTEGER,
    -- The event with the attribute names of DESIGN.md, as JSON.
    item          TEXT    NOT NULL,
    UNIQUE (connection_id, event_id)
);
CREATE INDEX events_by_user ON events (user_id, event_id);
CREATE INDEX events_by_event_id ON events (event_id);

CREATE TABLE views (
    connection_id TEXT    PRIMARY KEY,
    user_id       TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    -- Only while connected: the live-connections index of the sweep.
    live_until    TEXT,
    version       INTEGER NOT NULL,
    -- The seed's ConnectionInfo and the projection's fields, as JSON.
    item          TEXT    NOT NULL
);
CREATE INDEX views_by_user ON views (user_id, created_at, connection_id);
CREATE INDEX views_live ON views (live_until, connection_id) WHERE live_until IS NOT NULL;

-- How far each change-feed consumer has got.
CREATE TABLE checkpoints (
    name TEXT    PRIMARY KEY,
    seq  INTEGER NOT NULL
);
