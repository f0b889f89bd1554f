//! DynamoDB requests per stream batch, as a function of events per connection.
//!
//! `cargo bench --bench projection_requests` (starts its own DynamoDB Local, as the
//! tests do). Each batch holds 100 records; with k events per connection it touches
//! 100/k connections of 10 users. The projector spends 2 requests per connection
//! touched, whatever k is: one read of the view and one conditional write (the
//! usage walk goes on from the view; a connection's history is read only when it
//! cannot, at most once per connection). Presence then spends, per user touched,
//! one read of the user's record and at most one write (no sink here, so no
//! delivery write), measured apart. Under `cargo test` it runs a reduced set and
//! checks those bounds.

use wsledger_testkit::dynamodb_local;

use std::time::Instant;

use wsledger::domain::{ConnectionEvent, ConnectionId, EventEnvelope, Timestamp, UserId};
use wsledger::ports::EventStore;
use wsledger::projector::{Change, ChangeRecord, project_batch};

const RECORDS_PER_BATCH: usize = 100;

fn batch(run: usize, events_per_connection: usize) -> Vec<EventEnvelope> {
    let start = Timestamp::now().minus(chrono::TimeDelta::minutes(10));
    let connections = RECORDS_PER_BATCH / events_per_connection;
    let mut events = Vec::with_capacity(RECORDS_PER_BATCH);
    for connection in 0..connections {
        let connection_id = ConnectionId::parse(format!("bench-{run}-{events_per_connection}-{connection}")).unwrap();
        let user_id = UserId::parse(format!("user-{}", connection % 10)).unwrap();
        for index in 0..events_per_connection {
            let event = if index == 0 {
                ConnectionEvent::Connected { ip_address: Some("203.0.113.1".into()), user_agent: Some("bench".into()) }
            } else {
                ConnectionEvent::Activity { session_id: None, message_count: 1 }
            };
            events.push(EventEnvelope::for_request(
                connection_id.clone(),
                user_id.clone(),
                format!("r{index}"),
                start.plus(chrono::TimeDelta::milliseconds(index as i64 * 250)),
                start,
                event,
            ));
        }
    }
    // Interleave connections, as a stream shard would.
    events.sort_by_key(|event| (event.at, event.connection_id.clone()));
    events
}

fn main() {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let shapes: &[usize] = if benchmarking { &[1, 2, 5, 10, 25, 50, 100] } else { &[1, 10, 100] };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (store, counter) = dynamodb_local::fresh_store().await;
        let presence = wsledger::presence::Presence::new(
            std::sync::Arc::new(store.clone()),
            std::sync::Arc::new(wsledger::metrics::Metrics::new()),
        );
        println!("records per batch: {RECORDS_PER_BATCH}; DynamoDB Local on loopback");
        println!(
            "{:>22} {:>12} {:>16} {:>24} {:>12}",
            "events/connection", "connections", "requests/batch", "requests/connection", "ms/batch"
        );
        for &events_per_connection in shapes {
            for (run, label) in [(0, "new views"), (1, "existing views")] {
                let events = batch(0, events_per_connection);
                for event in &events {
                    store.append(event).await.unwrap();
                }
                let records: Vec<ChangeRecord> = events
                    .iter()
                    .enumerate()
                    .map(|(index, event)| ChangeRecord {
                        record_id: format!("{run}-{index}"),
                        sequence_number: Some(format!("{index:021}")),
                        change: Change::Appended(event.clone()),
                    })
                    .collect();
                // The second run re-delivers the same batch with one more event per connection.
                let records = if run == 0 {
                    records
                } else {
                    let mut more = records;
                    for event in events.iter().filter(|event| matches!(event.event, ConnectionEvent::Connected { .. }))
                    {
                        let mut later = event.clone();
                        later.event = ConnectionEvent::Activity { session_id: None, message_count: 9 };
                        later.at = later.at.plus(chrono::TimeDelta::minutes(1));
                        later.event_id = wsledger::domain::EventId::derive(later.at, "later", later.kind());
                        more.push(ChangeRecord {
                            record_id: "later".into(),
                            sequence_number: None,
                            change: Change::Appended(later),
                        });
                    }
                    more
                };
                counter.reset();
                let started = Instant::now();
                let outcome = project_batch(&store, &store, &records).await;
                let elapsed = started.elapsed();
                assert_eq!(outcome.failed, 0);
                let by_operation = counter.snapshot();
                let requests: u64 = by_operation.values().sum();
                let per_connection = requests as f64 / outcome.connections as f64;
                println!(
                    "{:>22} {:>12} {:>16} {:>24.2} {:>12.1}   ({label}; {by_operation:?})",
                    events_per_connection,
                    outcome.connections,
                    requests,
                    per_connection,
                    elapsed.as_secs_f64() * 1e3
                );
                assert!(!by_operation.contains_key("Scan"), "no Scan");
                let history_reads = by_operation.get("Query").copied().unwrap_or(0) as f64 / outcome.connections as f64;
                assert!(history_reads <= 1.0 + f64::EPSILON, "one history read per connection, got {history_reads}");
                assert!(
                    per_connection <= 2.0 + 2.0 + f64::EPSILON,
                    "at most 2 more requests per connection than the view's 2, got {per_connection}"
                );
                let views: Vec<_> = outcome.views.iter().map(|(_, view)| view.clone()).collect();
                counter.reset();
                let report = wsledger::presence::observe(&presence, &views, Timestamp::now()).await;
                let presence_requests = counter.snapshot();
                let total: u64 = presence_requests.values().sum();
                println!(
                    "{:>22} {:>12} {:>16} {:>24.2}   (presence: {} users; {presence_requests:?})",
                    "",
                    "",
                    total,
                    total as f64 / report.users as f64,
                    report.users
                );
                assert!(report.failed.is_empty());
                assert!(total as usize <= 2 * report.users, "presence: at most a read and a write per user");
                assert!(!presence_requests.contains_key("Query") && !presence_requests.contains_key("Scan"));
            }
        }
    });
}
