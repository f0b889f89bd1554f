//! Folding events into stored views: one read and one conditional write per
//! connection, retried when a concurrent writer wins.

use crate::domain::{ConnectionInfo, EventEnvelope};
use crate::ports::{StoreError, ViewStore};

/// How often a write that lost to a concurrent writer is tried again.
const MAX_CONFLICT_RETRIES: usize = 8;

/// What projecting a connection's events did to its view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionOutcome {
    /// The view was written (created or changed).
    Written { version: u64 },
    /// The events were already reflected in the view: nothing was written.
    Unchanged,
}

/// Folds `events`, all of one connection, into its stored view.
///
/// Convergent and idempotent: the stored view is re-read and re-folded on every
/// conflict, so whatever the order of events and of concurrent projectors, the
/// result is the fold of everything they saw together, and nothing is overwritten.
pub async fn project_connection(
    views: &dyn ViewStore,
    events: &[EventEnvelope],
) -> Result<ProjectionOutcome, StoreError> {
    let Some(first) = events.first() else { return Ok(ProjectionOutcome::Unchanged) };
    let mut attempt = 0;
    loop {
        let stored = views.get(&first.connection_id).await?;
        let (mut view, expected_version) = match &stored {
            Some(stored) => (stored.view.clone(), Some(stored.version)),
            None => (ConnectionInfo::from_event(first), None),
        };
        for event in events {
            view.apply(event);
        }
        if stored.as_ref().is_some_and(|stored| stored.view == view) {
            return Ok(ProjectionOutcome::Unchanged);
        }
        match views.put(&view, expected_version).await {
            Ok(version) => return Ok(ProjectionOutcome::Written { version }),
            Err(StoreError::Conflict(_)) if attempt < MAX_CONFLICT_RETRIES => attempt += 1,
            Err(error) => return Err(error),
        }
    }
}
