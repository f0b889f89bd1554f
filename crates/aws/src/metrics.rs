//! Counters of what the services did, so that every handled failure leaves the
//! process. The handler, the authorizer, the projector and the sweep count into one
//! [`Metrics`]; the entry points take the counts out: as CloudWatch Embedded Metric
//! Format lines after each Lambda invocation (`adapters::emf`), as Prometheus text
//! at `GET /metrics` in `serve` (`local::gateway::prometheus`). No I/O here.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// The metric names (CloudWatch's; `serve` writes them in snake case).
pub mod names {
    // connection-handler
    pub const MESSAGES: &str = "Messages";
    /// By `Code` (the error frame's code).
    pub const REJECTED: &str = "Rejected";
    pub const EVENTS_APPENDED: &str = "EventsAppended";
    pub const DUPLICATE_APPENDS: &str = "DuplicateAppends";
    pub const UNAVAILABLE: &str = "Unavailable";
    /// By `Policy`: `$connect`s refused by a policy.
    pub const CONNECTS_REFUSED: &str = "ConnectsRefused";
    // authorizer
    pub const ALLOWED: &str = "Allowed";
    /// By `Reason`.
    pub const DENIED: &str = "Denied";
    pub const JWKS_FETCHES: &str = "JwksFetches";
    pub const JWKS_FETCH_FAILURES: &str = "JwksFetchFailures";
    // projector
    pub const RECORDS: &str = "Records";
    pub const VIEWS_WRITTEN: &str = "ViewsWritten";
    pub const POISON_RECORDS: &str = "PoisonRecords";
    pub const FAILED_RECORDS: &str = "FailedRecords";
    /// Projections that had to read a connection's whole history (a view without
    /// the usage walk, or an event older than the walk's tail).
    pub const HISTORY_READS: &str = "HistoryReads";
    /// The largest `now - at` of a batch's events, in milliseconds.
    pub const PROJECTION_LAG_MS: &str = "ProjectionLagMs";
    // reconnect recovery (connection-handler, `send`)
    /// Messages numbered and kept for a `resume` (by `send_to_user` with a
    /// registry in its `Recovery`; no function sends, so no EMF line carries it).
    pub const MESSAGES_KEPT: &str = "MessagesKept";
    /// Messages a `resume` sent again.
    pub const MESSAGES_REPLAYED: &str = "MessagesReplayed";
    /// By `Reason` (`expired`, `too_many`, `too_large`): resumes answered `resume_failed`.
    pub const RESUME_FAILURES: &str = "ResumeFailures";
    /// Kept messages removed past the window by the embedded store's sweep.
    pub const MESSAGES_EXPIRED: &str = "MessagesExpired";
    // presence (projector)
    /// Presence events made (`user.online`, ...).
    pub const PRESENCE_EVENTS: &str = "PresenceEvents";
    /// Presence events a sink took.
    pub const PRESENCE_DELIVERED: &str = "PresenceDelivered";
    /// By `Sink`: publishes that failed (the events stay owed and are tried again).
    pub const PRESENCE_DELIVERY_FAILURES: &str = "PresenceDeliveryFailures";
    /// Presence events dropped from a full outbox (a sink down for long).
    pub const PRESENCE_EVENTS_DROPPED: &str = "PresenceEventsDropped";
    // sweep
    pub const SUSPECTS: &str = "Suspects";
    pub const GONE: &str = "Gone";
    pub const ALIVE: &str = "Alive";
    // serve
    pub const REFUSED_SOCKETS: &str = "RefusedSockets";
    pub const CORRUPT_VIEWS: &str = "CorruptViews";
    pub const OPEN_CONNECTIONS: &str = "OpenConnections";

    /// The counters and gauges the Lambda functions write (EMF), by name.
    pub const FUNCTION_METRICS: [&str; 25] = [
        MESSAGES,
        REJECTED,
        EVENTS_APPENDED,
        DUPLICATE_APPENDS,
        UNAVAILABLE,
        CONNECTS_REFUSED,
        ALLOWED,
        DENIED,
        JWKS_FETCHES,
        JWKS_FETCH_FAILURES,
        RECORDS,
        VIEWS_WRITTEN,
        POISON_RECORDS,
        FAILED_RECORDS,
        HISTORY_READS,
        PROJECTION_LAG_MS,
        MESSAGES_REPLAYED,
        RESUME_FAILURES,
        PRESENCE_EVENTS,
        PRESENCE_DELIVERED,
        PRESENCE_DELIVERY_FAILURES,
        PRESENCE_EVENTS_DROPPED,
        SUSPECTS,
        GONE,
        ALIVE,
    ];

    /// The dimensions besides `FunctionName` that counters carry.
    pub const DIMENSIONS: [&str; 4] = ["Code", "Reason", "Policy", "Sink"];
}

/// One counter: a name and at most one dimension (`Code`, `Reason`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub name: &'static str,
    pub dimension: Option<(&'static str, String)>,
}

/// What changed since the previous [`Metrics::take`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    /// Counters that grew, by how much.
    pub counts: Vec<(Key, u64)>,
    /// Gauges observed since (the largest value of each).
    pub maxima: Vec<(&'static str, f64)>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.maxima.is_empty()
    }
}

#[derive(Debug, Default)]
struct Inner {
    counts: BTreeMap<Key, u64>,
    taken: BTreeMap<Key, u64>,
    /// The largest value since the last take, and the last value ever (for Prometheus).
    maxima: BTreeMap<&'static str, f64>,
    gauges: BTreeMap<&'static str, f64>,
}

/// A process's counters. Cheap to update from many tasks; never poisoned for good.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Each update is one map entry: the data is valid whatever a panic interrupted.
        crate::sync::lock(&self.inner)
    }

    pub fn add(&self, name: &'static str, count: u64) {
        if count > 0 {
            *self.inner().counts.entry(Key { name, dimension: None }).or_default() += count;
        }
    }

    pub fn add_by(&self, name: &'static str, dimension: &'static str, value: &str, count: u64) {
        if count > 0 {
            let key = Key { name, dimension: Some((dimension, value.to_owned())) };
            *self.inner().counts.entry(key).or_default() += count;
        }
    }

    /// Records a gauge value (kept: the largest since the last take, and the latest).
    pub fn observe(&self, name: &'static str, value: f64) {
        let mut inner = self.inner();
        let maximum = inner.maxima.entry(name).or_insert(value);
        *maximum = maximum.max(value);
        inner.gauges.insert(name, value);
    }

    /// A gauge's latest value.
    pub fn gauge(&self, name: &'static str) -> Option<f64> {
        self.inner().gauges.get(name).copied()
    }

    /// The total of a counter over all its dimensions.
    pub fn total(&self, name: &str) -> u64 {
        self.inner().counts.iter().filter(|(key, _)| key.name == name).map(|(_, count)| count).sum()
    }

    /// A counter with one dimension value.
    pub fn count_by(&self, name: &str, value: &str) -> u64 {
        self.inner()
            .counts
            .iter()
            .filter(|(key, _)| key.name == name && key.dimension.as_ref().is_some_and(|(_, seen)| seen == value))
            .map(|(_, count)| count)
            .sum()
    }

    /// Every counter since the process started.
    pub fn counts(&self) -> Vec<(Key, u64)> {
        self.inner().counts.iter().map(|(key, count)| (key.clone(), *count)).collect()
    }

    /// Every gauge's latest value.
    pub fn gauges(&self) -> Vec<(&'static str, f64)> {
        self.inner().gauges.iter().map(|(name, value)| (*name, *value)).collect()
    }

    /// What changed since the previous call (each Lambda invocation emits this).
    pub fn take(&self) -> Delta {
        let mut inner = self.inner();
        let mut counts = Vec::new();
        let current: Vec<(Key, u64)> = inner.counts.iter().map(|(key, count)| (key.clone(), *count)).collect();
        for (key, count) in current {
            let taken = inner.taken.entry(key.clone()).or_default();
            if count > *taken {
                counts.push((key, count - *taken));
                *taken = count;
            }
        }
        let maxima = std::mem::take(&mut inner.maxima).into_iter().collect();
        Delta { counts, maxima }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_gives_what_changed_and_totals_keep_everything() {
        let metrics = Metrics::new();
        metrics.add(names::MESSAGES, 2);
        metrics.add_by(names::REJECTED, "Code", "invalid_json", 1);
        metrics.observe(names::PROJECTION_LAG_MS, 40.0);
        metrics.observe(names::PROJECTION_LAG_MS, 15.0);
        let first = metrics.take();
        assert_eq!(first.counts.len(), 2);
        assert_eq!(first.maxima, vec![(names::PROJECTION_LAG_MS, 40.0)]);
        assert!(metrics.take().is_empty(), "nothing new");
        metrics.add(names::MESSAGES, 3);
        assert_eq!(metrics.take().counts, vec![(Key { name: names::MESSAGES, dimension: None }, 3)]);
        assert_eq!(metrics.total(names::MESSAGES), 5);
        assert_eq!(metrics.count_by(names::REJECTED, "invalid_json"), 1);
        assert_eq!(metrics.gauge(names::PROJECTION_LAG_MS), Some(15.0));
    }
}
