//! The connection handler: `$connect`, `$disconnect` and `$default`, as an
//! application service. No Lambda or API Gateway types: the Lambda entry point
//! (`lambda::connection_handler`) and the local emulator convert their requests
//! into [`RequestMeta`] and [`Route`] and back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use chrono::TimeDelta;

use crate::domain::decide::{Decision, decide};
use crate::domain::lease::{LimitReached, UserLeases, lease_until};
use crate::domain::protocol::{ClientMessage, ErrorCode, ProtocolError, ServerMessage, parse_client_message};
use crate::domain::{
    ConnectionEvent, ConnectionId, DisconnectReason, EventEnvelope, MAX_CONNECTION_DURATION, Timestamp, UserId,
};
use crate::metrics::{Metrics, names};
use crate::policy::{Limiter, Policies, Verdict};
use crate::ports::{
    AppendOutcome, ConnectionGateway, EventStore, LeaseStore, OutboxStore, PageRequest, StoreError, TextResponder,
    ViewStore, VoicePipeline,
};
use crate::recovery::{self, ResumeOutcome};

/// Settings of the handler, from the environment in Lambda.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerConfig {
    /// At most one `Activity` event per connection per interval.
    pub activity_interval: TimeDelta,
    /// Events expire this many days after they happen (0 keeps them forever).
    pub retention_days: u32,
    /// Opt-in limits per user and connection.
    pub policies: Policies,
    /// Reconnect recovery: how long a message sent to a user is kept for a
    /// `resume` (`RECOVERY_WINDOW_SECS`; zero turns recovery off).
    pub recovery_window: TimeDelta,
    /// How long one `resume` may post its replay (`domain::recovery::REPLAY_BUDGET`).
    pub replay_budget: TimeDelta,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        Self {
            activity_interval: TimeDelta::seconds(60),
            retention_days: 90,
            policies: Policies::default(),
            recovery_window: crate::domain::recovery::DEFAULT_RECOVERY_WINDOW,
            replay_budget: crate::domain::recovery::REPLAY_BUDGET,
        }
    }
}

impl HandlerConfig {
    /// From `ACTIVITY_INTERVAL_SECS` (default 60), `RETENTION_DAYS` (default 90) and
    /// the policies' variables (`MAX_CONNECTIONS_PER_USER`, ...), as `lookup` finds
    /// them (`settings::handler_config` reads them from the process).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let number = |name: &str| crate::setting::number::<u32>(&lookup, name);
        let mut config = Self::default();
        if let Some(seconds) = number("ACTIVITY_INTERVAL_SECS")? {
            config.activity_interval = TimeDelta::seconds(i64::from(seconds));
        }
        if let Some(days) = number("RETENTION_DAYS")? {
            config.retention_days = days;
        }
        if let Some(seconds) = number("RECOVERY_WINDOW_SECS")? {
            config.recovery_window = TimeDelta::seconds(i64::from(seconds));
        }
        config.policies = Policies::from_lookup(&lookup)?;
        Ok(config)
    }
}

/// What every API Gateway request carries about its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMeta {
    pub connection_id: ConnectionId,
    pub request_id: String,
    /// `requestTimeEpoch`: the time of every event this request causes.
    pub request_time: Timestamp,
    /// `connectedAt`.
    pub connected_at: Timestamp,
    /// From the authorizer context, and from nowhere else.
    pub user_id: Option<UserId>,
}

/// Which route a request took, with the route's own data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Connect { ip_address: Option<String>, user_agent: Option<String> },
    Disconnect { status_code: Option<i64>, reason: Option<String> },
    Message { body: String },
}

/// The integration response: a status and, for `$default`, the frame to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Option<String>,
}

impl Response {
    fn ok() -> Self {
        Self { status: 200, body: None }
    }

    fn status(status: u16) -> Self {
        Self { status, body: None }
    }

    fn frame(status: u16, message: &ServerMessage) -> Self {
        Self { status, body: Some(message.to_json()) }
    }
}

/// What the handler counts, into the process's [`Metrics`] (which leave the process
/// as EMF lines in Lambda and at `/metrics` in `serve`).
#[derive(Debug, Default)]
pub struct HandlerMetrics {
    metrics: Arc<Metrics>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    pub messages: u64,
    pub rejected: HashMap<ErrorCode, u64>,
    pub appended: u64,
    pub duplicates: u64,
}

impl HandlerMetrics {
    fn reject(&self, code: ErrorCode) {
        self.metrics.add_by(names::REJECTED, "Code", code.as_str(), 1);
        if code == ErrorCode::Unavailable {
            self.metrics.add(names::UNAVAILABLE, 1);
        }
    }

    fn message(&self) {
        self.metrics.add(names::MESSAGES, 1);
    }

    fn appended(&self) {
        self.metrics.add(names::EVENTS_APPENDED, 1);
    }

    fn duplicate(&self) {
        self.metrics.add(names::DUPLICATE_APPENDS, 1);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            messages: self.metrics.total(names::MESSAGES),
            rejected: ErrorCode::ALL
                .iter()
                .map(|code| (*code, self.metrics.count_by(names::REJECTED, code.as_str())))
                .filter(|(_, count)| *count > 0)
                .collect(),
            appended: self.metrics.total(names::EVENTS_APPENDED),
            duplicates: self.metrics.total(names::DUPLICATE_APPENDS),
        }
    }
}

/// Decides, in memory, which messages are recorded as `Activity`: at most one per
/// connection per interval. A failed conditional write is billed like a write, so
/// the store's duplicate check is only the backstop.
#[derive(Debug)]
pub struct ActivityCoalescer {
    interval: TimeDelta,
    connections: HashMap<ConnectionId, ActivityState>,
}

#[derive(Debug, Clone, Copy, Default)]
struct ActivityState {
    last_recorded: Option<Timestamp>,
    unrecorded_messages: u64,
}

/// Above this many tracked connections, connections quiet for longer than API
/// Gateway's maximum connection duration are forgotten.
const MAX_TRACKED_CONNECTIONS: usize = 100_000;

impl ActivityCoalescer {
    pub fn new(interval: TimeDelta) -> Self {
        Self { interval, connections: HashMap::new() }
    }

    /// Counts one message at `at`. Returns the number of messages the `Activity`
    /// event should report when one is due, else `None`.
    pub fn record(&mut self, connection_id: &ConnectionId, at: Timestamp) -> Option<u64> {
        if self.connections.len() >= MAX_TRACKED_CONNECTIONS && !self.connections.contains_key(connection_id) {
            let horizon = at.minus(MAX_CONNECTION_DURATION);
            self.connections.retain(|_, state| state.last_recorded.is_some_and(|last| last > horizon));
        }
        let state = self.connections.entry(connection_id.clone()).or_default();
        state.unrecorded_messages += 1;
        let due = state.last_recorded.is_none_or(|last| at >= last.plus(self.interval));
        if !due {
            return None;
        }
        let count = state.unrecorded_messages;
        state.unrecorded_messages = 0;
        state.last_recorded = Some(at);
        Some(count)
    }

    /// Takes back a decision whose event could not be written, so the next
    /// message tries again.
    pub fn undo(&mut self, connection_id: &ConnectionId, previous: Option<Timestamp>, message_count: u64) {
        if let Some(state) = self.connections.get_mut(connection_id) {
            state.last_recorded = previous;
            state.unrecorded_messages += message_count;
        }
    }

    fn last_recorded(&self, connection_id: &ConnectionId) -> Option<Timestamp> {
        self.connections.get(connection_id).and_then(|state| state.last_recorded)
    }

    /// Forgets a connection; returns the messages it counted that no `Activity`
    /// event has recorded yet.
    pub fn forget(&mut self, connection_id: &ConnectionId) -> u64 {
        self.connections.remove(connection_id).map_or(0, |state| state.unrecorded_messages)
    }
}

/// How API Gateway's disconnect status code and reason map to a reason of ours:
/// 1001 ("going away") without a client-side close frame is API Gateway closing an
/// idle or too old connection; everything else is the client's doing.
/// A reason starting "Server-side close" (the emulator's `DeleteConnection` and
/// shutdown) is the server's doing: `kicked`.
pub fn disconnect_reason(status_code: Option<i64>, reason: Option<&str>) -> DisconnectReason {
    let reason = reason.unwrap_or_default().to_ascii_lowercase();
    if reason.starts_with("server-side close") {
        return DisconnectReason::Kicked;
    }
    match status_code {
        Some(1001) if !reason.starts_with("client-side") => DisconnectReason::Idle,
        _ => DisconnectReason::Client,
    }
}

/// The handler of all three routes. Built once per Lambda container (or per
/// emulator) and shared by every request it serves.
pub struct ConnectionHandler {
    events: Arc<dyn EventStore>,
    /// For the policies that look at a user's connections.
    views: Option<Arc<dyn ViewStore>>,
    /// For `MAX_CONNECTIONS_PER_USER`: the users' connection leases.
    leases: Option<Arc<dyn LeaseStore>>,
    /// For `resume`: the users' outboxes and the Management API the replay posts through.
    recovery: Option<(Arc<dyn OutboxStore>, Arc<dyn ConnectionGateway>)>,
    limiter: Mutex<Limiter>,
    voice: Arc<dyn VoicePipeline>,
    text: Arc<dyn TextResponder>,
    config: HandlerConfig,
    activity: Mutex<ActivityCoalescer>,
    metrics: HandlerMetrics,
}

impl ConnectionHandler {
    pub fn new(
        events: Arc<dyn EventStore>,
        voice: Arc<dyn VoicePipeline>,
        text: Arc<dyn TextResponder>,
        config: HandlerConfig,
    ) -> Self {
        Self {
            events,
            views: None,
            leases: None,
            recovery: None,
            limiter: Mutex::new(Limiter::new(config.policies)),
            voice,
            text,
            activity: Mutex::new(ActivityCoalescer::new(config.activity_interval)),
            config,
            metrics: HandlerMetrics::default(),
        }
    }

    /// The coalescer. Its state stays valid whatever a panicking holder was doing
    /// (each critical section is one map update), so a poisoned lock is recovered:
    /// activity keeps being recorded after a panic elsewhere.
    fn activity(&self) -> std::sync::MutexGuard<'_, ActivityCoalescer> {
        crate::sync::lock(&self.activity)
    }

    /// The views, for `MAX_CONNECTIONS_PER_USER` and `MAX_VOICE_SECONDS_PER_DAY`
    /// (without them those two policies cannot be enforced, and are not).
    pub fn with_views(mut self, views: Arc<dyn ViewStore>) -> Self {
        self.views = Some(views);
        self
    }

    /// The leases that make `MAX_CONNECTIONS_PER_USER` exact under a burst (see
    /// `domain::lease`). Without them the limit counts the user's views, which lag
    /// the ledger by the projection.
    pub fn with_leases(mut self, leases: Arc<dyn LeaseStore>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// Reconnect recovery: `resume` replays from `outbox` through `gateway` (without
    /// them, or with a zero window, a `resume` is answered `resume_failed` `disabled`).
    pub fn with_recovery(mut self, outbox: Arc<dyn OutboxStore>, gateway: Arc<dyn ConnectionGateway>) -> Self {
        self.recovery = Some((outbox, gateway));
        self
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, Limiter> {
        crate::sync::lock(&self.limiter)
    }

    /// Counts into `metrics` (shared with the rest of the process) from now on.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = HandlerMetrics { metrics };
        self
    }

    /// The registry the handler counts into.
    pub fn metrics_registry(&self) -> &Arc<Metrics> {
        &self.metrics.metrics
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    #[tracing::instrument(skip_all, fields(connection_id = %meta.connection_id, request_id = %meta.request_id))]
    pub async fn handle(&self, meta: &RequestMeta, route: Route) -> Response {
        match route {
            Route::Connect { ip_address, user_agent } => self.connect(meta, ip_address, user_agent).await,
            Route::Disconnect { status_code, reason } => self.disconnect(meta, status_code, reason).await,
            Route::Message { body } => self.message(meta, &body).await,
        }
    }

    fn envelope(&self, meta: &RequestMeta, user_id: UserId, event: ConnectionEvent) -> EventEnvelope {
        EventEnvelope::for_request(
            meta.connection_id.clone(),
            user_id,
            meta.request_id.clone(),
            meta.request_time,
            meta.connected_at,
            event,
        )
        .with_retention_days(self.config.retention_days)
    }

    async fn append(&self, event: &EventEnvelope) -> Result<(), StoreError> {
        match self.events.append(event).await {
            Ok(AppendOutcome::Appended) => {
                self.metrics.appended();
                Ok(())
            }
            Ok(AppendOutcome::AlreadyExists) => {
                self.metrics.duplicate();
                tracing::info!(event_id = %event.event_id, kind = %event.kind(), "event already in the ledger (retried request)");
                Ok(())
            }
            Err(error) => {
                tracing::error!(event_id = %event.event_id, kind = %event.kind(), error = %crate::error_chain::chain(&error), "append failed");
                Err(error)
            }
        }
    }

    async fn connect(&self, meta: &RequestMeta, ip_address: Option<String>, user_agent: Option<String>) -> Response {
        let Some(user_id) = meta.user_id.clone() else {
            tracing::warn!("$connect without an authorizer context: refused");
            return Response::status(401);
        };
        let event = self.envelope(meta, user_id.clone(), ConnectionEvent::Connected { ip_address, user_agent });
        let refusal = match self.take_lease(meta, &user_id).await {
            Ok(refusal) => refusal,
            Err(error) => {
                tracing::error!(error = %crate::error_chain::chain(&error), "reading the user's connections failed");
                return Response::status(500);
            }
        };
        let appended = match &refusal {
            None => self.append(&event).await,
            // Recorded: who was refused, when, from where, and why.
            Some(detail) => {
                let refused = ConnectionEvent::Disconnected {
                    reason: DisconnectReason::Refused,
                    status_code: Some(429),
                    detail: Some(detail.clone()),
                    message_count: 0,
                };
                match self.append(&event).await {
                    Ok(()) => self.append(&self.envelope(meta, user_id.clone(), refused)).await,
                    Err(error) => Err(error),
                }
            }
        };
        match (appended, refusal) {
            (Ok(()), None) => Response::ok(),
            (Ok(()), Some(detail)) => {
                self.metrics.metrics.add_by(names::CONNECTS_REFUSED, "Policy", "MAX_CONNECTIONS_PER_USER", 1);
                tracing::warn!(%detail, "$connect refused by a policy");
                Response::status(429)
            }
            // Refuse the connection rather than let it live untracked.
            (Err(_), refusal) => {
                if refusal.is_none() {
                    self.release_lease(meta, &user_id).await;
                }
                Response::status(500)
            }
        }
    }

    /// `MAX_CONNECTIONS_PER_USER` with leases: takes a slot for this connection in
    /// the user's leases (one read, one conditional write; read again when a
    /// concurrent `$connect` wrote first), or says why not. Without a lease store,
    /// counts the user's views ([`Self::connection_limit`]).
    async fn take_lease(&self, meta: &RequestMeta, user_id: &UserId) -> Result<Option<String>, StoreError> {
        let max = self.config.policies.max_connections_per_user;
        let Some(store) = self.leases.as_ref().filter(|_| max > 0) else {
            return self.connection_limit(meta, user_id).await;
        };
        let until = lease_until(meta.connected_at, meta.request_time, self.config.activity_interval);
        let taken = crate::leases::update(store.as_ref(), user_id, |leases| {
            let taken = leases.acquire(&meta.connection_id, meta.request_time, until, max as usize);
            let changed = taken.is_ok();
            (taken, changed)
        })
        .await?;
        Ok(taken.err().map(|LimitReached { live }| {
            format!("MAX_CONNECTIONS_PER_USER={max}: the user already holds {live} live connection(s)")
        }))
    }

    /// Changes the user's leases, when the limit is on (see [`crate::leases::change`]).
    async fn change_leases(&self, user_id: &UserId, change: impl Fn(&mut UserLeases) -> bool) {
        if let Some(store) = self.leases.as_ref().filter(|_| self.config.policies.max_connections_per_user > 0) {
            crate::leases::change(store.as_ref(), user_id, change).await;
        }
    }

    async fn release_lease(&self, meta: &RequestMeta, user_id: &UserId) {
        self.change_leases(user_id, |leases| leases.release(&meta.connection_id, meta.request_time)).await;
    }

    /// `MAX_CONNECTIONS_PER_USER`: why this `$connect` is refused, if it is. Live
    /// connections are the user's `CONNECTED` views still within their `liveUntil`
    /// (ghosts that `$disconnect` never closed do not count).
    async fn connection_limit(&self, meta: &RequestMeta, user_id: &UserId) -> Result<Option<String>, StoreError> {
        let max = self.config.policies.max_connections_per_user;
        let Some(views) = self.views.as_ref().filter(|_| max > 0) else { return Ok(None) };
        let connected = crate::user_views::connected(views.as_ref(), user_id, meta.request_time).await?;
        let live = connected
            .iter()
            .filter(|view| view.connection_id != meta.connection_id)
            .filter(|view| view.live_until().is_some_and(|until| until > meta.request_time))
            .count() as u32;
        Ok((live >= max)
            .then(|| format!("MAX_CONNECTIONS_PER_USER={max}: the user already holds {live} live connection(s)")))
    }

    /// `MAX_VOICE_SECONDS_PER_DAY`: the user's voice seconds today (UTC), from the
    /// usage on their views (as projected: a few seconds behind).
    async fn voice_quota_exceeded(&self, meta: &RequestMeta, user_id: &UserId) -> Result<Option<String>, StoreError> {
        let max = self.config.policies.max_voice_seconds_per_day;
        let Some(views) = self.views.as_ref().filter(|_| max > 0) else { return Ok(None) };
        let today = crate::domain::usage::day_of(meta.request_time.epoch_millis());
        let oldest = meta.request_time.minus(TimeDelta::days(1)).minus(MAX_CONNECTION_DURATION);
        let recent = crate::user_views::newest_since(views.as_ref(), user_id, Some(oldest), 100).await?;
        let voice_ms: u64 = recent
            .iter()
            .map(|view| view.usage.as_ref().and_then(|usage| usage.days.get(&today)).map_or(0, |day| day.voice_ms))
            .sum();
        Ok((voice_ms >= max * 1_000)
            .then(|| format!("MAX_VOICE_SECONDS_PER_DAY={max}: {} voice seconds used today (UTC)", voice_ms / 1_000)))
    }

    /// Refuses a message by a policy: an error frame, nothing written, counted,
    /// logged once per connection per minute at most.
    fn limited(&self, code: ErrorCode, message: String, log: bool) -> Response {
        self.metrics.reject(code);
        if log {
            tracing::warn!(%code, detail = %message, "message refused by a policy (logged once a minute)");
        }
        Response::frame(200, &ServerMessage::error(&ProtocolError { code, message }))
    }

    /// The user of a request: the authorizer context, else (for requests after
    /// `$connect`) the user recorded by the connection's `Connected` event.
    async fn user_of(&self, meta: &RequestMeta) -> Result<Option<UserId>, StoreError> {
        if let Some(user_id) = &meta.user_id {
            return Ok(Some(user_id.clone()));
        }
        let first = self.events.connection_history(&meta.connection_id, PageRequest::first(1)).await?;
        Ok(first.items.into_iter().next().map(|event| event.user_id))
    }

    async fn disconnect(&self, meta: &RequestMeta, status_code: Option<i64>, reason: Option<String>) -> Response {
        // Messages counted since the last `Activity` are written with the end.
        let unrecorded_messages = self.activity().forget(&meta.connection_id);
        self.limiter().forget(&meta.connection_id);
        let user_id = match self.user_of(meta).await {
            Ok(Some(user_id)) => user_id,
            Ok(None) => {
                tracing::warn!(
                    "$disconnect of a connection the ledger does not know, without a user: nothing recorded"
                );
                return Response::ok();
            }
            Err(_) => return Response::status(500),
        };
        let event = ConnectionEvent::Disconnected {
            reason: disconnect_reason(status_code, reason.as_deref()),
            status_code: status_code.and_then(|code| u16::try_from(code).ok()),
            detail: reason.filter(|reason| !reason.is_empty()),
            message_count: unrecorded_messages,
        };
        let appended = self.append(&self.envelope(meta, user_id.clone(), event)).await;
        self.release_lease(meta, &user_id).await;
        match appended {
            Ok(()) => Response::ok(),
            Err(_) => Response::status(500),
        }
    }

    fn reject(&self, error: &ProtocolError) -> Response {
        self.metrics.reject(error.code);
        tracing::warn!(code = %error.code, detail = %error.message, "message refused");
        Response::frame(200, &ServerMessage::error(error))
    }

    /// A message: the rate limit, then [`decide`] (pure), then the I/O it asks for in
    /// order: the user, the policies' checks, the ledger event, activity, the port.
    async fn message(&self, meta: &RequestMeta, body: &str) -> Response {
        self.metrics.message();
        if let Verdict::Limited { log } = self.limiter().message(&meta.connection_id, meta.request_time) {
            let rate = self.config.policies.max_messages_per_second;
            let message = format!("more than {rate} messages per second (MAX_MESSAGES_PER_SECOND); slow down");
            return self.limited(ErrorCode::RateLimited, message, log);
        }
        let message = match parse_client_message(body) {
            Ok(message) => message,
            Err(error) => return self.reject(&error),
        };
        let decision = decide(&message);
        if let Some(answer) = &decision.answer_at_once {
            self.record_activity(meta, None).await;
            return Response::frame(200, answer);
        }
        let user_id = match self.user_of(meta).await {
            Ok(Some(user_id)) => user_id,
            Ok(None) => {
                return self.reject(&ProtocolError {
                    code: ErrorCode::Unauthorized,
                    message: "this connection has no authenticated user".into(),
                });
            }
            Err(_) => return self.unavailable_frame(),
        };
        if let Err(refused) = self.admit(meta, &user_id, &decision).await {
            return refused;
        }
        if let ClientMessage::Resume { last_seq } = message {
            return self.resume(meta, &user_id, last_seq).await;
        }
        if let Some(event) = decision.records
            && self.append(&self.envelope(meta, user_id.clone(), event)).await.is_err()
        {
            return self.unavailable_frame();
        }
        if !self.record_activity_for(meta, &user_id, message.session_id()).await {
            return self.unavailable_frame();
        }
        self.reply(meta, &message).await
    }

    /// The policies a decided message must pass: the ledger-event rate and the
    /// daily voice quota. `Err` is the refusal to send.
    async fn admit(&self, meta: &RequestMeta, user_id: &UserId, decision: &Decision) -> Result<(), Response> {
        if decision.limited_as_ledger_event
            && let Verdict::Limited { log } = self.limiter().ledger_event(&meta.connection_id, meta.request_time)
        {
            let rate = self.config.policies.max_ledger_events_per_minute;
            let message = format!("more than {rate} voice events per minute (MAX_LEDGER_EVENTS_PER_MINUTE)");
            return Err(self.limited(ErrorCode::RateLimited, message, log));
        }
        if decision.needs_voice_quota {
            match self.voice_quota_exceeded(meta, user_id).await {
                Ok(None) => {}
                Ok(Some(message)) => {
                    let log = self.limiter().should_log(&meta.connection_id, meta.request_time);
                    return Err(self.limited(ErrorCode::QuotaExceeded, message, log));
                }
                Err(_) => return Err(self.unavailable_frame()),
            }
        }
        Ok(())
    }

    /// The port's answer to an admitted message.
    async fn reply(&self, meta: &RequestMeta, message: &ClientMessage) -> Response {
        let reply = match message {
            ClientMessage::VoiceStart { audio_format, session_id } => {
                self.voice.start(&meta.connection_id, session_id, audio_format).await
            }
            ClientMessage::VoiceData { session_id, audio } => {
                self.voice.audio(&meta.connection_id, session_id, audio).await
            }
            ClientMessage::VoiceEnd { session_id } => self.voice.end(&meta.connection_id, session_id).await,
            ClientMessage::TextMessage { content, session_id } => {
                self.text.respond(&meta.connection_id, session_id, content).await
            }
            ClientMessage::Ping => Ok(Some(ServerMessage::Pong)),
            ClientMessage::Resume { .. } => Ok(None),
        };
        match reply {
            Ok(Some(reply)) => Response::frame(200, &reply),
            Ok(None) => Response::ok(),
            Err(error) => {
                tracing::error!(%error, kind = message.kind(), "port failed");
                self.unavailable_frame()
            }
        }
    }

    /// A `resume`: replayed through the Management API (`recovery::resume`), then
    /// recorded in the ledger (what was asked, how many were replayed, why it
    /// failed). No route response: every frame went through the gateway, in order.
    async fn resume(&self, meta: &RequestMeta, user_id: &UserId, asked: u64) -> Response {
        let Some((outbox, gateway)) =
            self.recovery.as_ref().filter(|_| self.config.recovery_window > TimeDelta::zero())
        else {
            let frame = ServerMessage::ResumeFailed { reason: "disabled".into(), oldest_seq: 0 };
            return Response::frame(200, &frame);
        };
        let connection = &meta.connection_id;
        let (now, budget) = (meta.request_time, self.config.replay_budget);
        let outcome = recovery::resume(outbox.as_ref(), gateway.as_ref(), user_id, connection, asked, now, budget);
        let event = match outcome.await {
            Ok(ResumeOutcome::Replayed { replayed, live_deliveries }) => {
                self.metrics.metrics.add(names::MESSAGES_REPLAYED, replayed + live_deliveries);
                ConnectionEvent::Resumed { last_seq: asked, replayed: replayed + live_deliveries, failure: None }
            }
            Ok(ResumeOutcome::Failed { reason, posted, .. }) => {
                if posted > 0 {
                    self.metrics.metrics.add(names::MESSAGES_REPLAYED, posted);
                }
                self.metrics.metrics.add_by(names::RESUME_FAILURES, "Reason", reason.as_str(), 1);
                ConnectionEvent::Resumed {
                    last_seq: asked,
                    replayed: posted,
                    failure: Some(reason.as_str().to_owned()),
                }
            }
            Ok(ResumeOutcome::Refused(message)) => {
                return self.reject(&ProtocolError { code: ErrorCode::InvalidField, message });
            }
            Ok(ResumeOutcome::Gone) => return Response::ok(),
            Err(error) => {
                tracing::error!(error = %crate::error_chain::chain(&error), "resume failed");
                return self.unavailable_frame();
            }
        };
        if self.append(&self.envelope(meta, user_id.clone(), event)).await.is_err() {
            return self.unavailable_frame();
        }
        self.record_activity_for(meta, user_id, None).await;
        Response::ok()
    }

    /// The answer when the ledger cannot be reached in time: an `unavailable` error
    /// frame for a message, a bare 500 for `$connect` and `$disconnect`. Counted.
    pub fn unavailable(&self, is_message: bool) -> Response {
        if !is_message {
            self.metrics.reject(ErrorCode::Unavailable);
            return Response::status(500);
        }
        self.unavailable_frame()
    }

    fn unavailable_frame(&self) -> Response {
        self.metrics.reject(ErrorCode::Unavailable);
        let error = ServerMessage::Error {
            code: ErrorCode::Unavailable,
            message: "the message could not be processed; try again".into(),
        };
        Response::frame(500, &error)
    }

    /// Records a ping as activity when due; a ping never fails because of the ledger.
    async fn record_activity(&self, meta: &RequestMeta, session_id: Option<&str>) {
        if let Ok(Some(user_id)) = self.user_of(meta).await {
            self.record_activity_for(meta, &user_id, session_id).await;
        }
    }

    /// Appends an `Activity` event when one is due. Returns false when it was due
    /// and could not be written.
    async fn record_activity_for(&self, meta: &RequestMeta, user_id: &UserId, session_id: Option<&str>) -> bool {
        let (previous, due) = {
            let mut activity = self.activity();
            (activity.last_recorded(&meta.connection_id), activity.record(&meta.connection_id, meta.request_time))
        };
        let Some(message_count) = due else { return true };
        let event = ConnectionEvent::Activity { session_id: session_id.map(str::to_owned), message_count };
        if self.append(&self.envelope(meta, user_id.clone(), event)).await.is_ok() {
            // The lease lives on with the connection: renewed as often as Activity is written.
            let until = lease_until(meta.connected_at, meta.request_time, self.config.activity_interval);
            self.change_leases(user_id, |leases| leases.renew(&meta.connection_id, meta.request_time, until)).await;
            return true;
        }
        self.activity().undo(&meta.connection_id, previous, message_count);
        false
    }
}

mod default_ports;

pub use default_ports::{AcknowledgingVoice, EchoText};

#[cfg(test)]
mod tests;
