//! Ports: what the application needs from the outside world, as small traits.
//!
//! Adapters implement them (`adapters::dynamodb`, and the embedded store). Every
//! implementation passes the same contract suite (`tests/it/contract.rs`). No
//! item attribute names or SDK types appear here.

use async_trait::async_trait;

use crate::domain::lease::UserLeases;
use crate::domain::presence::{PresenceEvent, PresenceRecord};
use crate::domain::protocol::ServerMessage;
use crate::domain::recovery::{OutboxHead, OutboxMessage};
use crate::domain::{
    ConnectionId, ConnectionInfo, ConnectionStatus, EventEnvelope, EventId, TimeRange, Timestamp, UserId,
};

/// What an append did. A duplicate append is a success: the ledger already holds
/// that event (a retried request), and nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended,
    AlreadyExists,
}

/// What went wrong, in words, and the error that caused it when there is one (an
/// SDK error, an I/O error), so a caller can walk the chain with
/// [`std::error::Error::source`] or print it with `{:#}`.
#[derive(Debug)]
pub struct Cause {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Cause {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), source: None }
    }

    /// `message`, caused by `source`.
    pub fn caused_by(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { message: message.into(), source: Some(Box::new(source)) }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The source of the error whose [`Cause`] this is (not the cause itself, which
/// is the error's own message).
impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

/// A failure of a store, by meaning rather than by SDK type. Its
/// [`source`](std::error::Error::source) is what caused it (the SDK or SQLite error).
#[derive(Debug)]
pub enum StoreError {
    /// A conditional write lost to a concurrent writer (optimistic lock).
    Conflict(Cause),
    /// The store asked us to slow down; retrying later will work.
    Throttled(Cause),
    /// A table or index does not exist.
    NotFound(Cause),
    /// The store could not be reached or failed on its side.
    Unavailable(Cause),
    /// The store holds something that is not a valid item of ours.
    Corrupt(Cause),
    /// Anything else (a rejected request, bad credentials, ...).
    Other(Cause),
}

impl StoreError {
    /// Whether the same call may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Conflict(_) | StoreError::Throttled(_) | StoreError::Unavailable(_))
    }

    /// What the error says beyond its kind.
    pub fn cause(&self) -> &Cause {
        match self {
            StoreError::Conflict(cause)
            | StoreError::Throttled(cause)
            | StoreError::NotFound(cause)
            | StoreError::Unavailable(cause)
            | StoreError::Corrupt(cause)
            | StoreError::Other(cause) => cause,
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            StoreError::Conflict(_) => "conflict: ",
            StoreError::Throttled(_) => "throttled: ",
            StoreError::NotFound(_) => "not found: ",
            StoreError::Unavailable(_) => "unavailable: ",
            StoreError::Corrupt(_) => "corrupt item: ",
            StoreError::Other(_) => "",
        };
        write!(f, "{kind}{}", self.cause())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.cause())
    }
}

/// Which page of a result to read: at most `limit` items after `after`.
///
/// Every history is in event id order, so the cursor is simply the last event id
/// the caller has seen: stable across processes and store types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest<C = EventId> {
    pub limit: usize,
    pub after: Option<C>,
}

impl<C> PageRequest<C> {
    pub const DEFAULT_LIMIT: usize = 100;

    pub fn first(limit: usize) -> Self {
        Self { limit: limit.max(1), after: None }
    }
}

impl<C> Default for PageRequest<C> {
    fn default() -> Self {
        Self::first(Self::DEFAULT_LIMIT)
    }
}

/// One page of results; `next` is the cursor of the following page, `None` at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C = EventId> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

/// The append-only ledger.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends one event unless an event with the same connection and event id exists.
    async fn append(&self, event: &EventEnvelope) -> Result<AppendOutcome, StoreError>;

    /// The history of one connection, in event id order.
    async fn connection_history(
        &self,
        connection_id: &ConnectionId,
        page: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError>;

    /// The history of one user over a time range (of event times), in event id order.
    async fn user_history(
        &self,
        user_id: &UserId,
        range: TimeRange,
        page: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError>;

    /// Every event in a time window, across all users, in event id order.
    async fn window(
        &self,
        since: Timestamp,
        until: Timestamp,
        page: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError>;

    /// The same window read page after page by one reader, when the store can do
    /// better than [`EventStore::window`]'s pages by keeping a cursor per partition
    /// between pages (DynamoDB: one per time-bucket shard, instead of asking every
    /// shard again for every page). `None`: page through `window`.
    fn window_cursor(&self, _since: Timestamp, _until: Timestamp) -> Option<Box<dyn WindowCursor + '_>> {
        None
    }
}

/// A window's events, page after page, in event id order.
#[async_trait]
pub trait WindowCursor: Send + Sync {
    /// Up to `limit` more events; empty at the end.
    async fn next_page(&mut self, limit: usize) -> Result<Vec<EventEnvelope>, StoreError>;
}

/// A stored view and its version, for optimistic concurrency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedView {
    pub view: ConnectionInfo,
    /// Incremented by every write; a write names the version it read.
    pub version: u64,
}

/// Where a listing of views goes on: opaque, only the store that made it reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewCursor(pub String);

/// The projection's current views.
#[async_trait]
pub trait ViewStore: Send + Sync {
    /// The view as the projection needs it: its version and its usage walk.
    async fn get(&self, connection_id: &ConnectionId) -> Result<Option<VersionedView>, StoreError>;

    /// The view to show or count, without the usage walk (`usage_fold` may be
    /// `None`): a store that keeps the walk apart reads less.
    async fn read(&self, connection_id: &ConnectionId) -> Result<Option<ConnectionInfo>, StoreError> {
        Ok(self.get(connection_id).await?.map(|stored| stored.view))
    }

    /// Writes `view` if the stored version is still `expected_version` (`None`: no view
    /// stored yet) and returns the new version. Fails with [`StoreError::Conflict`]
    /// when another writer got there first, so no write is ever lost.
    async fn put(&self, view: &ConnectionInfo, expected_version: Option<u64>) -> Result<u64, StoreError>;

    /// A user's connections, newest first, optionally only those with `status`.
    async fn list_by_user(
        &self,
        user_id: &UserId,
        status: Option<ConnectionStatus>,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError>;

    /// Connected views whose `live_until` is before `deadline`, in no particular
    /// order: the suspects for the stale-connection sweep. Only live connections are read.
    async fn list_live_until_before(
        &self,
        deadline: Timestamp,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError>;
}

/// A failure of a port outside the ledger (voice pipeline, text responder).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PortError(pub String);

/// The users' connection leases (`MAX_CONNECTIONS_PER_USER`): one item per user,
/// written whole with a version, so that concurrent `$connect`s of one user cannot
/// both take the last slot (see `domain::lease`).
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// The user's leases and their version; `None` when the user has none stored.
    /// Strongly consistent: it must see the last write.
    async fn leases(&self, user_id: &UserId) -> Result<Option<(UserLeases, u64)>, StoreError>;
    /// Writes the user's leases if they are still at `expected_version` (`None`:
    /// not stored yet); `StoreError::Conflict` otherwise. Returns the new version.
    async fn put_leases(&self, leases: &UserLeases, expected_version: Option<u64>) -> Result<u64, StoreError>;
}

/// The users' presence records (`domain::presence`): one per user, written whole
/// with a version, and an index of the records that need attention by themselves
/// (a user online, an offline waiting for its grace, events owed to a sink), keyed
/// by when they need it, so that neither listing the users online nor finding the
/// due ones reads every user.
#[async_trait]
pub trait PresenceStore: Send + Sync {
    /// The user's record and its version; `None` when none is stored. Strongly consistent.
    async fn presence(&self, user_id: &UserId) -> Result<Option<(PresenceRecord, u64)>, StoreError>;
    /// Writes `record` if the stored one is still at `expected_version` (`None`: not
    /// stored yet); `StoreError::Conflict` otherwise. `check_at` is when the record
    /// next needs attention by itself (`PresenceRecord::check_at`); `None` takes it
    /// out of the index. Returns the new version.
    async fn put_presence(
        &self,
        record: &PresenceRecord,
        check_at: Option<Timestamp>,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError>;
    /// Records in the index (those with a `check_at`), optionally only those due
    /// by `due_by`, in no particular order.
    async fn list_presence(
        &self,
        due_by: Option<Timestamp>,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<PresenceRecord, ViewCursor>, StoreError>;
}

/// A user's outbox for reconnect recovery (`domain::recovery`): the head (the last
/// sequence number given and the connections that resumed) with a version, and the
/// messages kept for the recovery window. A message and the head that gives it its
/// number are written together or not at all, conditional on the head's version,
/// so concurrent senders never share or skip a number and every sender sees the
/// resume marks made before its message exists.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// The head and its version; `None` when nothing was sent to the user yet.
    /// Strongly consistent.
    async fn head(&self, user_id: &UserId) -> Result<Option<(OutboxHead, u64)>, StoreError>;
    /// Stores `message` (numbered `head.last_seq`) and `head` at once, if the head
    /// is still at `expected_version` (`None`: none stored); `StoreError::Conflict`
    /// otherwise. Returns the head's new version.
    async fn append_message(
        &self,
        head: &OutboxHead,
        message: &OutboxMessage,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError>;
    /// Writes the head alone (a resume's marks), on the same condition.
    async fn put_head(
        &self,
        user_id: &UserId,
        head: &OutboxHead,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError>;
    /// The messages numbered `after < seq <= until`, in order, at most `limit`
    /// (messages past their window may still be among them until removed).
    async fn messages(
        &self,
        user_id: &UserId,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, StoreError>;
    /// Removes the messages past their window at `now` and returns how many (the
    /// embedded store's sweep; DynamoDB removes them itself, by TTL).
    async fn expire(&self, _now: Timestamp) -> Result<usize, StoreError> {
        Ok(0)
    }
}

/// Why a sink did not take presence events.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Where presence events go (a webhook, an EventBridge bus). A sink takes a user's
/// events in order; an error means none of them may be counted as delivered (the
/// same events come again, with the same ids: at least once).
#[async_trait]
pub trait PresenceSink: Send + Sync {
    /// A name for the sink, stable across runs: what a record's outbox owes is
    /// owed to a name.
    fn name(&self) -> &str;
    async fn publish(&self, events: &[PresenceEvent]) -> Result<(), SinkError>;
}

/// Where audio goes beyond the ledger (a speech pipeline). Each call may return a
/// frame to send back to the client.
#[async_trait]
pub trait VoicePipeline: Send + Sync {
    async fn start(
        &self,
        connection_id: &ConnectionId,
        session_id: &str,
        audio_format: &str,
    ) -> Result<Option<ServerMessage>, PortError>;

    async fn audio(
        &self,
        connection_id: &ConnectionId,
        session_id: &str,
        audio: &[u8],
    ) -> Result<Option<ServerMessage>, PortError>;

    async fn end(&self, connection_id: &ConnectionId, session_id: &str) -> Result<Option<ServerMessage>, PortError>;
}

/// Where text goes beyond the ledger (an AI model). May return a frame for the client.
#[async_trait]
pub trait TextResponder: Send + Sync {
    async fn respond(
        &self,
        connection_id: &ConnectionId,
        session_id: &str,
        content: &str,
    ) -> Result<Option<ServerMessage>, PortError>;
}

/// What API Gateway knows of a live connection (`GET @connections/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayConnection {
    pub connected_at: Option<Timestamp>,
    pub last_active_at: Option<Timestamp>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A failure of the connection gateway.
#[derive(Debug)]
pub enum GatewayError {
    /// 410 `GoneException`: the connection no longer exists.
    Gone,
    /// 429 or a throttling error: retry later.
    Throttled(Cause),
    /// 413 `PayloadTooLargeException`.
    PayloadTooLarge(Cause),
    /// 403 or any other failure.
    Other(Cause),
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GatewayError::Gone => f.write_str("the connection is gone"),
            GatewayError::Throttled(cause) => write!(f, "throttled: {cause}"),
            GatewayError::PayloadTooLarge(cause) => write!(f, "payload too large: {cause}"),
            GatewayError::Other(cause) => write!(f, "{cause}"),
        }
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GatewayError::Gone => None,
            GatewayError::Throttled(cause) | GatewayError::PayloadTooLarge(cause) | GatewayError::Other(cause) => {
                std::error::Error::source(cause)
            }
        }
    }
}

/// API Gateway's Management API (`@connections`): post to, inspect and close connections.
#[async_trait]
pub trait ConnectionGateway: Send + Sync {
    async fn post(&self, connection_id: &ConnectionId, data: &[u8]) -> Result<(), GatewayError>;
    async fn get(&self, connection_id: &ConnectionId) -> Result<GatewayConnection, GatewayError>;
    async fn delete(&self, connection_id: &ConnectionId) -> Result<(), GatewayError>;
}

/// One record of a change feed, decoded by the adapter that owns the item format.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    /// The source's record id (`eventID` of a stream record), for logs.
    pub record_id: String,
    /// Where a retry restarts (`SequenceNumber` of a stream record).
    pub sequence_number: Option<String>,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new event in the ledger.
    Appended(EventEnvelope),
    /// A record the projection does not use (a modification, a TTL deletion).
    Ignored(&'static str),
    /// A record that can never be decoded; skipped so it cannot block the ones behind it.
    Poison(String),
}
