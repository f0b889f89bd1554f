//! The projector against DynamoDB Local: real stream records, the real bootstrap,
//! the stream poller, partial batch failures and the sweep.

use std::sync::{Arc, Mutex};

use aws_lambda_events::dynamodb::{Event, EventRecord, UserIdentity};
use aws_lambda_events::streams::DynamoDbEventResponse;
use serde_json::json;
use wsledger::adapters::dynamodb::DynamoDbStore;
use wsledger::adapters::dynamodb::stream::{StreamPoller, TTL_PRINCIPAL};
use wsledger::adapters::faulty::{Call, Faulty};
use wsledger::domain::{
    ConnectionEvent, ConnectionId, ConnectionInfo, ConnectionStatus, DisconnectReason, EventEnvelope, EventKind,
    Timestamp, UserId,
};
use wsledger::handler::{AcknowledgingVoice, ConnectionHandler, EchoText, HandlerConfig, RequestMeta, Route};
use wsledger::lambda::projector::stream_batch;
use wsledger::ports::{EventStore, PageRequest, StoreError, ViewStore};

use crate::dynamodb_local;
use crate::lambda_runtime_api::{Outcome, RuntimeApi};
use crate::management_api::ManagementApi;

fn poller(store: &DynamoDbStore) -> StreamPoller {
    StreamPoller::new(store.client().clone(), dynamodb_local::streams_client(), store.tables().events.clone())
}

/// Every record currently in the events table's stream, as Lambda would deliver them.
pub async fn stream_records(store: &DynamoDbStore) -> Vec<EventRecord> {
    let mut poller = poller(store);
    let collected = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..20 {
        let sink = collected.clone();
        let delivered = poller
            .poll_once(move |records| {
                sink.lock().unwrap().extend(records);
                async { DynamoDbEventResponse::default() }
            })
            .await
            .unwrap();
        if delivered == 0 {
            break;
        }
    }
    collected.lock().unwrap().clone()
}

fn event(
    connection: &str,
    request: &str,
    at: Timestamp,
    connected_at: Timestamp,
    event: ConnectionEvent,
) -> EventEnvelope {
    EventEnvelope::for_request(
        ConnectionId::parse(connection).unwrap(),
        UserId::parse("user-proj").unwrap(),
        request,
        at,
        connected_at,
        event,
    )
}

/// Polls every shard once, projecting each batch; returns the batches and the answers.
async fn poll_into(
    poller: &mut StreamPoller,
    views: Arc<dyn ViewStore>,
    ledger: &DynamoDbStore,
) -> Vec<(Vec<EventRecord>, DynamoDbEventResponse)> {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let sink = batches.clone();
    poller
        .poll_once(|records| {
            let views = views.clone();
            let sink = sink.clone();
            let ledger = ledger.clone();
            async move {
                let response =
                    stream_batch(views.as_ref(), &ledger, &records, None, &wsledger::metrics::Metrics::new()).await;
                sink.lock().unwrap().push((records, response.clone()));
                response
            }
        })
        .await
        .unwrap();
    batches.lock().unwrap().clone()
}

/// Polls until the stream has nothing new.
async fn drain(poller: &mut StreamPoller, views: Arc<dyn ViewStore>, ledger: &DynamoDbStore) {
    for _ in 0..10 {
        if poll_into(poller, views.clone(), ledger).await.is_empty() {
            return;
        }
    }
}

fn history(connection: &str, start: Timestamp) -> Vec<EventEnvelope> {
    let at = |seconds: i64| start.plus(chrono::TimeDelta::seconds(seconds));
    vec![
        event(
            connection,
            "c",
            at(0),
            start,
            ConnectionEvent::Connected {
                ip_address: Some("203.0.113.7".into()),
                user_agent: Some("Mozilla/5.0".into()),
            },
        ),
        event(connection, "a", at(5), start, ConnectionEvent::Activity { session_id: None, message_count: 3 }),
        event(
            connection,
            "v",
            at(6),
            start,
            ConnectionEvent::VoiceStarted { session_id: "voice-session-123".into(), audio_format: "webm".into() },
        ),
        event(
            connection,
            "d",
            at(30),
            start,
            ConnectionEvent::Disconnected {
                reason: DisconnectReason::Client,
                status_code: Some(1000),
                detail: None,
                message_count: 0,
            },
        ),
    ]
}

async fn view(store: &DynamoDbStore, connection: &str) -> Option<ConnectionInfo> {
    store.get(&ConnectionId::parse(connection).unwrap()).await.unwrap().map(|stored| stored.view)
}

fn spawn_projector(runtime: &RuntimeApi, store: &DynamoDbStore, extra: &[(&str, String)]) -> tokio::process::Child {
    let mut env = dynamodb_local::bootstrap_env(store.tables());
    env.extend(extra.iter().cloned());
    runtime.spawn(&wsledger_testkit::bootstrap_bin("projector"), &env)
}

#[tokio::test]
async fn the_real_projector_folds_reversed_duplicated_late_ttl_and_poison_records() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let start = Timestamp::now().minus(chrono::TimeDelta::minutes(5));
    let a = history("conn-a", start);
    let b = history("conn-b", start)[..2].to_vec();
    let c = history("conn-c", start)[..1].to_vec();
    for event in a.iter().chain(&b).chain(&c) {
        store.append(event).await.unwrap();
    }
    let records = stream_records(&store).await;
    assert_eq!(records.len(), a.len() + b.len() + c.len(), "one INSERT per append");

    let mut poison = records[0].clone();
    poison.event_id = "poison-record".into();
    poison.change.new_image = serde_json::from_value(json!({ "connectionId": { "S": "conn-a" } })).unwrap();
    let ttl_remove = |record: &EventRecord| {
        let mut removal = record.clone();
        removal.event_name = "REMOVE".into();
        removal.change.old_image = removal.change.new_image.clone();
        removal.change.new_image = Default::default();
        let mut identity = UserIdentity::default();
        identity.type_ = "Service".into();
        identity.principal_id = TTL_PRINCIPAL.into();
        removal.user_identity = Some(identity);
        removal
    };
    let c_record = records.iter().find(|record| format!("{:?}", record.change.new_image).contains("conn-c")).unwrap();
    let mut batch = vec![poison];
    batch.extend(records.iter().rev().filter(|record| !std::ptr::eq(*record, c_record)).cloned());
    batch.extend(records[..3].iter().cloned());
    batch.push(ttl_remove(c_record));
    batch.push(ttl_remove(&records[0]));

    let runtime = RuntimeApi::start().await;
    let _projector = spawn_projector(&runtime, &store, &[]);
    let mut lambda_event = Event::default();
    lambda_event.records = batch;
    let response = match runtime.invoke(serde_json::to_value(&lambda_event).unwrap()).await {
        Outcome::Response(response) => response,
        Outcome::Error(error) => panic!("{error}"),
    };
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");

    let view_a = view(&store, "conn-a").await.expect("a view of conn-a");
    assert_eq!(view_a, ConnectionInfo::fold(&a).unwrap());
    assert_eq!(view_a.status, ConnectionStatus::Disconnected);
    assert_eq!(view_a.user_id.as_str(), "user-proj");
    assert_eq!(view_a.ip_address.as_deref(), Some("203.0.113.7"));
    assert_eq!(view_a.user_agent.as_deref(), Some("Mozilla/5.0"));
    assert_eq!(view_a.created_at, start);
    assert_eq!(view_a.last_activity, start.plus(chrono::TimeDelta::seconds(30)));
    assert_eq!(view_a.disconnected_at, Some(start.plus(chrono::TimeDelta::seconds(30))));
    assert_eq!(view_a.voice_session_id, None);
    assert_eq!(view(&store, "conn-b").await.unwrap().status, ConnectionStatus::Connected);
    assert_eq!(view(&store, "conn-c").await, None, "a TTL REMOVE never touches a view");

    // The seed's attribute names, as a reader of the old connections table sees them.
    let raw = store
        .client()
        .get_item()
        .table_name(&store.tables().connections)
        .key("connectionId", aws_sdk_dynamodb::types::AttributeValue::S("conn-a".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(raw["status"].as_s().unwrap(), "DISCONNECTED");
    assert_eq!(raw["disconnectedAt"].as_s().unwrap(), &start.plus(chrono::TimeDelta::seconds(30)).to_rfc3339());
}

#[tokio::test]
async fn handler_appends_reach_the_views_through_the_stream_poller() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let store = Arc::new(store);
    let handler = ConnectionHandler::new(
        store.clone(),
        Arc::new(AcknowledgingVoice),
        Arc::new(EchoText),
        HandlerConfig::default(),
    );
    let connected_at = Timestamp::now().minus(chrono::TimeDelta::seconds(10));
    let meta = |request: &str, offset_ms: i64| RequestMeta {
        connection_id: ConnectionId::parse("PollerCFJIAMCL-g=").unwrap(),
        request_id: request.into(),
        request_time: connected_at.plus(chrono::TimeDelta::milliseconds(offset_ms)),
        connected_at,
        user_id: Some(UserId::parse("user-poll").unwrap()),
    };
    let connect = Route::Connect { ip_address: Some("198.51.100.4".into()), user_agent: Some("wscat".into()) };
    assert_eq!(handler.handle(&meta("r1", 0), connect).await.status, 200);
    let voice = r#"{"type":"voice_start","data":{"audioFormat":"webm","sessionId":"voice-session-123"}}"#;
    handler.handle(&meta("r2", 1_000), Route::Message { body: voice.into() }).await;

    let mut poller = poller(&store);
    drain(&mut poller, store.clone(), &store).await;
    let view = view(&store, "PollerCFJIAMCL-g=").await.expect("the view follows the ledger");
    assert_eq!(view.status, ConnectionStatus::Connected);
    assert_eq!(view.voice_session_id.as_deref(), Some("voice-session-123"));
    assert_eq!(view.ip_address.as_deref(), Some("198.51.100.4"));
    assert_eq!(view.user_id.as_str(), "user-poll");
}

#[tokio::test]
async fn a_failed_write_is_reported_and_the_retry_from_that_record_completes_the_view() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let store = Arc::new(store);
    let start = Timestamp::now().minus(chrono::TimeDelta::minutes(1));
    let (a, b) = (history("conn-ok", start), history("conn-failing", start));
    for (event_a, event_b) in a.iter().zip(&b) {
        store.append(event_a).await.unwrap();
        store.append(event_b).await.unwrap();
    }
    let views = Arc::new(Faulty::new(store.clone()));
    views.fail_when(|call, _| match call {
        Call::Put(view) if view.connection_id.as_str() == "conn-failing" => {
            Some(StoreError::Throttled("injected".into()))
        }
        _ => None,
    });
    let mut poller = poller(&store);
    let batches = poll_into(&mut poller, views.clone(), &store).await;
    let failures: Vec<_> = batches.iter().filter(|(_, response)| !response.batch_item_failures.is_empty()).collect();
    assert_eq!(failures.len(), 1);
    let (records, response) = failures[0];
    let first_failing = records
        .iter()
        .find(|record| format!("{:?}", record.change.new_image).contains("conn-failing"))
        .and_then(|record| record.change.sequence_number.clone());
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(
        response.batch_item_failures[0].item_identifier, first_failing,
        "the earliest record of the failed view"
    );
    assert_eq!(view(&store, "conn-ok").await.unwrap(), ConnectionInfo::fold(&a).unwrap());
    assert_eq!(view(&store, "conn-failing").await, None);

    // The poller restarts at the reported record, as Lambda does.
    views.heal();
    let retried = poll_into(&mut poller, views.clone(), &store).await;
    assert!(!retried.is_empty(), "the failed records are delivered again");
    assert_eq!(retried[0].0[0].change.sequence_number, first_failing);
    assert!(retried.iter().all(|(_, response)| response.batch_item_failures.is_empty()));
    assert_eq!(view(&store, "conn-failing").await.unwrap(), ConnectionInfo::fold(&b).unwrap());
    assert_eq!(view(&store, "conn-ok").await.unwrap(), ConnectionInfo::fold(&a).unwrap());
}

#[tokio::test]
async fn a_scheduled_sweep_disconnects_exactly_the_gone_connections() {
    let (store, _) = dynamodb_local::fresh_store().await;
    // Two connections opened an hour ago, idle for 30 minutes: API Gateway must have closed them.
    let start = Timestamp::now().minus(chrono::TimeDelta::hours(1));
    for connection in ["StaleGone0IAMCL-g=", "StaleAlive0AMCL-g="] {
        let events = history(connection, start)[..2].to_vec();
        for event in &events {
            store.append(event).await.unwrap();
        }
        wsledger::projection::project_connection(&store, &store, &events).await.unwrap();
    }
    let api = ManagementApi::start(&["StaleGone0IAMCL-g="]).await;
    let runtime = RuntimeApi::start().await;
    let _projector = spawn_projector(&runtime, &store, &[("WEBSOCKET_API_ENDPOINT", api.endpoint.clone())]);
    let scheduled = json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2025-11-24T16:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/wsledger-sweep"],
        "detail": {}
    });
    let report = match runtime.invoke(scheduled).await {
        Outcome::Response(report) => report,
        Outcome::Error(error) => panic!("{error}"),
    };
    assert_eq!(
        (report["checked"].as_u64(), report["gone"].as_u64(), report["alive"].as_u64()),
        (Some(2), Some(1), Some(1)),
        "{report}"
    );
    let mut asked: Vec<String> = api.calls.lock().unwrap().gets.clone();
    asked.sort();
    assert_eq!(asked, ["StaleAlive0AMCL-g=", "StaleGone0IAMCL-g="]);

    let ledger = |connection: &'static str| {
        let store = &store;
        async move {
            store
                .connection_history(&ConnectionId::parse(connection).unwrap(), PageRequest::default())
                .await
                .unwrap()
                .items
        }
    };
    let gone = ledger("StaleGone0IAMCL-g=").await;
    let disconnected: Vec<&EventEnvelope> =
        gone.iter().filter(|event| event.kind() == EventKind::Disconnected).collect();
    assert_eq!(disconnected.len(), 1);
    assert!(matches!(disconnected[0].event, ConnectionEvent::Disconnected { reason: DisconnectReason::Gone, .. }));
    assert!(ledger("StaleAlive0AMCL-g=").await.iter().all(|event| event.kind() != EventKind::Disconnected));

    // The view follows through the normal projection.
    let views = Arc::new(store);
    let mut poller = poller(&views);
    drain(&mut poller, views.clone(), &views).await;
    let gone_view = view(&views, "StaleGone0IAMCL-g=").await.unwrap();
    assert_eq!(
        (gone_view.status, gone_view.disconnect_reason),
        (ConnectionStatus::Disconnected, Some(DisconnectReason::Gone))
    );
    assert_eq!(view(&views, "StaleAlive0AMCL-g=").await.unwrap().status, ConnectionStatus::Connected);
}

/// With a checkpoint file, a restarted poller goes on where the last one stopped
/// instead of reading the stream from its start.
#[tokio::test]
async fn a_restarted_poller_goes_on_from_its_checkpoint() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let start = Timestamp::now().minus(chrono::TimeDelta::minutes(1));
    let events = history("conn-checkpoint", start);
    for event in &events[..3] {
        store.append(event).await.unwrap();
    }
    let checkpoint = std::env::temp_dir().join(format!("wsledger-checkpoint-{}.json", ulid::Ulid::generate()));
    async fn read_all(poller: &mut StreamPoller) -> usize {
        let mut total = 0;
        for _ in 0..10 {
            let delivered = poller.poll_once(|_| async { DynamoDbEventResponse::default() }).await.unwrap();
            total += delivered;
            if delivered == 0 {
                break;
            }
        }
        total
    }
    let mut first = poller(&store).with_checkpoint(&checkpoint);
    assert_eq!(read_all(&mut first).await, 3);
    assert!(checkpoint.exists(), "the positions were saved");

    let mut restarted = poller(&store).with_checkpoint(&checkpoint);
    assert_eq!(read_all(&mut restarted).await, 0, "nothing is read again");
    store.append(&events[3]).await.unwrap();
    assert_eq!(read_all(&mut restarted).await, 1, "and the next event is read");
    assert_eq!(read_all(&mut poller(&store)).await, 4, "without a checkpoint, everything again");
    let _ = std::fs::remove_file(checkpoint);
}
