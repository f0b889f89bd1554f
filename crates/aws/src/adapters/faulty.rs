//! A store that fails when told to: it forwards every call to another store, counts
//! the calls, and fails those a rule picks. The one fault-injecting wrapper of the
//! project's tests (unit and integration), and a way to drill what the services do
//! when DynamoDB throttles or a write is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::domain::{ConnectionId, ConnectionInfo, ConnectionStatus, EventEnvelope, TimeRange, Timestamp, UserId};
use crate::ports::{AppendOutcome, EventStore, Page, PageRequest, StoreError, VersionedView, ViewCursor, ViewStore};
use crate::sync::lock;

/// One call to a store, as a rule sees it.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    Append(&'a EventEnvelope),
    ConnectionHistory(&'a ConnectionId),
    UserHistory(&'a UserId),
    Window,
    Get(&'a ConnectionId),
    Put(&'a ConnectionInfo),
    ListByUser(&'a UserId),
    ListLiveUntilBefore,
}

impl Call<'_> {
    /// The operation's name, as [`Faulty::calls`] counts it.
    pub fn operation(&self) -> &'static str {
        match self {
            Call::Append(_) => "append",
            Call::ConnectionHistory(_) => "connection_history",
            Call::UserHistory(_) => "user_history",
            Call::Window => "window",
            Call::Get(_) => "get",
            Call::Put(_) => "put",
            Call::ListByUser(_) => "list_by_user",
            Call::ListLiveUntilBefore => "list_live_until_before",
        }
    }

    /// The connection the call is about, when it is about one.
    pub fn connection_id(&self) -> Option<&str> {
        match self {
            Call::Append(event) => Some(event.connection_id.as_str()),
            Call::ConnectionHistory(id) | Call::Get(id) => Some(id.as_str()),
            Call::Put(view) => Some(view.connection_id.as_str()),
            _ => None,
        }
    }
}

/// Decides whether a call fails: given the call and how many calls of its operation
/// were made so far (this one included, from 1), the error to answer with, or `None`
/// to forward it.
pub type Rule = dyn Fn(&Call<'_>, usize) -> Option<StoreError> + Send + Sync;

/// `inner`, with the calls [`Faulty::fail_when`]'s rule picks failing.
pub struct Faulty<S: ?Sized> {
    inner: Arc<S>,
    rule: Mutex<Option<Arc<Rule>>>,
    calls: Mutex<HashMap<&'static str, usize>>,
    failures: Mutex<usize>,
}

impl<S: ?Sized> Faulty<S> {
    /// Forwards everything until a rule is set.
    pub fn new(inner: Arc<S>) -> Self {
        Self { inner, rule: Mutex::new(None), calls: Mutex::default(), failures: Mutex::new(0) }
    }

    /// The store the calls go to.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// Fails the calls `rule` picks, from now on.
    pub fn fail_when(&self, rule: impl Fn(&Call<'_>, usize) -> Option<StoreError> + Send + Sync + 'static) {
        *lock(&self.rule) = Some(Arc::new(rule));
    }

    /// Fails every call with [`StoreError::Unavailable`], from now on.
    pub fn fail_all(&self) {
        self.fail_when(|_, _| Some(StoreError::Unavailable("injected failure".into())));
    }

    /// Forwards every call again.
    pub fn heal(&self) {
        *lock(&self.rule) = None;
    }

    /// How many calls of `operation` (see [`Call::operation`]) were made, failed or not.
    pub fn calls(&self, operation: &str) -> usize {
        lock(&self.calls).get(operation).copied().unwrap_or(0)
    }

    /// How many calls the rule failed.
    pub fn failures(&self) -> usize {
        *lock(&self.failures)
    }

    fn check(&self, call: Call<'_>) -> Result<(), StoreError> {
        let count = {
            let mut calls = lock(&self.calls);
            let count = calls.entry(call.operation()).or_insert(0);
            *count += 1;
            *count
        };
        let rule = lock(&self.rule).clone();
        match rule.and_then(|rule| rule(&call, count)) {
            Some(error) => {
                *lock(&self.failures) += 1;
                Err(error)
            }
            None => Ok(()),
        }
    }
}

/// Windows are read through [`EventStore::window`] (no cursor), so the rule sees every page.
#[async_trait]
impl<S: EventStore + ?Sized> EventStore for Faulty<S> {
    async fn append(&self, event: &EventEnvelope) -> Result<AppendOutcome, StoreError> {
        self.check(Call::Append(event))?;
        self.inner.append(event).await
    }

    async fn connection_history(
        &self,
        connection_id: &ConnectionId,
        page: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        self.check(Call::ConnectionHistory(connection_id))?;
        self.inner.connection_history(connection_id, page).await
    }

    async fn user_history(
        &self,
        user_id: &UserId,
        range: TimeRange,
        page: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        self.check(Call::UserHistory(user_id))?;
        self.inner.user_history(user_id, range, page).await
    }

    async fn window(
        &self,
        since: Timestamp,
        until: Timestamp,
        page: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        self.check(Call::Window)?;
        self.inner.window(since, until, page).await
    }
}

#[async_trait]
impl<S: ViewStore + ?Sized> ViewStore for Faulty<S> {
    async fn get(&self, connection_id: &ConnectionId) -> Result<Option<VersionedView>, StoreError> {
        self.check(Call::Get(connection_id))?;
        self.inner.get(connection_id).await
    }

    async fn put(&self, view: &ConnectionInfo, expected_version: Option<u64>) -> Result<u64, StoreError> {
        self.check(Call::Put(view))?;
        self.inner.put(view, expected_version).await
    }

    async fn list_by_user(
        &self,
        user_id: &UserId,
        status: Option<ConnectionStatus>,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError> {
        self.check(Call::ListByUser(user_id))?;
        self.inner.list_by_user(user_id, status, page).await
    }

    async fn list_live_until_before(
        &self,
        deadline: Timestamp,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError> {
        self.check(Call::ListLiveUntilBefore)?;
        self.inner.list_live_until_before(deadline, page).await
    }
}
