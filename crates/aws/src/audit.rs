//! Audit queries: "who was connected, when, from where, and what happened?"
//!
//! The same queries behind `wsledger history` and `wsledger connections`, for any
//! store, as a library other services can embed. Histories come page by page in
//! event id order (time order), so a caller can stream a large history.

use crate::domain::{
    ConnectionId, ConnectionInfo, ConnectionStatus, EventEnvelope, EventId, EventKind, TimeRange, Timestamp, UserId,
};
use crate::ports::{EventStore, Page, PageRequest, StoreError, ViewStore, WindowCursor};

/// Which history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryQuery {
    /// What happened to one connection over a range (open ends allowed).
    Connection { connection_id: ConnectionId, range: TimeRange },
    /// One user's events over a range (open ends allowed).
    User { user_id: UserId, range: TimeRange },
    /// Every event of every user in `[since, until)`.
    Window { since: Timestamp, until: Timestamp },
}

/// What to keep of a history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Only these kinds (all when empty).
    pub kinds: Vec<EventKind>,
    /// At most this many events.
    pub limit: Option<usize>,
}

impl HistoryFilter {
    fn keeps(&self, event: &EventEnvelope) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&event.kind())
    }
}

/// Reads a history page by page. `next_page` returns `None` at the end.
pub struct HistoryReader<'a> {
    events: &'a dyn EventStore,
    /// A window's cursor, when the store keeps one (see [`EventStore::window_cursor`]).
    cursor: Option<Box<dyn WindowCursor + 'a>>,
    query: HistoryQuery,
    filter: HistoryFilter,
    after: Option<EventId>,
    returned: usize,
    done: bool,
    page_size: usize,
}

impl<'a> HistoryReader<'a> {
    pub fn new(events: &'a dyn EventStore, query: HistoryQuery, filter: HistoryFilter) -> Self {
        // A connection's history starts at the range's first event id: the range is
        // part of the query, so a limit counts only events inside it.
        let after = match &query {
            HistoryQuery::Connection { range: TimeRange { since: Some(since), .. }, .. } => {
                EventId::lowest_at(*since).predecessor()
            }
            _ => None,
        };
        let cursor = match &query {
            HistoryQuery::Window { since, until } => events.window_cursor(*since, *until),
            _ => None,
        };
        Self { events, cursor, query, filter, after, returned: 0, done: false, page_size: 500 }
    }

    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    async fn read(&self, page: PageRequest) -> Result<Page<EventEnvelope>, StoreError> {
        match &self.query {
            HistoryQuery::Connection { connection_id, .. } => self.events.connection_history(connection_id, page).await,
            HistoryQuery::User { user_id, range } => self.events.user_history(user_id, *range, page).await,
            HistoryQuery::Window { since, until } => self.events.window(*since, *until, page).await,
        }
    }

    /// The next non-empty batch of matching events, in event id order.
    pub async fn next_page(&mut self) -> Result<Option<Vec<EventEnvelope>>, StoreError> {
        while !self.done {
            let remaining = self.filter.limit.map_or(usize::MAX, |limit| limit - self.returned);
            if remaining == 0 {
                self.done = true;
                break;
            }
            // Without a type filter, never read more than is still wanted.
            let size = if self.filter.kinds.is_empty() { self.page_size.min(remaining) } else { self.page_size };
            let mut items = match &mut self.cursor {
                Some(cursor) => {
                    let items = cursor.next_page(size).await?;
                    self.done = items.is_empty();
                    items
                }
                None => {
                    let page = self.read(PageRequest { limit: size, after: self.after }).await?;
                    self.after = page.next;
                    self.done = page.next.is_none();
                    page.items
                }
            };
            if let HistoryQuery::Connection { range: TimeRange { until: Some(until), .. }, .. } = &self.query
                && let Some(end) = items.iter().position(|event| event.at >= *until)
            {
                items.truncate(end);
                self.done = true;
            }
            let mut kept: Vec<EventEnvelope> = items.into_iter().filter(|event| self.filter.keeps(event)).collect();
            kept.truncate(remaining);
            self.returned += kept.len();
            if !kept.is_empty() {
                return Ok(Some(kept));
            }
        }
        Ok(None)
    }
}

/// A whole history (up to the filter's limit).
pub async fn history(
    events: &dyn EventStore,
    query: HistoryQuery,
    filter: HistoryFilter,
) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut reader = HistoryReader::new(events, query, filter);
    let mut all = Vec::new();
    while let Some(page) = reader.next_page().await? {
        all.extend(page);
    }
    Ok(all)
}

/// Why a listing of views cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionsError {
    #[error(
        "listing disconnected connections needs --user: only live connections and a user's connections are indexed"
    )]
    NeedsUser,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Views, newest first (by creation, then connection id): a user's, or every live
/// one (when no user is given). A user's come newest first from the index, so a
/// limit reads only what it keeps; every live one are read whole (the live index
/// is ordered by `liveUntil`, not by creation), then sorted and cut to the limit,
/// so every store answers the same.
pub async fn connections(
    views: &dyn ViewStore,
    user_id: Option<&UserId>,
    status: Option<ConnectionStatus>,
    limit: Option<usize>,
) -> Result<Vec<ConnectionInfo>, ConnectionsError> {
    let limit = limit.unwrap_or(usize::MAX);
    let mut all = Vec::new();
    let page_size = if user_id.is_some() { limit.min(500) } else { 500 };
    let mut page = PageRequest::first(page_size);
    loop {
        let listed = match (user_id, status) {
            (Some(user_id), status) => views.list_by_user(user_id, status, page.clone()).await?,
            (None, None | Some(ConnectionStatus::Connected)) => {
                // The live index holds exactly the connected views.
                views.list_live_until_before(Timestamp::from_epoch_millis(i64::MAX), page.clone()).await?
            }
            (None, Some(ConnectionStatus::Disconnected)) => return Err(ConnectionsError::NeedsUser),
        };
        all.extend(listed.items);
        if user_id.is_some() && all.len() >= limit {
            break;
        }
        match listed.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.connection_id.cmp(&a.connection_id)));
    all.truncate(limit);
    Ok(all)
}
