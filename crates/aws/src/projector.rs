//! The projector: folds a batch of change records (a DynamoDB Streams batch, or the
//! embedded store's change feed) into the views.
//!
//! One read and one conditional write per connection per batch, whatever the
//! number of its events and the length of its history. Records of one connection may come in any order and more
//! than once; the fold makes that harmless. When a connection's view cannot be
//! written, the batch reports the earliest record of that connection, so the
//! source retries from there (everything after it is reprocessed, idempotently).

use std::collections::HashMap;

use futures::stream::{self, StreamExt};

use crate::domain::presence::PresenceEvent;
use crate::domain::{ConnectionId, ConnectionInfo, EventEnvelope, Timestamp};
use crate::metrics::{Metrics, names};
pub use crate::ports::{Change, ChangeRecord};
use crate::ports::{EventStore, ViewStore};
use crate::presence::Presence;
use crate::projection::{Projected, ProjectionOutcome, project_connection};

/// How many connections of one batch are projected at once.
const CONCURRENCY: usize = 8;

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The sequence number to restart from, when some view could not be written.
    pub retry_from: Option<String>,
    /// Set when a failed connection's earliest record has no sequence number, so
    /// only a retry of the whole batch is safe.
    pub retry_whole_batch: bool,
    pub connections: usize,
    pub written: usize,
    pub unchanged: usize,
    pub failed: usize,
    /// Records of the connections in `failed` (each will be delivered again).
    pub failed_records: usize,
    pub ignored: usize,
    pub poison: usize,
    /// Whole-history reads (see [`project_connection`]): 0 for a batch of events
    /// that come after what the views have folded.
    pub history_reads: usize,
    /// The views as stored after the batch, each with the index of its
    /// connection's first record.
    pub views: Vec<(usize, ConnectionInfo)>,
    /// Presence events the batch made (see [`project_with_presence`]).
    pub presence_told: Vec<PresenceEvent>,
}

/// Projects one batch.
pub async fn project_batch(views: &dyn ViewStore, ledger: &dyn EventStore, records: &[ChangeRecord]) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    // Connections in the order of their first record, with that record's index.
    let mut order: Vec<ConnectionId> = Vec::new();
    let mut groups: HashMap<ConnectionId, (usize, Vec<EventEnvelope>)> = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        match &record.change {
            Change::Appended(event) => {
                let group = groups.entry(event.connection_id.clone()).or_insert_with(|| {
                    order.push(event.connection_id.clone());
                    (index, Vec::new())
                });
                group.1.push(event.clone());
            }
            Change::Ignored(why) => {
                tracing::debug!(record_id = %record.record_id, why, "record ignored");
                outcome.ignored += 1;
            }
            Change::Poison(error) => {
                tracing::error!(record_id = %record.record_id, %error, "poison record skipped");
                outcome.poison += 1;
            }
        }
    }
    outcome.connections = order.len();

    let results: Vec<(usize, usize, Result<Projected, crate::ports::StoreError>)> = stream::iter(order)
        .map(|connection_id| {
            let (first_index, events) = groups.remove(&connection_id).unwrap_or_default();
            async move { (first_index, events.len(), project_connection(views, ledger, &events).await) }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    let mut earliest_failure: Option<usize> = None;
    for (first_index, record_count, result) in results {
        match result {
            Ok(projected) => {
                outcome.history_reads += projected.history_reads as usize;
                if let Some(view) = projected.view {
                    outcome.views.push((first_index, view));
                }
                match projected.outcome {
                    ProjectionOutcome::Written { .. } => outcome.written += 1,
                    ProjectionOutcome::Unchanged => outcome.unchanged += 1,
                }
            }
            Err(error) => {
                tracing::error!(record_id = %records[first_index].record_id, error = %crate::error_chain::chain(&error), "writing a view failed");
                outcome.failed += 1;
                outcome.failed_records += record_count;
                earliest_failure = Some(earliest_failure.map_or(first_index, |index| index.min(first_index)));
            }
        }
    }
    retry_from(&mut outcome, records, earliest_failure);
    outcome
}

/// Sets where the batch restarts: at the record at `earliest_failure`, if any.
fn retry_from(outcome: &mut BatchOutcome, records: &[ChangeRecord], earliest_failure: Option<usize>) {
    if let Some(index) = earliest_failure {
        outcome.retry_from = None;
        outcome.retry_whole_batch = false;
        match &records[index].sequence_number {
            Some(sequence_number) => outcome.retry_from = Some(sequence_number.clone()),
            None => outcome.retry_whole_batch = true,
        }
    }
}

/// Projects one batch, then brings the presence of its users up to date at `now`.
/// A user whose presence could not be written restarts the batch at the first
/// record of that user's connections, as a failed view does (both are idempotent).
pub async fn project_with_presence(
    views: &dyn ViewStore,
    ledger: &dyn EventStore,
    records: &[ChangeRecord],
    presence: Option<&Presence>,
    now: Timestamp,
) -> BatchOutcome {
    let mut outcome = project_batch(views, ledger, records).await;
    let Some(presence) = presence else { return outcome };
    let projected: Vec<ConnectionInfo> = outcome.views.iter().map(|(_, view)| view.clone()).collect();
    let report = crate::presence::observe(presence, &projected, now).await;
    outcome.presence_told = report.told;
    let presence_failure =
        outcome.views.iter().filter(|(_, view)| report.failed.contains(&view.user_id)).map(|(index, _)| *index).min();
    let view_failure = outcome.retry_from.as_ref().and_then(|sequence_number| {
        records.iter().position(|record| record.sequence_number.as_ref() == Some(sequence_number))
    });
    let earliest = match (presence_failure, view_failure) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if presence_failure.is_some() && !outcome.retry_whole_batch {
        retry_from(&mut outcome, records, earliest);
    }
    outcome
}

/// Counts a projected batch into `metrics`: its records, the views written, poison
/// and failed records, and its lag (the largest `now - at` of its events).
pub fn count_batch(metrics: &Metrics, records: &[ChangeRecord], outcome: &BatchOutcome, now: Timestamp) {
    metrics.add(names::RECORDS, records.len() as u64);
    metrics.add(names::VIEWS_WRITTEN, outcome.written as u64);
    metrics.add(names::POISON_RECORDS, outcome.poison as u64);
    metrics.add(names::FAILED_RECORDS, outcome.failed_records as u64);
    metrics.add(names::HISTORY_READS, outcome.history_reads as u64);
    let lag = records
        .iter()
        .filter_map(|record| match &record.change {
            Change::Appended(event) => Some(now.epoch_millis() - event.at.epoch_millis()),
            _ => None,
        })
        .max();
    if let Some(lag) = lag {
        metrics.observe(names::PROJECTION_LAG_MS, lag.max(0) as f64);
    }
}

#[cfg(test)]
mod tests;
