//! One WebSocket connection of the emulator: `$connect` before the upgrade, then
//! frames to `$default`, replies and `@connections` posts back, the limits, and
//! `$disconnect` however it ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::AppState;
use super::AuthMode;
use super::apigw_event::{ConnectionContext, new_id};
use super::registry::{LiveConnection, Outbound};
use crate::auth::AuthError;
use crate::domain::{Timestamp, UserId};
use crate::handler::Response as HandlerResponse;
use crate::lambda::connection_handler::request_of;

/// The WebSocket read buffer per connection: small, so ten thousand idle
/// connections cost little (axum's default is 128 KiB, allocated eagerly). Larger
/// frames still arrive whole; they are read in several chunks.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// The most a slow client may have queued before writes wait.
const MAX_WRITE_BUFFER_BYTES: usize = 512 * 1024;
/// Posts queued per connection before `@connections` waits.
const OUTBOUND_QUEUE: usize = 32;

async fn run_handler(
    state: &AppState,
    event: &aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest,
) -> HandlerResponse {
    match request_of(event, &new_id()) {
        Ok((meta, route)) => state.handler.handle(&meta, route).await,
        Err(error) => {
            tracing::error!(%error, "the emulator built an invalid event");
            HandlerResponse { status: 500, body: None }
        }
    }
}

/// Who is connecting, by the configured authorizer; an HTTP status when refused.
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<UserId, StatusCode> {
    match &state.config.auth {
        AuthMode::Dev => {
            query.get("userId").and_then(|user| UserId::parse(user.as_str()).ok()).ok_or(StatusCode::UNAUTHORIZED)
        }
        AuthMode::Jwt(verifier) => {
            let token = query.get("token").cloned().or_else(|| {
                let header = headers.get("authorization")?.to_str().ok()?;
                Some(header.strip_prefix("Bearer ").unwrap_or(header).to_owned())
            });
            match verifier.verify(token.as_deref().unwrap_or_default()).await {
                Ok(user_id) => Ok(user_id),
                Err(AuthError::MissingToken) => Err(StatusCode::UNAUTHORIZED),
                Err(error) => {
                    tracing::info!(%error, "$connect refused by the authorizer");
                    Err(StatusCode::FORBIDDEN)
                }
            }
        }
    }
}

/// `GET /` (or `/{stage}`): the WebSocket handshake.
pub(super) async fn entry(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return super::dashboard::page(&state, &headers, &query).await;
    };
    if *state.shutdown.borrow() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let user_id = match authorize(&state, &headers, &query).await {
        Ok(user_id) => user_id,
        Err(status) => return status.into_response(),
    };
    let context = ConnectionContext {
        connection_id: new_id(),
        connected_at: Timestamp::now(),
        source_ip: peer.ip().to_string(),
        user_agent: headers.get("user-agent").and_then(|value| value.to_str().ok()).map(str::to_owned),
        user_id,
        domain_name: state.domain_name.clone(),
        stage: state.config.stage.clone(),
        api_id: "wsledger-local".into(),
    };
    // $connect completes before the upgrade is accepted; a refusal refuses the handshake.
    let connect = context.connect(&headers, &query, &new_id(), context.connected_at);
    let response = run_handler(&state, &connect).await;
    if !(200..300).contains(&response.status) {
        let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return status.into_response();
    }
    let limits = state.config.limits;
    let failed_state = state.clone();
    let failed_context = context.clone();
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_frame_size(limits.max_frame_bytes)
        .max_message_size(limits.max_message_bytes)
        .on_failed_upgrade(move |error| {
            tracing::warn!(%error, "the upgrade failed after $connect");
            let state = failed_state.clone();
            let context = failed_context.clone();
            tokio::spawn(async move { disconnect(&state, &context, 1006, "Upgrade failed").await });
        })
        .on_upgrade(move |socket| run_connection(state, context, socket))
}

async fn disconnect(state: &AppState, context: &ConnectionContext, code: u16, reason: &str) {
    let event = context.disconnect(code, reason, &new_id(), Timestamp::now());
    let response = run_handler(state, &event).await;
    if response.status >= 300 {
        tracing::error!(connection_id = %context.connection_id, status = response.status, "$disconnect failed");
    }
}

fn close_name(code: u16) -> &'static str {
    match code {
        1000 => "NORMAL_CLOSURE",
        1001 => "GOING_AWAY",
        1002 => "PROTOCOL_ERROR",
        1003 => "UNSUPPORTED_DATA",
        1005 => "NO_STATUS_CODE",
        1006 => "ABNORMAL_CLOSURE",
        1007 => "INVALID_FRAME_PAYLOAD_DATA",
        1008 => "POLICY_VIOLATION",
        1009 => "MESSAGE_TOO_BIG",
        1011 => "INTERNAL_ERROR",
        _ => "UNKNOWN",
    }
}

/// How a read error ends the connection: 1009 when a limit was exceeded.
fn read_error(error: axum::Error) -> (u16, String) {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(capacity)) => (1009, format!("Message too big: {capacity}")),
        _ => (1006, format!("Connection closed abnormally: {inner}")),
    }
}

enum Ending {
    /// The client closed (or vanished): record only.
    Client { code: u16, reason: String },
    /// We close: send a close frame, then record.
    Server { code: u16, frame_reason: String, recorded_reason: String },
}

async fn run_connection(state: Arc<AppState>, context: ConnectionContext, socket: WebSocket) {
    state.active.fetch_add(1, Ordering::SeqCst);
    let (sender, mut outbound) = mpsc::channel(OUTBOUND_QUEUE);
    let live = Arc::new(LiveConnection {
        sender,
        connected_at: context.connected_at,
        last_active_at: AtomicI64::new(context.connected_at.epoch_millis()),
        source_ip: context.source_ip.clone(),
        user_agent: context.user_agent.clone(),
    });
    state.registry.insert(&context.connection_id, live.clone());

    let limits = state.config.limits;
    let (mut sink, mut stream) = socket.split();
    let idle = tokio::time::sleep(limits.idle_timeout);
    let too_old = tokio::time::sleep(limits.max_duration);
    tokio::pin!(idle, too_old);
    let shutdown = super::stopped(state.shutdown.clone());
    tokio::pin!(shutdown);

    let ending = loop {
        tokio::select! {
            frame = stream.next() => {
                let (body, is_base64) = match frame {
                    Some(Ok(Message::Text(text))) => (text.to_string(), false),
                    Some(Ok(Message::Binary(bytes))) => (BASE64.encode(&bytes), true),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |frame| (frame.code, frame.reason.to_string()));
                        let reason = format!(
                            "Client-side close frame status code '{code}' ({}) - with reason '{reason}'",
                            close_name(code)
                        );
                        break Ending::Client { code, reason };
                    }
                    Some(Err(error)) => {
                        let (code, reason) = read_error(error);
                        if code == 1009 {
                            break Ending::Server { code, frame_reason: "Message too big".into(), recorded_reason: reason };
                        }
                        break Ending::Client { code, reason };
                    }
                    None => break Ending::Client { code: 1006, reason: "Connection closed abnormally".into() },
                };
                let now = Timestamp::now();
                live.last_active_at.store(now.epoch_millis(), Ordering::Relaxed);
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                let route_key = state
                    .config
                    .route_selection
                    .as_ref()
                    .map_or_else(|| "$default".to_owned(), |selection| selection.route_of(&body));
                let event = context.message(&route_key, &body, is_base64, &new_id(), &new_id(), now);
                // Boxed: the handler's future exists only while a message is handled,
                // so an idle connection's task stays small.
                let response = Box::pin(run_handler(&state, &event)).await;
                if let Some(reply) = response.body
                    && sink.send(Message::Text(reply.into())).await.is_err()
                {
                    break Ending::Client { code: 1006, reason: "Connection closed abnormally".into() };
                }
            }
            command = outbound.recv() => match command {
                Some(Outbound::Post(data)) => {
                    let message = match std::str::from_utf8(&data) {
                        Ok(text) => Message::Text(text.to_owned().into()),
                        Err(_) => Message::Binary(data),
                    };
                    if sink.send(message).await.is_err() {
                        break Ending::Client { code: 1006, reason: "Connection closed abnormally".into() };
                    }
                }
                Some(Outbound::Close { code, reason }) => {
                    break Ending::Server { code, frame_reason: String::new(), recorded_reason: reason };
                }
                None => break Ending::Client { code: 1006, reason: "Connection closed abnormally".into() },
            },
            _ = &mut idle => break Ending::Server { code: 1001, frame_reason: "Going away".into(), recorded_reason: "Going away".into() },
            _ = &mut too_old => break Ending::Server { code: 1001, frame_reason: "Going away".into(), recorded_reason: "Going away".into() },
            _ = &mut shutdown => break Ending::Server {
                code: 1001,
                frame_reason: "Going away".into(),
                recorded_reason: "Server-side close: shutdown".into(),
            },
        }
    };

    // Gone from @connections before $disconnect runs, as in API Gateway.
    state.registry.remove(&context.connection_id);
    let (code, reason) = match ending {
        Ending::Client { code, reason } => {
            // Completes the closing handshake (tungstenite queued the reply to the client's close).
            let _ = sink.close().await;
            (code, reason)
        }
        Ending::Server { code, frame_reason, recorded_reason } => {
            let frame = CloseFrame { code, reason: frame_reason.into() };
            let _ = sink.send(Message::Close(Some(frame))).await;
            let _ = sink.close().await;
            (code, recorded_reason)
        }
    };
    Box::pin(disconnect(&state, &context, code, &reason)).await;
    if state.active.fetch_sub(1, Ordering::SeqCst) == 1 {
        state.drained.notify_waiters();
    }
}
