//! Usage: what a connection used, per UTC day, as a pure function of its history.
//!
//! A sum is not idempotent, so usage is never a plain sum of stream records:
//! [`ConnectionUsage::of`] computes it from the connection's whole history (its
//! distinct events, in any order), and [`UsageFold`] walks on from where the view
//! left it, knowing which events it has walked (a watermark and a tail), so that a
//! repeated or reordered record never counts twice and the stored figures always
//! equal a recomputation.
//!
//! - `connections`: 1, on the day the connection opened;
//! - `connectedMs`: from its opening to its end (a terminal disconnect, or a gone
//!   observation that stands), or for a live one to its latest sign of life;
//! - `messages`: the `messageCount` of its `Activity` events (on each event's day)
//!   and of its `Disconnected` (the messages counted since the last activity);
//! - `voiceSessions`: the sessions it started (on the day each started);
//! - `voiceMs`: each session from its start to its end, or to the next session's
//!   start, capped by the connection's end.
//!
//! Time spans that cross midnight count in each day by their time in that day.

use std::collections::{BTreeMap, HashSet};
use std::ops::AddAssign;

use chrono::NaiveDate;

mod fold;

pub use fold::{Effect, NeedsHistory, TAIL_LENGTH, UsageEvent, UsageFold, Walked};

use super::event::{ConnectionEvent, EventEnvelope};
use super::ids::ConnectionId;
use super::ids::EventId;
use super::time::Timestamp;

const DAY_MS: i64 = 86_400_000;

/// The figures of one connection (or user) on one day (or in total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub connections: u64,
    pub connected_ms: u64,
    pub messages: u64,
    pub voice_sessions: u64,
    pub voice_ms: u64,
}

impl AddAssign for Figures {
    fn add_assign(&mut self, other: Figures) {
        self.connections += other.connections;
        self.connected_ms += other.connected_ms;
        self.messages += other.messages;
        self.voice_sessions += other.voice_sessions;
        self.voice_ms += other.voice_ms;
    }
}

/// A connection's usage, per UTC day, and how many distinct events it was computed
/// from (a computation from more events is newer: events are only ever added, but
/// for TTL, which must never shrink usage).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionUsage {
    pub events: u64,
    pub days: BTreeMap<NaiveDate, Figures>,
}

/// The UTC day of a time in epoch milliseconds.
pub fn day_of(epoch_millis: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(epoch_millis.div_euclid(DAY_MS) * DAY_MS)
        .map(|at| at.date_naive())
        .unwrap_or_default()
}

/// What usage needs to know of a connection: which one it is, and when it started
/// and ended (or was last seen). Its view knows (`ConnectionInfo` implements it),
/// and usage asks no more of it, so neither module imports the other.
pub trait Lifespan {
    fn connection_id(&self) -> &ConnectionId;
    /// When API Gateway opened the connection.
    fn start(&self) -> Timestamp;
    /// Its end (a terminal disconnect, or a gone observation that stands), else its
    /// latest sign of life; `None` when neither is known.
    fn end(&self) -> Option<Timestamp>;
}

impl ConnectionUsage {
    /// The usage of `events`, whose fold (without usage) is `view`; `ConnectionUsage::of`
    /// (with the view, in `view.rs`) folds it first.
    pub(crate) fn of_folded(view: &impl Lifespan, events: &[&EventEnvelope]) -> Self {
        let mut seen: HashSet<EventId> = HashSet::new();
        let mut history: Vec<&EventEnvelope> = events
            .iter()
            .copied()
            .filter(|event| event.connection_id == *view.connection_id() && seen.insert(event.event_id))
            .collect();
        history.sort_by_key(|event| event.event_id);
        let mut usage = ConnectionUsage { events: history.len() as u64, days: BTreeMap::new() };

        let start = view.start().epoch_millis();
        let end = view.end().map_or(start, |end| end.epoch_millis()).max(start);
        usage.day(start).connections += 1;
        usage.spread(start, end, |figures, ms| figures.connected_ms += ms);

        // Voice sessions, in lifecycle order (event ids sort by time, then kind).
        let mut open: Option<(&str, i64)> = None;
        for event in &history {
            let at = event.at.epoch_millis().clamp(start, end);
            match &event.event {
                ConnectionEvent::Activity { message_count, .. }
                | ConnectionEvent::Disconnected { message_count, .. } => {
                    usage.day(event.at.epoch_millis()).messages += message_count;
                }
                ConnectionEvent::VoiceStarted { session_id, .. } => {
                    if open.is_some_and(|(open_id, _)| open_id == session_id) {
                        continue;
                    }
                    if let Some((_, since)) = open.take() {
                        usage.spread(since, at, |figures, ms| figures.voice_ms += ms);
                    }
                    usage.day(event.at.epoch_millis()).voice_sessions += 1;
                    open = Some((session_id, at));
                }
                ConnectionEvent::VoiceEnded { session_id } => {
                    if let Some((open_id, since)) = open
                        && open_id == session_id
                    {
                        usage.spread(since, at, |figures, ms| figures.voice_ms += ms);
                        open = None;
                    }
                }
                ConnectionEvent::Connected { .. } | ConnectionEvent::Resumed { .. } => {}
            }
        }
        if let Some((_, since)) = open {
            usage.spread(since, end, |figures, ms| figures.voice_ms += ms);
        }
        usage
    }

    fn day(&mut self, epoch_millis: i64) -> &mut Figures {
        figures_on(&mut self.days, epoch_millis)
    }

    fn spread(&mut self, from: i64, to: i64, add: impl Fn(&mut Figures, u64)) {
        spread(&mut self.days, from, to, add);
    }

    /// All days together.
    pub fn total(&self) -> Figures {
        let mut total = Figures::default();
        for figures in self.days.values() {
            total += *figures;
        }
        total
    }

    /// Keeps the newer of two computations (the one from more events): a history
    /// that lost events to TTL never shrinks usage.
    pub fn newest(stored: Option<ConnectionUsage>, computed: Option<ConnectionUsage>) -> Option<ConnectionUsage> {
        match (stored, computed) {
            (Some(stored), Some(computed)) if stored.events > computed.events => Some(stored),
            (stored, None) => stored,
            (_, computed) => computed,
        }
    }
}

/// The figures of the day of `epoch_millis`, made empty if that day has none yet.
fn figures_on(days: &mut BTreeMap<NaiveDate, Figures>, epoch_millis: i64) -> &mut Figures {
    days.entry(day_of(epoch_millis)).or_default()
}

/// Adds the span `[from, to)` (epoch milliseconds) to each day it covers, by its
/// time in that day.
fn spread(days: &mut BTreeMap<NaiveDate, Figures>, from: i64, to: i64, add: impl Fn(&mut Figures, u64)) {
    let mut cursor = from;
    while cursor < to {
        let day_end = (cursor.div_euclid(DAY_MS) + 1) * DAY_MS;
        let until = to.min(day_end);
        add(figures_on(days, cursor), (until - cursor) as u64);
        cursor = until;
    }
}

#[cfg(test)]
mod tests;
