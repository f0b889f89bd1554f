//! What projecting one new event costs, as a function of the connection's history.
//!
//! `cargo bench --bench projection_history` (starts its own DynamoDB Local, as the
//! tests do). For connections of 10, 100, 1,000 and 10,000 events (a voice
//! connection: voice sessions with activity between them), the history is loaded,
//! the view built, and then one batch is projected: one new event after everything
//! the view has folded (the common case), then the same batch again (a
//! redelivery), then an event late by two events (two handler invocations that
//! finished in the other order). Requests are counted by operation and the bytes
//! of DynamoDB's answers summed, with an SDK interceptor; read units are estimated
//! as DynamoDB bills strongly consistent reads (4 KB each, rounded up per request).
//!
//! Under `cargo test` it runs 10 and 1,000 events and fails on any Query (a history
//! read) for the in-order batch and its redelivery, or on a 1,000-event batch that
//! reads more than 1.5 times the 10-event one.

use std::collections::BTreeMap;

use wsledger::adapters::dynamodb::{DynamoDbStore, RequestCounter};
use wsledger::domain::{ConnectionEvent, ConnectionId, EventEnvelope, Timestamp, UserId};
use wsledger::projection::rebuild_connection;
use wsledger::projector::{Change, ChangeRecord, project_batch};
use wsledger_testkit::dynamodb_local;

/// A voice connection's events: a session every 10 events (start, 8 activities, end).
fn history(connection_id: &ConnectionId, events: usize, start: Timestamp) -> Vec<EventEnvelope> {
    let user_id = UserId::parse("bench-user").unwrap();
    (0..events)
        .map(|index| {
            let session = format!("voice-{}", index / 10);
            let event = match (index, index % 10) {
                (0, _) => ConnectionEvent::Connected {
                    ip_address: Some("203.0.113.7".into()),
                    user_agent: Some("Mozilla/5.0 (bench)".into()),
                },
                (_, 1) => ConnectionEvent::VoiceStarted { session_id: session, audio_format: "webm".into() },
                (_, 9) => ConnectionEvent::VoiceEnded { session_id: session },
                _ => ConnectionEvent::Activity { session_id: Some(session), message_count: 25 },
            };
            EventEnvelope::for_request(
                connection_id.clone(),
                user_id.clone(),
                format!("r{index}"),
                start.plus(chrono::TimeDelta::milliseconds(index as i64 * 500)),
                start,
                event,
            )
        })
        .collect()
}

fn records(events: &[EventEnvelope]) -> Vec<ChangeRecord> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| ChangeRecord {
            record_id: format!("{index}"),
            sequence_number: Some(format!("{index:021}")),
            change: Change::Appended(event.clone()),
        })
        .collect()
}

/// What one projected batch cost.
struct Cost {
    requests: BTreeMap<String, u64>,
    bytes: BTreeMap<String, u64>,
}

impl Cost {
    fn queries(&self) -> u64 {
        self.requests.get("Query").copied().unwrap_or(0)
    }

    fn bytes_read(&self) -> u64 {
        READS.iter().map(|operation| self.bytes.get(*operation).copied().unwrap_or(0)).sum()
    }

    /// Strongly consistent read units: 4 KB each, per item, rounded up (a
    /// BatchGetItem reads a view and its usage walk: at least 2).
    fn read_units(&self) -> u64 {
        READS
            .iter()
            .map(|operation| {
                let requests = self.requests.get(*operation).copied().unwrap_or(0);
                let bytes = self.bytes.get(*operation).copied().unwrap_or(0);
                let least = if *operation == "BatchGetItem" { 2 * requests } else { requests };
                bytes.div_ceil(4096).max(least)
            })
            .sum()
    }
}

/// The operations that read.
const READS: [&str; 3] = ["GetItem", "BatchGetItem", "Query"];

async fn project(store: &DynamoDbStore, counter: &RequestCounter, events: &[EventEnvelope]) -> Cost {
    counter.reset();
    let outcome = project_batch(store, store, &records(events)).await;
    assert_eq!(outcome.failed, 0, "the batch projects");
    Cost { requests: counter.snapshot(), bytes: counter.bytes() }
}

/// The size of a connection's stored view item (as JSON) and the write units
/// DynamoDB reports (`ReturnConsumedCapacity`) for writing it again under a probe
/// key: the table's and the indexes' (each index holds a copy of a live view). The
/// usage walk (`usageFold`) has an item of its own that no index sees; the last
/// probe puts it back into the view, as round three first stored it.
async fn view_write_units(store: &DynamoDbStore, connection_id: &ConnectionId) -> String {
    use aws_sdk_dynamodb::types::AttributeValue;
    let table = &store.tables().connections;
    let read = |key: String| async move {
        let key = AttributeValue::S(key);
        store.client().get_item().table_name(table).key("connectionId", key).send().await.unwrap().item.unwrap()
    };
    let view = read(connection_id.to_string()).await;
    let mut walk = read(format!("usage#{connection_id}")).await;
    assert!(!view.contains_key("usageFold"), "the view item holds no usage walk");
    let mut inline = view.clone();
    inline.insert("usageFold".into(), walk.remove("usageFold").expect("the walk item holds the walk"));
    walk.insert("usageFold".into(), inline["usageFold"].clone());
    let mut lines = Vec::new();
    for (label, probe) in [("view", view), ("its usage walk", walk), ("both in one item (before)", inline)] {
        lines.push(format!("{label}: {}", probe_write(store, connection_id, label, probe).await));
    }
    lines.join("; ")
}

/// Writes `probe` under a key of its own and says its size and the units it took.
async fn probe_write(
    store: &DynamoDbStore,
    connection_id: &ConnectionId,
    label: &str,
    mut probe: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> String {
    use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
    let bytes =
        serde_json::to_vec(&serde_dynamo::from_item::<_, serde_json::Value>(probe.clone()).unwrap()).unwrap().len();
    probe.insert("connectionId".into(), AttributeValue::S(format!("probe-{label}-{connection_id}")));
    let written = store
        .client()
        .put_item()
        .table_name(&store.tables().connections)
        .set_item(Some(probe))
        .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
        .send()
        .await
        .unwrap();
    let capacity = written.consumed_capacity.unwrap();
    let table_units = capacity.table.and_then(|table| table.capacity_units).unwrap_or(f64::NAN);
    let indexes: Vec<String> = capacity
        .global_secondary_indexes
        .unwrap_or_default()
        .into_iter()
        .map(|(name, units)| format!("{name} {}", units.capacity_units.unwrap_or(f64::NAN)))
        .collect();
    format!(
        "{bytes} bytes of JSON, {} WCU in all (table {table_units}; {})",
        capacity.capacity_units.unwrap_or(f64::NAN),
        indexes.join(", ")
    )
}

fn main() {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let shapes: &[usize] = if benchmarking { &[10, 100, 1_000, 10_000] } else { &[10, 1_000] };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (store, counter) = dynamodb_local::fresh_store().await;
        println!(
            "one batch per row; DynamoDB Local on loopback; bytes are DynamoDB's answers (BatchGetItem, GetItem, Query)"
        );
        println!(
            "{:>8} {:>12} {:>10} {:>12} {:>11}   requests",
            "events", "batch", "queries", "bytes read", "read units"
        );
        let mut in_order_bytes = Vec::new();
        for &length in shapes {
            let connection_id = ConnectionId::parse(format!("bench-history-{length}")).unwrap();
            let start = Timestamp::parse_rfc3339("2026-11-26T10:00:00Z").unwrap();
            let mut events = history(&connection_id, length + 3, start);
            // The view has folded `length` events; then one new event comes, the same
            // again, one more, and last the event before those two (late by two).
            let late = events.remove(length);
            let later = events.split_off(length);
            store.bulk_load(&events).await.unwrap();
            rebuild_connection(&store, &store, &connection_id).await.unwrap();

            store.bulk_load(&later[..1]).await.unwrap();
            let in_order = project(&store, &counter, &later[..1]).await;
            let redelivered = project(&store, &counter, &later[..1]).await;
            store.bulk_load(&later[1..]).await.unwrap();
            project(&store, &counter, &later[1..]).await;
            store.bulk_load(std::slice::from_ref(&late)).await.unwrap();
            let late_by_two = project(&store, &counter, std::slice::from_ref(&late)).await;
            for (label, cost) in [("in order", &in_order), ("redelivered", &redelivered), ("late by 2", &late_by_two)] {
                println!(
                    "{:>8} {:>12} {:>10} {:>12} {:>11}   {:?}",
                    length,
                    label,
                    cost.queries(),
                    cost.bytes_read(),
                    cost.read_units(),
                    cost.requests
                );
                assert!(!cost.requests.contains_key("Scan"), "no Scan");
            }
            if !benchmarking {
                for (label, cost) in [("in-order", &in_order), ("redelivered", &redelivered), ("late", &late_by_two)] {
                    assert_eq!(cost.queries(), 0, "a {label} batch of a {length}-event connection read its history");
                }
            }
            in_order_bytes.push((length, in_order.bytes_read()));
            println!("{length:>8} {:>12} {}", "view write", view_write_units(&store, &connection_id).await);
        }
        let (shortest, first) = in_order_bytes[0];
        let (longest, last) = in_order_bytes[in_order_bytes.len() - 1];
        let ratio = last as f64 / first as f64;
        println!("bytes read for one new event: {longest} events / {shortest} events = {ratio:.2}x");
        if !benchmarking {
            assert!(ratio <= 1.5, "projection reads grow with history: {ratio:.2}x");
        }
    });
}
