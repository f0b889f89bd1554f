//! Given a history, when it is folded (in any order, with duplicates), then the view is ...

use proptest::prelude::*;

use super::*;
use crate::domain::EventKind;

const T0: i64 = 1_764_000_000_000;

fn event(request: &str, offset_ms: i64, event: ConnectionEvent) -> EventEnvelope {
    EventEnvelope::for_request(
        ConnectionId::parse("conn-1").unwrap(),
        UserId::parse("user-1").unwrap(),
        request,
        Timestamp::from_epoch_millis(T0 + offset_ms),
        Timestamp::from_epoch_millis(T0),
        event,
    )
}

fn connected() -> ConnectionEvent {
    ConnectionEvent::Connected { ip_address: Some("203.0.113.7".into()), user_agent: Some("curl/8".into()) }
}

fn disconnected(reason: DisconnectReason) -> ConnectionEvent {
    ConnectionEvent::Disconnected { reason, status_code: Some(1000), detail: None, message_count: 0 }
}

fn given(events: &[EventEnvelope]) -> ConnectionInfo {
    ConnectionInfo::fold(events).expect("a history with events folds to a view")
}

#[test]
fn a_connected_event_makes_a_connected_view_with_the_seed_fields() {
    let view = given(&[event("r1", 0, connected())]);
    assert_eq!(view.status, ConnectionStatus::Connected);
    assert_eq!(view.user_id.as_str(), "user-1");
    assert_eq!(view.ip_address.as_deref(), Some("203.0.113.7"));
    assert_eq!(view.user_agent.as_deref(), Some("curl/8"));
    assert_eq!(view.created_at, Timestamp::from_epoch_millis(T0));
    assert_eq!(view.last_activity, Timestamp::from_epoch_millis(T0));
    assert_eq!(view.disconnected_at, None);
    assert_eq!(view.live_until(), Some(Timestamp::from_epoch_millis(T0).plus(IDLE_TIMEOUT)));
}

#[test]
fn a_voice_session_is_active_between_start_and_end() {
    let start = event(
        "r2",
        1_000,
        ConnectionEvent::VoiceStarted { session_id: "voice-session-123".into(), audio_format: "webm".into() },
    );
    let view = given(&[event("r1", 0, connected()), start.clone()]);
    assert_eq!(view.voice_session_id.as_deref(), Some("voice-session-123"));
    assert_eq!(view.audio_format.as_deref(), Some("webm"));
    assert_eq!(view.session_id.as_deref(), Some("voice-session-123"));

    let end = event("r3", 2_000, ConnectionEvent::VoiceEnded { session_id: "voice-session-123".into() });
    let view = given(&[event("r1", 0, connected()), start, end]);
    assert_eq!(view.voice_session_id, None);
    assert_eq!(view.session_id.as_deref(), Some("voice-session-123"));
}

#[test]
fn a_late_connected_after_disconnected_changes_only_what_was_unknown() {
    let disconnect = event("r9", 5_000, disconnected(DisconnectReason::Client));
    let late_connect = event("r1", 0, connected());
    let view = given(&[disconnect, late_connect]);
    assert_eq!(view.status, ConnectionStatus::Disconnected);
    assert_eq!(view.disconnected_at, Some(Timestamp::from_epoch_millis(T0 + 5_000)));
    assert_eq!(view.last_activity, Timestamp::from_epoch_millis(T0 + 5_000));
    assert_eq!(view.ip_address.as_deref(), Some("203.0.113.7"));
    assert_eq!(view.live_until(), None);
}

#[test]
fn the_first_disconnect_wins() {
    let client = event("r2", 1_000, disconnected(DisconnectReason::Client));
    let gone = event("r3", 9_000, disconnected(DisconnectReason::Gone));
    let view = given(&[gone, client]);
    assert_eq!(view.disconnect_reason, Some(DisconnectReason::Client));
    assert_eq!(view.disconnected_at, Some(Timestamp::from_epoch_millis(T0 + 1_000)));
    assert_eq!(view.last_activity, Timestamp::from_epoch_millis(T0 + 9_000));
}

fn gone() -> ConnectionEvent {
    ConnectionEvent::Disconnected {
        reason: DisconnectReason::Gone,
        status_code: None,
        detail: Some("410".into()),
        message_count: 0,
    }
}

fn activity() -> ConnectionEvent {
    ConnectionEvent::Activity { session_id: None, message_count: 1 }
}

#[test]
fn a_gone_observation_with_no_later_sign_of_life_disconnects() {
    let view = given(&[event("r1", 0, connected()), event("r2", 1_000, activity()), event("g", 5_000, gone())]);
    assert_eq!(view.status, ConnectionStatus::Disconnected);
    assert_eq!(view.disconnect_reason, Some(DisconnectReason::Gone));
    assert_eq!(view.disconnected_at, Some(Timestamp::from_epoch_millis(T0 + 5_000)));
    assert_eq!(view.live_until(), None);
}

#[test]
fn a_later_sign_of_life_overrides_a_gone_observation() {
    // A post during $connect got a 410; then the client sent a message.
    let start = ConnectionEvent::VoiceStarted { session_id: "v1".into(), audio_format: "webm".into() };
    let history =
        [event("r1", 0, connected()), event("r2", 10, start), event("g", 20, gone()), event("r3", 3_000, activity())];
    let view = given(&history);
    assert_eq!(view.status, ConnectionStatus::Connected);
    assert_eq!((view.disconnected_at, view.disconnect_reason.clone()), (None, None));
    assert_eq!(view.voice_session_id.as_deref(), Some("v1"), "the voice session is still running");
    assert_eq!(view.gone.as_ref().map(|gone| gone.at), Some(Timestamp::from_epoch_millis(T0 + 20)), "remembered");
    let reversed: Vec<EventEnvelope> = history.iter().rev().cloned().collect();
    assert_eq!(given(&reversed), view);
}

#[test]
fn a_sign_of_life_in_the_same_millisecond_does_not_override() {
    let view = given(&[event("r1", 0, connected()), event("r2", 700, activity()), event("g", 700, gone())]);
    assert_eq!(view.status, ConnectionStatus::Disconnected);
}

#[test]
fn a_disconnect_from_api_gateway_stays_terminal_after_a_gone_observation() {
    let history = [
        event("g", 100, gone()),
        event("r9", 200, disconnected(DisconnectReason::Client)),
        event("r3", 300, activity()),
    ];
    let view = given(&history);
    assert_eq!(view.status, ConnectionStatus::Disconnected);
    assert_eq!(view.disconnect_reason, Some(DisconnectReason::Client));
    assert_eq!(view.disconnected_at, Some(Timestamp::from_epoch_millis(T0 + 200)));
}

#[test]
fn events_of_another_connection_are_ignored() {
    let mut other = event("r2", 1_000, disconnected(DisconnectReason::Client));
    other.connection_id = ConnectionId::parse("conn-2").unwrap();
    let view = given(&[event("r1", 0, connected()), other]);
    assert_eq!(view.status, ConnectionStatus::Connected);
}

#[test]
fn live_until_is_capped_by_the_maximum_duration() {
    let late_activity = event("r2", 115 * 60_000, ConnectionEvent::Activity { session_id: None, message_count: 3 });
    let view = given(&[event("r1", 0, connected()), late_activity]);
    assert_eq!(view.live_until(), Some(Timestamp::from_epoch_millis(T0).plus(MAX_CONNECTION_DURATION)));
}

// Property tests: random histories of one connection.

fn arbitrary_event() -> impl Strategy<Value = ConnectionEvent> {
    let session = prop::sample::select(vec!["s1", "s2", "s3"]).prop_map(String::from);
    prop_oneof![
        (prop::option::of(prop::sample::select(vec!["198.51.100.1", "198.51.100.2"])), any::<bool>()).prop_map(
            |(ip, has_agent)| ConnectionEvent::Connected {
                ip_address: ip.map(String::from),
                user_agent: has_agent.then(|| "agent".to_owned()),
            }
        ),
        (prop::option::of(session.clone()), 0u64..100)
            .prop_map(|(session_id, message_count)| ConnectionEvent::Activity { session_id, message_count }),
        (session.clone(), prop::sample::select(vec!["webm", "pcm"]))
            .prop_map(|(session_id, format)| ConnectionEvent::VoiceStarted { session_id, audio_format: format.into() }),
        session.prop_map(|session_id| ConnectionEvent::VoiceEnded { session_id }),
        // Gone observations, often: from posts and the sweep, interleaved with activity.
        Just(ConnectionEvent::Disconnected {
            reason: DisconnectReason::Gone,
            status_code: None,
            detail: None,
            message_count: 0
        }),
        (prop::sample::select(vec!["client", "gone", "idle", "kicked", "other"]), prop::option::of(1000u16..1012))
            .prop_map(|(reason, status_code)| ConnectionEvent::Disconnected {
                reason: DisconnectReason::parse(reason),
                status_code,
                detail: None,
                message_count: 0,
            }),
    ]
}

/// A history in event-id order: 1 to 24 distinct events with times that may
/// collide, from possibly different users (which real traffic never has, but the
/// fold must still converge on it).
fn arbitrary_history() -> impl Strategy<Value = Vec<EventEnvelope>> {
    prop::collection::vec((arbitrary_event(), 0i64..10_000, prop::sample::select(vec!["u1", "u2"]), 0i64..3), 1..24)
        .prop_map(|specs| {
            let mut history: Vec<EventEnvelope> = specs
                .into_iter()
                .enumerate()
                .map(|(index, (payload, offset, user, connected_offset))| EventEnvelope {
                    user_id: UserId::parse(user).unwrap(),
                    connected_at: Timestamp::from_epoch_millis(T0 - connected_offset),
                    ..event(&format!("req-{index}"), offset, payload)
                })
                .collect();
            history.sort_by_key(|envelope| envelope.event_id);
            history.dedup_by_key(|envelope| envelope.event_id);
            history
        })
}

/// The same history, shuffled, with some events delivered again.
fn redelivered(history: Vec<EventEnvelope>) -> impl Strategy<Value = (Vec<EventEnvelope>, Vec<EventEnvelope>)> {
    let len = history.len();
    (Just(history.clone()), prop::collection::vec(0..len, 0..len * 2)).prop_flat_map(|(history, repeats)| {
        let mut delivered = history.clone();
        delivered.extend(repeats.into_iter().map(|index| history[index].clone()));
        (Just(history), Just(delivered).prop_shuffle())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn any_order_with_duplicates_folds_to_the_in_order_view(
        (history, delivered) in arbitrary_history().prop_flat_map(redelivered)
    ) {
        let in_order = ConnectionInfo::fold(&history);
        let shuffled = ConnectionInfo::fold(&delivered);
        prop_assert_eq!(shuffled, in_order);
    }

    #[test]
    fn a_disconnect_other_than_gone_is_terminal((history, delivered) in arbitrary_history().prop_flat_map(redelivered)) {
        let is_terminal = |envelope: &EventEnvelope| envelope.kind() == EventKind::Disconnected && !envelope.event.is_gone();
        let mut view = ConnectionInfo::from_event(&delivered[0]);
        let mut seen_terminal = is_terminal(&delivered[0]);
        for envelope in &delivered[1..] {
            view.apply(envelope);
            seen_terminal |= is_terminal(envelope);
            if seen_terminal {
                prop_assert_eq!(view.status, ConnectionStatus::Disconnected);
                prop_assert!(view.disconnect_reason != Some(DisconnectReason::Gone));
            }
        }
        if history.iter().any(is_terminal) {
            prop_assert_eq!(view.voice_session_id, None);
        }
    }

    /// The status is the rule, whatever the order: a terminal disconnect, else the
    /// latest gone observation unless an event other than a gone one came later.
    #[test]
    fn gone_is_an_observation_that_a_later_sign_of_life_overrides(
        (history, delivered) in arbitrary_history().prop_flat_map(redelivered)
    ) {
        let view = given(&delivered);
        let terminal = history.iter().any(|envelope| envelope.kind() == EventKind::Disconnected && !envelope.event.is_gone());
        let latest_gone = history.iter().filter(|envelope| envelope.event.is_gone()).map(|envelope| envelope.at).max();
        let latest_life = history.iter().filter(|envelope| !envelope.event.is_gone()).map(|envelope| envelope.at).max();
        let gone_stands = latest_gone.is_some_and(|gone| latest_life.is_none_or(|life| life <= gone));
        let expected = if terminal || gone_stands { ConnectionStatus::Disconnected } else { ConnectionStatus::Connected };
        prop_assert_eq!(view.status, expected);
        if !terminal && gone_stands {
            prop_assert_eq!(view.disconnect_reason, Some(DisconnectReason::Gone));
            prop_assert_eq!(view.disconnected_at, latest_gone);
        }
        if view.status == ConnectionStatus::Connected {
            prop_assert_eq!(view.disconnected_at, None);
            // The voice session of the latest voice event, if it was a start.
            let latest_voice = history
                .iter()
                .filter(|envelope| matches!(envelope.kind(), EventKind::VoiceStarted | EventKind::VoiceEnded))
                .max_by_key(|envelope| envelope.event_id);
            let expected_voice = match latest_voice.map(|envelope| &envelope.event) {
                Some(ConnectionEvent::VoiceStarted { session_id, .. }) => Some(session_id.clone()),
                _ => None,
            };
            prop_assert_eq!(view.voice_session_id.clone(), expected_voice);
        }
    }

    #[test]
    fn last_activity_is_the_latest_event_time((history, delivered) in arbitrary_history().prop_flat_map(redelivered)) {
        let view = given(&delivered);
        let latest = history.iter().map(|envelope| envelope.at).max().unwrap();
        prop_assert_eq!(view.last_activity, latest);
        prop_assert_eq!(view.last_event_id, history.last().unwrap().event_id);
    }

    #[test]
    fn a_late_or_repeated_event_never_makes_the_view_older(
        (_history, delivered) in arbitrary_history().prop_flat_map(redelivered)
    ) {
        let mut view = ConnectionInfo::from_event(&delivered[0]);
        for envelope in &delivered[1..] {
            let before = view.clone();
            view.apply(envelope);
            prop_assert!(view.last_activity >= before.last_activity);
            prop_assert!(view.last_event_id >= before.last_event_id);
            prop_assert!(view.alive_at >= before.alive_at);
            prop_assert!(view.created_at <= before.created_at);
            prop_assert!(view.first_event_id <= before.first_event_id);
            if before.disconnected_event_id.is_some() {
                // After a terminal disconnect, only an earlier one can change it.
                prop_assert_eq!(view.status, ConnectionStatus::Disconnected);
                prop_assert!(view.disconnected_at <= before.disconnected_at);
            }
            // Applying the same event again is a no-op.
            let once = view.clone();
            view.apply(envelope);
            prop_assert_eq!(&view, &once);
        }
    }
}

// Events of one millisecond: lifecycle order, not hash order.

/// Histories crowded into a few milliseconds, so many events share one.
fn crowded_history() -> impl Strategy<Value = Vec<EventEnvelope>> {
    prop::collection::vec((arbitrary_event(), 0i64..4), 1..16).prop_map(|specs| {
        let mut history: Vec<EventEnvelope> = specs
            .into_iter()
            .enumerate()
            .map(|(index, (payload, offset))| event(&format!("crowd-{index}"), offset, payload))
            .collect();
        history.sort_by_key(|envelope| envelope.event_id);
        history.dedup_by_key(|envelope| envelope.event_id);
        history
    })
}

/// What a connection went through, replayed in lifecycle order: by time, then by
/// the kind's place in a connection's life.
fn lifecycle_order(history: &[EventEnvelope]) -> Vec<EventEnvelope> {
    let mut ordered = history.to_vec();
    ordered.sort_by_key(|envelope| (envelope.at, envelope.kind().lifecycle_rank(), envelope.event_id));
    ordered
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn event_ids_sort_in_lifecycle_order(history in crowded_history()) {
        // `history` is sorted by event id: the order of `history`, pages and the fold.
        prop_assert_eq!(lifecycle_order(&history), history);
    }

    #[test]
    fn crowded_histories_fold_to_the_view_of_the_lifecycle_order(
        (history, delivered) in crowded_history().prop_flat_map(redelivered)
    ) {
        let view = given(&delivered);
        let mut voice = None;
        for envelope in lifecycle_order(&history) {
            match &envelope.event {
                ConnectionEvent::VoiceStarted { session_id, .. } => voice = Some(session_id.clone()),
                ConnectionEvent::VoiceEnded { .. } => voice = None,
                _ => {}
            }
        }
        let expected = if view.is_connected() { voice } else { None };
        prop_assert_eq!(view.voice_session_id, expected);
    }

    #[test]
    fn a_session_started_and_ended_in_one_millisecond_is_not_active(
        offset in 0i64..1_000,
        requests in (any::<u32>(), any::<u32>(), any::<u32>()),
        order in Just(vec![0usize, 1, 2]).prop_shuffle(),
    ) {
        let session = || "voice-1".to_owned();
        let events = [
            event(&format!("c{}", requests.0), offset, connected()),
            event(
                &format!("s{}", requests.1),
                offset,
                ConnectionEvent::VoiceStarted { session_id: session(), audio_format: "webm".into() },
            ),
            event(&format!("e{}", requests.2), offset, ConnectionEvent::VoiceEnded { session_id: session() }),
        ];
        let delivered: Vec<EventEnvelope> = order.iter().map(|index| events[*index].clone()).collect();
        let view = given(&delivered);
        prop_assert_eq!(view.voice_session_id, None);
        prop_assert_eq!(view.status, ConnectionStatus::Connected);
    }
}
