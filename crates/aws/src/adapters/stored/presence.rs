//! The stored shape of presence records, and the contract's JSON of presence and
//! presence events (docs/contract.md, "Round three"), shared by every store and
//! output.

use serde::{Deserialize, Serialize};

use super::{corrupt, timestamp};
use crate::domain::presence::{
    Device, Outgoing, PendingOffline, Presence, PresenceEvent, PresenceEventType, PresenceRecord, Told,
};
use crate::domain::{ConnectionId, EventId, Timestamp, UserId};
use crate::ports::StoreError;

/// A presence event as published and stored: `{eventId, type, userId, at, connections}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEventItem {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub user_id: String,
    pub at: String,
    pub connections: u64,
}

impl From<&PresenceEvent> for PresenceEventItem {
    fn from(event: &PresenceEvent) -> Self {
        Self {
            event_id: event.event_id.clone(),
            kind: event.kind.as_str().to_owned(),
            user_id: event.user_id.to_string(),
            at: event.at.to_rfc3339(),
            connections: event.connections as u64,
        }
    }
}

impl TryFrom<PresenceEventItem> for PresenceEvent {
    type Error = StoreError;

    fn try_from(item: PresenceEventItem) -> Result<Self, StoreError> {
        Ok(PresenceEvent {
            kind: PresenceEventType::parse(&item.kind)
                .ok_or_else(|| corrupt(format!("presence event type {:?}", item.kind)))?,
            user_id: UserId::parse(item.user_id).map_err(corrupt)?,
            at: timestamp("at", &item.at)?,
            connections: item.connections as usize,
            event_id: item.event_id,
        })
    }
}

/// A device as the contract shows it: `{connectionId, ipAddress, userAgent, connectedAt}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceJson {
    pub connection_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub connected_at: String,
}

/// A user's presence as the contract shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceJson {
    pub user_id: String,
    pub status: String,
    pub connections: u64,
    pub devices: Vec<DeviceJson>,
    pub in_voice: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<String>,
}

impl From<&Presence> for PresenceJson {
    fn from(presence: &Presence) -> Self {
        Self {
            user_id: presence.user_id.to_string(),
            status: presence.status.as_str().to_owned(),
            connections: presence.devices.len() as u64,
            devices: presence
                .devices
                .iter()
                .map(|device| DeviceJson {
                    connection_id: device.connection_id.to_string(),
                    ip_address: device.ip_address.clone(),
                    user_agent: device.user_agent.clone(),
                    connected_at: device.connected_at.to_rfc3339(),
                })
                .collect(),
            in_voice: presence.in_voice,
            last_seen: presence.last_seen.map(|at| at.to_rfc3339()),
            changed_at: presence.changed_at.map(|at| at.to_rfc3339()),
        }
    }
}

/// A device as stored: what the contract shows ([`DeviceJson`]), and what presence needs besides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceItem {
    pub connection_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub connected_at: String,
    pub live_until: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_at: Option<String>,
    pub last_event_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutgoingItem {
    pub event: PresenceEventItem,
    pub sinks: Vec<String>,
}

/// A user's presence record as stored (`presenceUserId` rather than `userId`, so
/// that no index of views keyed by `userId` sees it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceItem {
    pub presence_user_id: String,
    #[serde(default)]
    pub devices: Vec<DeviceItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<String>,
    #[serde(default)]
    pub told_online: bool,
    #[serde(default)]
    pub told_in_voice: bool,
    #[serde(default)]
    pub told_events: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_cause: Option<String>,
    #[serde(default)]
    pub outbox: Vec<OutgoingItem>,
    #[serde(default)]
    pub delivery_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
}

impl From<&PresenceRecord> for PresenceItem {
    fn from(record: &PresenceRecord) -> Self {
        Self {
            presence_user_id: record.user_id.to_string(),
            devices: record.devices.iter().map(DeviceItem::from).collect(),
            last_seen: record.last_seen.map(|at| at.to_rfc3339()),
            changed_at: record.changed_at.map(|at| at.to_rfc3339()),
            told_online: record.told.online,
            told_in_voice: record.told.in_voice,
            told_events: record.told.events,
            offline_since: record.pending_offline.as_ref().map(|pending| pending.since.to_rfc3339()),
            offline_cause: record.pending_offline.as_ref().map(|pending| pending.cause.clone()),
            outbox: record
                .outbox
                .iter()
                .map(|outgoing| OutgoingItem {
                    event: PresenceEventItem::from(&outgoing.event),
                    sinks: outgoing.sinks.clone(),
                })
                .collect(),
            delivery_failures: record.delivery_failures,
            retry_at: record.retry_at.map(|at| at.to_rfc3339()),
        }
    }
}

impl From<&Device> for DeviceItem {
    fn from(device: &Device) -> Self {
        Self {
            connection_id: device.connection_id.to_string(),
            ip_address: device.ip_address.clone(),
            user_agent: device.user_agent.clone(),
            connected_at: device.connected_at.to_rfc3339(),
            live_until: device.live_until.to_rfc3339(),
            voice_at: device.voice.map(|at| at.to_rfc3339()),
            last_event_id: device.last_event_id.to_string(),
        }
    }
}

impl TryFrom<DeviceItem> for Device {
    type Error = StoreError;

    fn try_from(item: DeviceItem) -> Result<Self, StoreError> {
        Ok(Device {
            connection_id: ConnectionId::parse(item.connection_id).map_err(corrupt)?,
            ip_address: item.ip_address,
            user_agent: item.user_agent,
            connected_at: timestamp("connectedAt", &item.connected_at)?,
            live_until: timestamp("liveUntil", &item.live_until)?,
            voice: optional_timestamp("voiceAt", item.voice_at)?,
            last_event_id: EventId::parse(&item.last_event_id).map_err(corrupt)?,
        })
    }
}

fn optional_timestamp(field: &str, value: Option<String>) -> Result<Option<Timestamp>, StoreError> {
    value.map(|value| timestamp(field, &value)).transpose()
}

impl TryFrom<PresenceItem> for PresenceRecord {
    type Error = StoreError;

    fn try_from(item: PresenceItem) -> Result<Self, StoreError> {
        let pending_offline = match (optional_timestamp("offlineSince", item.offline_since)?, item.offline_cause) {
            (Some(since), Some(cause)) => Some(PendingOffline { since, cause }),
            _ => None,
        };
        let outbox = item
            .outbox
            .into_iter()
            .map(|outgoing| Ok(Outgoing { event: PresenceEvent::try_from(outgoing.event)?, sinks: outgoing.sinks }))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(PresenceRecord {
            user_id: UserId::parse(item.presence_user_id).map_err(corrupt)?,
            devices: item.devices.into_iter().map(Device::try_from).collect::<Result<Vec<_>, StoreError>>()?,
            last_seen: optional_timestamp("lastSeen", item.last_seen)?,
            changed_at: optional_timestamp("changedAt", item.changed_at)?,
            told: Told { online: item.told_online, in_voice: item.told_in_voice, events: item.told_events },
            pending_offline,
            outbox,
            delivery_failures: item.delivery_failures,
            retry_at: optional_timestamp("retryAt", item.retry_at)?,
        })
    }
}
