//! The Management API (`@connections`) on the emulator's own port, with or without
//! a stage prefix. Unknown and closed connections answer 410 with
//! `x-amzn-ErrorType: GoneException`, so the AWS SDKs raise `GoneException`; a
//! client whose outbound queue is full answers 429 `LimitExceededException` at
//! once. Nothing here waits on a client.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::registry::DELETE_REASON;
use crate::local::AppState;
use axum::extract::FromRef;

use super::registry::Registry;
use crate::ports::GatewayError;

fn error(status: StatusCode, kind: &'static str, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "message": message }))).into_response();
    response.headers_mut().insert("x-amzn-ErrorType", HeaderValue::from_static(kind));
    response
}

fn gateway_error(failure: GatewayError) -> Response {
    match failure {
        GatewayError::Gone => error(StatusCode::GONE, "GoneException", "the connection is gone"),
        GatewayError::PayloadTooLarge(message) => {
            error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLargeException", message.message())
        }
        GatewayError::Throttled(message) => {
            error(StatusCode::TOO_MANY_REQUESTS, "LimitExceededException", message.message())
        }
        GatewayError::Other(message) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", message.message())
        }
    }
}

/// What `@connections` needs of the emulator: the live connections and the
/// message limit.
#[derive(Clone)]
pub(crate) struct ManagementState {
    registry: Arc<Registry>,
    max_message_bytes: usize,
}

impl FromRef<Arc<AppState>> for ManagementState {
    fn from_ref(state: &Arc<AppState>) -> Self {
        ManagementState { registry: state.registry.clone(), max_message_bytes: state.config.limits.max_message_bytes }
    }
}

async fn post_to_connection(State(state): State<ManagementState>, Path(id): Path<String>, body: Bytes) -> Response {
    if body.len() > state.max_message_bytes {
        return gateway_error(GatewayError::PayloadTooLarge(
            format!("{} bytes; the limit is {}", body.len(), state.max_message_bytes).into(),
        ));
    }
    match state.registry.post(&id, body) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(failure) => gateway_error(failure),
    }
}

async fn get_connection(State(state): State<ManagementState>, Path(id): Path<String>) -> Response {
    match state.registry.info(&id) {
        Ok(connection) => {
            let mut identity = json!({ "sourceIp": connection.source_ip });
            if let Some(user_agent) = connection.user_agent {
                identity["userAgent"] = json!(user_agent);
            }
            axum::Json(json!({
                "connectedAt": connection.connected_at.map(|at| at.to_rfc3339()),
                "identity": identity,
                "lastActiveAt": connection.last_active_at.map(|at| at.to_rfc3339()),
            }))
            .into_response()
        }
        Err(failure) => gateway_error(failure),
    }
}

async fn delete_connection(State(state): State<ManagementState>, Path(id): Path<String>) -> Response {
    match state.registry.close(&id, 1000, DELETE_REASON) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(failure) => gateway_error(failure),
    }
}

async fn staged_post(state: State<ManagementState>, Path((_, id)): Path<(String, String)>, body: Bytes) -> Response {
    post_to_connection(state, Path(id), body).await
}

async fn staged_get(state: State<ManagementState>, Path((_, id)): Path<(String, String)>) -> Response {
    get_connection(state, Path(id)).await
}

async fn staged_delete(state: State<ManagementState>, Path((_, id)): Path<(String, String)>) -> Response {
    delete_connection(state, Path(id)).await
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/@connections/{id}", post(post_to_connection).get(get_connection).delete(delete_connection))
        .route("/{stage}/@connections/{id}", post(staged_post).get(staged_get).delete(staged_delete))
}
