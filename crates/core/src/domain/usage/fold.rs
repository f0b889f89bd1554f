//! Usage, folded as events arrive: the state a projection keeps on the view so that
//! projecting a batch costs the batch, not the connection's history.
//!
//! [`ConnectionUsage::of`] walks the whole history in event id order. A
//! [`UsageFold`] is that walk cut in two: a `base` that has walked every event up to
//! `through`, and a short `tail` of the latest events after it, kept as they are. An
//! event after `through` (new, or late by less than the tail) is placed in the tail
//! and costs nothing more; the tail's oldest event moves into the base when the tail
//! is full. The usage is the base walked on through the tail, closed at the
//! connection's end.
//!
//! Two things the walk of the whole history knows and the base cannot: whether an
//! event at or before `through` was already walked (so a repeated one and a very
//! late one look alike), and the connection's end, which clamps voice spans. So the
//! fold answers [`NeedsHistory`] for an event at or before `through` or one that
//! moves the connection's start, and [`UsageFold::usage`] answers `None` when a voice
//! event already walked lies after the connection's end (a voice event after a
//! disconnect). The caller then folds again from the whole history; the result is
//! always exactly [`ConnectionUsage::of`] of the same events, which the property
//! tests check.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::{ConnectionUsage, Figures, Lifespan, figures_on, spread};
use crate::domain::event::{ConnectionEvent, EventEnvelope};
use crate::domain::ids::EventId;
use crate::domain::time::Timestamp;

/// How many of the latest events a fold keeps apart from its base: an event late by
/// fewer events than this (two handler invocations of one connection finishing in
/// the other order, a redelivered batch) costs no history read.
pub const TAIL_LENGTH: usize = 16;

/// The state of the usage walk of one connection (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageFold {
    /// The connection's start (its view's `created_at`), which clamps every span.
    pub start: Timestamp,
    /// Every event with an id up to this one has been walked into `base`.
    pub through: Option<EventId>,
    pub base: Walked,
    /// The latest events after `through`, in event id order, at most [`TAIL_LENGTH`].
    pub tail: Vec<UsageEvent>,
}

/// What the walk has summed so far. `days` holds messages, voice sessions and the
/// voice time of closed sessions; connected time and the open session are added
/// when the walk is closed at the connection's end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walked {
    /// Distinct events walked.
    pub events: u64,
    pub days: BTreeMap<NaiveDate, Figures>,
    /// The voice session in progress: its id and its start (epoch milliseconds).
    pub open_voice: Option<(String, i64)>,
    /// The latest time (epoch milliseconds) of a voice event walked.
    pub latest_voice_at: Option<i64>,
}

/// What usage needs of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub event_id: EventId,
    /// Epoch milliseconds.
    pub at: i64,
    pub effect: Effect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `Activity` and `Disconnected`: messages counted on the event's day.
    Messages(u64),
    VoiceStarted(String),
    VoiceEnded(String),
    /// `Connected`: counted as an event, nothing else.
    Nothing,
}

/// The fold cannot go on from its own state: fold again from the whole history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedsHistory;

impl UsageEvent {
    pub fn of(envelope: &EventEnvelope) -> Self {
        let effect = match &envelope.event {
            ConnectionEvent::Activity { message_count, .. } | ConnectionEvent::Disconnected { message_count, .. } => {
                Effect::Messages(*message_count)
            }
            ConnectionEvent::VoiceStarted { session_id, .. } => Effect::VoiceStarted(session_id.clone()),
            ConnectionEvent::VoiceEnded { session_id } => Effect::VoiceEnded(session_id.clone()),
            ConnectionEvent::Connected { .. } | ConnectionEvent::Resumed { .. } => Effect::Nothing,
        };
        UsageEvent { event_id: envelope.event_id, at: envelope.at.epoch_millis(), effect }
    }
}

impl Walked {
    /// One step of the walk, as [`ConnectionUsage::of`] takes it, but for the
    /// connection's end (the caller checks the end against `latest_voice_at`).
    fn step(&mut self, start: i64, event: &UsageEvent) {
        self.events += 1;
        let at = event.at.max(start);
        match &event.effect {
            Effect::Messages(count) => self.day(event.at).messages += count,
            Effect::VoiceStarted(session_id) => {
                self.saw_voice(event.at);
                if self.open_voice.as_ref().is_some_and(|(open_id, _)| open_id == session_id) {
                    return;
                }
                if let Some((_, since)) = self.open_voice.take() {
                    spread(&mut self.days, since, at, |figures, ms| figures.voice_ms += ms);
                }
                self.day(event.at).voice_sessions += 1;
                self.open_voice = Some((session_id.clone(), at));
            }
            Effect::VoiceEnded(session_id) => {
                self.saw_voice(event.at);
                if let Some((open_id, since)) = &self.open_voice
                    && open_id == session_id
                {
                    spread(&mut self.days, *since, at, |figures, ms| figures.voice_ms += ms);
                    self.open_voice = None;
                }
            }
            Effect::Nothing => {}
        }
    }

    fn saw_voice(&mut self, at: i64) {
        self.latest_voice_at = Some(self.latest_voice_at.map_or(at, |latest| latest.max(at)));
    }

    fn day(&mut self, epoch_millis: i64) -> &mut Figures {
        figures_on(&mut self.days, epoch_millis)
    }
}

impl UsageFold {
    /// A fold that has walked nothing, for a connection that starts at `start`.
    pub fn new(start: Timestamp) -> Self {
        UsageFold { start, through: None, base: Walked::default(), tail: Vec::new() }
    }

    /// The fold of a whole history (of the connection of `view`, the fold of these
    /// events; in any order, with any repetition).
    pub fn of_history(view: &impl Lifespan, events: &[&EventEnvelope]) -> Self {
        let mut history: Vec<UsageEvent> = events
            .iter()
            .filter(|event| event.connection_id == *view.connection_id())
            .map(|event| UsageEvent::of(event))
            .collect();
        history.sort_by_key(|event| event.event_id);
        history.dedup_by_key(|event| event.event_id);
        let mut fold = UsageFold::new(view.start());
        fold.tail = history;
        fold.settle();
        fold
    }

    /// Adds `events` (of the connection of `view`, which has already folded them).
    /// Events already in the tail are repeats and change nothing.
    pub fn advance(&mut self, view: &impl Lifespan, events: &[&EventEnvelope]) -> Result<(), NeedsHistory> {
        if view.start() != self.start {
            return Err(NeedsHistory);
        }
        for event in events.iter().filter(|event| event.connection_id == *view.connection_id()) {
            if self.through.is_some_and(|through| event.event_id <= through) {
                return Err(NeedsHistory);
            }
            if let Err(position) = self.tail.binary_search_by_key(&event.event_id, |walked| walked.event_id) {
                self.tail.insert(position, UsageEvent::of(event));
            }
        }
        self.settle();
        Ok(())
    }

    /// Moves the tail's oldest events into the base until the tail fits.
    fn settle(&mut self) {
        let excess = self.tail.len().saturating_sub(TAIL_LENGTH);
        let start = self.start.epoch_millis();
        for event in self.tail.drain(..excess) {
            self.base.step(start, &event);
            self.through = Some(event.event_id);
        }
    }

    /// The usage of the events walked, closed at the end of `view` (the fold of the
    /// same events); `None` when only the whole history can tell (see the module's
    /// documentation).
    pub fn usage(&self, view: &impl Lifespan) -> Option<ConnectionUsage> {
        if view.start() != self.start {
            return None;
        }
        let start = self.start.epoch_millis();
        let mut walked = self.base.clone();
        for event in &self.tail {
            walked.step(start, event);
        }
        let end = view.end().map_or(start, |end| end.epoch_millis()).max(start);
        if walked.latest_voice_at.is_some_and(|latest| latest > end) {
            return None;
        }
        let Walked { events, mut days, open_voice, .. } = walked;
        figures_on(&mut days, start).connections += 1;
        spread(&mut days, start, end, |figures, ms| figures.connected_ms += ms);
        if let Some((_, since)) = open_voice {
            spread(&mut days, since, end, |figures, ms| figures.voice_ms += ms);
        }
        Some(ConnectionUsage { events, days })
    }
}
