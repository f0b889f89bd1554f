//! Given a user's connections' views, when presence observes and settles them,
//! then subscribers are told ...; and presence from any order equals the in-order fold.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::domain::{ConnectionEvent, DisconnectReason, EventEnvelope};

const T0: i64 = 1_764_000_000_000;
const GRACE: TimeDelta = TimeDelta::seconds(5);

fn at(offset_ms: i64) -> Timestamp {
    Timestamp::from_epoch_millis(T0 + offset_ms)
}

fn event(connection: &str, request: &str, offset_ms: i64, connected_ms: i64, event: ConnectionEvent) -> EventEnvelope {
    EventEnvelope::for_request(
        ConnectionId::parse(connection).unwrap(),
        UserId::parse("user#1/ü\"<&,").unwrap(),
        request,
        at(offset_ms),
        at(connected_ms),
        event,
    )
}

fn connected() -> ConnectionEvent {
    ConnectionEvent::Connected { ip_address: Some("203.0.113.7".into()), user_agent: Some("phone".into()) }
}

fn disconnected(reason: DisconnectReason) -> ConnectionEvent {
    ConnectionEvent::Disconnected { reason, status_code: Some(1000), detail: None, message_count: 0 }
}

/// Views as a projector keeps them, and the record observing each change.
struct World {
    views: HashMap<String, ConnectionInfo>,
    record: PresenceRecord,
    sinks: Vec<String>,
    /// Every event told, in order.
    log: Vec<PresenceEvent>,
}

impl World {
    fn new() -> Self {
        Self {
            views: HashMap::new(),
            record: PresenceRecord::new(UserId::parse("user#1/ü\"<&,").unwrap()),
            sinks: Vec::new(),
            log: Vec::new(),
        }
    }

    fn project(&mut self, events: &[EventEnvelope]) {
        let mut touched = Vec::new();
        for event in events {
            let key = event.connection_id.to_string();
            match self.views.get_mut(&key) {
                Some(view) => view.apply(event),
                None => {
                    self.views.insert(key.clone(), ConnectionInfo::from_event(event));
                }
            }
            if !touched.contains(&key) {
                touched.push(key);
            }
        }
        for key in touched {
            self.record.observe(&self.views[&key]);
        }
    }

    fn told(&mut self, events: &[EventEnvelope], now_ms: i64) -> Vec<PresenceEventType> {
        self.project(events);
        let told = self.record.settle(at(now_ms), GRACE, &self.sinks);
        self.log.extend(told.iter().cloned());
        told.iter().map(|event| event.kind).collect()
    }
}

#[test]
fn two_devices_are_one_online_event_and_voice_is_told_as_it_starts_and_ends() {
    let mut world = World::new();
    assert_eq!(world.told(&[event("a", "a1", 0, 0, connected())], 10), vec![PresenceEventType::Online]);
    assert_eq!(world.told(&[event("b", "b1", 100, 100, connected())], 110), vec![]);
    let presence = world.record.presence(at(110));
    assert_eq!(presence.status, PresenceStatus::Online);
    assert_eq!(presence.devices.len(), 2);
    let start = ConnectionEvent::VoiceStarted { session_id: "s".into(), audio_format: "webm".into() };
    assert_eq!(world.told(&[event("b", "b2", 200, 100, start)], 210), vec![PresenceEventType::VoiceStarted]);
    assert!(world.record.presence(at(210)).in_voice);
    let end = ConnectionEvent::VoiceEnded { session_id: "s".into() };
    assert_eq!(world.told(&[event("b", "b3", 300, 100, end)], 310), vec![PresenceEventType::VoiceEnded]);
    assert_eq!(world.log.len(), 3);
    assert!(world.record.outbox.is_empty(), "no sink, nothing owed");
}

#[test]
fn the_last_device_leaving_is_told_once_the_grace_has_passed() {
    let mut world = World::new();
    world.told(&[event("a", "a1", 0, 0, connected()), event("b", "b1", 0, 0, connected())], 10);
    assert_eq!(world.told(&[event("a", "a2", 1_000, 0, disconnected(DisconnectReason::Client))], 1_010), vec![]);
    assert_eq!(world.told(&[event("b", "b2", 2_000, 0, disconnected(DisconnectReason::Client))], 2_010), vec![]);
    assert_eq!(world.record.presence(at(2_010)).status, PresenceStatus::Offline, "status is the truth now");
    assert_eq!(world.record.check_at(GRACE), Some(at(7_000)), "the end of the grace, from the last end");
    assert_eq!(world.told(&[], 6_999), vec![]);
    assert_eq!(world.told(&[], 7_000), vec![PresenceEventType::Offline]);
    assert_eq!(world.told(&[], 9_000), vec![], "told once");
    let offline = world.log.last().unwrap();
    assert_eq!((offline.at, offline.connections), (at(2_000), 0));
}

#[test]
fn a_reconnect_within_the_grace_tells_nothing() {
    let mut world = World::new();
    world.told(&[event("a", "a1", 0, 0, connected())], 10);
    assert_eq!(world.told(&[event("a", "a2", 1_000, 0, disconnected(DisconnectReason::Client))], 1_010), vec![]);
    assert_eq!(world.told(&[event("b", "b1", 4_000, 4_000, connected())], 4_010), vec![]);
    assert_eq!(world.told(&[], 60_000), vec![]);
    assert_eq!(world.record.pending_offline, None);
}

#[test]
fn a_ghost_stops_counting_at_its_live_until_and_a_gone_observation_at_once() {
    let mut world = World::new();
    world.told(&[event("a", "a1", 0, 0, connected())], 10);
    let live_until = at(0).plus(crate::domain::IDLE_TIMEOUT);
    assert_eq!(world.record.check_at(GRACE), Some(live_until));
    assert_eq!(world.record.presence(live_until).status, PresenceStatus::Offline);
    let ghost_gone_at = live_until.epoch_millis() - T0;
    assert_eq!(world.told(&[], ghost_gone_at + 5_000), vec![PresenceEventType::Offline]);

    let mut world = World::new();
    world.told(&[event("a", "a1", 0, 0, connected())], 10);
    assert_eq!(
        world.told(&[event("a", "a9", 1_000, 0, disconnected(DisconnectReason::Gone))], 9_000),
        vec![PresenceEventType::Offline]
    );
}

#[test]
fn the_same_events_made_again_have_the_same_ids() {
    let run = || {
        let mut world = World::new();
        world.told(&[event("a", "a1", 0, 0, connected())], 10);
        world.told(&[event("a", "a2", 1_000, 0, disconnected(DisconnectReason::Client))], 9_000);
        world.log.iter().map(|event| event.event_id.clone()).collect::<Vec<_>>()
    };
    let ids = run();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    assert_eq!(ids, run());
}

#[test]
fn delivery_clears_what_a_sink_acknowledged_and_backs_off_after_failures() {
    let mut world = World::new();
    world.sinks = vec!["webhook".into(), "eventbridge".into()];
    world.told(&[event("a", "a1", 0, 0, connected())], 10);
    assert_eq!(world.record.retry_at, Some(at(10).plus(DELIVERY_CLAIM)), "a check delivers only if the writer did not");
    assert!(world.record.delivery_due(at(10)), "the writer delivers at once");
    let ids: Vec<String> = world.record.owed_to("webhook").into_iter().map(|event| event.event_id).collect();
    world.record.delivered("webhook", &ids);
    assert!(world.record.owed_to("webhook").is_empty());
    assert_eq!(world.record.owed_to("eventbridge").len(), 1);
    world.record.delivery_failed(at(10));
    world.record.delivery_failed(at(10));
    assert_eq!(world.record.retry_at, Some(at(2_010)));
    assert!(!world.record.delivery_due(at(2_009)) && world.record.delivery_due(at(2_010)));
    assert_eq!(world.record.check_at(GRACE), Some(at(2_010)));
    world.record.delivered("eventbridge", &ids);
    world.record.delivery_succeeded();
    assert_eq!((world.record.outbox.len(), world.record.retry_at), (0, None));
}

#[test]
fn the_outbox_is_bounded() {
    let mut world = World::new();
    world.sinks = vec!["webhook".into()];
    for index in 0..(OUTBOX_LIMIT as i64 + 7) {
        let connection = format!("c{index}");
        world.told(&[event(&connection, "c", index * 100_000, index * 100_000, connected())], index * 100_000);
        world.told(
            &[event(&connection, "d", index * 100_000 + 1, index * 100_000, disconnected(DisconnectReason::Client))],
            index * 100_000 + 50_000,
        );
    }
    assert!(world.record.outbox.len() > OUTBOX_LIMIT);
    let dropped = world.record.trim_outbox();
    assert_eq!(world.record.outbox.len(), OUTBOX_LIMIT);
    assert!(dropped > 0);
}

fn history() -> impl Strategy<Value = Vec<EventEnvelope>> {
    let connection = (0..3usize, 0i64..20_000, prop::collection::vec((0u8..6, 1i64..900_000), 0..8));
    prop::collection::vec(connection, 1..4).prop_map(|connections| {
        let mut events = Vec::new();
        for (index, (name, start, steps)) in connections.into_iter().enumerate() {
            let connection = format!("conn-{name}-{index}");
            events.push(event(&connection, &format!("{connection}-0"), start, start, connected()));
            let mut time = start;
            for (step, (kind, gap)) in steps.into_iter().enumerate() {
                time += gap;
                let request = format!("{connection}-{}", step + 1);
                let kind = match kind {
                    0 => ConnectionEvent::Activity { session_id: None, message_count: 1 },
                    1 => ConnectionEvent::VoiceStarted { session_id: format!("s{step}"), audio_format: "webm".into() },
                    2 => ConnectionEvent::VoiceEnded { session_id: format!("s{}", step.saturating_sub(1)) },
                    3 => disconnected(DisconnectReason::Gone),
                    4 => disconnected(DisconnectReason::Client),
                    _ => ConnectionEvent::Activity { session_id: Some("app".into()), message_count: 2 },
                };
                events.push(event(&connection, &request, time, start, kind));
            }
        }
        events
    })
}

/// A delivery of `events`: shuffled, some repeated, cut into batches.
fn delivery(events: Vec<EventEnvelope>) -> impl Strategy<Value = Vec<Vec<EventEnvelope>>> {
    let count = events.len();
    (Just(events).prop_shuffle(), prop::collection::vec(0..count, 0..4), prop::collection::vec(1usize..5, 1..20))
        .prop_map(|(mut events, repeats, sizes)| {
            for index in repeats {
                events.push(events[index].clone());
            }
            let mut batches = Vec::new();
            let mut sizes = sizes.into_iter().cycle();
            while !events.is_empty() {
                let size = sizes.next().unwrap_or(1).min(events.len());
                batches.push(events.drain(..size).collect());
            }
            batches
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// Presence from any order of any user's events, with repeats, in any batches,
    /// equals presence from the in-order fold, at any time.
    #[test]
    fn presence_does_not_depend_on_the_order_of_events(
        (events, batches) in history().prop_flat_map(|events| (Just(events.clone()), delivery(events))),
        now_offset in 0i64..4_000_000,
    ) {
        let mut in_order = World::new();
        let mut sorted = events.clone();
        sorted.sort_by_key(|event| (event.at, event.event_id));
        for event in &sorted {
            in_order.project(std::slice::from_ref(event));
        }
        let mut shuffled = World::new();
        for batch in &batches {
            shuffled.project(batch);
        }
        let now = at(now_offset);
        prop_assert_eq!(shuffled.record.presence(now), in_order.record.presence(now));
        prop_assert_eq!(&shuffled.record.devices, &in_order.record.devices);
    }
}
