//! One WebSocket connection of the emulator: `$connect` before the upgrade, then
//! frames to `$default`, replies and `@connections` posts back, the limits, and
//! `$disconnect` however it ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};

use super::apigw_event::{ConnectionContext, MessageBody, new_id};
use super::http::ResetOnClose;
use super::registry::{CloseRequest, LiveConnection, Outbox};
use crate::auth::{AuthError, token_from};
use crate::domain::{ConnectionId, Timestamp, UserId};
use crate::handler::Response as HandlerResponse;
use crate::local::AppState;
use crate::local::AuthMode;

/// The WebSocket read buffer per connection: small, so a hundred thousand idle
/// connections cost little (axum's default is 128 KiB, allocated eagerly; 4 KiB
/// cost 3 KB more per connection, BENCHMARKS.md). A ping fits; larger frames still
/// arrive whole, read in chunks of this size.
const READ_BUFFER_BYTES: usize = 1024;
/// The most a slow client may have queued before writes wait.
const MAX_WRITE_BUFFER_BYTES: usize = 512 * 1024;
/// Posts queued per connection; the next one answers `LimitExceededException`.
const OUTBOUND_QUEUE: usize = 32;
/// The reason recorded for a client that stopped reading (`kicked`: the server closed it).
pub const STALLED_REASON: &str = "Server-side close: write timeout, the client stopped reading";

/// Who is connecting, by the configured authorizer; an HTTP status when refused.
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<UserId, StatusCode> {
    if let Some(decided) = state.integration.authorize(&state.api, headers, query).await {
        return decided;
    }
    match &state.config.auth {
        AuthMode::Dev => {
            query.get("userId").and_then(|user| UserId::parse(user.as_str()).ok()).ok_or(StatusCode::UNAUTHORIZED)
        }
        AuthMode::Jwt(verifier) => {
            let authorization = headers.get("authorization").and_then(|value| value.to_str().ok());
            let token = token_from(query.get("token").map(String::as_str), authorization);
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
pub(crate) async fn entry(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    reset: Option<Extension<ResetOnClose>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        let dashboard = <crate::local::dashboard::DashboardState as axum::extract::FromRef<_>>::from_ref(&state);
        return crate::local::dashboard::page(&dashboard, &headers, &query).await;
    };
    if *state.shutdown.borrow() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let user_id = match authorize(&state, &headers, &query).await {
        Ok(user_id) => user_id,
        Err(status) => return status.into_response(),
    };
    let Ok(connection_id) = ConnectionId::parse(new_id()) else {
        tracing::error!("the emulator made an invalid connection id");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let context = Arc::new(ConnectionContext {
        connection_id,
        connected_at: Timestamp::now(),
        source_ip: peer.ip().to_string(),
        user_agent: headers.get("user-agent").and_then(|value| value.to_str().ok()).map(str::to_owned),
        user_id,
        api: state.api.clone(),
    });
    // $connect completes before the upgrade is accepted; a refusal refuses the handshake.
    let connect = context.connect(&headers, &query, &new_id(), context.connected_at);
    let response = state.integration.route(&connect).await;
    if !(200..300).contains(&response.status) {
        let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return status.into_response();
    }
    let limits = state.config.limits;
    // Both callbacks live as long as the connection (axum keeps the failure callback
    // beside the connection's task), so they share the context instead of copying it.
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
            tokio::spawn(async move { disconnect(&state, &context, 1006, "Upgrade failed", Timestamp::now()).await });
        })
        // The socket boxed: an `async fn` keeps its arguments for its whole life, and
        // the WebSocket (several hundred bytes) is moved out at once by `split()`.
        .on_upgrade(move |socket| {
            run_connection(state, context, Box::new(socket), reset.map(|reset| reset.0).unwrap_or_default())
        })
}

/// One message frame through the handler: `serve`'s own, given the request
/// directly, or with `--lambda` the function of the route the selection expression
/// picks, given API Gateway's event.
async fn handle_message(
    state: &AppState,
    context: &ConnectionContext,
    body: MessageBody,
    at: Timestamp,
) -> HandlerResponse {
    state.integration.message(context, body, at).await
}

async fn disconnect(state: &AppState, context: &ConnectionContext, code: u16, reason: &str, at: Timestamp) {
    let event = context.disconnect(code, reason, &new_id(), at);
    let response = state.integration.route(&event).await;
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
///
/// The downcast only matches when the direct `tungstenite` dependency is the very
/// version axum uses; on a mismatch every oversized message would read as 1006.
/// `tests/it/serve.rs` `an_oversized_message_closes_with_1009` fails if that happens.
fn read_error(error: axum::Error) -> (u16, String) {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(capacity)) => (1009, format!("Message too big: {capacity}")),
        _ => (1006, format!("Connection closed abnormally: {inner}")),
    }
}

/// The time of a connection's next request. API Gateway dates requests in
/// milliseconds, and events of one millisecond sort by kind, not by when they
/// happened; the emulator knows the order of a connection's requests, so it gives
/// them strictly increasing times (at least a millisecond apart), and a connection's
/// history always reads in the order its requests came. Only the connection's own
/// task calls this.
fn request_time(live: &LiveConnection) -> Timestamp {
    let previous = live.last_active_at.load(Ordering::Relaxed);
    let at = Timestamp::now().epoch_millis().max(previous + 1);
    live.last_active_at.store(at, Ordering::Relaxed);
    Timestamp::from_epoch_millis(at)
}

enum Ending {
    /// The client closed (or vanished): record only.
    Client { code: u16, reason: String },
    /// We close: send a close frame (if the client still reads), then record.
    Server { code: u16, frame_reason: String, recorded_reason: String },
    /// The client stopped reading: drop the socket with a reset, then record.
    Stalled,
}

impl Ending {
    fn going_away(recorded_reason: &str) -> Self {
        Ending::Server { code: 1001, frame_reason: "Going away".into(), recorded_reason: recorded_reason.into() }
    }

    fn abnormal() -> Self {
        Ending::Client { code: 1006, reason: "Connection closed abnormally".into() }
    }
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;
type Stream = futures::stream::SplitStream<WebSocket>;
/// A frame being written: it owns the sink and gives it back when done.
type Write = std::pin::Pin<Box<dyn Future<Output = (Sink, Result<(), axum::Error>)> + Send>>;

/// The sink of a connection: ready to write, or lent to the frame being written.
enum Writer {
    Ready(Sink),
    Writing {
        write: Write,
        deadline: tokio::time::Instant,
    },
    /// Only while a state change is under way.
    Gone,
}

impl Writer {
    fn start(&mut self, message: Message, timeout: std::time::Duration) {
        if let Writer::Ready(mut sink) = std::mem::replace(self, Writer::Gone) {
            let write: Write = Box::pin(async move {
                let result = sink.send(message).await;
                (sink, result)
            });
            *self = Writer::Writing { write, deadline: tokio::time::Instant::now() + timeout };
        }
    }

    fn is_ready(&self) -> bool {
        matches!(self, Writer::Ready(_))
    }

    /// The end of the write under way (never resolves when there is none): `Ok`
    /// when the frame left, `Err(None)` past its deadline, `Err(Some(_))` when the
    /// socket failed.
    async fn progress(&mut self) -> Result<(), Option<axum::Error>> {
        let Writer::Writing { write, deadline } = self else { return std::future::pending().await };
        match tokio::time::timeout_at(*deadline, write).await {
            Ok((sink, result)) => {
                *self = Writer::Ready(sink);
                result.map_err(Some)
            }
            Err(_) => Err(None),
        }
    }
}

/// How long a close frame may take to leave, at the end: the client is not reading
/// when it takes longer.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a frame already on its way may take to finish when the connection ends.
const IN_FLIGHT_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

async fn run_connection(
    state: Arc<AppState>,
    context: Arc<ConnectionContext>,
    socket: Box<WebSocket>,
    reset: ResetOnClose,
) {
    state.active.fetch_add(1, Ordering::SeqCst);
    let live = Arc::new(LiveConnection {
        outbox: Outbox::new(OUTBOUND_QUEUE),
        last_active_at: AtomicI64::new(context.connected_at.epoch_millis()),
        context: context.clone(),
    });
    state.registry.insert(context.connection_id.as_str(), live.clone());

    let (sink, stream) = (*socket).split();
    let mut writer = Writer::Ready(sink);
    let ending = converse(&state, &context, &live, &mut writer, stream).await;

    // Gone from @connections before $disconnect runs, as in API Gateway.
    state.registry.remove(context.connection_id.as_str());
    live.outbox.end();
    // Boxed: the ending's futures exist only at the end.
    let (code, reason) = Box::pin(finish(writer, ending, &reset)).await;
    Box::pin(disconnect(&state, &context, code, &reason, request_time(&live))).await;
    if state.active.fetch_sub(1, Ordering::SeqCst) == 1 {
        state.drained.notify_waiters();
    }
}

/// A message being handled: its route response, once the integration answers.
type Handling<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = HandlerResponse> + Send + 'a>>;

/// Reads frames and writes replies and posts, one frame in flight at a time, until
/// something ends the connection. Every wait here is raced against the limits,
/// `DELETE @connections` and shutdown, so none of them waits on the client. A
/// message is handled while posts keep going out, as on API Gateway (a handler
/// that posts to its own connection, as a `resume` does, is not stuck behind
/// itself); the next message is read once it has been answered.
async fn converse(
    state: &AppState,
    context: &ConnectionContext,
    live: &LiveConnection,
    writer: &mut Writer,
    mut stream: Stream,
) -> Ending {
    let limits = state.config.limits;
    let write_timeout = state.config.write_timeout;
    // API Gateway ends a connection idle for the idle timeout or older than the
    // maximum duration, the same way (1001, "Going away"): one timer, set to
    // whichever comes first, costs an idle connection one timer entry, not two.
    let too_old_at = tokio::time::Instant::now() + limits.max_duration;
    let going_away_at = move |now: tokio::time::Instant| (now + limits.idle_timeout).min(too_old_at);
    let going_away = tokio::time::sleep_until(going_away_at(tokio::time::Instant::now()));
    let shutdown = crate::local::stopped(state.shutdown.clone());
    let closing = live.outbox.close_requested();
    tokio::pin!(going_away, shutdown, closing);
    let mut handling: Option<Handling<'_>> = None;
    loop {
        let ready = writer.is_ready();
        tokio::select! {
            biased;
            _ = &mut shutdown => return Ending::going_away("Server-side close: shutdown"),
            CloseRequest { code, reason } = &mut closing => {
                return Ending::Server { code, frame_reason: String::new(), recorded_reason: reason };
            }
            _ = &mut going_away => return Ending::going_away("Going away"),
            written = writer.progress() => match written {
                Ok(()) => {}
                Err(Some(_)) => return Ending::abnormal(),
                Err(None) => {
                    tracing::info!(connection_id = %context.connection_id, ?write_timeout, "the client stopped reading; closing");
                    return Ending::Stalled;
                }
            },
            response = async { handling.as_mut().expect("polled only while handling").await }, if ready && handling.is_some() => {
                handling = None;
                if let Some(reply) = response.body {
                    writer.start(Message::Text(reply.into()), write_timeout);
                }
            }
            // Read only when the last frame has left and the last message has been
            // answered: a client that does not read is not read from either (and
            // the write deadline ends it).
            frame = stream.next(), if ready && handling.is_none() => {
                let body = match message_body(frame) {
                    Ok(Some(body)) => body,
                    Ok(None) => continue,
                    Err(ending) => return ending,
                };
                let now = request_time(live);
                going_away.as_mut().reset(going_away_at(tokio::time::Instant::now()));
                // Boxed: the message's work exists only while it is handled, so an
                // idle connection's task stays small.
                handling = Some(Box::pin(handle_message(state, context, body, now)));
            }
            data = live.outbox.next_post(), if ready => {
                let message = match std::str::from_utf8(&data) {
                    Ok(text) => Message::Text(text.to_owned().into()),
                    Err(_) => Message::Binary(data),
                };
                writer.start(message, write_timeout);
            }
        }
    }
}

/// What a read frame is: a message to handle, nothing to handle (a ping or a
/// pong), or the end of the connection.
fn message_body(frame: Option<Result<Message, axum::Error>>) -> Result<Option<MessageBody>, Ending> {
    match frame {
        Some(Ok(Message::Text(text))) => Ok(Some(MessageBody::Text(text.to_string()))),
        Some(Ok(Message::Binary(bytes))) => Ok(Some(MessageBody::Binary(bytes.into()))),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
        Some(Ok(Message::Close(frame))) => {
            let (code, reason) = frame.map_or((1005, String::new()), |frame| (frame.code, frame.reason.to_string()));
            let reason =
                format!("Client-side close frame status code '{code}' ({}) - with reason '{reason}'", close_name(code));
            Err(Ending::Client { code, reason })
        }
        Some(Err(error)) => {
            let (code, reason) = read_error(error);
            if code == 1009 {
                return Err(Ending::Server { code, frame_reason: "Message too big".into(), recorded_reason: reason });
            }
            Err(Ending::Client { code, reason })
        }
        None => Err(Ending::abnormal()),
    }
}

/// Ends the socket as `ending` says, within [`CLOSE_TIMEOUT`]; returns the status
/// and reason `$disconnect` records.
async fn finish(writer: Writer, ending: Ending, reset: &ResetOnClose) -> (u16, String) {
    let sink = match writer {
        Writer::Ready(sink) => Some(sink),
        // A frame on its way out may be all but written (its bytes may even have
        // arrived) when the ending wins the race: let it finish, within its deadline
        // and IN_FLIGHT_GRACE. Only a frame still stuck then means the client is not
        // reading.
        Writer::Writing { write, deadline } => {
            let until = deadline.min(tokio::time::Instant::now() + IN_FLIGHT_GRACE);
            match tokio::time::timeout_at(until, write).await {
                Ok((sink, Ok(()))) => Some(sink),
                _ => None,
            }
        }
        Writer::Gone => None,
    };
    match (ending, sink) {
        (Ending::Client { code, reason }, Some(mut sink)) => {
            // Completes the closing handshake (tungstenite queued the reply to the client's close).
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
            (code, reason)
        }
        (Ending::Client { code, reason }, None) => (code, reason),
        (Ending::Server { code, frame_reason, recorded_reason }, Some(mut sink)) => {
            let frame = CloseFrame { code, reason: frame_reason.into() };
            let closed = tokio::time::timeout(CLOSE_TIMEOUT, async {
                let _ = sink.send(Message::Close(Some(frame))).await;
                let _ = sink.close().await;
            })
            .await;
            if closed.is_err() {
                reset.set();
            }
            (code, recorded_reason)
        }
        (Ending::Server { code, recorded_reason, .. }, None) => {
            reset.set();
            (code, recorded_reason)
        }
        (Ending::Stalled, _) => {
            reset.set();
            (1006, STALLED_REASON.to_owned())
        }
    }
}
