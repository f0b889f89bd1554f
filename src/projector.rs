//! The projector: folds a batch of change records (a DynamoDB Streams batch, or the
//! embedded store's change feed) into the views.
//!
//! One read and one conditional write per connection per batch, whatever the
//! number of its events. Records of one connection may come in any order and more
//! than once; the fold makes that harmless. When a connection's view cannot be
//! written, the batch reports the earliest record of that connection, so the
//! source retries from there (everything after it is reprocessed, idempotently).

use std::collections::HashMap;

use futures::stream::{self, StreamExt};

use crate::domain::{ConnectionId, EventEnvelope};
use crate::ports::ViewStore;
use crate::projection::{ProjectionOutcome, project_connection};

/// How many connections of one batch are projected at once.
const CONCURRENCY: usize = 8;

/// One record of a change feed, decoded by the adapter that owns the item format.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    /// The source's record id (`eventID` of a stream record), for logs.
    pub record_id: String,
    /// Where a retry restarts (`SequenceNumber` of a stream record).
    pub sequence_number: Option<String>,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new event in the ledger.
    Appended(EventEnvelope),
    /// A record the projection does not use (a modification, a TTL deletion).
    Ignored(&'static str),
    /// A record that can never be decoded; skipped so it cannot block the ones behind it.
    Poison(String),
}

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
    pub ignored: usize,
    pub poison: usize,
}

/// Projects one batch.
pub async fn project_batch(views: &dyn ViewStore, records: &[ChangeRecord]) -> BatchOutcome {
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

    let results: Vec<(usize, Result<ProjectionOutcome, crate::ports::StoreError>)> = stream::iter(order)
        .map(|connection_id| {
            let (first_index, events) = groups.remove(&connection_id).unwrap_or_default();
            async move { (first_index, project_connection(views, &events).await) }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    let mut earliest_failure: Option<usize> = None;
    for (first_index, result) in results {
        match result {
            Ok(ProjectionOutcome::Written { .. }) => outcome.written += 1,
            Ok(ProjectionOutcome::Unchanged) => outcome.unchanged += 1,
            Err(error) => {
                tracing::error!(record_id = %records[first_index].record_id, %error, "writing a view failed");
                outcome.failed += 1;
                earliest_failure = Some(earliest_failure.map_or(first_index, |index| index.min(first_index)));
            }
        }
    }
    if let Some(index) = earliest_failure {
        match &records[index].sequence_number {
            Some(sequence_number) => outcome.retry_from = Some(sequence_number.clone()),
            None => outcome.retry_whole_batch = true,
        }
    }
    outcome
}

#[cfg(test)]
mod tests;
