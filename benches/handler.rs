//! Handler overhead: the work the handler adds to a message, beside the DynamoDB
//! round trip that a recorded message costs anyway.
//!
//! `cargo bench --bench handler` (starts its own DynamoDB Local, as the tests do).
//! Measures, in one run: the handler serving a `$default` ping and a `voice_data`
//! of 24 KiB of audio on the in-memory store (its own work: parsing, validation,
//! decoding, the coalescer, the reply), and one conditional PutItem to DynamoDB
//! Local on loopback. The goal: handler work at most 5 % of one PutItem. Under
//! `cargo test` it runs a few iterations and checks the answers, never a timing.

use wsledger_testkit::dynamodb_local;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use wsledger::adapters::memory::MemoryStore;
use wsledger::domain::{ConnectionEvent, ConnectionId, EventEnvelope, Timestamp, UserId};
use wsledger::handler::{AcknowledgingVoice, ConnectionHandler, EchoText, HandlerConfig, RequestMeta, Route};
use wsledger::ports::EventStore;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let (messages, puts) = if benchmarking { (20_000, 300) } else { (50, 5) };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let handler = ConnectionHandler::new(
            Arc::new(MemoryStore::default()),
            Arc::new(AcknowledgingVoice),
            Arc::new(EchoText),
            HandlerConfig { retention_days: 0, ..HandlerConfig::default() },
        );
        let connection_id = ConnectionId::parse("BenchConn0001=").unwrap();
        let start = Timestamp::now();
        let meta = |index: i64| RequestMeta {
            connection_id: connection_id.clone(),
            request_id: format!("bench-{index}"),
            // Within one activity interval: the steady state, where a message writes nothing.
            request_time: start.plus(chrono::TimeDelta::milliseconds(index % 50_000)),
            connected_at: start,
            user_id: Some(UserId::parse("bench-user").unwrap()),
        };
        let connect = Route::Connect { ip_address: Some("203.0.113.1".into()), user_agent: None };
        assert_eq!(handler.handle(&meta(0), connect).await.status, 200);
        let audio = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 24 * 1024]);
        let voice_data = format!(r#"{{"type":"voice_data","data":{{"audioData":"{audio}","sessionId":"v"}}}}"#);
        let mut results = Vec::new();
        for (name, body) in
            [("$default ping", r#"{"type":"ping"}"#.to_owned()), ("$default voice_data 24 KiB", voice_data)]
        {
            let mut samples = Vec::with_capacity(messages);
            for index in 0..messages {
                let request = meta(index as i64 + 1);
                let route = Route::Message { body: body.clone() };
                let started = Instant::now();
                let response = handler.handle(&request, route).await;
                samples.push(started.elapsed());
                assert_eq!(response.status, 200, "{name}: {response:?}");
            }
            results.push((name, median(samples)));
        }

        let (store, _) = dynamodb_local::fresh_store().await;
        let mut samples = Vec::with_capacity(puts);
        for index in 0..puts {
            let event = EventEnvelope::for_request(
                connection_id.clone(),
                UserId::parse("bench-user").unwrap(),
                format!("put-{index}"),
                Timestamp::now(),
                start,
                ConnectionEvent::Activity { session_id: None, message_count: 1 },
            );
            let started = Instant::now();
            store.append(&event).await.unwrap();
            samples.push(started.elapsed());
        }
        let put = median(samples);

        println!(
            "handler overhead (median of {messages} messages; DynamoDB Local PutItem, median of {puts}, loopback)"
        );
        println!("{:<28} {:>12} {:>18}", "work", "median", "of one PutItem");
        println!("{:<28} {:>9.1} µs {:>17}", "PutItem (DynamoDB Local)", put.as_secs_f64() * 1e6, "100 %");
        for (name, duration) in results {
            let share = duration.as_secs_f64() / put.as_secs_f64() * 100.0;
            println!("{name:<28} {:>9.1} µs {share:>16.2} %", duration.as_secs_f64() * 1e6);
        }
    });
}
