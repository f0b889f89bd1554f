//! Posting to connections through the Management API adapter; a 410 appends
//! `Disconnected{reason: gone}` to the ledger in DynamoDB Local.

use wsledger::delivery::{Delivery, Recipient, deliver};
use wsledger::domain::{ConnectionEvent, ConnectionId, DisconnectReason, Timestamp, UserId};
use wsledger::ports::{ConnectionGateway, EventStore, GatewayError, PageRequest};

use crate::dynamodb_local;
use crate::management_api::ManagementApi;

fn recipient(connection: &str) -> Recipient {
    Recipient {
        connection_id: ConnectionId::parse(connection).unwrap(),
        user_id: UserId::parse("user-send").unwrap(),
        connected_at: Timestamp::now(),
    }
}

#[tokio::test]
async fn a_410_is_recorded_as_gone_and_a_200_as_delivered() {
    let api = ManagementApi::start(&["Gone0cFJIAMCL-g="]).await;
    let gateway = api.gateway();
    let (store, _) = dynamodb_local::fresh_store().await;

    let live = recipient("Live0cFJIAMCL-g=");
    let gone = recipient("Gone0cFJIAMCL-g=");
    let frame = br#"{"type":"text_response","data":{"content":"hi"}}"#;
    let now = Timestamp::now();
    assert_eq!(deliver(&gateway, &store, &live, frame, 90, now).await.unwrap(), Delivery::Delivered);
    assert_eq!(deliver(&gateway, &store, &gone, frame, 90, now).await.unwrap(), Delivery::Gone);
    assert_eq!(api.calls.lock().unwrap().posted["Live0cFJIAMCL-g="], vec![frame.to_vec()]);

    let live_history = store.connection_history(&live.connection_id, PageRequest::default()).await.unwrap();
    assert!(live_history.items.is_empty());
    let gone_history = store.connection_history(&gone.connection_id, PageRequest::default()).await.unwrap();
    assert_eq!(gone_history.items.len(), 1);
    assert_eq!(
        gone_history.items[0].event,
        ConnectionEvent::Disconnected {
            reason: DisconnectReason::Gone,
            status_code: Some(410),
            detail: None,
            message_count: 0
        }
    );
    assert_eq!(gone_history.items[0].user_id.as_str(), "user-send");
    assert_eq!(gone_history.items[0].at, now, "the observation's time, as given");
    assert_eq!(
        gone_history.items[0].event_id,
        wsledger::delivery::gone_event(&gone, now, 90).event_id,
        "pinned by now"
    );

    let info = gateway.get(&live.connection_id).await.unwrap();
    assert_eq!(info.source_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(info.connected_at, Some(Timestamp::parse_rfc3339("2025-11-24T16:00:00Z").unwrap()));
    assert!(matches!(gateway.get(&gone.connection_id).await, Err(GatewayError::Gone)));
    gateway.delete(&live.connection_id).await.unwrap();
    assert!(matches!(gateway.delete(&live.connection_id).await, Err(GatewayError::Gone)));
}
