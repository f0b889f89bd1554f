//! Given a connection's history, when its usage is computed (in any order, with
//! duplicates, across midnight), then the figures are ...

use proptest::prelude::*;

use super::*;
use crate::domain::{ConnectionId, ConnectionInfo, DisconnectReason, Timestamp, UserId};

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

/// Longer histories than the fold's tail, so that its base is walked too.
fn long_history() -> impl Strategy<Value = Vec<EventEnvelope>> {
    prop::collection::vec((arbitrary_event(), 0i64..(3 * 60), 0i64..3), 1..(3 * TAIL_LENGTH)).prop_map(|specs| {
        let mut history: Vec<EventEnvelope> = specs
            .into_iter()
            .enumerate()
            .map(|(index, (payload, minute, millis))| {
                event(&format!("r{index}"), LATE + minute * MINUTE + millis, payload)
            })
            .collect();
        history.insert(0, event("open", LATE, connected()));
        history
    })
}

/// The order a stream delivers `history` in: sorted by event id with `swaps`
/// neighbours exchanged (late events), or shuffled; with repeats.
fn delivery(history: &[EventEnvelope], shuffle: bool, swaps: &[usize], repeats: &[usize]) -> Vec<EventEnvelope> {
    let mut delivered = history.to_vec();
    delivered.sort_by_key(|event| event.event_id);
    for &repeat in repeats {
        if let Some(event) = history.get(repeat % history.len()).cloned() {
            let position = repeat.wrapping_mul(7) % (delivered.len() + 1);
            delivered.insert(position, event);
        }
    }
    for (step, &swap) in swaps.iter().enumerate() {
        let len = delivered.len();
        let (a, b) = if shuffle {
            (swap % len, (swap / 3).wrapping_add(step) % len)
        } else {
            (swap % len, (swap % len + 1) % len)
        };
        delivered.swap(a, b);
    }
    delivered
}

/// What a projector keeps of one connection: its view (with the usage walk), and
/// the events that view has folded.
struct Projected {
    view: Option<ConnectionInfo>,
    viewed: Vec<EventEnvelope>,
    history_reads: usize,
}

impl Projected {
    /// Projects `batch` as `projection::project_connection` does: from the walk on
    /// the view when it can go on, else from the whole `ledger`.
    fn project(&mut self, batch: &[EventEnvelope], ledger: &[EventEnvelope]) -> Option<ConnectionUsage> {
        let refs: Vec<&EventEnvelope> = batch.iter().collect();
        let mut view = self.view.clone().unwrap_or_else(|| ConnectionInfo::from_event(&batch[0]));
        for event in batch {
            view.apply(event);
        }
        self.viewed.extend(batch.iter().cloned());
        let fold = match &self.view {
            Some(stored) => stored.usage_fold.clone(),
            None if batch.iter().any(|event| matches!(event.event, ConnectionEvent::Connected { .. })) => {
                Some(UsageFold::new(view.created_at))
            }
            None => None,
        };
        let walked = fold.and_then(|mut fold| {
            fold.advance(&view, &refs).ok()?;
            Some((fold.usage(&view)?, fold))
        });
        let walked_on = walked.is_some();
        match walked {
            Some((usage, fold)) => {
                view.usage = Some(usage);
                view.usage_fold = Some(fold);
            }
            None => {
                self.history_reads += 1;
                let mut seen = ledger.to_vec();
                seen.extend(batch.iter().cloned());
                let full = ConnectionInfo::fold(&seen).unwrap();
                view.usage = full.usage;
                view.usage_fold = full.usage_fold;
            }
        }
        self.view = Some(view);
        let usage = self.view.as_ref().and_then(|view| view.usage.clone());
        // Until a history read, the walk has seen exactly what the view has.
        if walked_on && self.history_reads == 0 { usage } else { ConnectionUsage::of(&self.viewed) }
    }
}

#[test]
fn an_in_order_stream_never_reads_the_history_and_a_late_event_in_the_tail_neither() {
    let mut history = vec![event("c", LATE, connected())];
    for index in 0..200 {
        let payload = match index % 4 {
            0 => start(if index % 8 == 0 { "v1" } else { "v2" }),
            2 => end(if index % 8 == 2 { "v1" } else { "v2" }),
            _ => activity(index as u64),
        };
        history.push(event(&format!("r{index}"), LATE + index * 20_000, payload));
    }
    let mut projected = Projected { view: None, viewed: Vec::new(), history_reads: 0 };
    let mut delivered = history.clone();
    delivered.swap(100, 103);
    for batch in delivered.chunks(3) {
        projected.project(batch, &history);
    }
    // A redelivery of the latest batch.
    projected.project(&delivered[delivered.len() - 3..], &history);
    assert_eq!(projected.history_reads, 0);
    assert_eq!(projected.view.unwrap().usage, ConnectionUsage::of(&history));
}

#[test]
fn an_event_older_than_the_tail_is_answered_from_the_history() {
    let history: Vec<EventEnvelope> = std::iter::once(event("c", LATE, connected()))
        .chain((0..40).map(|index| event(&format!("a{index}"), LATE + index * MINUTE, activity(1))))
        .collect();
    let mut projected = Projected { view: None, viewed: Vec::new(), history_reads: 0 };
    let (late, rest): (Vec<_>, Vec<_>) = history.iter().cloned().partition(|event| event.request_id == "a3");
    for batch in rest.chunks(4) {
        projected.project(batch, &history);
    }
    assert_eq!(projected.history_reads, 0);
    projected.project(&late, &history);
    assert_eq!(projected.history_reads, 1);
    assert_eq!(projected.view.unwrap().usage, ConnectionUsage::of(&history));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// The whole-history computation is the oracle of the walk on the view.
    #[test]
    fn the_walk_on_the_view_gives_what_the_whole_history_gives(
        history in long_history(),
        shuffle in any::<bool>(),
        swaps in prop::collection::vec(any::<usize>(), 0..6),
        repeats in prop::collection::vec(any::<usize>(), 0..10),
        batch_sizes in prop::collection::vec(1usize..8, 1..20),
    ) {
        let delivered = delivery(&history, shuffle, &swaps, &repeats);
        let mut projected = Projected { view: None, viewed: Vec::new(), history_reads: 0 };
        let mut rest = delivered.as_slice();
        let mut sizes = batch_sizes.iter().cycle();
        while !rest.is_empty() {
            let size = (*sizes.next().unwrap()).min(rest.len());
            let (batch, after) = rest.split_at(size);
            let usage = projected.project(batch, &history);
            // Before any history read, every step equals the oracle of what was seen.
            if projected.history_reads == 0 {
                prop_assert_eq!(usage, ConnectionUsage::of(&projected.viewed));
            }
            rest = after;
        }
        prop_assert_eq!(projected.view.unwrap().usage, ConnectionUsage::of(&history));
    }
}
