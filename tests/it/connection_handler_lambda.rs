//! The real `connection-handler` bootstrap, driven through a Lambda Runtime API with
//! API Gateway-shaped events, appending to DynamoDB Local.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::process::Child;
use wsledger::adapters::dynamodb::{DynamoDbStore, TableNames};
use wsledger::domain::{ConnectionId, EventKind, Timestamp};
use wsledger::ports::{EventStore, PageRequest};

use crate::dynamodb_local::{self, ACCESS_KEY, REGION, SECRET_KEY};
use crate::lambda_runtime_api::{Outcome, RuntimeApi};

const CONNECT: &str = include_str!("../fixtures/apigw/connect.json");
const DEFAULT: &str = include_str!("../fixtures/apigw/default.json");
const DISCONNECT: &str = include_str!("../fixtures/apigw/disconnect.json");

/// The seed README's client messages.
const SEED_MESSAGES: [&str; 4] = [
    r#"{"type":"voice_start","data":{"audioFormat":"webm","sessionId":"voice-session-123"}}"#,
    r#"{"type":"voice_data","data":{"audioData":"base64-encoded-audio","sessionId":"voice-session-123"}}"#,
    r#"{"type":"voice_end","data":{"sessionId":"voice-session-123"}}"#,
    r#"{"type":"text_message","data":{"content":"Hello, AI!","sessionId":"chat-session-123"}}"#,
];

struct Lambda {
    runtime: RuntimeApi,
    _process: Child,
    store: DynamoDbStore,
    connection_id: String,
    connected_at: i64,
    requests: u64,
}

impl Lambda {
    async fn start() -> Self {
        let (store, _) = dynamodb_local::fresh_store().await;
        let runtime = RuntimeApi::start().await;
        let TableNames { events, connections, .. } = store.tables().clone();
        let process = runtime.spawn(
            &wsledger_testkit::bootstrap_bin("connection-handler"),
            &[
                ("EVENTS_TABLE_NAME", events),
                ("CONNECTIONS_TABLE_NAME", connections),
                ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local::endpoint().to_owned()),
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
                ("AWS_REGION", REGION.to_owned()),
            ],
        );
        let connection_id = format!("{}=", &ulid::Ulid::generate().to_string()[10..25]);
        let connected_at = Timestamp::now().epoch_millis() - 60_000;
        Self { runtime, _process: process, store, connection_id, connected_at, requests: 0 }
    }

    /// A fixture with this connection's id, fresh request id and a request time `offset_ms` after connecting.
    fn event(&mut self, fixture: &str, offset_ms: i64) -> Value {
        self.requests += 1;
        let mut event: Value = serde_json::from_str(fixture).unwrap();
        let context = &mut event["requestContext"];
        context["connectionId"] = json!(self.connection_id);
        context["connectedAt"] = json!(self.connected_at);
        context["requestTimeEpoch"] = json!(self.connected_at + offset_ms);
        context["requestId"] = json!(format!("req-{}-{}", self.connection_id, self.requests));
        event
    }

    async fn invoke(&self, event: Value) -> Value {
        match self.runtime.invoke(event).await {
            Outcome::Response(response) => response,
            Outcome::Error(error) => panic!("the function failed: {error}"),
        }
    }

    async fn send(&mut self, offset_ms: i64, body: &str) -> Value {
        let mut event = self.event(DEFAULT, offset_ms);
        event["body"] = json!(body);
        let response = self.invoke(event).await;
        assert_eq!(response["statusCode"], 200, "{response}");
        serde_json::from_str(response["body"].as_str().expect("a reply body")).expect("a JSON frame")
    }

    async fn ledger(&self) -> Vec<wsledger::domain::EventEnvelope> {
        let connection = ConnectionId::parse(self.connection_id.clone()).unwrap();
        self.store.connection_history(&connection, PageRequest::first(1_000)).await.unwrap().items
    }
}

fn count_kinds(events: &[wsledger::domain::EventEnvelope]) -> BTreeMap<EventKind, usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        *counts.entry(event.kind()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn the_seed_session_through_the_real_bootstrap() {
    let mut lambda = Lambda::start().await;
    let connect = lambda.event(CONNECT, 0);
    let response = lambda.invoke(connect.clone()).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    // A retried $connect (same request id) answers the same and appends nothing.
    assert_eq!(lambda.invoke(connect).await["statusCode"], 200);

    let replies = [
        lambda.send(1_000, SEED_MESSAGES[0]).await,
        lambda.send(2_000, SEED_MESSAGES[1]).await,
        lambda.send(3_000, SEED_MESSAGES[2]).await,
        lambda.send(4_000, SEED_MESSAGES[3]).await,
    ];
    assert_eq!(replies[0], json!({"type": "voice_started", "data": {"sessionId": "voice-session-123"}}));
    assert_eq!(
        replies[1],
        json!({"type": "voice_data_received", "data": {"sessionId": "voice-session-123", "bytes": 15}})
    );
    assert_eq!(replies[2], json!({"type": "voice_ended", "data": {"sessionId": "voice-session-123"}}));
    assert_eq!(
        replies[3],
        json!({"type": "text_response", "data": {"sessionId": "chat-session-123", "content": "Hello, AI!"}})
    );
    assert_eq!(lambda.send(5_000, r#"{"type":"ping"}"#).await, json!({"type": "pong"}));

    let bad_inputs = [
        ("", "empty_body"),
        ("not json", "invalid_json"),
        (r#"[{"type":"ping"}]"#, "not_an_object"),
        (r#"{"data":{"sessionId":"s"}}"#, "missing_type"),
        (r#"{"type":"voice_pause","data":{}}"#, "unknown_type"),
        (r#"{"type":"voice_start","data":{"sessionId":"s"}}"#, "invalid_field"),
        (r#"{"type":"voice_end","data":{"sessionId":42}}"#, "invalid_field"),
        (r#"{"type":"voice_data","data":{"sessionId":"s","audioData":"***"}}"#, "invalid_field"),
    ];
    for (body, code) in bad_inputs {
        let frame = lambda.send(6_000, body).await;
        assert_eq!(frame["type"], "error", "{body}");
        assert_eq!(frame["code"], code, "{body}");
    }
    let too_long =
        format!(r#"{{"type":"text_message","data":{{"sessionId":"s","content":"{}"}}}}"#, "z".repeat(20_000));
    assert_eq!(lambda.send(6_500, &too_long).await["code"], "too_large");

    let disconnect = lambda.event(DISCONNECT, 70_000);
    assert_eq!(lambda.invoke(disconnect).await["statusCode"], 200);

    let ledger = lambda.ledger().await;
    let counts = count_kinds(&ledger);
    for kind in [EventKind::Connected, EventKind::VoiceStarted, EventKind::VoiceEnded, EventKind::Disconnected] {
        assert_eq!(counts.get(&kind), Some(&1), "{kind}: {counts:?}");
    }
    assert!(counts.get(&EventKind::Activity).copied().unwrap_or(0) <= 2, "{counts:?}");
    let connected = ledger.iter().find(|event| event.kind() == EventKind::Connected).unwrap();
    assert_eq!(connected.user_id.as_str(), "3f1c2a9e-7b64-4d2e-9a51-0c8e6f4b2d17");
    assert_eq!(connected.at.epoch_millis(), lambda.connected_at);
    let wsledger::domain::ConnectionEvent::Connected { ip_address, user_agent } = &connected.event else {
        unreachable!()
    };
    assert_eq!(ip_address.as_deref(), Some("203.0.113.7"));
    assert!(user_agent.as_deref().unwrap().starts_with("Mozilla/5.0"));
    let disconnected = ledger.iter().find(|event| event.kind() == EventKind::Disconnected).unwrap();
    let wsledger::domain::ConnectionEvent::Disconnected { message_count: unrecorded, .. } = disconnected.event else {
        unreachable!()
    };
    assert_eq!(
        disconnected.event,
        wsledger::domain::ConnectionEvent::Disconnected {
            reason: wsledger::domain::DisconnectReason::Idle,
            status_code: Some(1001),
            detail: Some("Going away".into()),
            message_count: unrecorded,
        }
    );
    // Every message is in the ledger: in Activity events, and the rest with the end.
    let recorded: u64 = ledger
        .iter()
        .map(|event| match &event.event {
            wsledger::domain::ConnectionEvent::Activity { message_count, .. } => *message_count,
            _ => 0,
        })
        .sum::<u64>()
        + unrecorded;
    assert!(unrecorded > 0, "the messages since the last Activity came with the end");
    assert!(recorded >= SEED_MESSAGES.len() as u64, "{recorded} recorded");
    // No message content or audio reached the ledger: look at the raw items.
    let raw = lambda
        .store
        .client()
        .query()
        .table_name(&lambda.store.tables().events)
        .key_condition_expression("connectionId = :c")
        .expression_attribute_values(":c", aws_sdk_dynamodb::types::AttributeValue::S(lambda.connection_id.clone()))
        .send()
        .await
        .unwrap();
    let raw = format!("{:?}", raw.items());
    assert!(!raw.contains("Hello, AI!") && !raw.contains("base64-encoded-audio"), "{raw}");
}

#[tokio::test]
async fn a_connect_without_authorizer_context_records_nothing_whatever_the_query_says() {
    let mut lambda = Lambda::start().await;
    let mut connect = lambda.event(CONNECT, 0);
    connect["requestContext"].as_object_mut().unwrap().remove("authorizer");
    connect["queryStringParameters"] = json!({ "userId": "someone" });
    connect["multiValueQueryStringParameters"] = json!({ "userId": ["someone"] });
    let response = lambda.invoke(connect).await;
    let status = response["statusCode"].as_i64().unwrap();
    assert!(!(200..300).contains(&status), "refused: {response}");
    assert!(lambda.ledger().await.is_empty());
}
