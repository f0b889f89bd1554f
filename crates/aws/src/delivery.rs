//! Server-initiated messages: posting to connections through the gateway, and
//! recording the ones API Gateway says are gone (410) in the ledger.

use crate::domain::ConnectionStatus;
use crate::domain::{
    ConnectionEvent, ConnectionId, ConnectionInfo, DisconnectReason, EventEnvelope, Timestamp, UserId,
};
use crate::ports::{ConnectionGateway, EventStore, GatewayError, PageRequest, StoreError, ViewStore};

/// Who a message goes to: enough to record a `Disconnected` if it is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub connection_id: ConnectionId,
    pub user_id: UserId,
    pub connected_at: Timestamp,
}

impl From<&ConnectionInfo> for Recipient {
    fn from(view: &ConnectionInfo) -> Self {
        Self { connection_id: view.connection_id.clone(), user_id: view.user_id.clone(), connected_at: view.created_at }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// API Gateway answered 410; `Disconnected{reason: gone}` was appended.
    Gone,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("posting to the connection failed: {0}")]
    Gateway(GatewayError),
    #[error("recording the gone connection failed: {0}")]
    Ledger(#[from] StoreError),
}

/// The `Disconnected{reason: gone}` event for a connection found gone at `at`. The
/// request id names the observation, so the same observation appended twice is
/// one event.
pub fn gone_event(recipient: &Recipient, at: Timestamp, retention_days: u32) -> EventEnvelope {
    EventEnvelope::for_request(
        recipient.connection_id.clone(),
        recipient.user_id.clone(),
        format!("wsledger-gone-{}", recipient.connection_id),
        at,
        recipient.connected_at,
        ConnectionEvent::Disconnected {
            reason: DisconnectReason::Gone,
            status_code: Some(410),
            detail: None,
            message_count: 0,
        },
    )
    .with_retention_days(retention_days)
}

/// Posts `data` to one connection; a 410 is recorded in the ledger as observed at
/// `now`, not returned as an error.
pub async fn deliver(
    gateway: &dyn ConnectionGateway,
    events: &dyn EventStore,
    recipient: &Recipient,
    data: &[u8],
    retention_days: u32,
    now: Timestamp,
) -> Result<Delivery, DeliveryError> {
    match gateway.post(&recipient.connection_id, data).await {
        Ok(()) => Ok(Delivery::Delivered),
        Err(GatewayError::Gone) => {
            tracing::info!(connection_id = %recipient.connection_id, "connection gone (410): recording it");
            events.append(&gone_event(recipient, now, retention_days)).await?;
            Ok(Delivery::Gone)
        }
        Err(error) => Err(DeliveryError::Gateway(error)),
    }
}

/// What sending to a user did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    pub delivered: usize,
    pub gone: usize,
    pub failed: usize,
}

/// Posts `data` to every live connection of `user_id` (an index query, no scan).
/// Gone connections are recorded; other failures are counted and logged.
pub async fn send_to_user(
    views: &dyn ViewStore,
    events: &dyn EventStore,
    gateway: &dyn ConnectionGateway,
    user_id: &UserId,
    data: &[u8],
    retention_days: u32,
    now: Timestamp,
) -> Result<SendReport, StoreError> {
    let mut report = SendReport::default();
    let mut page = PageRequest::first(100);
    loop {
        let connections = views.list_by_user(user_id, Some(ConnectionStatus::Connected), page.clone()).await?;
        for view in &connections.items {
            match deliver(gateway, events, &Recipient::from(view), data, retention_days, now).await {
                Ok(Delivery::Delivered) => report.delivered += 1,
                Ok(Delivery::Gone) => report.gone += 1,
                Err(DeliveryError::Ledger(error)) => return Err(error),
                Err(DeliveryError::Gateway(error)) => {
                    tracing::warn!(connection_id = %view.connection_id, error = %crate::error_chain::chain(&error), "posting failed");
                    report.failed += 1;
                }
            }
        }
        match connections.next {
            Some(next) => page.after = Some(next),
            None => return Ok(report),
        }
    }
}
