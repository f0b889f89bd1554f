//! The DynamoDB item layouts of events and views, and their conversion to and from
//! the domain. Attribute names here are the stored format (see DESIGN.md and
//! ARCHITECTURE.md); nothing outside this adapter knows them.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{
    ConnectionEvent, ConnectionId, ConnectionInfo, ConnectionStatus, DisconnectReason, EventEnvelope, EventId,
    EventKind, Timestamp, UserId,
};
use crate::ports::{StoreError, VersionedView};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// How many partitions the time-window index spreads one day's events over.
pub const TIME_BUCKET_SHARDS: u64 = 8;
/// How many partitions the live-connections index spreads live views over.
pub const LIVE_SHARDS: u64 = 8;

/// A stable shard of a connection id: the same on every machine and release.
pub(crate) fn shard_of(connection_id: &ConnectionId, shards: u64) -> u64 {
    let digest = Sha256::digest(connection_id.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % shards
}

/// The time-window index partition of events of `connection_id` on the day of `at`.
pub(crate) fn time_bucket(day: &str, shard: u64) -> String {
    format!("{day}#{shard}")
}

pub(crate) fn day_of(at: Timestamp) -> String {
    at.as_datetime().format("%Y-%m-%d").to_string()
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventItem {
    connection_id: String,
    event_id: String,
    #[serde(rename = "type")]
    kind: String,
    user_id: String,
    at: String,
    connected_at: String,
    request_id: String,
    time_bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audio_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

pub(crate) fn event_to_item(envelope: &EventEnvelope) -> Result<Item, StoreError> {
    let mut item = EventItem {
        connection_id: envelope.connection_id.to_string(),
        event_id: envelope.event_id.to_string(),
        kind: envelope.kind().as_str().to_owned(),
        user_id: envelope.user_id.to_string(),
        at: envelope.at.to_rfc3339(),
        connected_at: envelope.connected_at.to_rfc3339(),
        request_id: envelope.request_id.clone(),
        time_bucket: time_bucket(&day_of(envelope.at), shard_of(&envelope.connection_id, TIME_BUCKET_SHARDS)),
        expires_at: envelope.expires_at,
        ip_address: None,
        user_agent: None,
        session_id: None,
        message_count: None,
        audio_format: None,
        reason: None,
        status_code: None,
        detail: None,
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
        ConnectionEvent::Disconnected { reason, status_code, detail } => {
            item.reason = Some(reason.to_string());
            item.status_code = *status_code;
            item.detail = detail.clone();
        }
    }
    serde_dynamo::to_item(item).map_err(|error| StoreError::Other(format!("encoding an event item: {error}")))
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn timestamp(field: &str, value: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse_rfc3339(value).map_err(|error| corrupt(format!("{field}: {error}")))
}

fn required(field: &str, value: Option<String>) -> Result<String, StoreError> {
    value.ok_or_else(|| corrupt(format!("{field} is missing")))
}

pub(crate) fn event_from_item(item: Item) -> Result<EventEnvelope, StoreError> {
    let item: EventItem = serde_dynamo::from_item(item).map_err(|error| corrupt(format!("event item: {error}")))?;
    let kind = EventKind::parse(&item.kind).ok_or_else(|| corrupt(format!("unknown event type {:?}", item.kind)))?;
    let event = match kind {
        EventKind::Connected => ConnectionEvent::Connected { ip_address: item.ip_address, user_agent: item.user_agent },
        EventKind::Activity => ConnectionEvent::Activity {
            session_id: item.session_id,
            message_count: item.message_count.unwrap_or_default(),
        },
        EventKind::VoiceStarted => ConnectionEvent::VoiceStarted {
            session_id: required("sessionId", item.session_id)?,
            audio_format: required("audioFormat", item.audio_format)?,
        },
        EventKind::VoiceEnded => ConnectionEvent::VoiceEnded { session_id: required("sessionId", item.session_id)? },
        EventKind::Disconnected => ConnectionEvent::Disconnected {
            reason: DisconnectReason::parse(&required("reason", item.reason)?),
            status_code: item.status_code,
            detail: item.detail,
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

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ViewItem {
    connection_id: String,
    user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    created_at: String,
    last_activity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disconnected_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disconnect_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disconnect_status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disconnect_detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    voice_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audio_format: Option<String>,
    last_event_id: String,
    first_event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connected_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disconnected_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    voice_event_id: Option<String>,
    /// Present only while connected: the sparse live-connections index key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    live_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    live_shard: Option<String>,
    version: u64,
}

pub(crate) fn view_to_item(view: &ConnectionInfo, version: u64) -> Result<Item, StoreError> {
    let event_id = |id: Option<EventId>| id.map(|id| id.to_string());
    let live_until = view.live_until();
    let item = ViewItem {
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
        last_event_id: view.last_event_id.to_string(),
        first_event_id: view.first_event_id.to_string(),
        connected_event_id: event_id(view.connected_event_id),
        disconnected_event_id: event_id(view.disconnected_event_id),
        session_event_id: event_id(view.session_event_id),
        voice_event_id: event_id(view.voice_event_id),
        live_until: live_until.map(|at| at.to_rfc3339()),
        live_shard: live_until.map(|_| shard_of(&view.connection_id, LIVE_SHARDS).to_string()),
        version,
    };
    serde_dynamo::to_item(item).map_err(|error| StoreError::Other(format!("encoding a view item: {error}")))
}

pub(crate) fn view_from_item(item: Item) -> Result<VersionedView, StoreError> {
    let item: ViewItem = serde_dynamo::from_item(item).map_err(|error| corrupt(format!("view item: {error}")))?;
    let event_id = |value: Option<String>| value.map(|id| EventId::parse(&id).map_err(corrupt)).transpose();
    let status =
        ConnectionStatus::parse(&item.status).ok_or_else(|| corrupt(format!("unknown status {:?}", item.status)))?;
    let view = ConnectionInfo {
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
    };
    Ok(VersionedView { view, version: item.version })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(event: ConnectionEvent) -> EventEnvelope {
        EventEnvelope::for_request(
            ConnectionId::parse("abcDEF123=").unwrap(),
            UserId::parse("user-1").unwrap(),
            "req-1",
            Timestamp::from_epoch_millis(1_764_000_000_123),
            Timestamp::from_epoch_millis(1_764_000_000_000),
            event,
        )
        .with_retention_days(90)
    }

    #[test]
    fn events_round_trip_and_leave_none_out() {
        let events = [
            ConnectionEvent::Connected { ip_address: Some("203.0.113.9".into()), user_agent: None },
            ConnectionEvent::Activity { session_id: None, message_count: 7 },
            ConnectionEvent::VoiceStarted { session_id: "s".into(), audio_format: "webm".into() },
            ConnectionEvent::VoiceEnded { session_id: "s".into() },
            ConnectionEvent::Disconnected { reason: DisconnectReason::Idle, status_code: Some(1001), detail: None },
        ];
        for event in events {
            let envelope = sample(event);
            let item = event_to_item(&envelope).unwrap();
            assert!(item.values().all(|value| !value.is_null()), "no NULL attributes: {item:?}");
            assert_eq!(item["type"].as_s().unwrap(), envelope.kind().as_str());
            assert_eq!(item["at"].as_s().unwrap(), "2025-11-24T16:00:00.123Z");
            assert_eq!(item["expiresAt"].as_n().unwrap(), &(1_764_000_000 + 90 * 86_400).to_string());
            assert!(item["timeBucket"].as_s().unwrap().starts_with("2025-11-24#"));
            assert_eq!(event_from_item(item).unwrap(), envelope);
        }
    }

    #[test]
    fn connected_item_has_the_design_attribute_names() {
        let item = event_to_item(&sample(ConnectionEvent::Connected {
            ip_address: Some("203.0.113.9".into()),
            user_agent: Some("ua".into()),
        }))
        .unwrap();
        let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "at",
                "connectedAt",
                "connectionId",
                "eventId",
                "expiresAt",
                "ipAddress",
                "requestId",
                "timeBucket",
                "type",
                "userAgent",
                "userId"
            ]
        );
    }

    #[test]
    fn views_round_trip_and_only_live_ones_carry_the_live_index_keys() {
        let connected = sample(ConnectionEvent::Connected { ip_address: None, user_agent: None });
        let mut view = ConnectionInfo::from_event(&connected);
        let item = view_to_item(&view, 3).unwrap();
        assert!(item.contains_key("liveUntil") && item.contains_key("liveShard"));
        assert_eq!(item["status"].as_s().unwrap(), "CONNECTED");
        assert_eq!(view_from_item(item).unwrap(), VersionedView { view: view.clone(), version: 3 });

        view.apply(&sample(ConnectionEvent::Disconnected {
            reason: DisconnectReason::Gone,
            status_code: None,
            detail: None,
        }));
        let item = view_to_item(&view, 4).unwrap();
        assert!(!item.contains_key("liveUntil") && !item.contains_key("liveShard"));
        assert!(item.values().all(|value| !value.is_null()));
        assert_eq!(view_from_item(item).unwrap().view, view);
    }

    #[test]
    fn a_garbage_item_is_corrupt_not_a_panic() {
        let mut item = event_to_item(&sample(ConnectionEvent::VoiceEnded { session_id: "s".into() })).unwrap();
        item.insert("type".into(), AttributeValue::S("Exploded".into()));
        assert!(matches!(event_from_item(item), Err(StoreError::Corrupt(_))));
        let mut item = event_to_item(&sample(ConnectionEvent::VoiceEnded { session_id: "s".into() })).unwrap();
        item.remove("sessionId");
        assert!(matches!(event_from_item(item), Err(StoreError::Corrupt(_))));
    }
}
