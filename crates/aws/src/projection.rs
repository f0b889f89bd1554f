//! Folding events into stored views: one read and one conditional write per
//! connection, retried when a concurrent writer wins; the connection's history is
//! read only when the view cannot say where its usage stands.

use std::collections::HashSet;

use crate::domain::usage::{ConnectionUsage, UsageFold};
use crate::domain::{ConnectionEvent, ConnectionId, ConnectionInfo, EventEnvelope, Timestamp};
use crate::ports::{EventStore, PageRequest, StoreError, ViewStore};

/// How often a write that lost to a concurrent writer is tried again.
const MAX_CONFLICT_RETRIES: u32 = 8;

/// What projecting a connection's events did to its view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionOutcome {
    /// The view was written (created or changed).
    Written { version: u64 },
    /// The events were already reflected in the view: nothing was written.
    Unchanged,
}

/// Folds `events`, all of one connection, into its stored view, usage included.
///
/// Usage is not a sum over stream records (a repeated record would count twice):
/// the view carries where the usage walk of its history stands (a
/// [`UsageFold`]), and the batch's events are added to it. That costs one read of
/// the view and one write, whatever the length of the history. Only when the walk
/// cannot go on from the view (a view without it, a missing view and no
/// `Connected` in the batch, an event older than the walk's tail, a voice event
/// after the connection's end) is the connection's whole history read and walked
/// again: [`Projected::history_reads`] says when.
///
/// Convergent and idempotent: the stored view is re-read and re-folded on every
/// conflict, so whatever the order of events and of concurrent projectors, the
/// result is the fold of everything they saw together, and nothing is overwritten.
/// Usage only moves to a computation from more events, so TTL never shrinks it.
pub async fn project_connection(
    views: &dyn ViewStore,
    ledger: &dyn EventStore,
    events: &[EventEnvelope],
) -> Result<Projected, StoreError> {
    let Some(first) = events.first() else {
        return Ok(Projected { outcome: ProjectionOutcome::Unchanged, history_reads: 0, view: None });
    };
    let batch: Vec<&EventEnvelope> = events.iter().collect();
    let mut attempt = 0;
    let mut history_reads = 0;
    loop {
        let stored = views.get(&first.connection_id).await?;
        let mut view = match &stored {
            Some(stored) => stored.view.clone(),
            None => ConnectionInfo::from_event(first),
        };
        for event in events {
            view.apply(event);
        }
        let (usage, fold) = match incremental_usage(stored.as_ref().map(|stored| &stored.view), &view, &batch) {
            Some(walked) => walked,
            None => {
                history_reads += 1;
                let mut seen = full_history(ledger, &first.connection_id).await?;
                // The batch's own events count even if the ledger's read missed them.
                seen.extend(events.iter().cloned());
                usage_of_history(&seen)
            }
        };
        view.usage = ConnectionUsage::newest(view.usage.take(), usage);
        view.usage_fold = fold;
        if let Some(outcome) = write_if_changed(views, stored.as_ref(), &view, &mut attempt).await? {
            return Ok(Projected { outcome, history_reads, view: Some(view) });
        }
    }
}

/// What [`project_connection`] did, how many times it read the connection's
/// whole history (0 unless the usage walk could not go on from the view), and the
/// view as stored now (what presence observes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projected {
    pub outcome: ProjectionOutcome,
    pub history_reads: u32,
    pub view: Option<ConnectionInfo>,
}

/// The usage of `view` (the stored view with `batch` folded in) from the usage walk
/// stored on `stored`, or from nothing for a new connection whose batch opens it;
/// `None` when the whole history must be walked.
fn incremental_usage(
    stored: Option<&ConnectionInfo>,
    view: &ConnectionInfo,
    batch: &[&EventEnvelope],
) -> Option<(Option<ConnectionUsage>, Option<UsageFold>)> {
    let mut fold = match stored {
        Some(stored) => stored.usage_fold.clone()?,
        // A connection's first event is its `Connected`; a batch without it, for a
        // view not written yet, may follow events that were never projected.
        None if batch.iter().any(|event| matches!(event.event, ConnectionEvent::Connected { .. })) => {
            UsageFold::new(view.created_at)
        }
        None => return None,
    };
    fold.advance(view, batch).ok()?;
    let usage = fold.usage(view)?;
    Some((Some(usage), Some(fold)))
}

/// The usage of a whole history and the walk that continues from it.
fn usage_of_history(history: &[EventEnvelope]) -> (Option<ConnectionUsage>, Option<UsageFold>) {
    match ConnectionInfo::fold(history) {
        Some(folded) => (folded.usage, folded.usage_fold),
        None => (None, None),
    }
}

/// Writes `view` over `stored` unless nothing changed. `None` when a concurrent
/// writer won and the caller should read and fold again (after a backoff; at most
/// [`MAX_CONFLICT_RETRIES`] times, counted in `attempt`).
async fn write_if_changed(
    views: &dyn ViewStore,
    stored: Option<&crate::ports::VersionedView>,
    view: &ConnectionInfo,
    attempt: &mut u32,
) -> Result<Option<ProjectionOutcome>, StoreError> {
    if stored.is_some_and(|stored| stored.view == *view) {
        return Ok(Some(ProjectionOutcome::Unchanged));
    }
    match views.put(view, stored.map(|stored| stored.version)).await {
        Ok(version) => Ok(Some(ProjectionOutcome::Written { version })),
        Err(StoreError::Conflict(_)) if *attempt < MAX_CONFLICT_RETRIES => {
            *attempt += 1;
            crate::backoff::pause(*attempt).await;
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildReport {
    pub connections: usize,
    pub events: usize,
    pub written: usize,
    pub unchanged: usize,
}

/// Re-folds, from the ledger alone, the view of every connection that has an
/// event in `[since, until)`: each connection's whole history is read and folded
/// from scratch, so a damaged view is repaired. Safe while projectors run (every
/// write is conditional, and a lost race re-reads the history) and idempotent.
/// `progress` is called after each connection.
pub async fn rebuild(
    events: &dyn EventStore,
    views: &dyn ViewStore,
    since: Timestamp,
    until: Timestamp,
    mut progress: impl FnMut(&RebuildReport),
) -> Result<RebuildReport, StoreError> {
    let mut report = RebuildReport::default();
    let mut seen: HashSet<ConnectionId> = HashSet::new();
    let mut page = PageRequest::first(1_000);
    loop {
        let window = events.window(since, until, page).await?;
        for event in &window.items {
            if !seen.insert(event.connection_id.clone()) {
                continue;
            }
            let (history_length, outcome) = rebuild_connection(events, views, &event.connection_id).await?;
            report.connections += 1;
            report.events += history_length;
            match outcome {
                ProjectionOutcome::Written { .. } => report.written += 1,
                ProjectionOutcome::Unchanged => report.unchanged += 1,
            }
            progress(&report);
        }
        match window.next {
            Some(next) => page.after = Some(next),
            None => return Ok(report),
        }
    }
}

async fn full_history(events: &dyn EventStore, connection_id: &ConnectionId) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut history = Vec::new();
    let mut page = PageRequest::first(1_000);
    loop {
        let next = events.connection_history(connection_id, page).await?;
        history.extend(next.items);
        match next.next {
            Some(after) => page.after = Some(after),
            None => return Ok(history),
        }
    }
}

/// Re-folds one connection's view from its whole history (see [`rebuild`]);
/// returns the length of the history and what was written.
pub async fn rebuild_connection(
    events: &dyn EventStore,
    views: &dyn ViewStore,
    connection_id: &ConnectionId,
) -> Result<(usize, ProjectionOutcome), StoreError> {
    let mut attempt = 0;
    loop {
        let stored = views.get(connection_id).await?;
        let history = full_history(events, connection_id).await?;
        let Some(mut view) = ConnectionInfo::fold(&history) else {
            return Ok((0, ProjectionOutcome::Unchanged));
        };
        // Events lost to TTL never shrink usage.
        view.usage = ConnectionUsage::newest(stored.as_ref().and_then(|stored| stored.view.usage.clone()), view.usage);
        if let Some(outcome) = write_if_changed(views, stored.as_ref(), &view, &mut attempt).await? {
            return Ok((history.len(), outcome));
        }
    }
}
