//! The kind of an event, without its data: a leaf that the events and the event
//! ids (whose derivation includes the kind) both use, so neither imports the other.

use std::fmt;

/// The kind of an event, without its data. Part of the event id derivation, so the
/// text of each kind is part of the stored format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    Connected,
    Activity,
    VoiceStarted,
    VoiceEnded,
    Disconnected,
    /// A client's `resume` (reconnect recovery): what it asked, what it got.
    Resumed,
}

impl EventKind {
    /// The kinds in the order of a connection's life, which is also the order of
    /// events of one millisecond (see [`EventKind::lifecycle_rank`]).
    pub const LIFECYCLE: [EventKind; 6] = [
        EventKind::Connected,
        EventKind::Resumed,
        EventKind::VoiceStarted,
        EventKind::Activity,
        EventKind::VoiceEnded,
        EventKind::Disconnected,
    ];

    /// The kind's place in a connection's life: events of one millisecond sort by
    /// it. `Activity` (the messages of an interval) sits between the start and the
    /// end of a voice session, whose audio it counts; a session's end and the
    /// connection's end come last. `Resumed` (added later) shares `VoiceStarted`'s
    /// rank: after `Connected`, before the rest, the hash deciding between the two.
    pub fn lifecycle_rank(&self) -> u8 {
        match self {
            EventKind::Connected => 0,
            EventKind::VoiceStarted | EventKind::Resumed => 1,
            EventKind::Activity => 2,
            EventKind::VoiceEnded => 3,
            EventKind::Disconnected => 4,
        }
    }

    pub const ALL: [EventKind; 6] = [
        EventKind::Connected,
        EventKind::Activity,
        EventKind::VoiceStarted,
        EventKind::VoiceEnded,
        EventKind::Disconnected,
        EventKind::Resumed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Connected => "Connected",
            EventKind::Activity => "Activity",
            EventKind::VoiceStarted => "VoiceStarted",
            EventKind::VoiceEnded => "VoiceEnded",
            EventKind::Disconnected => "Disconnected",
            EventKind::Resumed => "Resumed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str().eq_ignore_ascii_case(value))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
