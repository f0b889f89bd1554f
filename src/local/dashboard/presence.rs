//! Presence in `serve`: `GET /api/presence` (the users online, or `?user=` one
//! user, as the contract's objects), `GET /api/presence/stream` (presence events as
//! Server-Sent Events), and the sink that feeds that stream.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Dashboard, DashboardState, authorized, refuse, sse, store_error};
use crate::adapters::stored::{PresenceEventItem, PresenceJson};
use crate::domain::presence::PresenceEvent;
use crate::domain::{Timestamp, UserId};
use crate::ports::{PresenceSink, SinkError};

/// The sink behind `GET /api/presence/stream`: never fails (a page that is not
/// listening misses nothing it could not read from `GET /api/presence`).
pub struct PresenceFeed(pub Arc<Dashboard>);

#[async_trait]
impl PresenceSink for PresenceFeed {
    fn name(&self) -> &str {
        "sse"
    }

    async fn publish(&self, events: &[PresenceEvent]) -> Result<(), SinkError> {
        for event in events {
            let json = serde_json::to_string(&PresenceEventItem::from(event))
                .map_err(|error| SinkError(format!("encoding a presence event: {error}")))?;
            let _ = self.0.presence_updates.send(json);
        }
        Ok(())
    }
}

/// `GET /api/presence`: the users online now, in user id order; with `?user=ID`,
/// that user (online or not; 404 when never seen).
pub(super) async fn presence(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if authorized(&state, &headers, &query).is_none() {
        return refuse();
    }
    let Some(store) = &state.presence else {
        return (StatusCode::NOT_FOUND, "presence is off").into_response();
    };
    let now = Timestamp::now();
    match query.get("user") {
        Some(user) => {
            let Ok(user_id) = UserId::parse(user.clone()) else {
                return (StatusCode::BAD_REQUEST, "not a user id").into_response();
            };
            match crate::presence::read(store.as_ref(), &user_id, now).await {
                Ok(Some(presence)) => axum::Json(PresenceJson::from(&presence)).into_response(),
                Ok(None) => (StatusCode::NOT_FOUND, "no presence for this user").into_response(),
                Err(error) => store_error(error),
            }
        }
        None => match crate::presence::online(store.as_ref(), now).await {
            Ok(online) => axum::Json(online.iter().map(PresenceJson::from).collect::<Vec<_>>()).into_response(),
            Err(error) => store_error(error),
        },
    }
}

/// `GET /api/presence/stream`: presence events (`event: presence`, the contract's
/// JSON as data) as they are made, until the client leaves or the server stops.
pub(super) async fn presence_stream(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(dashboard) = authorized(&state, &headers, &query) else { return refuse() };
    sse(dashboard.presence_updates.subscribe(), "presence", state.shutdown.clone())
}
