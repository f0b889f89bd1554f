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
use crate::ports::{ConnectionGateway, EventStore, GatewayError, LeaseStore, PageRequest, StoreError, ViewStore};

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

async fn check(ports: &SweepPorts<'_>, view: &ConnectionInfo, now: Timestamp, config: SweepConfig) -> Verdict {
    let SweepPorts { events, gateway, leases, .. } = *ports;
    let recipient = Recipient::from(view);
    match gateway.get(&view.connection_id).await {
        Err(GatewayError::Gone) => match events.append(&gone_event(&recipient, now, config.retention_days)).await {
            Ok(_) => {
                // A gone connection's slot in MAX_CONNECTIONS_PER_USER is free now.
                if let Some(leases) = leases {
                    crate::leases::release(leases, &view.user_id, &view.connection_id, now).await;
                }
                Verdict::Gone
            }
            Err(error) => {
                tracing::error!(connection_id = %view.connection_id, error = %crate::error_chain::chain(&error), "recording a gone connection failed");
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
                    tracing::error!(connection_id = %view.connection_id, error = %crate::error_chain::chain(&error), "recording the activity API Gateway reported failed");
                    Verdict::Error
                }
            }
        }
        Err(error) => {
            tracing::warn!(connection_id = %view.connection_id, error = %crate::error_chain::chain(&error), "GetConnection failed");
            Verdict::Error
        }
    }
}

/// What the sweep works through: the views it reads, the ledger it appends to, the
/// Management API it asks, and the leases it frees (when there are any).
#[derive(Clone, Copy)]
pub struct SweepPorts<'a> {
    pub views: &'a dyn ViewStore,
    pub events: &'a dyn EventStore,
    pub gateway: &'a dyn ConnectionGateway,
    pub leases: Option<&'a dyn LeaseStore>,
}

/// Sweeps once, as of `now`.
pub async fn sweep(ports: SweepPorts<'_>, now: Timestamp, config: SweepConfig) -> Result<SweepReport, StoreError> {
    let views = ports.views;
    let deadline = now.minus(config.grace);
    let mut report = SweepReport::default();
    let mut page = PageRequest::first(100);
    loop {
        let suspects = views.list_live_until_before(deadline, page.clone()).await?;
        // Futures first, then the stream: a closure in the stream would make this
        // future unusable in a spawned task (a higher-ranked lifetime limitation).
        let checks: Vec<_> = suspects.items.iter().map(|view| check(&ports, view, now, config)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStore;
    use crate::domain::lease::{Lease, UserLeases};
    use crate::domain::{ConnectionId, UserId};
    use crate::ports::{GatewayConnection, LeaseStore};
    use crate::projection::project_connection;

    /// API Gateway that holds no connection at all: every GetConnection is a 410.
    struct NothingHeld;

    #[async_trait::async_trait]
    impl ConnectionGateway for NothingHeld {
        async fn post(&self, _: &ConnectionId, _: &[u8]) -> Result<(), GatewayError> {
            Err(GatewayError::Gone)
        }
        async fn get(&self, _: &ConnectionId) -> Result<GatewayConnection, GatewayError> {
            Err(GatewayError::Gone)
        }
        async fn delete(&self, _: &ConnectionId) -> Result<(), GatewayError> {
            Err(GatewayError::Gone)
        }
    }

    #[tokio::test]
    async fn a_gone_connection_gives_its_lease_back() {
        let store = MemoryStore::new();
        let (connection_id, user_id) = (ConnectionId::parse("Ghost0001=").unwrap(), UserId::parse("u").unwrap());
        let then = Timestamp::now().minus(chrono::TimeDelta::hours(3));
        let connected = EventEnvelope::for_request(
            connection_id.clone(),
            user_id.clone(),
            "c",
            then,
            then,
            ConnectionEvent::Connected { ip_address: None, user_agent: None },
        );
        store.append(&connected).await.unwrap();
        project_connection(&store, &store, std::slice::from_ref(&connected)).await.unwrap();
        let mut leases = UserLeases::new(user_id.clone());
        let far = Timestamp::now().plus(chrono::TimeDelta::hours(1));
        leases.leases.push(Lease { connection_id: connection_id.clone(), live_until: far });
        store.put_leases(&leases, None).await.unwrap();

        let ports = SweepPorts { views: &store, events: &store, gateway: &NothingHeld, leases: Some(&store) };
        let report = sweep(ports, Timestamp::now(), SweepConfig::default()).await.unwrap();
        assert_eq!(report.gone, 1);
        let (leases, _) = store.leases(&user_id).await.unwrap().unwrap();
        assert!(leases.leases.is_empty(), "the slot is free: {leases:?}");
    }
}
