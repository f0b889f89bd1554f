//! Time as the ledger stores it: UTC with millisecond precision.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

/// An instant in UTC, truncated to the millisecond (API Gateway's `requestTimeEpoch`
/// resolution). Formats as RFC 3339 with exactly three fractional digits and `Z`, so
/// the text form sorts like the instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: {reason}")]
pub struct InvalidTimestamp {
    pub input: String,
    pub reason: String,
}

impl Timestamp {
    pub fn from_epoch_millis(millis: i64) -> Self {
        // Anything chrono cannot represent is clamped: a timestamp must always exist
        // so that decoding stored history cannot fail on it.
        let millis = millis.clamp(0, 253_402_300_799_999);
        Self(DateTime::from_timestamp_millis(millis).unwrap_or_default())
    }

    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Self::from_epoch_millis(at.timestamp_millis())
    }

    pub fn now() -> Self {
        Self::from_datetime(Utc::now())
    }

    pub fn epoch_millis(&self) -> i64 {
        self.0.timestamp_millis()
    }

    pub(crate) fn epoch_millis_u64(&self) -> u64 {
        self.epoch_millis() as u64
    }

    pub fn epoch_seconds(&self) -> i64 {
        self.0.timestamp()
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    pub fn to_rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Parses RFC 3339 with any offset and precision; the result is UTC, in milliseconds.
    pub fn parse_rfc3339(input: &str) -> Result<Self, InvalidTimestamp> {
        DateTime::parse_from_rfc3339(input)
            .map(|at| Self::from_datetime(at.with_timezone(&Utc)))
            .map_err(|error| InvalidTimestamp { input: input.to_owned(), reason: error.to_string() })
    }

    pub fn plus(&self, delta: TimeDelta) -> Self {
        Self::from_epoch_millis(self.epoch_millis().saturating_add(delta.num_milliseconds()))
    }

    pub fn minus(&self, delta: TimeDelta) -> Self {
        Self::from_epoch_millis(self.epoch_millis().saturating_sub(delta.num_milliseconds()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl FromStr for Timestamp {
    type Err = InvalidTimestamp;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::parse_rfc3339(input)
    }
}

/// A half-open range of time, `[since, until)`; either end may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl TimeRange {
    pub const ALL: TimeRange = TimeRange { since: None, until: None };

    pub fn between(since: Timestamp, until: Timestamp) -> Self {
        Self { since: Some(since), until: Some(until) }
    }

    pub fn contains(&self, at: Timestamp) -> bool {
        self.since.is_none_or(|since| since <= at) && self.until.is_none_or(|until| at < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds_and_z() {
        let at = Timestamp::from_epoch_millis(1_764_000_000_005);
        assert_eq!(at.to_rfc3339(), "2025-11-24T16:00:00.005Z");
        assert_eq!(Timestamp::parse_rfc3339(&at.to_rfc3339()), Ok(at));
    }

    #[test]
    fn parses_offsets_into_utc_and_truncates() {
        let at = Timestamp::parse_rfc3339("2025-11-24T17:00:00.0059+01:00").unwrap();
        assert_eq!(at.to_rfc3339(), "2025-11-24T16:00:00.005Z");
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn range_is_half_open() {
        let a = Timestamp::from_epoch_millis(1000);
        let b = Timestamp::from_epoch_millis(2000);
        let range = TimeRange::between(a, b);
        assert!(range.contains(a));
        assert!(!range.contains(b));
        assert!(TimeRange::ALL.contains(b));
    }
}
