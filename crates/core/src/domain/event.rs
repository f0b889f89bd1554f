//! The ledger's events: immutable facts about one connection.

use std::fmt;

pub use super::kind::EventKind;

use super::ids::{ConnectionId, EventId, UserId};
use super::time::Timestamp;

/// What happened. Payloads (audio, message text) are never part of an event: the
/// ledger records that something happened, not what was said.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConnectionEvent {
    Connected {
        ip_address: Option<String>,
        user_agent: Option<String>,
    },
    Activity {
        session_id: Option<String>,
        message_count: u64,
    },
    VoiceStarted {
        session_id: String,
        audio_format: String,
    },
    VoiceEnded {
        session_id: String,
    },
    /// `message_count`: the messages the handler counted since its last `Activity`
    /// event, written with the end so none is lost (0 when none, or unknown).
    Disconnected {
        reason: DisconnectReason,
        status_code: Option<u16>,
        detail: Option<String>,
        message_count: u64,
    },
    /// A `resume` (reconnect recovery): the `lastSeq` the client asked from, how
    /// many messages it was sent, and why it failed if it did (`expired`, ...).
    Resumed {
        last_seq: u64,
        replayed: u64,
        failure: Option<String>,
    },
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DisconnectReason {
    /// The client closed the socket.
    Client,
    /// API Gateway answered 410 `GoneException`: the connection was already gone.
    Gone,
    /// API Gateway closed it for idleness or for reaching the maximum duration.
    Idle,
    /// The server closed it on purpose.
    Kicked,
    /// `$connect` was refused by a policy (`detail` names it).
    Refused,
    /// Any other reason, kept as written.
    Other(String),
}

impl DisconnectReason {
    pub fn as_str(&self) -> &str {
        match self {
            DisconnectReason::Client => "client",
            DisconnectReason::Gone => "gone",
            DisconnectReason::Idle => "idle",
            DisconnectReason::Kicked => "kicked",
            DisconnectReason::Refused => "refused",
            DisconnectReason::Other(other) => other,
        }
    }

    /// Total: every string is some reason, so stored history always decodes.
    pub fn parse(value: &str) -> Self {
        match value {
            "client" => DisconnectReason::Client,
            "gone" => DisconnectReason::Gone,
            "idle" => DisconnectReason::Idle,
            "kicked" => DisconnectReason::Kicked,
            "refused" => DisconnectReason::Refused,
            other => DisconnectReason::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ConnectionEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            ConnectionEvent::Connected { .. } => EventKind::Connected,
            ConnectionEvent::Activity { .. } => EventKind::Activity,
            ConnectionEvent::VoiceStarted { .. } => EventKind::VoiceStarted,
            ConnectionEvent::VoiceEnded { .. } => EventKind::VoiceEnded,
            ConnectionEvent::Disconnected { .. } => EventKind::Disconnected,
            ConnectionEvent::Resumed { .. } => EventKind::Resumed,
        }
    }

    /// Whether this is a gone observation (a 410), which a later sign of life from
    /// API Gateway overrides, rather than a fact.
    pub fn is_gone(&self) -> bool {
        matches!(self, ConnectionEvent::Disconnected { reason: DisconnectReason::Gone, .. })
    }

    /// The application session the event belongs to, if any.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            ConnectionEvent::Activity { session_id, .. } => session_id.as_deref(),
            ConnectionEvent::VoiceStarted { session_id, .. } | ConnectionEvent::VoiceEnded { session_id } => {
                Some(session_id)
            }
            ConnectionEvent::Connected { .. }
            | ConnectionEvent::Disconnected { .. }
            | ConnectionEvent::Resumed { .. } => None,
        }
    }
}

/// One stored event with everything that identifies and dates it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventEnvelope {
    pub connection_id: ConnectionId,
    pub event_id: EventId,
    pub user_id: UserId,
    /// When it happened: the API Gateway request time, never a handler's clock.
    pub at: Timestamp,
    /// When the connection was opened, as API Gateway reports on every request.
    pub connected_at: Timestamp,
    /// The API Gateway request id, for tracing.
    pub request_id: String,
    /// Retention: when the store may delete the event (epoch seconds), if ever.
    pub expires_at: Option<i64>,
    pub event: ConnectionEvent,
}

impl EventEnvelope {
    /// Builds the event caused by an API Gateway request; the id is derived from the
    /// request so that a retry of the same request yields the same envelope.
    pub fn for_request(
        connection_id: ConnectionId,
        user_id: UserId,
        request_id: impl Into<String>,
        request_time: Timestamp,
        connected_at: Timestamp,
        event: ConnectionEvent,
    ) -> Self {
        let request_id = request_id.into();
        let event_id = EventId::derive(request_time, &request_id, event.kind());
        Self { connection_id, event_id, user_id, at: request_time, connected_at, request_id, expires_at: None, event }
    }

    /// Sets retention to `days` after the event (0 keeps it forever).
    pub fn with_retention_days(mut self, days: u32) -> Self {
        self.expires_at = (days > 0).then(|| self.at.epoch_seconds() + i64::from(days) * 86_400);
        self
    }

    pub fn kind(&self) -> EventKind {
        self.event.kind()
    }
}
