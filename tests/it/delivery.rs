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

/// A send reads the user's connections of the last two hours only, whatever the
/// length of the user's history: 400 old connections cost it nothing, and a ghost
/// older than any connection API Gateway keeps open is not posted to (the sweep
/// finds it).
#[tokio::test]
async fn a_send_reads_the_last_two_hours_of_the_users_connections_not_their_history() {
    use wsledger::delivery::send_to_user;
    use wsledger::domain::{ConnectionInfo, ConnectionStatus, EventEnvelope};
    use wsledger::ports::ViewStore;
    let api = ManagementApi::start(&[]).await;
    let gateway = api.gateway();
    let (store, counter) = dynamodb_local::fresh_store().await;
    let user = UserId::parse("user-history").unwrap();
    let now = Timestamp::now();
    let view = |connection: String, minutes_ago: i64, status: ConnectionStatus| {
        let at = now.minus(chrono::TimeDelta::minutes(minutes_ago));
        let connected = ConnectionEvent::Connected { ip_address: None, user_agent: None };
        let event =
            EventEnvelope::for_request(ConnectionId::parse(connection).unwrap(), user.clone(), "c", at, at, connected);
        let mut view = ConnectionInfo::from_event(&event);
        view.status = status;
        view
    };
    for index in 0..400 {
        store
            .put(&view(format!("Old{index:05}cFJIAM="), 180 + index, ConnectionStatus::Disconnected), None)
            .await
            .unwrap();
    }
    store.put(&view("GhostcFJIAMCL-g=".into(), 150, ConnectionStatus::Connected), None).await.unwrap();
    store.put(&view("LivecFJIAMCL-g=".into(), 5, ConnectionStatus::Connected), None).await.unwrap();

    counter.reset();
    let report = send_to_user(&store, &store, &gateway, &user, br#"{"n":1}"#, 90, now, None).await.unwrap();
    assert_eq!((report.delivered, report.gone, report.failed), (1, 0, 0));
    let posted = api.calls.lock().unwrap().posted.keys().cloned().collect::<Vec<_>>();
    assert_eq!(posted, ["LivecFJIAMCL-g="], "only the live connection; not the ghost older than two hours");
    let requests = counter.snapshot();
    let read: u64 = counter.bytes().values().sum();
    assert_eq!(requests.get("Query"), Some(&1), "one read of the user's newest connections: {requests:?}");
    assert!(read < 40_000, "{read} bytes read for a user with 402 connections");
}
