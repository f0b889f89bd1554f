//! DynamoDB items of events and views: the shared stored shape (`adapters::item`)
//! plus this store's index keys (`timeBucket`, `liveShard`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};

use crate::adapters::stored::{EventItem, ViewItem, corrupt};
use crate::domain::{ConnectionId, ConnectionInfo, EventEnvelope, Timestamp};
use crate::ports::{Cause, StoreError, VersionedView};

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

pub(crate) fn event_to_item(envelope: &EventEnvelope) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(EventItem::from(envelope))
        .map_err(|error| StoreError::Other(Cause::caused_by("encoding an event item", error)))?;
    let bucket = time_bucket(&day_of(envelope.at), shard_of(&envelope.connection_id, TIME_BUCKET_SHARDS));
    item.insert("timeBucket".into(), AttributeValue::S(bucket));
    Ok(item)
}

pub(crate) fn event_from_item(item: Item) -> Result<EventEnvelope, StoreError> {
    let item: EventItem = serde_dynamo::from_item(item).map_err(|error| corrupt(format!("event item: {error}")))?;
    EventEnvelope::try_from(item)
}

/// Takes the `version` attribute out of an item written with [`put_if_version`]
/// (or its transactional form); `what` names the item in the error.
pub(crate) fn take_version(item: &mut Item, what: &str) -> Result<u64, StoreError> {
    item.remove("version")
        .and_then(|version| version.as_n().ok().and_then(|number| number.parse::<u64>().ok()))
        .ok_or_else(|| corrupt(format!("{what} without a version")))
}

/// A PutItem that succeeds only over the item at `expected_version`, or where there
/// is no item yet (`None`): the optimistic write of views and leases.
pub(crate) fn put_if_version(
    request: aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder,
    expected_version: Option<u64>,
) -> aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder {
    match expected_version {
        None => request.condition_expression("attribute_not_exists(connectionId)"),
        Some(expected) => request
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", AttributeValue::N(expected.to_string())),
    }
}

pub(crate) fn view_to_item(view: &ConnectionInfo, version: u64) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(ViewItem::new(view, version))
        .map_err(|error| StoreError::Other(Cause::caused_by("encoding a view item", error)))?;
    if view.live_until().is_some() {
        let shard = shard_of(&view.connection_id, LIVE_SHARDS).to_string();
        item.insert("liveShard".into(), AttributeValue::S(shard));
    }
    Ok(item)
}

pub(crate) fn view_from_item(item: Item) -> Result<VersionedView, StoreError> {
    let item: ViewItem = serde_dynamo::from_item(item).map_err(|error| corrupt(format!("view item: {error}")))?;
    VersionedView::try_from(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConnectionEvent, DisconnectReason, UserId};

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
            ConnectionEvent::Disconnected {
                reason: DisconnectReason::Idle,
                status_code: Some(1001),
                detail: None,
                message_count: 0,
            },
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
            message_count: 0,
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
