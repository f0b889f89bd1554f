//! An in-memory event store and view store: for tests and for embedding wsledger's
//! logic where durability does not matter. Passes the same contract suite as the
//! durable stores.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::domain::lease::UserLeases;
use crate::domain::presence::PresenceRecord;
use crate::domain::recovery::{OutboxHead, OutboxMessage};
use crate::domain::{
    ConnectionId, ConnectionInfo, ConnectionStatus, EventEnvelope, EventId, TimeRange, Timestamp, UserId,
};
use crate::ports::{
    AppendOutcome, EventStore, LeaseStore, OutboxStore, Page, PageRequest, PresenceStore, StoreError, VersionedView,
    ViewCursor, ViewStore,
};

/// A user's outbox head, its version (0: none written) and the messages by number.
type StoredOutbox = (OutboxHead, u64, BTreeMap<u64, OutboxMessage>);

/// A presence record, its version, and when it is due (`None`: not in the index).
type StoredPresence = (PresenceRecord, u64, Option<Timestamp>);

#[derive(Debug, Default)]
pub struct MemoryStore {
    events: Mutex<BTreeMap<(EventId, ConnectionId), EventEnvelope>>,
    views: Mutex<HashMap<ConnectionId, VersionedView>>,
    leases: Mutex<HashMap<UserId, (UserLeases, u64)>>,
    presence: Mutex<BTreeMap<UserId, StoredPresence>>,
    outbox: Mutex<HashMap<UserId, StoredOutbox>>,
    appends: AtomicU64,
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Other("the in-memory store's lock is poisoned".into())
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many appends were attempted (duplicates included): writes a durable store would bill.
    pub fn append_requests(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }

    /// Every stored event, in event id order.
    pub fn all_events(&self) -> Vec<EventEnvelope> {
        self.events.lock().map(|events| events.values().cloned().collect()).unwrap_or_default()
    }

    fn select(
        &self,
        page: PageRequest,
        range: TimeRange,
        keep: impl Fn(&EventEnvelope) -> bool,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        let Some((lowest, highest)) = EventId::bounds(range, page.after) else {
            return Ok(Page { items: Vec::new(), next: None });
        };
        let now = Timestamp::now().epoch_seconds();
        let events = self.events.lock().map_err(poisoned)?;
        let mut selected: Vec<EventEnvelope> = events
            .values()
            .filter(|event| event.event_id >= lowest && event.event_id <= highest)
            .filter(|event| event.expires_at.is_none_or(|expires_at| expires_at > now))
            .filter(|event| keep(event))
            .take(page.limit + 1)
            .cloned()
            .collect();
        let more = selected.len() > page.limit;
        selected.truncate(page.limit);
        let next = if more { selected.last().map(|event| event.event_id) } else { None };
        Ok(Page { items: selected, next })
    }

    fn list_views(
        &self,
        page: PageRequest<ViewCursor>,
        keep: impl Fn(&ConnectionInfo) -> bool,
    ) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError> {
        let views = self.views.lock().map_err(poisoned)?;
        let mut selected: Vec<&ConnectionInfo> =
            views.values().map(|stored| &stored.view).filter(|view| keep(view)).collect();
        selected.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.connection_id.cmp(&b.connection_id)));
        let offset = match &page.after {
            Some(cursor) => cursor
                .0
                .parse::<usize>()
                .map_err(|_| StoreError::Other(format!("invalid view cursor {:?}", cursor.0).into()))?,
            None => 0,
        };
        let items: Vec<ConnectionInfo> =
            selected.iter().skip(offset).take(page.limit).map(|view| (*view).clone()).collect();
        let end = offset + items.len();
        let next = (end < selected.len()).then(|| ViewCursor(end.to_string()));
        Ok(Page { items, next })
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(&self, event: &EventEnvelope) -> Result<AppendOutcome, StoreError> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        let mut events = self.events.lock().map_err(poisoned)?;
        let key = (event.event_id, event.connection_id.clone());
        if events.contains_key(&key) {
            return Ok(AppendOutcome::AlreadyExists);
        }
        events.insert(key, event.clone());
        Ok(AppendOutcome::Appended)
    }

    async fn connection_history(
        &self,
        connection_id: &ConnectionId,
        page: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        self.select(page, TimeRange::ALL, |event| event.connection_id == *connection_id)
    }

    async fn user_history(
        &self,
        user_id: &UserId,
        range: TimeRange,
        page: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        self.select(page, range, |event| event.user_id == *user_id)
    }

    async fn window(
        &self,
        since: Timestamp,
        until: Timestamp,
        page: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        self.select(page, TimeRange::between(since, until), |_| true)
    }
}

#[async_trait]
impl ViewStore for MemoryStore {
    async fn get(&self, connection_id: &ConnectionId) -> Result<Option<VersionedView>, StoreError> {
        Ok(self.views.lock().map_err(poisoned)?.get(connection_id).cloned())
    }

    async fn put(&self, view: &ConnectionInfo, expected_version: Option<u64>) -> Result<u64, StoreError> {
        let mut views = self.views.lock().map_err(poisoned)?;
        let stored_version = views.get(&view.connection_id).map(|stored| stored.version);
        if stored_version != expected_version {
            return Err(StoreError::Conflict(
                format!("view {} is at version {stored_version:?}, not {expected_version:?}", view.connection_id)
                    .into(),
            ));
        }
        let version = expected_version.map_or(1, |version| version + 1);
        views.insert(view.connection_id.clone(), VersionedView { view: view.clone(), version });
        Ok(version)
    }

    async fn list_by_user(
        &self,
        user_id: &UserId,
        status: Option<ConnectionStatus>,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError> {
        self.list_views(page, |view| view.user_id == *user_id && status.is_none_or(|status| view.status == status))
    }

    async fn list_live_until_before(
        &self,
        deadline: Timestamp,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError> {
        self.list_views(page, |view| view.live_until().is_some_and(|live_until| live_until < deadline))
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn leases(&self, user_id: &UserId) -> Result<Option<(UserLeases, u64)>, StoreError> {
        Ok(self.leases.lock().map_err(poisoned)?.get(user_id).cloned())
    }

    async fn put_leases(&self, leases: &UserLeases, expected_version: Option<u64>) -> Result<u64, StoreError> {
        let mut stored = self.leases.lock().map_err(poisoned)?;
        let stored_version = stored.get(&leases.user_id).map(|(_, version)| *version);
        if stored_version != expected_version {
            return Err(StoreError::Conflict(
                format!("leases of {} are at version {stored_version:?}, not {expected_version:?}", leases.user_id)
                    .into(),
            ));
        }
        let version = expected_version.map_or(1, |version| version + 1);
        stored.insert(leases.user_id.clone(), (leases.clone(), version));
        Ok(version)
    }
}

#[async_trait]
impl PresenceStore for MemoryStore {
    async fn presence(&self, user_id: &UserId) -> Result<Option<(PresenceRecord, u64)>, StoreError> {
        let stored = self.presence.lock().map_err(poisoned)?;
        Ok(stored.get(user_id).map(|(record, version, _)| (record.clone(), *version)))
    }

    async fn put_presence(
        &self,
        record: &PresenceRecord,
        check_at: Option<Timestamp>,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mut stored = self.presence.lock().map_err(poisoned)?;
        let stored_version = stored.get(&record.user_id).map(|(_, version, _)| *version);
        if stored_version != expected_version {
            return Err(StoreError::Conflict(
                format!("presence of {} is at version {stored_version:?}, not {expected_version:?}", record.user_id)
                    .into(),
            ));
        }
        let version = expected_version.map_or(1, |version| version + 1);
        stored.insert(record.user_id.clone(), (record.clone(), version, check_at));
        Ok(version)
    }

    async fn list_presence(
        &self,
        due_by: Option<Timestamp>,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<PresenceRecord, ViewCursor>, StoreError> {
        let stored = self.presence.lock().map_err(poisoned)?;
        let after = page.after.map(|cursor| cursor.0);
        let mut items = Vec::new();
        for (user_id, (record, _, check_at)) in stored.iter() {
            if after.as_deref().is_some_and(|after| user_id.as_str() <= after) {
                continue;
            }
            let Some(check_at) = check_at else { continue };
            if due_by.is_some_and(|due_by| *check_at > due_by) {
                continue;
            }
            if items.len() == page.limit {
                let next = items.last().map(|last: &PresenceRecord| ViewCursor(last.user_id.to_string()));
                return Ok(Page { items, next });
            }
            items.push(record.clone());
        }
        Ok(Page { items, next: None })
    }
}

#[async_trait]
impl OutboxStore for MemoryStore {
    async fn head(&self, user_id: &UserId) -> Result<Option<(OutboxHead, u64)>, StoreError> {
        let outbox = self.outbox.lock().map_err(poisoned)?;
        Ok(outbox.get(user_id).map(|(head, version, _)| (head.clone(), *version)))
    }

    async fn append_message(
        &self,
        head: &OutboxHead,
        message: &OutboxMessage,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mut outbox = self.outbox.lock().map_err(poisoned)?;
        let entry = outbox.entry(message.user_id.clone()).or_default();
        let stored_version = (entry.1 > 0).then_some(entry.1);
        if stored_version != expected_version || entry.2.contains_key(&message.seq) {
            return Err(StoreError::Conflict(format!("the outbox of {} moved", message.user_id).into()));
        }
        entry.0 = head.clone();
        entry.1 = expected_version.map_or(1, |version| version + 1);
        entry.2.insert(message.seq, message.clone());
        Ok(entry.1)
    }

    async fn put_head(
        &self,
        user_id: &UserId,
        head: &OutboxHead,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mut outbox = self.outbox.lock().map_err(poisoned)?;
        let entry = outbox.entry(user_id.clone()).or_default();
        let stored_version = (entry.1 > 0).then_some(entry.1);
        if stored_version != expected_version {
            return Err(StoreError::Conflict(format!("the outbox of {user_id} moved").into()));
        }
        entry.0 = head.clone();
        entry.1 = expected_version.map_or(1, |version| version + 1);
        Ok(entry.1)
    }

    async fn messages(
        &self,
        user_id: &UserId,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        if after >= until {
            return Ok(Vec::new());
        }
        let outbox = self.outbox.lock().map_err(poisoned)?;
        Ok(outbox
            .get(user_id)
            .map(|(_, _, messages)| messages.range(after + 1..=until).take(limit).map(|(_, m)| m.clone()).collect())
            .unwrap_or_default())
    }

    async fn expire(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut outbox = self.outbox.lock().map_err(poisoned)?;
        let mut removed = 0;
        for (_, _, messages) in outbox.values_mut() {
            let before = messages.len();
            messages.retain(|_, message| message.is_kept(now));
            removed += before - messages.len();
        }
        Ok(removed)
    }
}
