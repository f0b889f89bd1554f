//! What reconnect recovery adds, in DynamoDB requests and bytes: per message sent
//! to a user (numbered and kept before it is posted), and per `resume`.
//!
//! `cargo bench --bench recovery_requests` (starts its own DynamoDB Local, as the
//! tests do). Requests are counted by operation and the bytes of DynamoDB's answers
//! summed with an SDK interceptor; counts do not depend on the machine. One user
//! with one live connection; messages of about 100 bytes. Then bursts of sends to
//! one user at once (what the races for the next number cost, and how long the
//! slowest send waits). Under `cargo test` it checks that a connection that never
//! resumes costs no outbox request and that a burst numbers its messages 1 to N.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use wsledger::adapters::dynamodb::{DynamoDbStore, RequestCounter};
use wsledger::delivery::{Recovery, send_to_user};
use wsledger::domain::{ConnectionEvent, ConnectionId, EventEnvelope, Timestamp, UserId};
use wsledger::handler::{AcknowledgingVoice, ConnectionHandler, EchoText, HandlerConfig, RequestMeta, Route};
use wsledger::ports::{ConnectionGateway, EventStore, GatewayConnection, GatewayError};
use wsledger::projection::project_connection;
use wsledger_testkit::dynamodb_local;

/// A Management API that takes every post (the network is not what is measured).
struct Accepting;

#[async_trait]
impl ConnectionGateway for Accepting {
    async fn post(&self, _: &ConnectionId, _: &[u8]) -> Result<(), GatewayError> {
        Ok(())
    }
    async fn get(&self, _: &ConnectionId) -> Result<GatewayConnection, GatewayError> {
        Ok(GatewayConnection::default())
    }
    async fn delete(&self, _: &ConnectionId) -> Result<(), GatewayError> {
        Ok(())
    }
}

fn line(label: &str, requests: &BTreeMap<String, u64>, bytes: &BTreeMap<String, u64>, per: u64) {
    let total: u64 = requests.values().sum();
    let read: u64 = bytes.values().sum();
    println!(
        "{label:<44} {:>8.2} requests {:>9.0} bytes read   {requests:?}",
        total as f64 / per as f64,
        read as f64 / per as f64
    );
}

fn main() {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let messages: u64 = if benchmarking { 200 } else { 20 };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (store, counter) = dynamodb_local::fresh_store().await;
        let user = UserId::parse("bench-recovery").unwrap();
        let connection = ConnectionId::parse("BenchRecovery01=").unwrap();
        let connected = EventEnvelope::for_request(
            connection.clone(),
            user.clone(),
            "c",
            Timestamp::now(),
            Timestamp::now(),
            ConnectionEvent::Connected { ip_address: None, user_agent: None },
        );
        store.append(&connected).await.unwrap();
        project_connection(&store, &store, std::slice::from_ref(&connected)).await.unwrap();
        let data = json!({ "type": "answer", "text": "x".repeat(60) }).to_string();
        println!(
            "DynamoDB Local on loopback; one live connection; {}-byte messages; per message or per resume",
            data.len()
        );

        for (label, window) in [("send, recovery off (today)", 0), ("send, recovery on (numbered and kept)", 120)] {
            counter.reset();
            for _ in 0..messages {
                let recovery = Recovery { outbox: &store, window: chrono::TimeDelta::seconds(window), metrics: None };
                send_to_user(&store, &store, &Accepting, &user, data.as_bytes(), 0, Timestamp::now(), Some(recovery))
                    .await
                    .unwrap();
            }
            line(label, &counter.snapshot(), &counter.bytes(), messages);
        }

        let gateway = Arc::new(Accepting);
        let handler = ConnectionHandler::new(
            Arc::new(store.clone()),
            Arc::new(AcknowledgingVoice),
            Arc::new(EchoText),
            HandlerConfig { retention_days: 0, ..HandlerConfig::default() },
        )
        .with_recovery(Arc::new(store.clone()), gateway);
        let meta = |request: &str| RequestMeta {
            connection_id: connection.clone(),
            request_id: request.into(),
            request_time: Timestamp::now(),
            connected_at: connected.connected_at,
            user_id: Some(user.clone()),
        };
        counter.reset();
        for index in 0..messages {
            let body = r#"{"type":"text_message","data":{"content":"Hello, AI!","sessionId":"chat-session-123"}}"#;
            handler.handle(&meta(&format!("t{index}")), Route::Message { body: body.into() }).await;
        }
        let never_resumed = counter.snapshot();
        line("messages of a connection that never resumes", &never_resumed, &counter.bytes(), messages);
        assert!(
            !never_resumed.contains_key("Query")
                && !never_resumed.contains_key("GetItem")
                && !never_resumed.contains_key("TransactWriteItems"),
            "a connection that never resumes never reads the outbox: {never_resumed:?}"
        );

        for replay in [0u64, 10, 100.min(messages)] {
            let last = messages;
            counter.reset();
            let body = json!({ "type": "resume", "data": { "lastSeq": last - replay } }).to_string();
            handler.handle(&meta(&format!("r{replay}")), Route::Message { body }).await;
            line(&format!("resume replaying {replay} message(s)"), &counter.snapshot(), &counter.bytes(), 1);
        }

        let bursts: &[u64] = if benchmarking { &[10, 50, 100] } else { &[10, 50] };
        for &senders in bursts {
            burst(&store, &counter, &data, senders).await;
        }
    });
}

/// `senders` sends to one user at once, each on a task of its own (as many Lambda
/// invocations would): every message is numbered once, 1 to `senders`; prints what
/// the lost races cost (head reads and transactions per message) and how long the
/// slowest send waited.
async fn burst(store: &DynamoDbStore, counter: &RequestCounter, data: &str, senders: u64) {
    let user = UserId::parse(format!("bench-burst-{senders}")).unwrap();
    counter.reset();
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let (store, user, data) = (store.clone(), user.clone(), data.to_owned());
            tokio::spawn(async move {
                let recovery = Recovery { outbox: &store, window: chrono::TimeDelta::seconds(120), metrics: None };
                let sent = std::time::Instant::now();
                let report = send_to_user(
                    &store,
                    &store,
                    &Accepting,
                    &user,
                    data.as_bytes(),
                    0,
                    Timestamp::now(),
                    Some(recovery),
                )
                .await
                .expect("a send in a burst");
                (report.seq.expect("numbered"), sent.elapsed())
            })
        })
        .collect();
    let mut seqs = Vec::new();
    let mut slowest = std::time::Duration::ZERO;
    for task in tasks {
        let (seq, waited) = task.await.unwrap();
        seqs.push(seq);
        slowest = slowest.max(waited);
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=senders).collect::<Vec<_>>(),
        "{senders} concurrent sends are numbered 1 to {senders}, each once"
    );
    let requests = counter.snapshot();
    line(&format!("burst: {senders} concurrent sends to one user"), &requests, &counter.bytes(), senders);
    println!(
        "{:<44} {:>8.2} transactions per message, slowest send {} ms, burst {} ms",
        "",
        requests.get("TransactWriteItems").copied().unwrap_or(0) as f64 / senders as f64,
        slowest.as_millis(),
        started.elapsed().as_millis()
    );
}
