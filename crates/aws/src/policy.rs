//! Opt-in limits on what one user or connection may do, enforced by the handler
//! (in Lambda and in `serve` alike) and visible in the ledger and the metrics.
//!
//! - `MAX_CONNECTIONS_PER_USER`: a `$connect` beyond it is refused and recorded;
//! - `MAX_MESSAGES_PER_SECOND` per connection: a token bucket, burst equal to the rate;
//! - `MAX_LEDGER_EVENTS_PER_MINUTE` per connection (on by default, 30): voice
//!   events (`voice_start`, `voice_end`), which each write a ledger event;
//! - `MAX_VOICE_SECONDS_PER_DAY` per user: a `voice_start` beyond it is refused (a
//!   session already running is not cut).
//!
//! The buckets live in the warm handler: in Lambda each container keeps its own,
//! so N containers serving one connection allow up to N times the rate. Time is the
//! request's time, not the handler's clock.

use std::collections::HashMap;

use crate::domain::{ConnectionId, MAX_CONNECTION_DURATION, Timestamp};

/// The limits; 0 is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policies {
    pub max_connections_per_user: u32,
    pub max_messages_per_second: u32,
    pub max_ledger_events_per_minute: u32,
    pub max_voice_seconds_per_day: u64,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            max_connections_per_user: 0,
            max_messages_per_second: 0,
            max_ledger_events_per_minute: 30,
            max_voice_seconds_per_day: 0,
        }
    }
}

impl Policies {
    /// The defaults, overridden by the variables of the same names as `lookup` finds them.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let number = |name: &str| crate::setting::number::<u64>(&lookup, name);
        let small = |name: &str, value: u64| u32::try_from(value).map_err(|_| format!("{name}={value} is too large"));
        let mut policies = Self::default();
        if let Some(value) = number("MAX_CONNECTIONS_PER_USER")? {
            policies.max_connections_per_user = small("MAX_CONNECTIONS_PER_USER", value)?;
        }
        if let Some(value) = number("MAX_MESSAGES_PER_SECOND")? {
            policies.max_messages_per_second = small("MAX_MESSAGES_PER_SECOND", value)?;
        }
        if let Some(value) = number("MAX_LEDGER_EVENTS_PER_MINUTE")? {
            policies.max_ledger_events_per_minute = small("MAX_LEDGER_EVENTS_PER_MINUTE", value)?;
        }
        if let Some(value) = number("MAX_VOICE_SECONDS_PER_DAY")? {
            policies.max_voice_seconds_per_day = value;
        }
        Ok(policies)
    }

    /// Whether a policy needs the views (the user's live connections, today's usage).
    pub fn needs_views(&self) -> bool {
        self.max_connections_per_user > 0 || self.max_voice_seconds_per_day > 0
    }
}

/// A token bucket: `capacity` tokens, refilled at `per_ms` tokens a millisecond.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl Bucket {
    fn take(bucket: &mut Option<Bucket>, capacity: f64, per_ms: f64, now_ms: i64) -> bool {
        let state = bucket.get_or_insert(Bucket { tokens: capacity, at_ms: now_ms });
        let elapsed = (now_ms - state.at_ms).max(0) as f64;
        state.tokens = (state.tokens + elapsed * per_ms).min(capacity);
        state.at_ms = state.at_ms.max(now_ms);
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
struct ConnectionLimits {
    messages: Option<Bucket>,
    ledger_events: Option<Bucket>,
    last_logged_ms: Option<i64>,
    last_seen_ms: i64,
}

/// What a limit decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused; `log` is true at most once per connection per minute.
    Limited {
        log: bool,
    },
}

/// Above this many tracked connections, ones quiet for longer than API Gateway's
/// maximum connection duration are forgotten.
const MAX_TRACKED_CONNECTIONS: usize = 100_000;

/// The per-connection buckets of the warm handler.
#[derive(Debug)]
pub struct Limiter {
    policies: Policies,
    connections: HashMap<ConnectionId, ConnectionLimits>,
}

impl Limiter {
    pub fn new(policies: Policies) -> Self {
        Self { policies, connections: HashMap::new() }
    }

    fn limits(&mut self, connection_id: &ConnectionId, now_ms: i64) -> &mut ConnectionLimits {
        if self.connections.len() >= MAX_TRACKED_CONNECTIONS && !self.connections.contains_key(connection_id) {
            let horizon = now_ms - MAX_CONNECTION_DURATION.num_milliseconds();
            self.connections.retain(|_, limits| limits.last_seen_ms > horizon);
        }
        let limits = self.connections.entry(connection_id.clone()).or_default();
        limits.last_seen_ms = limits.last_seen_ms.max(now_ms);
        limits
    }

    fn verdict(limits: &mut ConnectionLimits, allowed: bool, now_ms: i64) -> Verdict {
        if allowed {
            return Verdict::Allowed;
        }
        let log = limits.last_logged_ms.is_none_or(|last| now_ms - last >= 60_000);
        if log {
            limits.last_logged_ms = Some(now_ms);
        }
        Verdict::Limited { log }
    }

    /// One more message of the connection (`MAX_MESSAGES_PER_SECOND`).
    pub fn message(&mut self, connection_id: &ConnectionId, at: Timestamp) -> Verdict {
        let rate = self.policies.max_messages_per_second;
        self.take(connection_id, at, rate, 1_000, |limits| &mut limits.messages)
    }

    /// One more voice event of the connection (`MAX_LEDGER_EVENTS_PER_MINUTE`).
    pub fn ledger_event(&mut self, connection_id: &ConnectionId, at: Timestamp) -> Verdict {
        let rate = self.policies.max_ledger_events_per_minute;
        self.take(connection_id, at, rate, 60_000, |limits| &mut limits.ledger_events)
    }

    /// Takes a token from the bucket `bucket` picks (`rate` tokens per `period_ms`,
    /// burst equal to the rate; a rate of 0 is no limit).
    fn take(
        &mut self,
        connection_id: &ConnectionId,
        at: Timestamp,
        rate: u32,
        period_ms: u32,
        bucket: fn(&mut ConnectionLimits) -> &mut Option<Bucket>,
    ) -> Verdict {
        if rate == 0 {
            return Verdict::Allowed;
        }
        let now_ms = at.epoch_millis();
        let limits = self.limits(connection_id, now_ms);
        let capacity = f64::from(rate);
        let allowed = Bucket::take(bucket(limits), capacity, capacity / f64::from(period_ms), now_ms);
        Self::verdict(limits, allowed, now_ms)
    }

    /// Whether to log a refusal of the connection now (once per minute at most).
    pub fn should_log(&mut self, connection_id: &ConnectionId, at: Timestamp) -> bool {
        let now_ms = at.epoch_millis();
        let limits = self.limits(connection_id, now_ms);
        matches!(Self::verdict(limits, false, now_ms), Verdict::Limited { log: true })
    }

    pub fn forget(&mut self, connection_id: &ConnectionId) {
        self.connections.remove(connection_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_epoch_millis(1_764_000_000_000 + ms)
    }

    #[test]
    fn a_burst_equal_to_the_rate_then_the_rate() {
        let mut limiter = Limiter::new(Policies { max_messages_per_second: 5, ..Policies::default() });
        let connection = ConnectionId::parse("c").unwrap();
        let allowed = (0..20).filter(|_| limiter.message(&connection, at(0)) == Verdict::Allowed).count();
        assert_eq!(allowed, 5, "the burst");
        assert_eq!(limiter.message(&connection, at(100)), Verdict::Limited { log: false }, "logged once a minute");
        assert_eq!(limiter.message(&connection, at(200)), Verdict::Allowed, "one token per 200 ms");
        let other = ConnectionId::parse("d").unwrap();
        assert_eq!(limiter.message(&other, at(200)), Verdict::Allowed, "per connection");
    }

    #[test]
    fn voice_events_are_capped_per_minute_by_default() {
        let mut limiter = Limiter::new(Policies::default());
        let connection = ConnectionId::parse("c").unwrap();
        let allowed =
            (0..10_000).filter(|index| limiter.ledger_event(&connection, at(*index)) == Verdict::Allowed).count();
        // 30 at once, then one every 2 s of the 10 s the messages span.
        assert!((30..=35).contains(&allowed), "{allowed}");
        let unlimited = Policies { max_ledger_events_per_minute: 0, ..Policies::default() };
        let mut limiter = Limiter::new(unlimited);
        assert!((0..100).all(|_| limiter.ledger_event(&connection, at(0)) == Verdict::Allowed));
    }

    #[test]
    fn policies_come_from_the_environment() {
        let environment: HashMap<&str, &str> =
            [("MAX_CONNECTIONS_PER_USER", "2"), ("MAX_LEDGER_EVENTS_PER_MINUTE", "0")].into();
        let policies = Policies::from_lookup(|name| environment.get(name).map(|value| value.to_string())).unwrap();
        assert_eq!(policies.max_connections_per_user, 2);
        assert_eq!(policies.max_ledger_events_per_minute, 0);
        assert!(policies.needs_views());
        assert!(Policies::from_lookup(|_| Some("-1".into())).is_err());
    }
}
