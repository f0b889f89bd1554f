//! The current view of a connection, folded from its events.
//!
//! The fold is convergent: the view is a function of the *set* of events, not of
//! their order or of how often each was seen. Every field is chosen by a rule that
//! is commutative, associative and idempotent (the earliest or latest of something,
//! ties broken by event id), so out-of-order and repeated stream records fold to the
//! same view as the ordered history. The `*_event_id` fields remember which event
//! each choice came from, which is what makes the rules order-free.

use chrono::TimeDelta;

use super::event::{ConnectionEvent, DisconnectReason, EventEnvelope};
use super::ids::{ConnectionId, EventId, UserId};
use super::time::Timestamp;
use super::usage::{ConnectionUsage, Lifespan, UsageFold};

/// API Gateway closes a connection that has been idle this long.
pub const IDLE_TIMEOUT: TimeDelta = TimeDelta::minutes(10);
/// API Gateway closes every connection after this long.
pub const MAX_CONNECTION_DURATION: TimeDelta = TimeDelta::hours(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConnectionStatus {
    Connected,
    Disconnected,
}

impl ConnectionStatus {
    /// The seed's spelling: `CONNECTED` or `DISCONNECTED`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectionStatus::Connected => "CONNECTED",
            ConnectionStatus::Disconnected => "DISCONNECTED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_uppercase().as_str() {
            "CONNECTED" => Some(ConnectionStatus::Connected),
            "DISCONNECTED" => Some(ConnectionStatus::Disconnected),
            _ => None,
        }
    }
}

/// The seed's `ConnectionInfo`, plus what the projection needs to stay convergent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub connection_id: ConnectionId,
    /// From the connection's earliest event (all events of a connection carry the same user).
    pub user_id: UserId,
    /// The application session of the latest event that named one.
    pub session_id: Option<String>,
    /// `Disconnected` from `$disconnect` (or a kick) is terminal. A gone observation
    /// (`Disconnected{reason: gone}`, a 410) holds only until API Gateway shows a
    /// later sign of life for the connection.
    pub status: ConnectionStatus,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    /// When API Gateway opened the connection.
    pub created_at: Timestamp,
    /// The latest event time.
    pub last_activity: Timestamp,
    pub disconnected_at: Option<Timestamp>,
    pub disconnect_reason: Option<DisconnectReason>,
    pub disconnect_status_code: Option<u16>,
    pub disconnect_detail: Option<String>,
    /// The voice session in progress, if any (never while disconnected).
    pub voice_session_id: Option<String>,
    pub audio_format: Option<String>,
    /// The latest event folded in.
    pub last_event_id: EventId,
    /// Where `user_id` came from: the smallest event id seen.
    pub first_event_id: EventId,
    /// Where `ip_address` and `user_agent` came from: the earliest `Connected`.
    pub connected_event_id: Option<EventId>,
    /// The terminal disconnect: the earliest `Disconnected` that is not a gone
    /// observation. While it is set, the disconnect fields are its own.
    pub disconnected_event_id: Option<EventId>,
    /// The latest gone observation (a 410 from a post or the sweep).
    pub gone: Option<GoneObservation>,
    /// The latest time of an event other than a gone observation: API Gateway's
    /// latest sign of life for the connection.
    pub alive_at: Option<Timestamp>,
    /// The voice session the latest voice event left running (its id and format),
    /// whatever the status; shown in `voice_session_id` only while connected.
    pub voice_state: Option<(String, String)>,
    /// What the connection used, computed from its whole history (see
    /// [`ConnectionUsage`]); [`ConnectionInfo::fold`] computes it, `apply` leaves it.
    pub usage: Option<ConnectionUsage>,
    /// Where the usage walk stands, so that the next events are added to it without
    /// reading the history again (see [`UsageFold`]); set with `usage`.
    pub usage_fold: Option<UsageFold>,
    /// Where `session_id` came from: the latest event that named a session.
    pub session_event_id: Option<EventId>,
    /// Where the voice fields came from: the latest voice event.
    pub voice_event_id: Option<EventId>,
}

/// A 410 seen for a connection: API Gateway did not hold it at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoneObservation {
    pub event_id: EventId,
    pub at: Timestamp,
    pub status_code: Option<u16>,
    pub detail: Option<String>,
}

impl GoneObservation {
    /// Whether it still holds: no sign of life came after it.
    pub fn stands(&self, alive_at: Option<Timestamp>) -> bool {
        alive_at.is_none_or(|alive_at| alive_at <= self.at)
    }
}

impl ConnectionInfo {
    /// The view of a connection that has seen only `event`.
    pub fn from_event(event: &EventEnvelope) -> Self {
        let mut connection_info = Self {
            connection_id: event.connection_id.clone(),
            user_id: event.user_id.clone(),
            session_id: None,
            status: ConnectionStatus::Connected,
            ip_address: None,
            user_agent: None,
            created_at: event.connected_at,
            last_activity: event.at,
            disconnected_at: None,
            disconnect_reason: None,
            disconnect_status_code: None,
            disconnect_detail: None,
            voice_session_id: None,
            audio_format: None,
            last_event_id: event.event_id,
            first_event_id: event.event_id,
            connected_event_id: None,
            disconnected_event_id: None,
            gone: None,
            alive_at: None,
            voice_state: None,
            usage: None,
            usage_fold: None,
            session_event_id: None,
            voice_event_id: None,
        };
        connection_info.apply(event);
        connection_info
    }

    /// Folds `events` (in any order, with any repetition) into a view, with the
    /// usage of exactly those events; `None` when there are none. Events of other
    /// connections than the first are ignored.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a EventEnvelope>) -> Option<Self> {
        let events: Vec<&EventEnvelope> = events.into_iter().collect();
        let mut connection_info = Self::fold_without_usage(events.iter().copied())?;
        connection_info.usage = Some(ConnectionUsage::of_folded(&connection_info, &events));
        connection_info.usage_fold = Some(UsageFold::of_history(&connection_info, &events));
        Some(connection_info)
    }

    /// [`ConnectionInfo::fold`] without the usage.
    pub fn fold_without_usage<'a>(events: impl IntoIterator<Item = &'a EventEnvelope>) -> Option<Self> {
        let mut events = events.into_iter();
        let mut connection_info = Self::from_event(events.next()?);
        for event in events {
            connection_info.apply(event);
        }
        Some(connection_info)
    }

    /// Folds one more event in. Cannot fail and never makes the view older: a late
    /// or repeated event can only fill in what the view did not know yet.
    pub fn apply(&mut self, envelope: &EventEnvelope) {
        if envelope.connection_id != self.connection_id {
            return;
        }
        let event_id = envelope.event_id;

        if event_id < self.first_event_id {
            self.first_event_id = event_id;
            self.user_id = envelope.user_id.clone();
        }
        self.created_at = self.created_at.min(envelope.connected_at);
        self.last_activity = self.last_activity.max(envelope.at);
        self.last_event_id = self.last_event_id.max(event_id);

        if let Some(session_id) = envelope.event.session_id()
            && self.session_event_id.is_none_or(|seen| event_id > seen)
        {
            self.session_event_id = Some(event_id);
            self.session_id = Some(session_id.to_owned());
        }

        if !envelope.event.is_gone() {
            self.alive_at = Some(self.alive_at.map_or(envelope.at, |alive_at| alive_at.max(envelope.at)));
        }
        match &envelope.event {
            ConnectionEvent::Connected { ip_address, user_agent } => {
                if self.connected_event_id.is_none_or(|seen| event_id < seen) {
                    self.connected_event_id = Some(event_id);
                    self.ip_address = ip_address.clone();
                    self.user_agent = user_agent.clone();
                }
            }
            ConnectionEvent::Activity { .. } | ConnectionEvent::Resumed { .. } => {}
            ConnectionEvent::VoiceStarted { session_id, audio_format } => {
                if self.voice_event_id.is_none_or(|seen| event_id > seen) {
                    self.voice_event_id = Some(event_id);
                    self.voice_state = Some((session_id.clone(), audio_format.clone()));
                }
            }
            ConnectionEvent::VoiceEnded { .. } => {
                if self.voice_event_id.is_none_or(|seen| event_id > seen) {
                    self.voice_event_id = Some(event_id);
                    self.voice_state = None;
                }
            }
            ConnectionEvent::Disconnected { reason: DisconnectReason::Gone, status_code, detail, .. } => {
                if self.gone.as_ref().is_none_or(|seen| event_id > seen.event_id) {
                    self.gone = Some(GoneObservation {
                        event_id,
                        at: envelope.at,
                        status_code: *status_code,
                        detail: detail.clone(),
                    });
                }
            }
            ConnectionEvent::Disconnected { reason, status_code, detail, .. } => {
                if self.disconnected_event_id.is_none_or(|seen| event_id < seen) {
                    self.disconnected_event_id = Some(event_id);
                    self.disconnected_at = Some(envelope.at);
                    self.disconnect_reason = Some(reason.clone());
                    self.disconnect_status_code = *status_code;
                    self.disconnect_detail = detail.clone();
                }
            }
        }
        self.derive_status();
    }

    /// The status and what shows with it, from the aggregates: a terminal
    /// disconnect wins; else a gone observation that no later sign of life
    /// overrides; else connected, with the voice session the latest voice event left.
    fn derive_status(&mut self) {
        if self.disconnected_event_id.is_none() {
            match &self.gone {
                Some(gone) if gone.stands(self.alive_at) => {
                    self.disconnected_at = Some(gone.at);
                    self.disconnect_reason = Some(DisconnectReason::Gone);
                    self.disconnect_status_code = gone.status_code;
                    self.disconnect_detail = gone.detail.clone();
                }
                _ => {
                    self.disconnected_at = None;
                    self.disconnect_reason = None;
                    self.disconnect_status_code = None;
                    self.disconnect_detail = None;
                }
            }
        }
        let connected = self.disconnected_at.is_none();
        self.status = if connected { ConnectionStatus::Connected } else { ConnectionStatus::Disconnected };
        let (voice_session_id, audio_format) = match (&self.voice_state, connected) {
            (Some((session_id, audio_format)), true) => (Some(session_id.clone()), Some(audio_format.clone())),
            _ => (None, None),
        };
        self.voice_session_id = voice_session_id;
        self.audio_format = audio_format;
    }

    pub fn is_connected(&self) -> bool {
        self.status == ConnectionStatus::Connected
    }

    /// The latest time at which API Gateway can still hold this connection open: the
    /// idle timeout after the last activity, or the maximum duration after creation,
    /// whichever comes first. `None` once disconnected. Past it (plus a grace
    /// period), a connection still marked connected is a ghost worth checking.
    pub fn live_until(&self) -> Option<Timestamp> {
        if !self.is_connected() {
            return None;
        }
        let idle_deadline = self.last_activity.plus(IDLE_TIMEOUT);
        let age_deadline = self.created_at.plus(MAX_CONNECTION_DURATION);
        Some(idle_deadline.min(age_deadline))
    }
}

impl Lifespan for ConnectionInfo {
    fn connection_id(&self) -> &ConnectionId {
        &self.connection_id
    }

    fn start(&self) -> Timestamp {
        self.created_at
    }

    fn end(&self) -> Option<Timestamp> {
        self.disconnected_at.or(self.alive_at)
    }
}

/// The oracle's entry points: usage needs the view's lifespan, so these fold it
/// first (they live here, beside the fold, so that usage does not import the view).
impl ConnectionUsage {
    /// The usage of the connection whose history is `events` (of one connection; in
    /// any order, with any repetition). `None` for no events.
    pub fn of(events: &[EventEnvelope]) -> Option<Self> {
        Self::of_refs(&events.iter().collect::<Vec<_>>())
    }

    /// [`ConnectionUsage::of`] over references. Events of another connection than
    /// the first are ignored, as the fold ignores them.
    pub fn of_refs(events: &[&EventEnvelope]) -> Option<Self> {
        let view = ConnectionInfo::fold_without_usage(events.iter().copied())?;
        Some(Self::of_folded(&view, events))
    }
}

#[cfg(test)]
mod tests;
