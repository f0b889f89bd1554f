//! The live dashboard of `wsledger serve`: a page (compiled into the binary), JSON
//! for it, and a Server-Sent Events stream of views as the projector writes them.
//! Reads go through the audit queries; nothing here writes to the ledger.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::adapters::stored::{EventItem, ViewItem};
use crate::audit::{HistoryFilter, HistoryQuery, history};
use crate::domain::{ConnectionId, ConnectionInfo, ConnectionStatus, TimeRange, Timestamp, UserId};
use crate::local::AppState;
use crate::ports::{EventStore, Page, PageRequest, PresenceStore, StoreError, VersionedView, ViewCursor, ViewStore};
use crate::sync::lock;
use axum::extract::FromRef;

mod presence;
pub use presence::PresenceFeed;

const PAGE: &str = include_str!("index.html");
/// How many recently written views the dashboard remembers (live ones come from the store too).
const RECENT_VIEWS: usize = 500;

/// What the dashboard knows between requests: recently projected views and the
/// channel that streams them to open pages.
pub struct Dashboard {
    token: Option<String>,
    recent: Mutex<(HashMap<ConnectionId, ConnectionInfo>, VecDeque<ConnectionId>)>,
    updates: broadcast::Sender<String>,
    /// Presence events, for `GET /api/presence/stream`.
    presence_updates: broadcast::Sender<String>,
}

impl Dashboard {
    pub fn new(token: Option<String>) -> Self {
        Self {
            token,
            recent: Mutex::new((HashMap::new(), VecDeque::new())),
            updates: broadcast::channel(1_024).0,
            presence_updates: broadcast::channel(1_024).0,
        }
    }

    pub(crate) fn observe(&self, view: &ConnectionInfo) {
        {
            let mut recent = lock(&self.recent);
            let (views, order) = &mut *recent;
            if views.insert(view.connection_id.clone(), view.clone()).is_none() {
                order.push_back(view.connection_id.clone());
                while order.len() > RECENT_VIEWS {
                    if let Some(oldest) = order.pop_front() {
                        views.remove(&oldest);
                    }
                }
            }
        }
        let _ = self.updates.send(view_json(view).to_string());
    }

    fn recent(&self) -> Vec<ConnectionInfo> {
        lock(&self.recent).0.values().cloned().collect()
    }

    pub(crate) fn allows(&self, headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
        let Some(token) = &self.token else { return true };
        crate::local::gateway::exposure::token_matches(
            token,
            crate::local::gateway::exposure::presented_token(headers, query).as_deref(),
        )
    }
}

fn view_json(view: &ConnectionInfo) -> Value {
    ViewItem::public_json(view)
}

/// A view store that tells the dashboard about every view it writes.
pub struct NotifyingViews {
    pub inner: Arc<dyn ViewStore>,
    pub dashboard: Arc<Dashboard>,
}

#[async_trait]
impl ViewStore for NotifyingViews {
    async fn get(&self, connection_id: &ConnectionId) -> Result<Option<VersionedView>, StoreError> {
        self.inner.get(connection_id).await
    }

    async fn read(&self, connection_id: &ConnectionId) -> Result<Option<ConnectionInfo>, StoreError> {
        self.inner.read(connection_id).await
    }

    async fn put(&self, view: &ConnectionInfo, expected_version: Option<u64>) -> Result<u64, StoreError> {
        let version = self.inner.put(view, expected_version).await?;
        self.dashboard.observe(view);
        Ok(version)
    }

    async fn list_by_user(
        &self,
        user_id: &UserId,
        status: Option<ConnectionStatus>,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError> {
        self.inner.list_by_user(user_id, status, page).await
    }

    async fn list_live_until_before(
        &self,
        deadline: Timestamp,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError> {
        self.inner.list_live_until_before(deadline, page).await
    }
}

fn refuse() -> Response {
    (StatusCode::UNAUTHORIZED, "the dashboard needs ?token=<--dashboard-token>").into_response()
}

fn store_error(error: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "error": error.to_string() }))).into_response()
}

/// What the dashboard needs of the emulator: itself (when on), the stores it
/// reads, the API's name for the page without it, and the shutdown its streams end on.
#[derive(Clone)]
pub(crate) struct DashboardState {
    dashboard: Option<Arc<Dashboard>>,
    events: Arc<dyn EventStore>,
    views: Arc<dyn ViewStore>,
    presence: Option<Arc<dyn PresenceStore>>,
    domain_name: String,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl FromRef<Arc<AppState>> for DashboardState {
    fn from_ref(state: &Arc<AppState>) -> Self {
        DashboardState {
            dashboard: state.dashboard.clone(),
            events: state.events.clone(),
            views: state.views.clone(),
            presence: state.presence.clone(),
            domain_name: state.api.domain_name.clone(),
            shutdown: state.shutdown.clone(),
        }
    }
}

fn dashboard_of(state: &DashboardState) -> Option<&Arc<Dashboard>> {
    state.dashboard.as_ref()
}

/// The dashboard, when it is on and the request carries its token.
fn authorized<'a>(
    state: &'a DashboardState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Option<&'a Arc<Dashboard>> {
    dashboard_of(state).filter(|dashboard| dashboard.allows(headers, query))
}

/// `GET /` without an upgrade.
pub(crate) async fn page(state: &DashboardState, headers: &HeaderMap, query: &HashMap<String, String>) -> Response {
    match dashboard_of(state) {
        Some(dashboard) if dashboard.allows(headers, query) => Html(PAGE).into_response(),
        Some(_) => refuse(),
        None => (
            StatusCode::UPGRADE_REQUIRED,
            format!("wsledger: connect with a WebSocket client to ws://{}/?userId=...", state.domain_name),
        )
            .into_response(),
    }
}

/// `GET /api/connections`: live connections and the recently projected ones, newest first.
async fn connections(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(dashboard) = authorized(&state, &headers, &query) else { return refuse() };
    let live =
        match crate::audit::connections(state.views.as_ref(), None, Some(ConnectionStatus::Connected), Some(1_000))
            .await
        {
            Ok(live) => live,
            Err(error) => return store_error(error),
        };
    let mut by_id: HashMap<ConnectionId, ConnectionInfo> =
        live.into_iter().map(|view| (view.connection_id.clone(), view)).collect();
    for view in dashboard.recent() {
        by_id.insert(view.connection_id.clone(), view);
    }
    let mut views: Vec<ConnectionInfo> = by_id.into_values().collect();
    views.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.connection_id.cmp(&a.connection_id)));
    axum::Json(views.iter().map(view_json).collect::<Vec<_>>()).into_response()
}

/// `GET /api/connections/{id}/history`: one connection's events, in order.
async fn connection_history(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Response {
    if authorized(&state, &headers, &query).is_none() {
        return refuse();
    }
    let Ok(connection_id) = ConnectionId::parse(id) else {
        return (StatusCode::BAD_REQUEST, "not a connection id").into_response();
    };
    match history(
        state.events.as_ref(),
        HistoryQuery::Connection { connection_id, range: TimeRange::ALL },
        HistoryFilter::default(),
    )
    .await
    {
        Ok(events) => axum::Json(events.iter().map(EventItem::from).collect::<Vec<_>>()).into_response(),
        Err(error) => store_error(error),
    }
}

/// `GET /api/activity`: events per minute over the last 30 minutes.
async fn activity(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if authorized(&state, &headers, &query).is_none() {
        return refuse();
    }
    let now = Timestamp::now();
    let minutes = 30i64;
    let since = Timestamp::from_epoch_millis((now.epoch_millis() / 60_000 - minutes + 1) * 60_000);
    let filter = HistoryFilter { kinds: Vec::new(), limit: Some(20_000) };
    let window = HistoryQuery::Window { since, until: now.plus(chrono::TimeDelta::seconds(1)) };
    match history(state.events.as_ref(), window, filter).await {
        Ok(events) => {
            let mut counts = vec![0u64; minutes as usize];
            for event in events {
                let index = ((event.at.epoch_millis() - since.epoch_millis()) / 60_000) as usize;
                if let Some(count) = counts.get_mut(index) {
                    *count += 1;
                }
            }
            axum::Json(json!({ "since": since.to_rfc3339(), "perMinute": counts })).into_response()
        }
        Err(error) => store_error(error),
    }
}

/// `GET /api/stream`: every view the projector writes, as Server-Sent Events,
/// until the client leaves or the server shuts down.
async fn stream(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(dashboard) = authorized(&state, &headers, &query) else { return refuse() };
    sse(dashboard.updates.subscribe(), "view", state.shutdown.clone())
}

/// Server-Sent Events of what `receiver` gets, each as an `event: {name}`; a page
/// that fell behind gets `resync` (and reloads what it shows), until the server
/// stops or the page leaves.
fn sse(
    receiver: broadcast::Receiver<String>,
    name: &'static str,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Response {
    let events = futures::stream::unfold(receiver, move |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(data) => Event::default().event(name).data(data),
            Err(broadcast::error::RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<Event, Infallible>(event), receiver))
    });
    let events = events.take_until(crate::local::stopped(shutdown));
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/connections", get(connections))
        .route("/api/connections/{id}/history", get(connection_history))
        .route("/api/activity", get(activity))
        .route("/api/stream", get(stream))
        .route("/api/presence", get(presence::presence))
        .route("/api/presence/stream", get(presence::presence_stream))
}
