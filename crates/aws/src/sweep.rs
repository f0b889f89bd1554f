//! The stale-connection sweep (GoneException cleanup).
//!
//! `$disconnect` is best-effort, so views can stay `CONNECTED` for connections API
//! Gateway has long closed. The sweep lists the live views whose `live_until` (the
//! last moment API Gateway could still hold them) has passed, asks the Management
//! API about each, and appends `Disconnected{reason: gone}` for every 410. The view
//! follows through the normal projection.

use chrono::TimeDelta;
use futures::stream::{self, StreamExt};

use crate::delivery::{Recipient, gone_event};
use crate::domain::{ConnectionEvent, ConnectionInfo, EventEnvelope, Timestamp};
use crate::ports::{ConnectionGateway, EventStore, GatewayError, PageRequest, StoreError, ViewStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepConfig {
    /// Extra time past `live_until` before a connection is a suspect.
    pub grace: TimeDelta,
    /// How many `GetConnection` calls are in flight at once.
    pub concurrency: usize,
    pub retention_days: u32,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self { grace: TimeDelta::minutes(2), concurrency: 10, retention_days: 90 }
    }
}

/// What a sweep found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Suspects asked about.
    pub checked: usize,
    /// Answered 410: recorded as gone.
    pub gone: usize,
    /// Still open according to API Gateway.
    pub alive: usize,
    /// Still open, with a newer `lastActiveAt` than the view: recorded as activity.
    pub refreshed: usize,
    /// Could not be checked or recorded (throttled, unavailable); tried next sweep.
    pub errors: usize,
}

impl SweepReport {
    /// Counts the sweep into `metrics`: suspects asked about, gone, alive.
    pub fn count(&self, metrics: &crate::metrics::Metrics) {
        use crate::metrics::names;
        metrics.add(names::SUSPECTS, self.checked as u64);
        metrics.add(names::GONE, self.gone as u64);
        metrics.add(names::ALIVE, self.alive as u64);
    }
}

enum Verdict {
    Gone,
    Alive { refreshed: bool },
    Error,
}

async fn check(
    gateway: &dyn ConnectionGateway,
    events: &dyn EventStore,
    view: &ConnectionInfo,
    now: Timestamp,
    config: SweepConfig,
) -> Verdict {
    let recipient = Recipient::from(view);
    match gateway.get(&view.connection_id).await {
        Err(GatewayError::Gone) => match events.append(&gone_event(&recipient, now, config.retention_days)).await {
            Ok(_) => Verdict::Gone,
            Err(error) => {
                tracing::error!(connection_id = %view.connection_id, error = %crate::report::chain(&error), "recording a gone connection failed");
                Verdict::Error
            }
        },
        Ok(connection) => {
            let Some(last_active_at) = connection.last_active_at.filter(|at| *at > view.last_activity) else {
                return Verdict::Alive { refreshed: false };
            };
            // The observation itself names the event: the same lastActiveAt seen
            // twice is one event.
            let activity = EventEnvelope::for_request(
                view.connection_id.clone(),
                view.user_id.clone(),
                format!("wsledger-sweep-{}", view.connection_id),
                last_active_at,
                view.created_at,
                ConnectionEvent::Activity { session_id: None, message_count: 0 },
            )
            .with_retention_days(config.retention_days);
            match events.append(&activity).await {
                Ok(_) => Verdict::Alive { refreshed: true },
                Err(error) => {
                    tracing::error!(connection_id = %view.connection_id, error = %crate::report::chain(&error), "recording the activity API Gateway reported failed");
                    Verdict::Error
                }
            }
        }
        Err(error) => {
            tracing::warn!(connection_id = %view.connection_id, error = %crate::report::chain(&error), "GetConnection failed");
            Verdict::Error
        }
    }
}

/// Sweeps once, as of `now`.
pub async fn sweep(
    views: &dyn ViewStore,
    events: &dyn EventStore,
    gateway: &dyn ConnectionGateway,
    now: Timestamp,
    config: SweepConfig,
) -> Result<SweepReport, StoreError> {
    let deadline = now.minus(config.grace);
    let mut report = SweepReport::default();
    let mut page = PageRequest::first(100);
    loop {
        let suspects = views.list_live_until_before(deadline, page.clone()).await?;
        // Futures first, then the stream: a closure in the stream would make this
        // future unusable in a spawned task (a higher-ranked lifetime limitation).
        let checks: Vec<_> = suspects.items.iter().map(|view| check(gateway, events, view, now, config)).collect();
        let verdicts: Vec<Verdict> = stream::iter(checks).buffer_unordered(config.concurrency.max(1)).collect().await;
        for verdict in verdicts {
            report.checked += 1;
            match verdict {
                Verdict::Gone => report.gone += 1,
                Verdict::Alive { refreshed } => {
                    report.alive += 1;
                    report.refreshed += usize::from(refreshed);
                }
                Verdict::Error => report.errors += 1,
            }
        }
        match suspects.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    tracing::info!(?report, "sweep done");
    Ok(report)
}
