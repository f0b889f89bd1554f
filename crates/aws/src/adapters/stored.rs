//! The stored shape of events and views, with the attribute names of the contract (docs/contract.md)
//! (the seed's `ConnectionInfo` names for views). Every store and every JSON output
//! uses these, so the same traffic reads the same on DynamoDB and on SQLite.
//! Store-specific attributes (index keys) are added by each adapter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod outbox;
mod presence;
pub use outbox::{OutboxHeadItem, OutboxMessageItem, ResumedItem};
pub use presence::{DeviceJson, PresenceEventItem, PresenceItem, PresenceJson};

use crate::domain::lease::{Lease, UserLeases};
use crate::domain::usage::{ConnectionUsage, Effect, Figures, UsageEvent, UsageFold, Walked};
use crate::domain::{
    ConnectionEvent, ConnectionId, ConnectionInfo, ConnectionStatus, DisconnectReason, EventEnvelope, EventId,
    EventKind, GoneObservation, Timestamp, UserId,
};
use crate::ports::{StoreError, VersionedView};

/// One event as stored. `None` fields are left out, never written as null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventItem {
    pub connection_id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub user_id: String,
    pub at: String,
    pub connected_at: String,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `Resumed`: the `lastSeq` the client asked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// `Resumed`: how many messages were replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<u64>,
}

impl From<&EventEnvelope> for EventItem {
    fn from(envelope: &EventEnvelope) -> Self {
        let mut item = EventItem {
            connection_id: envelope.connection_id.to_string(),
            event_id: envelope.event_id.to_string(),
            kind: envelope.kind().as_str().to_owned(),
            user_id: envelope.user_id.to_string(),
            at: envelope.at.to_rfc3339(),
            connected_at: envelope.connected_at.to_rfc3339(),
            request_id: envelope.request_id.clone(),
            expires_at: envelope.expires_at,
            ip_address: None,
            user_agent: None,
            session_id: None,
            message_count: None,
            audio_format: None,
            reason: None,
            status_code: None,
            detail: None,
            last_seq: None,
            replayed: None,
        };
        match &envelope.event {
            ConnectionEvent::Connected { ip_address, user_agent } => {
                item.ip_address = ip_address.clone();
                item.user_agent = user_agent.clone();
            }
            ConnectionEvent::Activity { session_id, message_count } => {
                item.session_id = session_id.clone();
                item.message_count = Some(*message_count);
            }
            ConnectionEvent::VoiceStarted { session_id, audio_format } => {
                item.session_id = Some(session_id.clone());
                item.audio_format = Some(audio_format.clone());
            }
            ConnectionEvent::VoiceEnded { session_id } => item.session_id = Some(session_id.clone()),
            ConnectionEvent::Disconnected { reason, status_code, detail, message_count } => {
                item.reason = Some(reason.to_string());
                item.status_code = *status_code;
                item.detail = detail.clone();
                item.message_count = (*message_count > 0).then_some(*message_count);
            }
            ConnectionEvent::Resumed { last_seq, replayed, failure } => {
                item.last_seq = Some(*last_seq);
                item.replayed = Some(*replayed);
                item.reason = failure.clone();
            }
        }
        item
    }
}

pub fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string().into())
}

fn timestamp(field: &str, value: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse_rfc3339(value).map_err(|error| corrupt(format!("{field}: {error}")))
}

fn required(field: &str, value: Option<String>) -> Result<String, StoreError> {
    value.ok_or_else(|| corrupt(format!("{field} is missing")))
}

impl TryFrom<EventItem> for EventEnvelope {
    type Error = StoreError;

    fn try_from(item: EventItem) -> Result<Self, StoreError> {
        let kind =
            EventKind::parse(&item.kind).ok_or_else(|| corrupt(format!("unknown event type {:?}", item.kind)))?;
        let event = match kind {
            EventKind::Connected => {
                ConnectionEvent::Connected { ip_address: item.ip_address, user_agent: item.user_agent }
            }
            EventKind::Activity => ConnectionEvent::Activity {
                session_id: item.session_id,
                message_count: item.message_count.unwrap_or_default(),
            },
            EventKind::VoiceStarted => ConnectionEvent::VoiceStarted {
                session_id: required("sessionId", item.session_id)?,
                audio_format: required("audioFormat", item.audio_format)?,
            },
            EventKind::VoiceEnded => {
                ConnectionEvent::VoiceEnded { session_id: required("sessionId", item.session_id)? }
            }
            EventKind::Disconnected => ConnectionEvent::Disconnected {
                reason: DisconnectReason::parse(&required("reason", item.reason)?),
                status_code: item.status_code,
                detail: item.detail,
                message_count: item.message_count.unwrap_or_default(),
            },
            EventKind::Resumed => ConnectionEvent::Resumed {
                last_seq: item.last_seq.unwrap_or_default(),
                replayed: item.replayed.unwrap_or_default(),
                failure: item.reason,
            },
        };
        Ok(EventEnvelope {
            connection_id: ConnectionId::parse(item.connection_id).map_err(corrupt)?,
            event_id: EventId::parse(&item.event_id).map_err(corrupt)?,
            user_id: UserId::parse(item.user_id).map_err(corrupt)?,
            at: timestamp("at", &item.at)?,
            connected_at: timestamp("connectedAt", &item.connected_at)?,
            request_id: item.request_id,
            expires_at: item.expires_at,
            event,
        })
    }
}

/// One view as stored: the seed's `ConnectionInfo` attributes first, then what the
/// projection needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewItem {
    pub connection_id: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub created_at: String,
    pub last_activity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_format: Option<String>,
    /// Present only while connected: the last moment API Gateway can hold it open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_until: Option<String>,
    pub last_event_id: String,
    pub first_event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_event_id: Option<String>,
    /// The latest gone observation (a 410), which a later sign of life overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_detail: Option<String>,
    /// The latest time of an event other than a gone observation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive_at: Option<String>,
    /// The voice session the latest voice event left running, whatever the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_state_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_state_audio_format: Option<String>,
    /// What the connection used, per UTC day (`wsledger usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageItem>,
    /// Where the usage walk stands (bookkeeping of the projection, not shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_fold: Option<UsageFoldItem>,
    pub version: u64,
}

/// A [`UsageFold`] as stored: times in epoch milliseconds, only what is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageFoldItem {
    pub start: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
    pub events: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub days: BTreeMap<String, WalkedDayItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_voice_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_voice_since: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_voice_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tail: Vec<UsageEventItem>,
}

/// What the walk summed on one day (voice time of closed sessions only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalkedDayItem {
    pub messages: u64,
    pub voice_sessions: u64,
    pub voice_ms: u64,
}

/// One event of the fold's tail, in one string (a view is read whole by every
/// projection, so it is kept small): `"<eventId> <at, epoch ms> <effect>"`, where
/// the effect is `m<messages>`, `s<voice session started>`, `e<voice session
/// ended>` or `-`. The session id is the rest of the string, whatever it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UsageEventItem(pub String);

impl From<&UsageEvent> for UsageEventItem {
    fn from(event: &UsageEvent) -> Self {
        let effect = match &event.effect {
            Effect::Messages(count) => format!("m{count}"),
            Effect::VoiceStarted(session_id) => format!("s{session_id}"),
            Effect::VoiceEnded(session_id) => format!("e{session_id}"),
            Effect::Nothing => "-".to_owned(),
        };
        UsageEventItem(format!("{} {} {effect}", event.event_id, event.at))
    }
}

impl TryFrom<UsageEventItem> for UsageEvent {
    type Error = StoreError;

    fn try_from(item: UsageEventItem) -> Result<Self, StoreError> {
        let bad = || corrupt(format!("usageFold tail event {:?}", item.0));
        let mut parts = item.0.splitn(3, ' ');
        let (Some(event_id), Some(at), Some(effect)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let event_id = EventId::parse(event_id).map_err(|_| bad())?;
        let at = at.parse::<i64>().map_err(|_| bad())?;
        let effect = match effect.split_at_checked(1) {
            Some(("m", count)) => Effect::Messages(count.parse().map_err(|_| bad())?),
            Some(("s", session_id)) => Effect::VoiceStarted(session_id.to_owned()),
            Some(("e", session_id)) => Effect::VoiceEnded(session_id.to_owned()),
            Some(("-", "")) => Effect::Nothing,
            _ => return Err(bad()),
        };
        Ok(UsageEvent { event_id, at, effect })
    }
}

impl From<&UsageFold> for UsageFoldItem {
    fn from(fold: &UsageFold) -> Self {
        let days = fold
            .base
            .days
            .iter()
            .map(|(day, figures)| {
                let item = WalkedDayItem {
                    messages: figures.messages,
                    voice_sessions: figures.voice_sessions,
                    voice_ms: figures.voice_ms,
                };
                (day.format("%Y-%m-%d").to_string(), item)
            })
            .collect();
        let tail = fold.tail.iter().map(UsageEventItem::from).collect();
        UsageFoldItem {
            start: fold.start.epoch_millis(),
            through: fold.through.map(|id| id.to_string()),
            events: fold.base.events,
            days,
            open_voice_session_id: fold.base.open_voice.as_ref().map(|(session_id, _)| session_id.clone()),
            open_voice_since: fold.base.open_voice.as_ref().map(|(_, since)| *since),
            latest_voice_at: fold.base.latest_voice_at,
            tail,
        }
    }
}

impl TryFrom<UsageFoldItem> for UsageFold {
    type Error = StoreError;

    fn try_from(item: UsageFoldItem) -> Result<Self, StoreError> {
        let mut days = BTreeMap::new();
        for (day, walked) in item.days {
            let day = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                .map_err(|error| corrupt(format!("usageFold day {day:?}: {error}")))?;
            let figures = Figures {
                messages: walked.messages,
                voice_sessions: walked.voice_sessions,
                voice_ms: walked.voice_ms,
                ..Figures::default()
            };
            days.insert(day, figures);
        }
        let tail = item.tail.into_iter().map(UsageEvent::try_from).collect::<Result<Vec<_>, _>>()?;
        if !tail.is_sorted_by_key(|event| event.event_id) {
            return Err(corrupt("usageFold tail is not in event id order"));
        }
        let open_voice = match (item.open_voice_session_id, item.open_voice_since) {
            (Some(session_id), Some(since)) => Some((session_id, since)),
            (None, None) => None,
            _ => return Err(corrupt("usageFold open voice session without its start")),
        };
        Ok(UsageFold {
            start: Timestamp::from_epoch_millis(item.start),
            through: item.through.map(|id| EventId::parse(&id).map_err(corrupt)).transpose()?,
            base: Walked { events: item.events, days, open_voice, latest_voice_at: item.latest_voice_at },
            tail,
        })
    }
}

/// A connection's usage as stored: per UTC day (`YYYY-MM-DD`), and the number of
/// distinct events it was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageItem {
    pub events: u64,
    pub days: BTreeMap<String, FiguresItem>,
}

/// One day's figures (durations in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FiguresItem {
    pub connections: u64,
    pub connected_ms: u64,
    pub messages: u64,
    pub voice_sessions: u64,
    pub voice_ms: u64,
}

impl From<&ConnectionUsage> for UsageItem {
    fn from(usage: &ConnectionUsage) -> Self {
        let days = usage
            .days
            .iter()
            .map(|(day, figures)| {
                let item = FiguresItem {
                    connections: figures.connections,
                    connected_ms: figures.connected_ms,
                    messages: figures.messages,
                    voice_sessions: figures.voice_sessions,
                    voice_ms: figures.voice_ms,
                };
                (day.format("%Y-%m-%d").to_string(), item)
            })
            .collect();
        UsageItem { events: usage.events, days }
    }
}

impl TryFrom<UsageItem> for ConnectionUsage {
    type Error = StoreError;

    fn try_from(item: UsageItem) -> Result<Self, StoreError> {
        let mut days = BTreeMap::new();
        for (day, figures) in item.days {
            let day = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                .map_err(|error| corrupt(format!("usage day {day:?}: {error}")))?;
            let figures = Figures {
                connections: figures.connections,
                connected_ms: figures.connected_ms,
                messages: figures.messages,
                voice_sessions: figures.voice_sessions,
                voice_ms: figures.voice_ms,
            };
            days.insert(day, figures);
        }
        Ok(ConnectionUsage { events: item.events, days })
    }
}

impl ViewItem {
    /// A view as JSON for people and pages (`--format json`, the dashboard): the
    /// stored attributes without the bookkeeping `version`.
    pub fn public_json(view: &ConnectionInfo) -> serde_json::Value {
        let mut value = serde_json::to_value(ViewItem::new(view, 0)).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.remove("version");
            object.remove("usageFold");
        }
        value
    }

    pub fn new(view: &ConnectionInfo, version: u64) -> Self {
        let event_id = |id: Option<EventId>| id.map(|id| id.to_string());
        ViewItem {
            connection_id: view.connection_id.to_string(),
            user_id: view.user_id.to_string(),
            session_id: view.session_id.clone(),
            status: view.status.as_str().to_owned(),
            ip_address: view.ip_address.clone(),
            user_agent: view.user_agent.clone(),
            created_at: view.created_at.to_rfc3339(),
            last_activity: view.last_activity.to_rfc3339(),
            disconnected_at: view.disconnected_at.map(|at| at.to_rfc3339()),
            disconnect_reason: view.disconnect_reason.as_ref().map(|reason| reason.to_string()),
            disconnect_status_code: view.disconnect_status_code,
            disconnect_detail: view.disconnect_detail.clone(),
            voice_session_id: view.voice_session_id.clone(),
            audio_format: view.audio_format.clone(),
            live_until: view.live_until().map(|at| at.to_rfc3339()),
            last_event_id: view.last_event_id.to_string(),
            first_event_id: view.first_event_id.to_string(),
            connected_event_id: event_id(view.connected_event_id),
            disconnected_event_id: event_id(view.disconnected_event_id),
            session_event_id: event_id(view.session_event_id),
            voice_event_id: event_id(view.voice_event_id),
            gone_event_id: view.gone.as_ref().map(|gone| gone.event_id.to_string()),
            gone_at: view.gone.as_ref().map(|gone| gone.at.to_rfc3339()),
            gone_status_code: view.gone.as_ref().and_then(|gone| gone.status_code),
            gone_detail: view.gone.as_ref().and_then(|gone| gone.detail.clone()),
            alive_at: view.alive_at.map(|at| at.to_rfc3339()),
            voice_state_session_id: view.voice_state.as_ref().map(|(session_id, _)| session_id.clone()),
            voice_state_audio_format: view.voice_state.as_ref().map(|(_, audio_format)| audio_format.clone()),
            usage: view.usage.as_ref().map(UsageItem::from),
            usage_fold: view.usage_fold.as_ref().map(UsageFoldItem::from),
            version,
        }
    }
}

/// Views written before gone observations were told apart from terminal
/// disconnects hold a 410 as their terminal disconnect: read them as what they are,
/// an observation (with no sign of life known after it, so the view stays
/// disconnected until one comes).
fn upgrade_gone(view: &mut ConnectionInfo) {
    if view.gone.is_none()
        && view.disconnect_reason == Some(DisconnectReason::Gone)
        && let (Some(event_id), Some(at)) = (view.disconnected_event_id, view.disconnected_at)
    {
        view.gone = Some(GoneObservation {
            event_id,
            at,
            status_code: view.disconnect_status_code,
            detail: view.disconnect_detail.clone(),
        });
        view.disconnected_event_id = None;
    }
}

impl TryFrom<ViewItem> for VersionedView {
    type Error = StoreError;

    fn try_from(item: ViewItem) -> Result<Self, StoreError> {
        let event_id = |value: Option<String>| value.map(|id| EventId::parse(&id).map_err(corrupt)).transpose();
        let status = ConnectionStatus::parse(&item.status)
            .ok_or_else(|| corrupt(format!("unknown status {:?}", item.status)))?;
        let gone = match (item.gone_event_id, &item.gone_at) {
            (Some(id), Some(at)) => Some(GoneObservation {
                event_id: EventId::parse(&id).map_err(corrupt)?,
                at: timestamp("goneAt", at)?,
                status_code: item.gone_status_code,
                detail: item.gone_detail,
            }),
            _ => None,
        };
        // Views written before these attributes existed: a connected view's shown
        // voice session and last activity are its latest state and sign of life.
        let written_before = item.alive_at.is_none() && status == ConnectionStatus::Connected;
        let voice_state = match (item.voice_state_session_id, item.voice_state_audio_format) {
            (Some(session_id), Some(audio_format)) => Some((session_id, audio_format)),
            _ if written_before => item.voice_session_id.clone().zip(item.audio_format.clone()),
            _ => None,
        };
        let alive_at = match &item.alive_at {
            Some(at) => Some(timestamp("aliveAt", at)?),
            None if written_before => Some(timestamp("lastActivity", &item.last_activity)?),
            None => None,
        };
        let mut view = ConnectionInfo {
            connection_id: ConnectionId::parse(item.connection_id).map_err(corrupt)?,
            user_id: UserId::parse(item.user_id).map_err(corrupt)?,
            session_id: item.session_id,
            status,
            ip_address: item.ip_address,
            user_agent: item.user_agent,
            created_at: timestamp("createdAt", &item.created_at)?,
            last_activity: timestamp("lastActivity", &item.last_activity)?,
            disconnected_at: item.disconnected_at.map(|at| timestamp("disconnectedAt", &at)).transpose()?,
            disconnect_reason: item.disconnect_reason.as_deref().map(DisconnectReason::parse),
            disconnect_status_code: item.disconnect_status_code,
            disconnect_detail: item.disconnect_detail,
            voice_session_id: item.voice_session_id,
            audio_format: item.audio_format,
            last_event_id: EventId::parse(&item.last_event_id).map_err(corrupt)?,
            first_event_id: EventId::parse(&item.first_event_id).map_err(corrupt)?,
            connected_event_id: event_id(item.connected_event_id)?,
            disconnected_event_id: event_id(item.disconnected_event_id)?,
            session_event_id: event_id(item.session_event_id)?,
            voice_event_id: event_id(item.voice_event_id)?,
            gone,
            alive_at,
            voice_state,
            usage: item.usage.map(ConnectionUsage::try_from).transpose()?,
            usage_fold: item.usage_fold.map(UsageFold::try_from).transpose()?,
        };
        upgrade_gone(&mut view);
        Ok(VersionedView { view, version: item.version })
    }
}

/// A user's connection leases as stored (`domain::lease`): times in epoch
/// milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeasesItem {
    pub lease_user_id: String,
    #[serde(default)]
    pub leases: Vec<LeaseItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseItem {
    pub connection_id: String,
    pub live_until: i64,
}

impl From<&UserLeases> for LeasesItem {
    fn from(leases: &UserLeases) -> Self {
        LeasesItem {
            lease_user_id: leases.user_id.to_string(),
            leases: leases
                .leases
                .iter()
                .map(|lease| LeaseItem {
                    connection_id: lease.connection_id.to_string(),
                    live_until: lease.live_until.epoch_millis(),
                })
                .collect(),
        }
    }
}

impl TryFrom<LeasesItem> for UserLeases {
    type Error = StoreError;

    fn try_from(item: LeasesItem) -> Result<Self, StoreError> {
        let leases = item
            .leases
            .into_iter()
            .map(|lease| {
                Ok(Lease {
                    connection_id: ConnectionId::parse(lease.connection_id).map_err(corrupt)?,
                    live_until: Timestamp::from_epoch_millis(lease.live_until),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(UserLeases { user_id: UserId::parse(item.lease_user_id).map_err(corrupt)?, leases })
    }
}
