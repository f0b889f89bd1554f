//! Driving the projector from the store's change feed, in-process: the embedded
//! store's append sequence, or a DynamoDB table's stream through the poller.

use std::time::Duration;

use tokio::sync::watch;

use crate::adapters::sqlite::SqliteStore;
use crate::domain::Timestamp;
use crate::local::Projection;
use crate::metrics::{Metrics, names};
use crate::ports::ViewStore;
use crate::presence::Presence;
use crate::projection::rebuild_connection;
use crate::projector::{count_batch, project_with_presence};

/// The name of the projector's checkpoint in the embedded store.
pub const PROJECTOR_CHECKPOINT: &str = "projector";
const BATCH: usize = 100;

/// Projects everything appended after the checkpoint, once. Returns whether it got
/// to the end of the feed (false when a view write failed and must be retried).
pub async fn project_pending(
    store: &SqliteStore,
    views: &dyn ViewStore,
    presence: Option<&Presence>,
    metrics: &Metrics,
) -> Result<bool, crate::ports::StoreError> {
    loop {
        let checkpoint = store.checkpoint(PROJECTOR_CHECKPOINT).await?;
        let records = store.changes_after(checkpoint, BATCH).await?;
        let Some(last) = records.last() else { return Ok(true) };
        let last: i64 = last.sequence_number.as_deref().and_then(|seq| seq.parse().ok()).unwrap_or(checkpoint);
        let now = Timestamp::now();
        let outcome = project_with_presence(views, store, &records, presence, now).await;
        count_batch(metrics, &records, &outcome, now);
        // Views that replaced undecodable rows were folded from this batch alone.
        for connection_id in store.take_repairs() {
            if let Err(error) = rebuild_connection(store, views, &connection_id).await {
                tracing::warn!(%connection_id, error = %crate::error_chain::chain(&error), "re-folding a repaired view failed; `wsledger rebuild` repairs it");
            }
        }
        // At least once: on a failure the checkpoint stops just before the record to retry.
        let next = match outcome.retry_from.as_deref().and_then(|seq| seq.parse::<i64>().ok()) {
            Some(retry_from) => retry_from - 1,
            None if outcome.retry_whole_batch => checkpoint,
            None => last,
        };
        metrics.observe(names::CORRUPT_VIEWS, store.corrupt_views() as f64);
        if next > checkpoint {
            store.set_checkpoint(PROJECTOR_CHECKPOINT, next).await?;
        }
        if next != last {
            return Ok(false);
        }
    }
}

/// Runs the projector on the embedded store's feed (writing through `views`) until
/// `stop` turns true, then flushes what is pending.
pub(crate) async fn run_sqlite_projector(store: SqliteStore, projection: Projection, mut stop: watch::Receiver<bool>) {
    let Projection { views, presence, metrics } = projection;
    let presence = presence.as_ref();
    let appended = store.appended();
    loop {
        let notified = appended.notified();
        let pause = match project_pending(&store, views.as_ref(), presence, &metrics).await {
            Ok(true) => Duration::from_secs(1),
            Ok(false) => Duration::from_millis(200),
            Err(error) => {
                tracing::warn!(error = %crate::error_chain::chain(&error), "projecting the change feed failed; retrying");
                Duration::from_secs(1)
            }
        };
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
    for _ in 0..10 {
        match project_pending(&store, views.as_ref(), presence, &metrics).await {
            Ok(true) => return,
            Ok(false) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => {
                tracing::error!(error = %crate::error_chain::chain(&error), "flushing projections at shutdown failed");
                return;
            }
        }
    }
}
