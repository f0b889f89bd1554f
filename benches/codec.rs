//! The wire and the stored formats: parsing and validating client messages, and
//! encoding and decoding event items (serde_dynamo for DynamoDB, serde_json for the
//! embedded store and JSON output).
//!
//! `cargo bench --bench codec`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wsledger::adapters::stored::EventItem;
use wsledger::domain::protocol::parse_client_message;
use wsledger::domain::{ConnectionEvent, ConnectionId, EventEnvelope, Timestamp, UserId};

fn messages() -> Vec<(&'static str, String)> {
    let chunk = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![7u8; 24 * 1024]);
    vec![
        ("ping", r#"{"type":"ping"}"#.to_owned()),
        (
            "text_message",
            r#"{"type":"text_message","data":{"content":"Hello, AI!","sessionId":"chat-session-123"}}"#.to_owned(),
        ),
        (
            "voice_start",
            r#"{"type":"voice_start","data":{"audioFormat":"webm","sessionId":"voice-session-123"}}"#.to_owned(),
        ),
        (
            "voice_data_32k",
            format!(r#"{{"type":"voice_data","data":{{"audioData":"{chunk}","sessionId":"voice-session-123"}}}}"#),
        ),
        ("invalid_json", r#"{"type":"text_message","data":{"content":"unterminated"#.to_owned()),
    ]
}

fn parsing(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("parse_client_message");
    for (name, body) in messages() {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |bench, body| {
            bench.iter(|| parse_client_message(black_box(body)))
        });
    }
    group.finish();
}

fn event() -> EventEnvelope {
    EventEnvelope::for_request(
        ConnectionId::parse("L0SM9cOFvHcCIhw=").unwrap(),
        UserId::parse("3f1c2a9e-7b64-4d2e-9a51-0c8e6f4b2d17").unwrap(),
        "B1xq5FKeIAMFbXw=",
        Timestamp::from_epoch_millis(1_764_000_000_123),
        Timestamp::from_epoch_millis(1_764_000_000_000),
        ConnectionEvent::Connected {
            ip_address: Some("203.0.113.7".into()),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0".into()),
        },
    )
    .with_retention_days(90)
}

fn items(criterion: &mut Criterion) {
    let event = event();
    let mut group = criterion.benchmark_group("event_item");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_dynamodb", |bench| {
        bench.iter(|| {
            let item: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> =
                serde_dynamo::to_item(EventItem::from(black_box(&event))).unwrap();
            item
        })
    });
    let item: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> =
        serde_dynamo::to_item(EventItem::from(&event)).unwrap();
    group.bench_function("decode_dynamodb", |bench| {
        bench.iter(|| {
            let decoded: EventItem = serde_dynamo::from_item(black_box(item.clone())).unwrap();
            EventEnvelope::try_from(decoded).unwrap()
        })
    });
    group.bench_function("encode_json", |bench| {
        bench.iter(|| serde_json::to_string(&EventItem::from(black_box(&event))))
    });
    let json = serde_json::to_string(&EventItem::from(&event)).unwrap();
    group.bench_function("decode_json", |bench| {
        bench.iter(|| EventEnvelope::try_from(serde_json::from_str::<EventItem>(black_box(&json)).unwrap()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, parsing, items);
criterion_main!(benches);
