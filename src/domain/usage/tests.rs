//! Given a connection's history, when its usage is computed (in any order, with
//! duplicates, across midnight), then the figures are ...

use proptest::prelude::*;

use super::*;
use crate::domain::{ConnectionId, DisconnectReason, Timestamp, UserId};

/// 2026-11-26T23:00:00Z: an hour before midnight.
const LATE: i64 = 1_795_734_000_000;

fn event(request: &str, at: i64, event: ConnectionEvent) -> EventEnvelope {
    EventEnvelope::for_request(
        ConnectionId::parse("conn-usage").unwrap(),
        UserId::parse("user-usage").unwrap(),
        request,
        Timestamp::from_epoch_millis(at),
        Timestamp::from_epoch_millis(LATE),
        event,
    )
}

fn connected() -> ConnectionEvent {
    ConnectionEvent::Connected { ip_address: None, user_agent: None }
}

fn activity(message_count: u64) -> ConnectionEvent {
    ConnectionEvent::Activity { session_id: None, message_count }
}

fn start(session: &str) -> ConnectionEvent {
    ConnectionEvent::VoiceStarted { session_id: session.into(), audio_format: "webm".into() }
}

fn end(session: &str) -> ConnectionEvent {
    ConnectionEvent::VoiceEnded { session_id: session.into() }
}

fn disconnected(reason: DisconnectReason, message_count: u64) -> ConnectionEvent {
    ConnectionEvent::Disconnected { reason, status_code: Some(1000), detail: None, message_count }
}

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

const MINUTE: i64 = 60_000;

#[test]
fn a_session_across_midnight_counts_in_each_day_by_its_time_there() {
    let history = [
        event("c", LATE, connected()),
        event("a1", LATE + 10 * MINUTE, activity(5)),
        event("s", LATE + 50 * MINUTE, start("v1")),
        event("e", LATE + 70 * MINUTE, end("v1")),
        event("a2", LATE + 75 * MINUTE, activity(3)),
        event("d", LATE + 90 * MINUTE, disconnected(DisconnectReason::Client, 2)),
    ];
    let usage = ConnectionUsage::of(&history).unwrap();
    let before = usage.days[&day("2026-11-26")];
    let after = usage.days[&day("2026-11-27")];
    assert_eq!(
        before,
        Figures { connections: 1, connected_ms: 60 * 60_000, messages: 5, voice_sessions: 1, voice_ms: 10 * 60_000 }
    );
    assert_eq!(
        after,
        Figures { connections: 0, connected_ms: 30 * 60_000, messages: 5, voice_sessions: 0, voice_ms: 10 * 60_000 }
    );
    assert_eq!(usage.total().connected_ms, 90 * 60_000);
    assert_eq!(usage.events, 6);
}

#[test]
fn an_unended_session_runs_to_the_connections_end_and_a_live_one_to_its_latest_event() {
    let open = [
        event("c", LATE, connected()),
        event("s", LATE + MINUTE, start("v1")),
        event("a", LATE + 5 * MINUTE, activity(1)),
    ];
    let usage = ConnectionUsage::of(&open).unwrap().total();
    assert_eq!((usage.connected_ms, usage.voice_ms), (5 * MINUTE as u64, 4 * MINUTE as u64));

    let mut closed = open.to_vec();
    closed.push(event("d", LATE + 8 * MINUTE, disconnected(DisconnectReason::Idle, 0)));
    let usage = ConnectionUsage::of(&closed).unwrap().total();
    assert_eq!((usage.connected_ms, usage.voice_ms), (8 * MINUTE as u64, 7 * MINUTE as u64));
}

#[test]
fn a_new_session_ends_the_one_before_and_repeated_starts_are_one_session() {
    let history = [
        event("c", LATE, connected()),
        event("s1", LATE + MINUTE, start("v1")),
        event("s1b", LATE + 2 * MINUTE, start("v1")),
        event("s2", LATE + 3 * MINUTE, start("v2")),
        event("e2", LATE + 4 * MINUTE, end("v2")),
    ];
    let usage = ConnectionUsage::of(&history).unwrap().total();
    assert_eq!((usage.voice_sessions, usage.voice_ms), (2, 3 * MINUTE as u64));
}

#[test]
fn the_newest_computation_wins_and_ttl_never_shrinks_usage() {
    let full = ConnectionUsage::of(&[event("c", LATE, connected()), event("a", LATE + 1, activity(4))]);
    let partial = ConnectionUsage::of(&[event("a", LATE + 1, activity(4))]);
    assert_eq!(ConnectionUsage::newest(full.clone(), partial.clone()), full);
    assert_eq!(ConnectionUsage::newest(partial.clone(), full.clone()), full);
    assert_eq!(ConnectionUsage::newest(full.clone(), None), full);
}

fn arbitrary_event() -> impl Strategy<Value = ConnectionEvent> {
    let session = prop::sample::select(vec!["v1", "v2"]);
    prop_oneof![
        Just(connected()),
        (0u64..20).prop_map(activity),
        session.clone().prop_map(start),
        session.prop_map(end),
        (prop::sample::select(vec!["client", "gone", "idle"]), 0u64..5)
            .prop_map(|(reason, count)| disconnected(DisconnectReason::parse(reason), count)),
    ]
}

/// Histories around midnight, with several events in one millisecond at times.
fn arbitrary_history() -> impl Strategy<Value = Vec<EventEnvelope>> {
    prop::collection::vec((arbitrary_event(), 0i64..(3 * 60), 0i64..3), 1..20).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(index, (payload, minute, millis))| {
                event(&format!("r{index}"), LATE + minute * MINUTE + millis, payload)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn usage_is_a_function_of_the_set_of_events(
        history in arbitrary_history(),
        repeats in prop::collection::vec(0usize..20, 0..20),
        seed in any::<u64>(),
    ) {
        let mut delivered = history.clone();
        delivered.extend(repeats.iter().filter_map(|index| history.get(*index).cloned()));
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for index in (1..delivered.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            delivered.swap(index, (state % (index as u64 + 1)) as usize);
        }
        prop_assert_eq!(ConnectionUsage::of(&delivered), ConnectionUsage::of(&history));
    }

    #[test]
    fn days_add_up_and_nothing_exceeds_the_connection(history in arbitrary_history()) {
        let usage = ConnectionUsage::of(&history).unwrap();
        let view = ConnectionInfo::fold(&history).unwrap();
        let start = view.created_at.epoch_millis();
        let end = view.disconnected_at.or(view.alive_at).map_or(start, |end| end.epoch_millis()).max(start);
        let total = usage.total();
        prop_assert_eq!(total.connected_ms, (end - start) as u64);
        prop_assert!(total.voice_ms <= total.connected_ms);
        prop_assert_eq!(total.connections, 1);
        let mut seen = std::collections::HashSet::new();
        let messages: u64 = history
            .iter()
            .filter(|event| seen.insert(event.event_id))
            .map(|event| match &event.event {
                ConnectionEvent::Activity { message_count, .. }
                | ConnectionEvent::Disconnected { message_count, .. } => *message_count,
                _ => 0,
            })
            .sum();
        prop_assert_eq!(total.messages, messages);
        for figures in usage.days.values() {
            prop_assert!(figures.connected_ms <= 86_400_000);
        }
    }
}
