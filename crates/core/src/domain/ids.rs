//! Identifiers. Each is parsed once at the edge and is valid from then on.

use std::fmt;

use sha2::{Digest, Sha256};
use ulid::Ulid;

use super::kind::EventKind;
use super::time::{TimeRange, Timestamp};

/// The longest identifier accepted from the outside. API Gateway connection ids are
/// 16 characters and Cognito `sub`s 36; anything far longer is a mistake or an attack.
const MAX_ID_LEN: usize = 256;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is longer than {MAX_ID_LEN} characters")]
    TooLong { kind: &'static str },
    #[error("{kind} contains a control or whitespace character")]
    BadCharacter { kind: &'static str },
    #[error("{kind} is not a ULID: {reason}")]
    NotUlid { kind: &'static str, reason: String },
}

fn validate(kind: &'static str, value: &str) -> Result<(), InvalidId> {
    if value.is_empty() {
        return Err(InvalidId::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(InvalidId::TooLong { kind });
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(InvalidId::BadCharacter { kind });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// An API Gateway connection id.
    ConnectionId,
    "connection id"
);
string_id!(
    /// The authenticated user: the `sub` the authorizer put in the request context.
    UserId,
    "user id"
);

/// The id of one event: a ULID, so ids sort by time.
///
/// Ids are derived, not drawn: the time part is the API Gateway request time (in
/// milliseconds); the 80-bit random part starts with the kind's place in a
/// connection's life ([`EventKind::lifecycle_rank`], 3 bits) and ends with a hash
/// of the request id and the kind (77 bits). Events of one millisecond therefore
/// sort in lifecycle order (`Connected`, `VoiceStarted`, `Activity`, `VoiceEnded`,
/// `Disconnected`), the hash deciding only between events of one kind. A retried
/// invocation of the same request produces the same id, and the conditional
/// append turns the retry into a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(Ulid);

impl EventId {
    /// Derives the id of the event of `kind` caused by the request `request_id`.
    pub fn derive(request_time: Timestamp, request_id: &str, kind: EventKind) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(request_id.as_bytes());
        hasher.update([0u8]);
        hasher.update(kind.as_str().as_bytes());
        let digest = hasher.finalize();
        let mut hash = [0u8; 16];
        hash[6..].copy_from_slice(&digest[..10]);
        let hash = u128::from_be_bytes(hash);
        let random = (u128::from(kind.lifecycle_rank()) << 77) | (hash >> 3);
        Self(Ulid::from_parts(request_time.epoch_millis_u64(), random))
    }

    /// The smallest id of any event at `at` or later.
    pub fn lowest_at(at: Timestamp) -> Self {
        Self(Ulid::from_parts(at.epoch_millis_u64(), 0))
    }

    /// The largest id of any event at `at` or earlier.
    pub fn highest_at(at: Timestamp) -> Self {
        Self(Ulid::from_parts(at.epoch_millis_u64(), (1u128 << 80) - 1))
    }

    /// The id right before this one (`None` before the smallest): an "after" cursor
    /// that starts a listing at this id.
    pub fn predecessor(&self) -> Option<Self> {
        self.0.0.checked_sub(1).map(|value| Self(Ulid(value)))
    }

    /// The smallest id greater than this one (for "after this id" bounds).
    pub fn successor(&self) -> Self {
        Self(Ulid(self.0.0.saturating_add(1)))
    }

    /// The inclusive id bounds of the events of `range` that come after `after`;
    /// `None` when there can be none. Event ids start with their time, so a time
    /// range is an id range, and a store can answer it from a sort key.
    pub fn bounds(range: TimeRange, after: Option<EventId>) -> Option<(EventId, EventId)> {
        let mut lowest = range.since.map_or(EventId(Ulid::nil()), EventId::lowest_at);
        if let Some(after) = after {
            lowest = lowest.max(after.successor());
        }
        let highest = match range.until {
            Some(until) if until.epoch_millis() <= 0 => return None,
            Some(until) => EventId::highest_at(Timestamp::from_epoch_millis(until.epoch_millis() - 1)),
            None => EventId(Ulid::from_parts(Ulid::nil().timestamp_ms() | ((1u64 << 48) - 1), (1u128 << 80) - 1)),
        };
        (lowest <= highest).then_some((lowest, highest))
    }

    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        Ulid::from_string(value)
            .map(Self)
            .map_err(|error| InvalidId::NotUlid { kind: "event id", reason: error.to_string() })
    }

    /// The time encoded in the id (the request time it was derived from).
    pub fn timestamp(&self) -> Timestamp {
        Timestamp::from_epoch_millis(self.0.timestamp_ms() as i64)
    }
}

impl From<Ulid> for EventId {
    fn from(ulid: Ulid) -> Self {
        Self(ulid)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct_per_kind() {
        let at = Timestamp::from_epoch_millis(1_764_000_000_123);
        let first = EventId::derive(at, "req-1", EventKind::Connected);
        let again = EventId::derive(at, "req-1", EventKind::Connected);
        let other_kind = EventId::derive(at, "req-1", EventKind::Activity);
        let other_request = EventId::derive(at, "req-2", EventKind::Connected);
        assert_eq!(first, again);
        assert_ne!(first, other_kind);
        assert_ne!(first, other_request);
        assert_eq!(first.timestamp(), at);
    }

    #[test]
    fn derived_id_is_pinned() {
        // The derivation is part of the stored format: changing it would make a retry
        // after an upgrade write a second copy of an event. The expected text was
        // computed outside Rust (Python): Crockford base32 of
        // (ms << 80 | rank << 77 | int(SHA-256("abc\0Kind")[:10]) >> 3).
        let at = Timestamp::from_epoch_millis(1_764_000_000_123);
        let id = EventId::derive(at, "abc", EventKind::Connected);
        assert_eq!(id.to_string(), EventId::parse(&id.to_string()).unwrap().to_string());
        assert_eq!(id.to_string(), "01KAV9FT3V2KRMX7E5F8FPAMEJ");
        assert_eq!(EventId::derive(at, "abc", EventKind::Disconnected).to_string(), "01KAV9FT3VJT7CJS9PRVV1HKPP");
    }

    #[test]
    fn events_of_one_millisecond_sort_in_lifecycle_order() {
        let at = Timestamp::from_epoch_millis(1_764_000_000_123);
        for request in ["a", "b", "c", "d", "e", "f"] {
            let ids: Vec<EventId> = EventKind::LIFECYCLE
                .iter()
                .enumerate()
                // Each kind from another request: only the kind may decide.
                .map(|(index, kind)| EventId::derive(at, &format!("{request}-{index}"), *kind))
                .collect();
            // Kinds of one rank (`VoiceStarted` and `Resumed`) are ordered by the hash.
            let kinds = EventKind::LIFECYCLE;
            for (a, b) in (0..ids.len()).flat_map(|a| (a + 1..ids.len()).map(move |b| (a, b))) {
                if kinds[a].lifecycle_rank() < kinds[b].lifecycle_rank() {
                    assert!(ids[a] < ids[b], "{request}: {:?} before {:?}: {ids:?}", kinds[a], kinds[b]);
                }
            }
            assert!(ids.iter().all(|id| id.timestamp() == at));
        }
    }

    #[test]
    fn bounds_enclose_derived_ids() {
        let at = Timestamp::from_epoch_millis(1_764_000_000_123);
        let id = EventId::derive(at, "x", EventKind::Disconnected);
        assert!(EventId::lowest_at(at) <= id && id <= EventId::highest_at(at));
    }

    #[test]
    fn bounds_follow_the_range_and_the_cursor() {
        let since = Timestamp::from_epoch_millis(1_000);
        let until = Timestamp::from_epoch_millis(2_000);
        let (lowest, highest) = EventId::bounds(TimeRange::between(since, until), None).unwrap();
        assert_eq!(lowest, EventId::lowest_at(since));
        assert_eq!(highest, EventId::highest_at(Timestamp::from_epoch_millis(1_999)));
        let after = EventId::derive(Timestamp::from_epoch_millis(1_500), "r", EventKind::Activity);
        let (lowest, _) = EventId::bounds(TimeRange::between(since, until), Some(after)).unwrap();
        assert_eq!(lowest, after.successor());
        assert!(EventId::bounds(TimeRange::between(until, since), None).is_none());
        let (_, highest) = EventId::bounds(TimeRange::ALL, Some(after)).unwrap();
        assert_eq!(highest.to_string(), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
    }

    #[test]
    fn ids_reject_empty_long_and_whitespace() {
        assert_eq!(ConnectionId::parse(""), Err(InvalidId::Empty { kind: "connection id" }));
        assert!(UserId::parse("a b").is_err());
        assert!(UserId::parse("x".repeat(300)).is_err());
        assert_eq!(ConnectionId::parse("Abc123=").unwrap().as_str(), "Abc123=");
    }
}
