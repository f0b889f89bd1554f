//! The fold: events folded into views per second.
//!
//! `cargo bench --bench fold`. A realistic connection history (connect, voice
//! sessions, activity, disconnect), folded from scratch, in order and shuffled.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use wsledger::domain::{
    ConnectionEvent, ConnectionId, ConnectionInfo, DisconnectReason, EventEnvelope, Timestamp, UserId,
};

fn history(length: usize) -> Vec<EventEnvelope> {
    let connection_id = ConnectionId::parse("L0SM9cOFvHcCIhw=").unwrap();
    let user_id = UserId::parse("3f1c2a9e-7b64-4d2e-9a51-0c8e6f4b2d17").unwrap();
    let connected_at = Timestamp::from_epoch_millis(1_764_000_000_000);
    (0..length)
        .map(|index| {
            let event = match index {
                0 => ConnectionEvent::Connected {
                    ip_address: Some("203.0.113.7".into()),
                    user_agent: Some("Mozilla/5.0".into()),
                },
                last if last + 1 == length => ConnectionEvent::Disconnected {
                    reason: DisconnectReason::Client,
                    status_code: Some(1000),
                    detail: None,
                    message_count: 0,
                },
                index if index % 10 == 1 => ConnectionEvent::VoiceStarted {
                    session_id: format!("voice-{}", index / 10),
                    audio_format: "webm".into(),
                },
                index if index % 10 == 9 => ConnectionEvent::VoiceEnded { session_id: format!("voice-{}", index / 10) },
                _ => ConnectionEvent::Activity { session_id: Some("chat-session-123".into()), message_count: 12 },
            };
            EventEnvelope::for_request(
                connection_id.clone(),
                user_id.clone(),
                format!("request-{index}"),
                connected_at.plus(chrono::TimeDelta::seconds(index as i64 * 60)),
                connected_at,
                event,
            )
        })
        .collect()
}

fn fold(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("fold");
    for length in [10usize, 100, 1_000] {
        let in_order = history(length);
        let mut shuffled = in_order.clone();
        // A fixed permutation (reverse interleaved) so runs are comparable.
        shuffled.sort_by_key(|event| std::cmp::Reverse(event.event_id.to_string().chars().rev().collect::<String>()));
        group.throughput(Throughput::Elements(length as u64));
        group.bench_with_input(BenchmarkId::new("in_order", length), &in_order, |bench, events| {
            bench.iter(|| ConnectionInfo::fold(black_box(events)))
        });
        group.bench_with_input(BenchmarkId::new("shuffled", length), &shuffled, |bench, events| {
            bench.iter(|| ConnectionInfo::fold(black_box(events)))
        });
    }
    group.finish();
}

criterion_group!(benches, fold);
criterion_main!(benches);
