//! Every call is bounded: against an endpoint that accepts connections and never
//! answers, the CLI fails with one line, the handler answers `unavailable` before
//! its deadline, and the projector reports the batch for a retry.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_lambda_events::dynamodb::Event;
use serde_json::{Value, json};
use wsledger::domain::{ConnectionEvent, ConnectionId, EventEnvelope, Timestamp, UserId};
use wsledger::ports::EventStore;

use crate::dynamodb_local::{self, ACCESS_KEY, REGION, SECRET_KEY};
use crate::lambda_runtime_api::{Outcome, RuntimeApi};

/// A listener that accepts every connection and never says a word.
pub async fn stalled_endpoint() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    address
}

fn aws_env(endpoint: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_DYNAMODB", format!("http://{endpoint}")),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ("AWS_REGION", REGION.to_owned()),
    ]
}

#[tokio::test]
async fn the_cli_fails_with_one_line_within_the_timeout() {
    let endpoint = stalled_endpoint().await;
    let started = Instant::now();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(["connections", "--store", "dynamodb", "--endpoint-url", &format!("http://{endpoint}")])
        .envs(aws_env(endpoint))
        .env("AWS_OPERATION_TIMEOUT_MS", "1500")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output).await.expect("the CLI gives up").unwrap();
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("the CLI gave up after {elapsed:?}: {stderr}");
    assert!(!output.status.success());
    assert!(elapsed < Duration::from_millis(1_500) + Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&endpoint.to_string()), "names the endpoint: {stderr}");
}

fn default_event(connection_id: &str) -> Value {
    let mut event: Value = serde_json::from_str(include_str!("../fixtures/apigw/default.json")).unwrap();
    let now = Timestamp::now().epoch_millis();
    event["requestContext"]["connectionId"] = json!(connection_id);
    event["requestContext"]["requestTimeEpoch"] = json!(now);
    event["requestContext"]["connectedAt"] = json!(now - 1_000);
    event["requestContext"]["requestId"] = json!(ulid::Ulid::generate().to_string());
    event["body"] = json!(r#"{"type":"text_message","data":{"content":"Hello, AI!","sessionId":"s"}}"#);
    event
}

/// With the SDK's own timeout longer than the invocation's, the handler still
/// answers `unavailable` before the deadline.
#[tokio::test]
async fn the_handler_answers_unavailable_before_its_deadline() {
    let endpoint = stalled_endpoint().await;
    let runtime = RuntimeApi::start().await;
    runtime.set_timeout(Duration::from_secs(4));
    let mut env = aws_env(endpoint);
    env.push(("AWS_OPERATION_TIMEOUT_MS", "60000".into()));
    env.push(("AWS_ATTEMPT_TIMEOUT_MS", "60000".into()));
    let _handler = runtime.spawn(&wsledger_testkit::bootstrap_bin("connection-handler"), &env);
    runtime.initialized().await;
    let started = Instant::now();
    let outcome = runtime.invoke(default_event("StalledConn01=")).await;
    let elapsed = started.elapsed();
    let Outcome::Response(response) = outcome else { panic!("{outcome:?}") };
    let frame: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(frame["type"], "error");
    assert_eq!(frame["code"], "unavailable");
    assert!(elapsed < Duration::from_secs(4), "answered after {elapsed:?}, past the deadline");
}

/// The projector answers with the batch to retry, not a timeout.
#[tokio::test]
async fn the_projector_reports_the_batch_for_a_retry() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let at = Timestamp::now();
    let event = EventEnvelope::for_request(
        ConnectionId::parse("conn-stalled").unwrap(),
        UserId::parse("user-stalled").unwrap(),
        "request-stalled",
        at,
        at,
        ConnectionEvent::Connected { ip_address: Some("203.0.113.9".into()), user_agent: None },
    );
    store.append(&event).await.unwrap();
    let records = crate::projector_lambda::stream_records(&store).await;
    assert_eq!(records.len(), 1);
    let sequence = records[0].change.sequence_number.clone();

    let endpoint = stalled_endpoint().await;
    let runtime = RuntimeApi::start().await;
    runtime.set_timeout(Duration::from_secs(5));
    let mut env = aws_env(endpoint);
    env.push(("EVENTS_TABLE_NAME", store.tables().events.clone()));
    env.push(("CONNECTIONS_TABLE_NAME", store.tables().connections.clone()));
    env.push(("AWS_OPERATION_TIMEOUT_MS", "1500".into()));
    let _projector = runtime.spawn(&wsledger_testkit::bootstrap_bin("projector"), &env);
    let mut batch = Event::default();
    batch.records = records;
    let started = Instant::now();
    let outcome = runtime.invoke(serde_json::to_value(&batch).unwrap()).await;
    let Outcome::Response(response) = outcome else { panic!("{outcome:?}") };
    eprintln!("the projector answered after {:?}: {response}", started.elapsed());
    assert_eq!(response["batchItemFailures"], json!([{ "itemIdentifier": sequence }]));
    assert!(started.elapsed() < Duration::from_secs(5));
}
