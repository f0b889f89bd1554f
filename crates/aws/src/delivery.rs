//! Server-initiated messages: posting to connections through the gateway, and
//! recording the ones API Gateway says are gone (410) in the ledger. With
//! reconnect recovery, a message to a user is numbered and kept first
//! (`recovery::keep`), then posted: as today to connections that never resumed, as
//! a `delivery` frame to those that did, and not at all to one whose replay is
//! running (the replay carries it).

use crate::domain::protocol::ServerMessage;
use crate::domain::recovery::ResumeState;
use crate::domain::{
    ConnectionEvent, ConnectionId, ConnectionInfo, DisconnectReason, EventEnvelope, Timestamp, UserId,
};
use crate::ports::{ConnectionGateway, EventStore, GatewayError, OutboxStore, StoreError, ViewStore};
use chrono::TimeDelta;

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
    match crate::posting::post_with_retries(gateway, &recipient.connection_id, data).await {
        Ok(()) => Ok(Delivery::Delivered),
        Err(GatewayError::Gone) => {
            tracing::info!(connection_id = %recipient.connection_id, "connection gone (410): recording it");
            events.append(&gone_event(recipient, now, retention_days)).await?;
            Ok(Delivery::Gone)
        }
        Err(error) => Err(DeliveryError::Gateway(error)),
    }
}

/// Why [`send_to_user`] sent nothing, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The message cannot be kept for recovery (see `domain::recovery::keepable`):
    /// nothing was numbered or posted.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What sending to a user did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    pub delivered: usize,
    pub gone: usize,
    pub failed: usize,
    /// The message's number, when it was kept for recovery.
    pub seq: Option<u64>,
    /// Connections whose resume was replaying: the replay delivers the message.
    pub left_to_replay: usize,
}

/// Reconnect recovery for [`send_to_user`]: where messages are kept, and how long.
#[derive(Clone, Copy)]
pub struct Recovery<'a> {
    pub outbox: &'a dyn OutboxStore,
    pub window: TimeDelta,
    /// Where `MessagesKept` is counted, if anywhere.
    pub metrics: Option<&'a crate::metrics::Metrics>,
}

/// Posts `data` to every live connection of `user_id` (index queries over the
/// user's last two hours of connections, no scan: `user_views`).
/// Gone connections are recorded; other failures are counted and logged. With
/// `recovery` (and a window), the message is numbered and kept first; connections
/// that resumed get it as a `delivery` frame, even before their view exists.
#[allow(clippy::too_many_arguments)]
pub async fn send_to_user(
    views: &dyn ViewStore,
    events: &dyn EventStore,
    gateway: &dyn ConnectionGateway,
    user_id: &UserId,
    data: &[u8],
    retention_days: u32,
    now: Timestamp,
    recovery: Option<Recovery<'_>>,
) -> Result<SendReport, SendError> {
    let mut report = SendReport::default();
    let kept = match recovery.filter(|recovery| recovery.window > TimeDelta::zero()) {
        Some(recovery) => {
            let text = crate::domain::recovery::keepable(data).map_err(SendError::Refused)?;
            let kept = crate::recovery::keep(recovery.outbox, user_id, text, now, recovery.window).await?;
            if let Some(metrics) = recovery.metrics {
                metrics.add(crate::metrics::names::MESSAGES_KEPT, 1);
            }
            Some(kept)
        }
        None => None,
    };
    report.seq = kept.as_ref().map(|(message, _)| message.seq);
    let head = kept.as_ref().map(|(_, head)| head.clone()).unwrap_or_default();
    let connected = crate::user_views::connected(views, user_id, now).await?;
    let mut recipients: Vec<Recipient> = connected.iter().map(Recipient::from).collect();
    // A connection that resumed may not have a view yet (the projection lags).
    for (connection_id, _) in &head.resumed {
        if !recipients.iter().any(|recipient| recipient.connection_id == *connection_id) {
            let recipient =
                Recipient { connection_id: connection_id.clone(), user_id: user_id.clone(), connected_at: now };
            recipients.push(recipient);
        }
    }
    for recipient in &recipients {
        let frame = match (head.state_at(&recipient.connection_id, now), &kept) {
            (Some(ResumeState::Replaying { .. }), _) => {
                report.left_to_replay += 1;
                continue;
            }
            (Some(ResumeState::Live), Some((message, _))) => {
                ServerMessage::Delivery { seq: message.seq, data: message.data.clone() }.to_json().into_bytes()
            }
            _ => data.to_vec(),
        };
        match deliver(gateway, events, recipient, &frame, retention_days, now).await {
            Ok(Delivery::Delivered) => report.delivered += 1,
            Ok(Delivery::Gone) => report.gone += 1,
            Err(DeliveryError::Ledger(error)) => return Err(error.into()),
            Err(DeliveryError::Gateway(error)) => {
                tracing::warn!(connection_id = %recipient.connection_id, error = %crate::error_chain::chain(&error), "posting failed");
                report.failed += 1;
            }
        }
    }
    Ok(report)
}
