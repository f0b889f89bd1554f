//! The embedded store: the event store, the view store and a change feed in one
//! SQLite file (WAL mode, so other processes can read it while `serve` writes).
//!
//! rusqlite is blocking, so every call runs on the blocking pool with the one
//! connection of this process. Items are the shared stored shape
//! (`adapters::item`) as JSON; the columns beside them are index keys.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;

use crate::adapters::stored::{EventItem, LeasesItem, ViewItem, corrupt};
use crate::domain::lease::UserLeases;
use crate::domain::{
    ConnectionId, ConnectionInfo, ConnectionStatus, EventEnvelope, EventId, TimeRange, Timestamp, UserId,
};
use crate::ports::{
    AppendOutcome, Cause, EventStore, LeaseStore, Page, PageRequest, StoreError, VersionedView, ViewCursor, ViewStore,
};
use crate::ports::{Change, ChangeRecord};
use crate::sync::lock;

/// The migrations of `migrations/sqlite`, in order.
const MIGRATIONS: [&str; 4] = [
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_leases.sql"),
    include_str!("../../migrations/sqlite/0003_presence.sql"),
    include_str!("../../migrations/sqlite/0004_outbox.sql"),
];

mod outbox;
mod presence;

fn sql_error(error: rusqlite::Error) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(failure.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
        {
            StoreError::Throttled(Cause::caused_by("SQLite is busy", error))
        }
        _ => StoreError::Other(Cause::caused_by("SQLite", error)),
    }
}

fn decode_event(json: &str) -> Result<EventEnvelope, StoreError> {
    let item: EventItem = serde_json::from_str(json).map_err(|error| corrupt(format!("event item: {error}")))?;
    EventEnvelope::try_from(item)
}

fn decode_view(json: &str) -> Result<VersionedView, StoreError> {
    let item: ViewItem = serde_json::from_str(json).map_err(|error| corrupt(format!("view item: {error}")))?;
    VersionedView::try_from(item)
}

fn encode<T: serde::Serialize>(item: &T) -> Result<String, StoreError> {
    serde_json::to_string(item).map_err(|error| StoreError::Other(Cause::caused_by("encoding an item", error)))
}

/// A view listing cursor: the sort key and the connection id of the last view seen.
fn encode_cursor(sort: &str, connection_id: &str) -> ViewCursor {
    ViewCursor(format!("{sort}|{connection_id}"))
}

fn decode_cursor(cursor: &ViewCursor) -> Result<(String, String), StoreError> {
    cursor
        .0
        .split_once('|')
        .map(|(sort, id)| (sort.to_owned(), id.to_owned()))
        .ok_or_else(|| StoreError::Other(format!("invalid view cursor {:?}", cursor.0).into()))
}

/// View rows that could not be decoded: each is logged once, counted, and then
/// treated as absent, so nothing that reads views (the projector, the sweep, the
/// dashboard) stops on it. The next write of that connection's view replaces it.
#[derive(Debug, Default)]
struct CorruptViews {
    /// Connection id → the version of its undecodable row (what a replacement must match).
    rows: Mutex<HashMap<String, i64>>,
    /// Connections whose view was replaced from a partial fold and should be
    /// re-folded from their whole history (see [`SqliteStore::take_repairs`]).
    repairs: Mutex<Vec<ConnectionId>>,
    seen: AtomicU64,
}

impl CorruptViews {
    fn observe(&self, connection_id: &str, version: i64, error: &StoreError) {
        if lock(&self.rows).insert(connection_id.to_owned(), version).is_none() {
            self.seen.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                connection_id,
                %error,
                "a view row cannot be decoded; treating it as absent (the next event or `wsledger rebuild` replaces it)"
            );
        }
    }

    /// Decodes a view row, or observes it as corrupt and gives `None`.
    fn decode(&self, connection_id: &str, version: i64, json: &str) -> Option<VersionedView> {
        match decode_view(json) {
            Ok(view) => Some(view),
            Err(error) => {
                self.observe(connection_id, version, &error);
                None
            }
        }
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    path: PathBuf,
    appended: Arc<Notify>,
    corrupt: Arc<CorruptViews>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and applies its migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        // The ledger holds every user's ids, addresses and user agents: the file is
        // created 0600 (SQLite gives its WAL and shared-memory files the same mode).
        let unavailable = |error: std::io::Error| {
            StoreError::Unavailable(Cause::caused_by(format!("opening {}", path.display()), error))
        };
        crate::private_files::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(unavailable)?;
        for file in [path.clone(), sqlite_sibling(&path, "-wal"), sqlite_sibling(&path, "-shm")] {
            if file.exists() {
                crate::private_files::restrict(&file).map_err(unavailable)?;
            }
        }
        let mut connection = Connection::open(&path)
            .map_err(|error| StoreError::Unavailable(Cause::caused_by(format!("opening {}", path.display()), error)))?;
        connection.busy_timeout(Duration::from_secs(5)).map_err(sql_error)?;
        connection.pragma_update(None, "journal_mode", "WAL").map_err(sql_error)?;
        connection.pragma_update(None, "synchronous", "NORMAL").map_err(sql_error)?;
        migrate(&mut connection)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            path,
            appended: Arc::new(Notify::new()),
            corrupt: Arc::new(CorruptViews::default()),
        })
    }

    /// How many undecodable view rows this process has come across.
    pub fn corrupt_views(&self) -> u64 {
        self.corrupt.seen.load(Ordering::Relaxed)
    }

    /// The connections whose undecodable view was replaced since the last call:
    /// their views were folded from the events at hand only, and are best re-folded
    /// from their whole history (`projection::rebuild_connection`).
    pub fn take_repairs(&self) -> Vec<ConnectionId> {
        std::mem::take(&mut *lock(&self.corrupt.repairs))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Notified after every append that wrote something (in this process).
    pub fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    async fn with<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the connection leaves it usable (an open
            // transaction rolled back as it unwound), so a poisoned lock is recovered.
            work(&mut lock(&connection))
        })
        .await
        .map_err(|error| StoreError::Other(Cause::caused_by("SQLite task", error)))?
    }

    fn select_events(
        connection: &Connection,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
        limit: usize,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        let mut statement = connection.prepare_cached(sql).map_err(sql_error)?;
        let rows = statement.query_map(params, |row| row.get::<_, String>(0)).map_err(sql_error)?;
        let mut events = Vec::new();
        for row in rows {
            events.push(decode_event(&row.map_err(sql_error)?)?);
        }
        let more = events.len() > limit;
        events.truncate(limit);
        let next = if more { events.last().map(|event| event.event_id) } else { None };
        Ok(Page { items: events, next })
    }

    async fn events_in_range(
        &self,
        column: Option<(&'static str, String)>,
        range: TimeRange,
        page: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        let Some((lowest, highest)) = EventId::bounds(range, page.after) else {
            return Ok(Page { items: Vec::new(), next: None });
        };
        let limit = page.limit;
        let now = Timestamp::now().epoch_seconds();
        self.with(move |connection| {
            let (lowest, highest) = (lowest.to_string(), highest.to_string());
            let fetch = (limit + 1) as i64;
            match column {
                Some((column, key)) => {
                    let sql = format!(
                        "SELECT item FROM events WHERE {column} = ?1 AND event_id BETWEEN ?2 AND ?3 \
                         AND (expires_at IS NULL OR expires_at > ?4) ORDER BY event_id LIMIT ?5"
                    );
                    Self::select_events(connection, &sql, params![key, lowest, highest, now, fetch], limit)
                }
                None => Self::select_events(
                    connection,
                    "SELECT item FROM events WHERE event_id BETWEEN ?1 AND ?2 \
                     AND (expires_at IS NULL OR expires_at > ?3) ORDER BY event_id LIMIT ?4",
                    params![lowest, highest, now, fetch],
                    limit,
                ),
            }
        })
        .await
    }

    /// The change feed: up to `limit` appended events after sequence `after`.
    pub async fn changes_after(&self, after: i64, limit: usize) -> Result<Vec<ChangeRecord>, StoreError> {
        self.with(move |connection| {
            let mut statement = connection
                .prepare_cached("SELECT seq, item FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .map_err(sql_error)?;
            let rows = statement
                .query_map(params![after, limit as i64], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))
                .map_err(sql_error)?;
            let mut records = Vec::new();
            for row in rows {
                let (seq, item) = row.map_err(sql_error)?;
                let change = match decode_event(&item) {
                    Ok(event) => Change::Appended(event),
                    Err(error) => Change::Poison(error.to_string()),
                };
                records.push(ChangeRecord {
                    record_id: seq.to_string(),
                    sequence_number: Some(seq.to_string()),
                    change,
                });
            }
            Ok(records)
        })
        .await
    }

    /// Where the change-feed consumer `name` has got (0: nowhere yet).
    pub async fn checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        let name = name.to_owned();
        self.with(move |connection| {
            connection
                .query_row("SELECT seq FROM checkpoints WHERE name = ?1", params![name], |row| row.get(0))
                .optional()
                .map(|seq| seq.unwrap_or(0))
                .map_err(sql_error)
        })
        .await
    }

    pub async fn set_checkpoint(&self, name: &str, seq: i64) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.with(move |connection| {
            connection
                .execute(
                    "INSERT INTO checkpoints (name, seq) VALUES (?1, ?2) \
                     ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                    params![name, seq],
                )
                .map(|_| ())
                .map_err(sql_error)
        })
        .await
    }

    /// Writes many events in one transaction (existing ones are left as they are).
    /// For imports and benchmarks; the application appends through [`EventStore::append`].
    pub async fn bulk_load(&self, events: &[EventEnvelope]) -> Result<(), StoreError> {
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            rows.push((
                event.connection_id.to_string(),
                event.event_id.to_string(),
                event.user_id.to_string(),
                event.expires_at,
                encode(&EventItem::from(event))?,
            ));
        }
        self.with(move |connection| {
            let transaction = connection.transaction().map_err(sql_error)?;
            {
                let mut statement = transaction
                    .prepare_cached(
                        "INSERT INTO events (connection_id, event_id, user_id, expires_at, item) \
                         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (connection_id, event_id) DO NOTHING",
                    )
                    .map_err(sql_error)?;
                for (connection_id, event_id, user_id, expires_at, item) in &rows {
                    statement
                        .execute(params![connection_id, event_id, user_id, expires_at, item])
                        .map_err(sql_error)?;
                }
            }
            transaction.commit().map_err(sql_error)
        })
        .await?;
        self.appended.notify_waiters();
        Ok(())
    }

    /// The sequence number of the latest append.
    pub async fn last_sequence(&self) -> Result<i64, StoreError> {
        self.with(|connection| {
            connection.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |row| row.get(0)).map_err(sql_error)
        })
        .await
    }
}

/// SQLite's file beside the database: `-wal` or `-shm` appended to its name.
fn sqlite_sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let applied: usize =
        connection.pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0)).map_err(sql_error)? as usize;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Other(
            format!(
                "the database is at schema version {applied}, newer than this wsledger ({}); upgrade wsledger",
                MIGRATIONS.len()
            )
            .into(),
        ));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let transaction = connection.transaction().map_err(sql_error)?;
        transaction.execute_batch(migration).map_err(sql_error)?;
        transaction.pragma_update(None, "user_version", (index + 1) as i64).map_err(sql_error)?;
        transaction.commit().map_err(sql_error)?;
    }
    Ok(())
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, event: &EventEnvelope) -> Result<AppendOutcome, StoreError> {
        let json = encode(&EventItem::from(event))?;
        let (connection_id, event_id, user_id) =
            (event.connection_id.to_string(), event.event_id.to_string(), event.user_id.to_string());
        let expires_at = event.expires_at;
        let inserted = self
            .with(move |connection| {
                connection
                    .execute(
                        "INSERT INTO events (connection_id, event_id, user_id, expires_at, item) \
                         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (connection_id, event_id) DO NOTHING",
                        params![connection_id, event_id, user_id, expires_at, json],
                    )
                    .map_err(sql_error)
            })
            .await?;
        if inserted == 0 {
            return Ok(AppendOutcome::AlreadyExists);
        }
        self.appended.notify_waiters();
        self.appended.notify_one();
        Ok(AppendOutcome::Appended)
    }

    async fn connection_history(
        &self,
        connection_id: &ConnectionId,
        page: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        self.events_in_range(Some(("connection_id", connection_id.to_string())), TimeRange::ALL, page).await
    }

    async fn user_history(
        &self,
        user_id: &UserId,
        range: TimeRange,
        page: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        self.events_in_range(Some(("user_id", user_id.to_string())), range, page).await
    }

    async fn window(
        &self,
        since: Timestamp,
        until: Timestamp,
        page: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        self.events_in_range(None, TimeRange::between(since, until), page).await
    }
}

/// Runs a view listing whose rows are `(sort key, connection id, version, item)`,
/// `limit + 1` of them at most. Undecodable rows are skipped, but still move the
/// cursor, so they neither end a listing early nor repeat.
fn list_views(
    connection: &Connection,
    corrupt: &CorruptViews,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    limit: usize,
) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError> {
    let mut statement = connection.prepare_cached(sql).map_err(sql_error)?;
    let rows = statement
        .query_map(params, |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, String>(3)?))
        })
        .map_err(sql_error)?;
    let mut views = Vec::new();
    let mut last_row = None;
    let mut more = false;
    for (read, row) in rows.enumerate() {
        let (sort, connection_id, version, json) = row.map_err(sql_error)?;
        if read == limit {
            more = true;
            break;
        }
        if let Some(view) = corrupt.decode(&connection_id, version, &json) {
            views.push(view.view);
        }
        last_row = Some((sort, connection_id));
    }
    let next = match (more, last_row) {
        (true, Some((sort, connection_id))) => Some(encode_cursor(&sort, &connection_id)),
        _ => None,
    };
    Ok(Page { items: views, next })
}

#[async_trait]
impl ViewStore for SqliteStore {
    async fn get(&self, connection_id: &ConnectionId) -> Result<Option<VersionedView>, StoreError> {
        let connection_id = connection_id.to_string();
        let id = connection_id.clone();
        let row: Option<(i64, String)> = self
            .with(move |connection| {
                connection
                    .query_row("SELECT version, item FROM views WHERE connection_id = ?1", params![id], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()
                    .map_err(sql_error)
            })
            .await?;
        Ok(row.and_then(|(version, json)| self.corrupt.decode(&connection_id, version, &json)))
    }

    async fn put(&self, view: &ConnectionInfo, expected_version: Option<u64>) -> Result<u64, StoreError> {
        // Writing a view that was read as absent over an undecodable row replaces the row.
        let replacing = match expected_version {
            None => lock(&self.corrupt.rows).get(view.connection_id.as_str()).copied(),
            Some(_) => None,
        };
        let expected_version = expected_version.or(replacing.map(|version| version as u64));
        let version = expected_version.map_or(1, |version| version + 1);
        let item = ViewItem::new(view, version);
        let json = encode(&item)?;
        let connection_id = view.connection_id.to_string();
        let changed = self
            .with(move |connection| {
                let result = match expected_version {
                    None => connection.execute(
                        "INSERT INTO views (connection_id, user_id, status, created_at, live_until, version, item) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (connection_id) DO NOTHING",
                        params![
                            item.connection_id,
                            item.user_id,
                            item.status,
                            item.created_at,
                            item.live_until,
                            version as i64,
                            json
                        ],
                    ),
                    Some(expected) => connection.execute(
                        "UPDATE views SET user_id = ?2, status = ?3, created_at = ?4, live_until = ?5, version = ?6, \
                         item = ?7 WHERE connection_id = ?1 AND version = ?8",
                        params![
                            item.connection_id,
                            item.user_id,
                            item.status,
                            item.created_at,
                            item.live_until,
                            version as i64,
                            json,
                            expected as i64
                        ],
                    ),
                };
                result.map_err(sql_error)
            })
            .await?;
        if changed == 0 {
            return Err(StoreError::Conflict(
                format!("view {connection_id} is not at version {expected_version:?}").into(),
            ));
        }
        if replacing.is_some() {
            lock(&self.corrupt.rows).remove(view.connection_id.as_str());
            lock(&self.corrupt.repairs).push(view.connection_id.clone());
        }
        Ok(version)
    }

    async fn list_by_user(
        &self,
        user_id: &UserId,
        status: Option<ConnectionStatus>,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError> {
        let (before_created, before_id) = match &page.after {
            Some(cursor) => decode_cursor(cursor)?,
            None => ("\u{10FFFF}".to_owned(), String::new()),
        };
        let user_id = user_id.to_string();
        let status = status.map(|status| status.as_str().to_owned());
        let limit = page.limit;
        let corrupt = self.corrupt.clone();
        self.with(move |connection| {
            list_views(
                connection,
                &corrupt,
                "SELECT created_at, connection_id, version, item FROM views WHERE user_id = ?1 AND (?2 IS NULL OR status = ?2) \
                 AND (created_at < ?3 OR (created_at = ?3 AND connection_id < ?4) OR ?4 = '') \
                 ORDER BY created_at DESC, connection_id DESC LIMIT ?5",
                params![user_id, status, before_created, before_id, (limit + 1) as i64],
                limit,
            )
        })
        .await
    }

    async fn list_live_until_before(
        &self,
        deadline: Timestamp,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError> {
        let (after_live, after_id) = match &page.after {
            Some(cursor) => decode_cursor(cursor)?,
            None => (String::new(), String::new()),
        };
        let deadline = deadline.to_rfc3339();
        let limit = page.limit;
        let corrupt = self.corrupt.clone();
        self.with(move |connection| {
            list_views(
                connection,
                &corrupt,
                "SELECT live_until, connection_id, version, item FROM views WHERE live_until IS NOT NULL AND live_until < ?1 \
                 AND (live_until > ?2 OR (live_until = ?2 AND connection_id > ?3)) \
                 ORDER BY live_until, connection_id LIMIT ?4",
                params![deadline, after_live, after_id, (limit + 1) as i64],
                limit,
            )
        })
        .await
    }
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn leases(&self, user_id: &UserId) -> Result<Option<(UserLeases, u64)>, StoreError> {
        let id = user_id.to_string();
        let row: Option<(i64, String)> = self
            .with(move |connection| {
                connection
                    .query_row("SELECT version, item FROM leases WHERE user_id = ?1", params![id], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()
                    .map_err(sql_error)
            })
            .await?;
        row.map(|(version, json)| {
            let item: LeasesItem =
                serde_json::from_str(&json).map_err(|error| corrupt(format!("leases item: {error}")))?;
            Ok((UserLeases::try_from(item)?, version as u64))
        })
        .transpose()
    }

    async fn put_leases(&self, leases: &UserLeases, expected_version: Option<u64>) -> Result<u64, StoreError> {
        let version = expected_version.map_or(1, |version| version + 1);
        let json = encode(&LeasesItem::from(leases))?;
        let user_id = leases.user_id.to_string();
        let id = user_id.clone();
        let changed = self
            .with(move |connection| {
                let result = match expected_version {
                    None => connection.execute(
                        "INSERT INTO leases (user_id, version, item) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                        params![id, version as i64, json],
                    ),
                    Some(expected) => connection.execute(
                        "UPDATE leases SET version = ?2, item = ?3 WHERE user_id = ?1 AND version = ?4",
                        params![id, version as i64, json, expected as i64],
                    ),
                };
                result.map_err(sql_error)
            })
            .await?;
        if changed == 0 {
            return Err(StoreError::Conflict(
                format!("leases of {user_id} are not at version {expected_version:?}").into(),
            ));
        }
        Ok(version)
    }
}
