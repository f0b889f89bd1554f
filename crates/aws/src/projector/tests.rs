//! Given a batch of change records, when it is projected, then the views are ...

use std::sync::Arc;

use super::*;
use crate::adapters::faulty::{Call, Faulty};
use crate::adapters::memory::MemoryStore;
use crate::domain::{ConnectionEvent, ConnectionInfo, ConnectionStatus, DisconnectReason, Timestamp, UserId};
use crate::ports::StoreError;

const T0: i64 = 1_764_000_000_000;

fn event(connection: &str, request: &str, offset_ms: i64, event: ConnectionEvent) -> EventEnvelope {
    EventEnvelope::for_request(
        ConnectionId::parse(connection).unwrap(),
        UserId::parse("user-1").unwrap(),
        request,
        Timestamp::from_epoch_millis(T0 + offset_ms),
        Timestamp::from_epoch_millis(T0),
        event,
    )
}

fn history(connection: &str) -> Vec<EventEnvelope> {
    vec![
        event(
            connection,
            "c",
            0,
            ConnectionEvent::Connected { ip_address: Some("203.0.113.1".into()), user_agent: None },
        ),
        event(connection, "a", 1_000, ConnectionEvent::Activity { session_id: None, message_count: 2 }),
        event(
            connection,
            "d",
            2_000,
            ConnectionEvent::Disconnected {
                reason: DisconnectReason::Client,
                status_code: Some(1000),
                detail: None,
                message_count: 0,
            },
        ),
    ]
}

fn records(events: &[EventEnvelope]) -> Vec<ChangeRecord> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| ChangeRecord {
            record_id: format!("record-{index}"),
            sequence_number: Some(format!("{:021}", 100 + index)),
            change: Change::Appended(event.clone()),
        })
        .collect()
}

/// The views over an in-memory store, counting reads and writes; tests set
/// which writes fail.
type CountingViews = Faulty<MemoryStore>;

fn counting_views() -> CountingViews {
    Faulty::new(Arc::new(MemoryStore::default()))
}

/// Fails the view writes of `connections`.
fn fail_writes_of(views: &CountingViews, connections: &'static [&'static str]) {
    views.fail_when(|call, _| match call {
        Call::Put(view) if connections.contains(&view.connection_id.as_str()) => {
            Some(StoreError::Throttled("injected".into()))
        }
        _ => None,
    });
}

/// The ledger holding `events`, as the projector's history reads find it.
async fn ledger(events: &[EventEnvelope]) -> MemoryStore {
    let ledger = MemoryStore::default();
    for event in events {
        ledger.append(event).await.unwrap();
    }
    ledger
}

async fn view(views: &CountingViews, connection: &str) -> ConnectionInfo {
    views.inner().get(&ConnectionId::parse(connection).unwrap()).await.unwrap().expect("a view").view
}

#[tokio::test]
async fn one_read_and_one_write_per_connection_whatever_the_batch_holds() {
    let views = counting_views();
    let mut events = history("conn-a");
    events.extend(history("conn-b"));
    for index in 0..40 {
        events.push(event(
            "conn-a",
            &format!("x{index}"),
            1_500,
            ConnectionEvent::Activity { session_id: None, message_count: 1 },
        ));
    }
    let outcome = project_batch(&views, &ledger(&events).await, &records(&events)).await;
    assert_eq!((outcome.connections, outcome.written, outcome.failed), (2, 2, 0));
    assert_eq!((views.calls("get"), views.calls("put")), (2, 2));
    assert_eq!(outcome.retry_from, None);
}

#[tokio::test]
async fn reversed_and_duplicated_batches_give_the_in_order_view() {
    let in_order = counting_views();
    let full = ledger(&history("conn-a")).await;
    project_batch(&in_order, &full, &records(&history("conn-a"))).await;
    let shuffled = counting_views();
    let mut events = history("conn-a");
    events.reverse();
    events.extend(history("conn-a"));
    // The stream delivers the first two records before the rest are in the ledger.
    project_batch(&shuffled, &ledger(&events[..2]).await, &records(&events[..2])).await;
    project_batch(&shuffled, &full, &records(&events)).await;
    assert_eq!(view(&shuffled, "conn-a").await, view(&in_order, "conn-a").await);
    assert_eq!(view(&shuffled, "conn-a").await.status, ConnectionStatus::Disconnected);
}

#[tokio::test]
async fn a_failed_write_reports_the_earliest_record_of_its_connection_and_a_retry_completes() {
    let views = counting_views();
    // Records: a0 b0 a1 b1 a2 b2; b's view cannot be written.
    let (a, b) = (history("conn-a"), history("conn-b"));
    let events: Vec<EventEnvelope> = a.iter().zip(&b).flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
    let batch = records(&events);
    fail_writes_of(&views, &["conn-b"]);
    let full = ledger(&events).await;
    let outcome = project_batch(&views, &full, &batch).await;
    assert_eq!(outcome.failed, 1);
    assert_eq!(outcome.retry_from.as_deref(), Some(batch[1].sequence_number.as_deref().unwrap()));
    assert_eq!(view(&views, "conn-a").await.status, ConnectionStatus::Disconnected, "a is not held back by b");

    // The source retries from record 1 onwards.
    views.heal();
    let retry = project_batch(&views, &full, &batch[1..]).await;
    assert_eq!((retry.failed, retry.retry_from), (0, None));
    assert_eq!(view(&views, "conn-b").await, ConnectionInfo::fold(&b).unwrap());
    assert_eq!(view(&views, "conn-a").await, ConnectionInfo::fold(&a).unwrap());
}

#[tokio::test]
async fn poison_and_ignored_records_are_counted_and_block_nothing() {
    let views = counting_views();
    let mut batch = vec![ChangeRecord {
        record_id: "poison".into(),
        sequence_number: Some("000000000000000000001".into()),
        change: Change::Poison("not an event".into()),
    }];
    batch.push(ChangeRecord {
        record_id: "ttl".into(),
        sequence_number: Some("000000000000000000002".into()),
        change: Change::Ignored("ttl expiry"),
    });
    batch.extend(records(&history("conn-a")));
    let outcome = project_batch(&views, &ledger(&history("conn-a")).await, &batch).await;
    assert_eq!((outcome.poison, outcome.ignored, outcome.written, outcome.retry_from), (1, 1, 1, None));
    assert_eq!(view(&views, "conn-a").await.status, ConnectionStatus::Disconnected);
}

/// A shard of 2,000 records for 200 connections, consumed as Lambda consumes it
/// (batches of 100, restarting at the reported record), while a third of the view
/// writes fail: every view converges to the fold of its whole history, and no
/// record is skipped.
#[tokio::test]
async fn views_converge_when_a_third_of_the_writes_fail() {
    let views = counting_views();
    views.fail_when(|call, count| {
        (matches!(call, Call::Put(_)) && count.is_multiple_of(3)).then(|| StoreError::Throttled("injected".into()))
    });
    let mut events = Vec::new();
    for connection in 0..200 {
        let name = format!("conn-{connection}");
        for step in 0..10i64 {
            let payload = match step {
                0 => ConnectionEvent::Connected { ip_address: Some("203.0.113.1".into()), user_agent: None },
                9 if connection % 2 == 0 => ConnectionEvent::Disconnected {
                    reason: DisconnectReason::Client,
                    status_code: Some(1000),
                    detail: None,
                    message_count: 0,
                },
                _ => ConnectionEvent::Activity { session_id: None, message_count: 1 },
            };
            events.push(event(&name, &format!("r{step}"), step * 1_000 + connection, payload));
        }
    }
    // A shard interleaves connections.
    events.sort_by_key(|event| (event.at, event.connection_id.clone()));
    let shard = records(&events);
    let full = ledger(&events).await;
    let mut position = 0;
    let mut invocations = 0;
    while position < shard.len() {
        invocations += 1;
        assert!(invocations < 1_000, "the shard must drain");
        let batch = &shard[position..(position + 100).min(shard.len())];
        let outcome = project_batch(&views, &full, batch).await;
        position = match outcome.retry_from {
            Some(sequence) => {
                shard.iter().position(|record| record.sequence_number.as_deref() == Some(sequence.as_str())).unwrap()
            }
            None => position + batch.len(),
        };
    }
    assert!(views.failures() > 50, "faults were injected");
    for connection in 0..200 {
        let name = format!("conn-{connection}");
        let history: Vec<EventEnvelope> =
            events.iter().filter(|event| event.connection_id.as_str() == name).cloned().collect();
        let stored =
            views.inner().get(&ConnectionId::parse(name.as_str()).unwrap()).await.unwrap().expect("a view").view;
        assert_eq!(stored, ConnectionInfo::fold(&history).unwrap(), "{name}");
    }
}
